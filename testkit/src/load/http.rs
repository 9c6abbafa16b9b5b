//! HTTP/1.1 over one keep-alive connection, enough for the bot's API.

use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// HTTP/1.1 over one keep-alive connection, enough for the bot's API.
pub struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Sent as `Cookie` with every request.
    pub cookie: Option<String>,
}

/// A response: status, headers, body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The values of every header called `name` (any case).
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first 300 characters of the body, for messages.
    pub fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        t.chars().take(300).collect()
    }
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            conn: None,
            cookie: None,
        }
    }

    /// One request; a kept-alive connection the server closed meanwhile is
    /// replaced once.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        loop {
            let reused = self.conn.is_some();
            if !reused {
                let s = TcpStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                self.conn = Some(BufReader::new(s));
            }
            match self.once(method, path, headers, body).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn = None;
                    // A kept-alive connection the server closed meanwhile:
                    // once more on a new one.
                    if !reused {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn once(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        use std::io::{Error, ErrorKind};
        let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(body);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::new(ErrorKind::NotConnected, "no connection"));
        };
        conn.get_mut().write_all(&wire).await?;

        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let headers = read_headers(conn).await?;
        let mut close = header(&headers, "connection").is_some_and(|v| v.contains("close"));
        let body = match read_body(conn, &headers, usize::MAX).await? {
            Some(body) => body,
            None if !(status == 204 || status == 304 || (100..200).contains(&status)) => {
                let mut body = Vec::new();
                conn.read_to_end(&mut body).await?;
                close = true;
                body
            }
            None => Vec::new(),
        };
        if close {
            self.conn = None;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Reads header lines up to the empty one.
pub(crate) async fn read_headers(
    conn: &mut BufReader<TcpStream>,
) -> std::io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed in the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(headers);
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// The first header called `name` (any case), lowercased.
pub(crate) fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_ascii_lowercase())
}

/// Reads a body framed by `headers` (chunked, or `Content-Length`) of at
/// most `max` bytes; `None` when the headers frame none.
pub(crate) async fn read_body(
    conn: &mut BufReader<TcpStream>,
    headers: &[(String, String)],
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::{Error, ErrorKind};
    let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
    let mut body = Vec::new();
    let mut line = String::new();
    if header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                return Ok(Some(body));
            }
            if body.len().saturating_add(size) > max {
                return Err(bad("body too large".into()));
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await?;
            line.clear();
            conn.read_line(&mut line).await?;
        }
    }
    let Some(n) = header(headers, "content-length") else {
        return Ok(None);
    };
    let n: usize = n
        .parse()
        .map_err(|_| bad(format!("bad content-length {n:?}")))?;
    if n > max {
        return Err(bad("body too large".into()));
    }
    body.resize(n, 0);
    conn.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Presses the button of the single-use login link's page (without
/// following its refresh) and keeps the session cookie.
pub async fn log_in(addr: SocketAddr, link: &str) -> Result<Http, String> {
    let token = link
        .split_once("/login?token=")
        .map(|(_, t)| t.trim())
        .ok_or_else(|| format!("not a login link: {link}"))?;
    let mut http = Http::new(addr);
    let origin = format!("http://{addr}");
    let r = http
        .send(
            "POST",
            "/login",
            &[
                ("Origin", origin.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            format!("token={token}").as_bytes(),
        )
        .await
        .map_err(|e| format!("POST /login: {e}"))?;
    let cookie = r
        .headers("set-cookie")
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .find(|c| c.starts_with("holdpoint_session="))
        .map(str::to_string);
    match cookie {
        Some(c) => {
            http.cookie = Some(c);
            Ok(http)
        }
        None => Err(format!(
            "POST /login answered {} without a holdpoint_session cookie: {}",
            r.status,
            r.text()
        )),
    }
}
