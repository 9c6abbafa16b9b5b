//! The bot's listener: it accepts TCP connections, speaks TLS when `[tls]`
//! is configured (the files are read again on SIGHUP), and bounds what a
//! client may cost before it has sent a request: the TLS handshake and the
//! request head each have a deadline, and the head has a size limit
//! (beyond it hyper answers 431). Each request carries the peer's address
//! as [`axum::extract::ConnectInfo`].

use crate::config::TlsConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The read buffer of a connection, and so about the largest request head
/// (request line and headers) accepted; hyper may read up to twice this
/// before it answers 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {0}: {1}")]
    Cert(String, String),
    #[error("cannot read the key file {0}: {1}")]
    Key(String, String),
    #[error("the certificate file {0} holds no certificate")]
    NoCert(String),
    #[error("the certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS side of the listener: the current acceptor, replaced on reload.
pub struct Tls {
    files: TlsConfig,
    current: RwLock<tokio_rustls::TlsAcceptor>,
}

fn acceptor(files: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert_name = files.cert_file.display().to_string();
    let key_name = files.key_file.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_name));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| TlsError::Key(key_name, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    /// Reads the certificate and key.
    pub fn load(files: &TlsConfig) -> Result<Tls, TlsError> {
        Ok(Tls {
            files: files.clone(),
            current: RwLock::new(acceptor(files)?),
        })
    }

    /// Reads the files again; on an error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.files)?;
        match self.current.write() {
            Ok(mut g) => *g = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Reloads `tls` on every SIGHUP.
pub async fn reload_on_hangup(tls: Arc<Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the TLS files are read only at start");
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate and key"),
                Err(e) => tracing::error!("kept the old TLS certificate: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// connections finish for a while. `timeout` bounds the TLS handshake and
/// each request head (slowloris), and how long a kept-alive connection
/// may wait for its next request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Decisions are small frames that must leave at once, not wait for
        // the runner's delayed acknowledgement of the previous frame.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        let stop = stop_rx.clone();
        conns.spawn(async move {
            match tls {
                None => connection(TokioIo::new(tcp), peer, app, timeout, stop).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        connection(TokioIo::new(stream), peer, app, timeout, stop).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
        // Forget finished connections as we go.
        while conns.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
}

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = http
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The address of the client, when the request came through this listener
/// (in-process requests in tests have none).
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl Peer {
    /// The 429 for an address that failed too often, if this one did.
    pub fn throttled(&self, bot: &crate::core::Bot) -> Option<axum::response::Response> {
        use axum::response::IntoResponse;
        let wait = bot.auth_throttled(self.0?)?;
        Some(
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, wait.to_string())],
                format!("too many failed attempts from this address; try again in {wait} s\n"),
            )
                .into_response(),
        )
    }

    /// Counts a failed attempt from this address.
    pub fn failed(&self, bot: &crate::core::Bot) {
        if let Some(ip) = self.0 {
            bot.auth_failed_from(ip);
        }
    }
}
