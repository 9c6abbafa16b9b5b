//! Frames the protocol fuzz target (`fuzz/fuzz_targets/protocol.rs`) ran
//! into or started from: none may panic either decoder, and whatever
//! decodes encodes to a frame that decodes to the same message. An input
//! the fuzzer finds crashing is added to `FRAMES`.

use holdpoint_shared::protocol::{BotMessage, MAX_FRAME_BYTES, RunnerMessage};

const FRAMES: &[&str] = &[
    "",
    "{",
    "null",
    "[]",
    "{\"type\":\"hello\",\"protocol\":1,\"runner_version\":\"0.1.0\",\"host\":\"dev\"}",
    "{\"type\":\"hello\",\"protocol\":1,\"runner_version\":\"0.1.0\",\"host\":\"dev\",\"x\":1}",
    "{\"type\":\"ping\",\"nonce\":18446744073709551615}",
    "{\"type\":\"ping\",\"nonce\":18446744073709551616}",
    "{\"type\":\"ping\",\"nonce\":-1}",
    "{\"type\":\"ping\",\"nonce\":1e3}",
    "{\"type\":\"welcome\",\"protocol\":1,\"runner\":\"r\",\"bot_version\":\"1\",\"server_time\":-9223372036854775808}",
    "{\"type\":\"pending\",\"request_id\":\"x\",\"expires_at\":1,\"server_time\":2,\"review_url\":null}",
    "{\"type\":\"audit_ack\",\"ids\":[\"a\",\"\\ud83d\\ude00\"]}",
    "{\"type\":\"audit_ack\",\"ids\":[\"\\ud800\"]}",
    "{\"type\":\"rejected\",\"request_id\":\"x\",\"reason\":\"r\\u0000\"}",
    "{\"type\":\"submit\",\"request\":{}}",
    "{\"type\":\"decision\",\"request_id\":\"x\"}",
    "{\"type\":\"audit\",\"events\":[]}",
    "{\"type\":\"cancel\",\"request_id\":\"abc\",\"type\":\"ack\"}",
];

fn round_trips(text: &str) {
    if let Ok(m) = RunnerMessage::decode(text) {
        let once = m.encode();
        let again = RunnerMessage::decode(&once);
        assert!(
            again.is_ok(),
            "{text:?} decodes, its encoding {once:?} does not"
        );
        assert_eq!(again.map(|m| m.encode()).ok(), Some(once));
    }
    if let Ok(m) = BotMessage::decode(text) {
        let once = m.encode();
        let again = BotMessage::decode(&once);
        assert!(
            again.is_ok(),
            "{text:?} decodes, its encoding {once:?} does not"
        );
        assert_eq!(again.map(|m| m.encode()).ok(), Some(once));
    }
}

#[test]
fn fuzzed_frames_never_panic_and_round_trip() {
    for f in FRAMES {
        round_trips(f);
    }
}

#[test]
fn deep_nesting_and_oversized_frames_are_refused_without_panicking() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(RunnerMessage::decode(&deep).is_err());
    assert!(BotMessage::decode(&deep).is_err());
    let big = format!(
        "{{\"type\":\"cancel\",\"request_id\":\"{}\"}}",
        "a".repeat(MAX_FRAME_BYTES)
    );
    assert!(RunnerMessage::decode(&big).is_err());
}
