//! The bot's listener: it accepts TCP connections, speaks TLS when `[tls]`
//! is configured (the files are read again on SIGHUP), and bounds what a
//! client may cost before it has sent a request: the TLS handshake and the
//! request head each have a deadline, and the head has a size limit
//! (beyond it hyper answers 431). Each request carries the client's address
//! ([`Peer`]): the peer's, or, when the peer is a trusted reverse proxy, the
//! nearest untrusted address in its `X-Forwarded-For`.

use crate::config::TlsConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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
    proxies: Arc<TrustedProxies>,
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
        let proxies = proxies.clone();
        conns.spawn(async move {
            match tls {
                None => connection(TokioIo::new(tcp), peer, proxies, app, timeout, stop).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        connection(TokioIo::new(stream), peer, proxies, app, timeout, stop).await
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
    proxies: Arc<TrustedProxies>,
    app: Router,
    timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let client = proxies.client(peer.ip(), req.headers());
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(Client(client));
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

/// The client's address as the listener resolved it (see [`TrustedProxies`]).
#[derive(Debug, Clone, Copy)]
struct Client(IpAddr);

/// The address of the client, when the request came through this listener
/// (in-process requests in tests have none): the peer's address, or the
/// client a trusted proxy forwarded for.
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<Client>().map(|c| c.0)))
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

/// A network, `ADDRESS/PREFIX` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a bare address (a network of one).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or ADDRESS/PREFIX network"))?;
        let addr = unmapped(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("{text:?}: the prefix must be a number from 0 to {max}")
                })?,
            };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, unmapped(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is the IPv4 one.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `trusted_proxies`: the reverse proxies in front of the bot. A request
/// from one of them is attributed to the address its `X-Forwarded-For`
/// names, read from the right: each trusted hop is skipped, and the first
/// address that is not a trusted proxy is the client. A request from any
/// other address is its peer's, whatever it says, so that a client cannot
/// choose the address it is throttled as. Empty (the default): the header
/// is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client of a request that `peer` sent with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let peer = unmapped(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, is one list.
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else {
                // Not text: nothing in it can be believed.
                return peer;
            };
            hops.extend(text.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop_address(hop) else {
                // A hop that is not an address: the last trusted proxy
                // received it from someone it cannot name; that proxy
                // is all we know.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port
/// (`203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(unmapped)
}

#[cfg(test)]
mod proxies {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| IpNet::parse(n).unwrap()).collect())
    }

    #[test]
    fn networks_parse_and_contain_their_addresses() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(IpNet::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!IpNet::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "proxy",
            "10.0.0.0/x",
            "",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_client_that_is_not_a_trusted_proxy_cannot_choose_its_address() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = forwarded(&["198.51.100.1"]);
        assert_eq!(t.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        // With no proxies configured the header is never read.
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
        // The client put a forged address first; the proxy appended the
        // real one: the rightmost untrusted address counts.
        let h = forwarded(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // Two trusted hops, and headers split over two lines.
        let h = forwarded(&["203.0.113.7, 10.0.0.5", "fd00::9"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // Ports and brackets.
        let h = forwarded(&["[2001:db8::1]:4711"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("2001:db8::1"));
        let h = forwarded(&["203.0.113.7:80"]);
        assert_eq!(t.client(ip("::ffff:10.0.0.2"), &h), ip("203.0.113.7"));
    }

    #[test]
    fn garbage_in_the_header_stops_at_the_last_trusted_proxy() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = forwarded(&["203.0.113.7, unknown, 10.0.0.3"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.0.0.3"));
        let h = forwarded(&["203.0.113.7, , 10.0.0.3"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.0.0.3"));
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        // Only trusted hops: the farthest of them.
        let h = forwarded(&["10.9.9.9, 10.0.0.3"]);
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
    }
}
