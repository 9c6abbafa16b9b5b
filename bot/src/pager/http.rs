//! One POST (a JSON body to a pager, a file to an upload URL), and what
//! its answer means for a retry.

use super::PageError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// The longest one call may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The most of an answer read (enough for any error message).
const MAX_ANSWER: usize = 64 * 1024;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// An HTTPS (or, for a local receiver, plain HTTP) client.
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Http {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Http {
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }
}

impl Http {
    /// POSTs `body` to `url` with `headers`; `Ok` on a 2xx answer. A 429,
    /// a 5xx, a 408, a timeout or a broken connection is worth a retry;
    /// any other answer is the pager refusing the call, with its reason.
    /// Headers are never logged (they carry keys).
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &Value,
    ) -> Result<(), PageError> {
        self.post(
            url,
            "application/json",
            headers,
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// POSTs `body` of `content_type` to `url`, like [`Http::post_json`].
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(), PageError> {
        let retry = |why: String| PageError::Retry { after: None, why };
        let mut req = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("holdpoint-bot/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| PageError::Refused(format!("cannot build the request: {e}")))?;
        let answer = match tokio::time::timeout(TIMEOUT, self.client.request(req)).await {
            Err(_) => return Err(retry(format!("no answer in {} s", TIMEOUT.as_secs()))),
            Ok(Err(e)) => return Err(retry(format!("cannot reach it: {e}"))),
            Ok(Ok(a)) => a,
        };
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let text = match tokio::time::timeout(
            TIMEOUT,
            Limited::new(answer.into_body(), MAX_ANSWER).collect(),
        )
        .await
        {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            _ => String::new(),
        };
        let text = crate::view::cut(text.trim(), 500);
        if status.is_success() {
            return Ok(());
        }
        let why = format!("HTTP {}: {text}", status.as_u16());
        if status.as_u16() == 429 {
            return Err(PageError::Retry {
                after: retry_after.or(Some(Duration::from_secs(1))),
                why,
            });
        }
        if status.is_server_error() || status.as_u16() == 408 {
            return Err(PageError::Retry {
                after: retry_after,
                why,
            });
        }
        Err(PageError::Refused(why))
    }
}
