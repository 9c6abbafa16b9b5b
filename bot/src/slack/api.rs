//! The Slack Web API calls the bot makes, through slack-morphism's hyper
//! client, with retries: a 429 waits for its `Retry-After`, server errors
//! and broken connections back off and try again, anything else fails at
//! once.
//!
//! It must never log a token, and a failed call is only ever an error for
//! the caller: nothing here decides a request.

use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::hyper_tokio::{SlackClientHyperConnector, SlackHyperClient};
use slack_morphism::{SlackApiToken, SlackApiTokenValue, SlackClient};
use std::time::Duration;

/// Why a Slack call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Slack answered {method} with the error `{code}`")]
    Slack { method: String, code: String },
    #[error("Slack {method} failed after {attempts} attempts: {last}")]
    GaveUp {
        method: String,
        attempts: u32,
        last: String,
    },
    #[error("Slack {method} failed: {message}")]
    Other { method: String, message: String },
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
}

/// How often and how long a call is retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// The first back-off; it doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 6,
            backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// The Web API client.
pub struct Api {
    client: SlackHyperClient,
    bot_token: SlackApiToken,
    app_token: Option<SlackApiToken>,
    pub retry: Retry,
}

enum Outcome {
    Retry(Duration, String),
    Fail(ApiError),
}

fn classify(method: &str, e: SlackClientError, backoff: Duration, retry: &Retry) -> Outcome {
    match e {
        SlackClientError::RateLimitError(r) => {
            let wait = r
                .retry_after
                .unwrap_or(Duration::from_secs(1))
                .min(retry.max_retry_after);
            Outcome::Retry(wait, "rate limited (429)".into())
        }
        SlackClientError::HttpError(h) if h.status_code.is_server_error() => {
            Outcome::Retry(backoff, format!("HTTP {}", h.status_code))
        }
        SlackClientError::HttpProtocolError(p) => Outcome::Retry(backoff, p.to_string()),
        SlackClientError::EndOfStream(p) => Outcome::Retry(backoff, p.to_string()),
        SlackClientError::ApiError(a) if a.code == "ratelimited" => {
            Outcome::Retry(Duration::from_secs(1), "ratelimited".into())
        }
        SlackClientError::ApiError(a) if a.code == "internal_error" || a.code == "fatal_error" => {
            Outcome::Retry(backoff, a.code)
        }
        SlackClientError::ApiError(a) => Outcome::Fail(ApiError::Slack {
            method: method.into(),
            code: a.code,
        }),
        other => Outcome::Fail(ApiError::Other {
            method: method.into(),
            message: other.to_string(),
        }),
    }
}

impl Api {
    /// A client for `api_url` (`https://slack.com/api`). Plain `http://` is allowed
    /// for a local proxy or test server.
    pub fn new(api_url: &str, bot_token: &str, app_token: Option<&str>) -> Result<Api, ApiError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let connector =
            SlackClientHyperConnector::with_connector(https).with_slack_api_url(api_url);
        let token = |t: &str| SlackApiToken::new(SlackApiTokenValue(t.to_string()));
        Ok(Api {
            client: SlackClient::new(connector),
            bot_token: token(bot_token),
            app_token: app_token.map(token),
            retry: Retry::default(),
        })
    }

    /// Calls `method` with a JSON body and the bot token.
    pub async fn post(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        self.post_with(&self.bot_token, method, body).await
    }

    /// Calls `method` with the app-level token (Socket Mode).
    pub async fn post_app(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        let token = self.app_token.as_ref().ok_or_else(|| ApiError::Other {
            method: method.into(),
            message: "no app-level token is configured".into(),
        })?;
        self.post_with(token, method, body).await
    }

    async fn post_with(
        &self,
        token: &SlackApiToken,
        method: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let session = self.client.open_session(token);
        self.retrying(method, || {
            session.http_session_api.http_post(method, body, None)
        })
        .await
    }

    /// Calls a read method with query parameters and the bot token.
    pub async fn get(&self, method: &str, params: &[(&str, &str)]) -> Result<Value, ApiError> {
        let session = self.client.open_session(&self.bot_token);
        let params: Vec<(&str, Option<&str>)> =
            params.iter().map(|(k, v)| (*k, Some(*v))).collect();
        self.retrying(method, || {
            session.http_session_api.http_get(method, &params, None)
        })
        .await
    }

    async fn retrying<F, Fut>(&self, method: &str, call: F) -> Result<Value, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Value, SlackClientError>>,
    {
        let mut backoff = self.retry.backoff;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => match classify(method, e, backoff, &self.retry) {
                    Outcome::Fail(e) => return Err(e),
                    Outcome::Retry(wait, why) => {
                        tracing::warn!(
                            "Slack {method}: {why}; retrying in {} ms (attempt {attempt} of {})",
                            wait.as_millis(),
                            self.retry.attempts
                        );
                        last = why;
                        if attempt < self.retry.attempts {
                            tokio::time::sleep(wait).await;
                        }
                        backoff = (backoff * 2).min(self.retry.max_backoff);
                    }
                },
            }
        }
        Err(ApiError::GaveUp {
            method: method.into(),
            attempts: self.retry.attempts,
            last,
        })
    }
}
