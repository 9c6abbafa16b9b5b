//! Read arbitrary text as every agent's hook input: nothing may panic,
//! unreadable input is answered with the agent's blocking answer, and every
//! denial or error is blocking whatever its text (`holdpoint_runner::hooks::check_input`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        holdpoint_runner::hooks::check_input(text);
    }
});
