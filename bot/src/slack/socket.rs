//! Socket Mode: for teams without a public URL. The bot asks
//! `apps.connections.open` (with the app-level token) for a websocket URL,
//! acknowledges every envelope at once, hands interactions to the same code
//! path as the HTTP endpoint, and reconnects with back-off when the socket
//! drops or Slack sends a `disconnect` envelope.
//!
//! It must never act on an envelope before acknowledging it (Slack would
//! redeliver it), and a lost connection only delays clicks: it never
//! decides a request.

use super::{Slack, interact};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use slack_tungstenite::tungstenite::Message;
use std::sync::Arc;
use std::time::Duration;

/// Why one connection ended.
enum Ended {
    /// Slack asked us to reconnect: do it at once.
    Asked,
    /// The connection failed or closed.
    Lost(String),
}

/// Runs Socket Mode until the process ends.
pub async fn run(slack: Arc<Slack>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = std::time::Instant::now();
        match connect_once(&slack).await {
            Ended::Asked => {
                tracing::info!("Slack Socket Mode: reconnecting as Slack asked");
                backoff = Duration::from_millis(500);
                continue;
            }
            Ended::Lost(why) => {
                slack.bot.metrics().chat_failure("slack", "socket");
                // A connection that lasted a while starts the back-off over.
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(
                    "Slack Socket Mode: {why}; reconnecting in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn connect_once(slack: &Arc<Slack>) -> Ended {
    let url = match slack
        .api
        .post_app("apps.connections.open", &json!({}))
        .await
    {
        Ok(v) => match v.get("url").and_then(Value::as_str) {
            Some(u) => u.to_string(),
            None => return Ended::Lost("apps.connections.open returned no URL".into()),
        },
        Err(e) => return Ended::Lost(e.to_string()),
    };
    let (ws, _) = match slack_tungstenite::connect_async(url.as_str()).await {
        Ok(c) => c,
        Err(e) => return Ended::Lost(format!("cannot open the websocket: {e}")),
    };
    let (mut tx, mut rx) = ws.split();
    loop {
        // Slack pings every few seconds; a silent socket is a dead one.
        let frame = match tokio::time::timeout(Duration::from_secs(60), rx.next()).await {
            Err(_) => return Ended::Lost("no frame for 60 s".into()),
            Ok(None) => return Ended::Lost("the websocket closed".into()),
            Ok(Some(Err(e))) => return Ended::Lost(format!("websocket error: {e}")),
            Ok(Some(Ok(f))) => f,
        };
        let text = match frame {
            Message::Text(t) => t.to_string(),
            Message::Ping(p) => {
                let _ = tx.send(Message::Pong(p)).await;
                continue;
            }
            Message::Close(_) => return Ended::Lost("Slack closed the websocket".into()),
            _ => continue,
        };
        let Ok(envelope) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!("Slack Socket Mode: an envelope that is not JSON was ignored");
            continue;
        };
        match envelope.get("type").and_then(Value::as_str) {
            Some("hello") => {
                tracing::info!("Slack Socket Mode connected");
                continue;
            }
            Some("disconnect") => {
                let _ = tx.close().await;
                return Ended::Asked;
            }
            _ => {}
        }
        if let Some(id) = envelope.get("envelope_id").and_then(Value::as_str) {
            // Acknowledge first: Slack wants it within three seconds.
            let ack = json!({"envelope_id": id}).to_string();
            if let Err(e) = tx.send(Message::Text(ack.into())).await {
                return Ended::Lost(format!("cannot acknowledge: {e}"));
            }
        }
        if envelope.get("type").and_then(Value::as_str) == Some("interactive")
            && let Some(payload) = envelope.get("payload").cloned()
        {
            tokio::spawn(interact::handle(slack.clone(), payload));
        }
    }
}
