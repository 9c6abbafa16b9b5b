//! A bare websocket to the bot, for tests that send what no runner would:
//! no token, bad frames, messages out of order. Every read panics on what
//! it did not expect.

use crate::bot::Bot;
use holdpoint_shared::protocol::{BotMessage, PROTOCOL_VERSION, RunnerMessage, WS_PATH};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens the runner websocket with `token` (none: no `authorization`).
pub fn connect(bot: &Bot, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://127.0.0.1:{}{WS_PATH}", bot.port)
        .into_client_request()
        .expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    let (ws, _) = tungstenite::connect(req)?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    Ok(ws)
}

pub fn send(ws: &mut Ws, m: &RunnerMessage) {
    ws.send(Message::Text(m.encode().into())).expect("send");
}

/// The next message; a close is a panic.
pub fn recv(ws: &mut Ws) -> BotMessage {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return BotMessage::decode(&t).expect("a bot message"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Reads until the bot closes; returns the code and reason.
pub fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

/// Says hello; the bot must welcome it.
/// What arrives within `within`, if anything (`None`: nothing did).
pub fn quiet_for(ws: &mut Ws, within: Duration) -> Option<Message> {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(within));
    }
    let got = ws.read().ok();
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    }
    got
}

pub fn hello(ws: &mut Ws) {
    send(
        ws,
        &RunnerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            runner_version: "test".into(),
            host: "test-host".into(),
        },
    );
    assert!(matches!(recv(ws), BotMessage::Welcome { .. }));
}
