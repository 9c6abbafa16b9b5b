//! Read arbitrary bytes as a Slack interaction, both as the HTTP endpoint
//! reads a form body and as Socket Mode hands over JSON: nothing may panic,
//! whatever is read has checked ids, and it reads back from its own payload
//! unchanged (`holdpoint_bot::slack::interact::check_input`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    holdpoint_bot::slack::interact::check_input(data);
});
