//! Decode arbitrary frames as both sides of the wire protocol: no frame may
//! panic the decoder, and whatever decodes must survive a round trip
//! (encode, decode again, encode to the same text).
#![no_main]

use holdpoint_shared::protocol::{BotMessage, RunnerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = RunnerMessage::decode(text) {
        let once = m.encode();
        let again = RunnerMessage::decode(&once).unwrap_or_else(|e| {
            panic!("a decoded runner message does not decode again: {e}: {once}")
        });
        assert_eq!(once, again.encode(), "runner message round trip differs");
    }
    if let Ok(m) = BotMessage::decode(text) {
        let once = m.encode();
        let again = BotMessage::decode(&once)
            .unwrap_or_else(|e| panic!("a decoded bot message does not decode again: {e}: {once}"));
        assert_eq!(once, again.encode(), "bot message round trip differs");
    }
});
