//! A TCP proxy that misbehaves on demand, to break the network between a
//! runner and the bot without touching either: it cuts connections, refuses
//! new ones, delays what it forwards, and holds it back (a link that is
//! down and comes back: TCP delivers what was sent, late).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Faults {
    /// New connections are closed at once.
    refuse: AtomicBool,
    /// Nothing is forwarded while set (it waits, it is not lost).
    hold: AtomicBool,
    /// Milliseconds each forwarded chunk waits first.
    delay_ms: AtomicU64,
}

/// A TCP proxy whose connections can be cut, refused, delayed and held.
pub struct Proxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
}

/// Copies `from` to `to` under the proxy's faults, until either ends.
fn pump(mut from: TcpStream, mut to: TcpStream, faults: Arc<Faults>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while faults.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let delay = faults.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Faults::default());
        let (c2, s2, f2) = (conns.clone(), stop.clone(), faults.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if f2.refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let Ok(mut g) = c2.lock() {
                    g.extend(client.try_clone().ok());
                    g.extend(server.try_clone().ok());
                }
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (fa, fb) = (f2.clone(), f2.clone());
                std::thread::spawn(move || pump(client, server, fa));
                std::thread::spawn(move || pump(server2, client2, fb));
            }
        });
        Proxy {
            port,
            conns,
            stop,
            faults,
        }
    }

    /// Cuts every open connection; returns how many were cut.
    pub fn cut(&self) -> usize {
        let mut g = self.conns.lock().expect("proxy lock");
        let n = g.len() / 2;
        for s in g.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        n
    }

    /// While `on`, new connections are closed as soon as they are made.
    pub fn refuse(&self, on: bool) {
        self.faults.refuse.store(on, Ordering::SeqCst);
    }

    /// While `on`, nothing is forwarded either way; what was sent is
    /// delivered when it is turned off.
    pub fn hold(&self, on: bool) {
        self.faults.hold.store(on, Ordering::SeqCst);
    }

    /// Every forwarded chunk waits `d` first (zero: none).
    pub fn delay(&self, d: Duration) {
        self.faults
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.hold(false);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
