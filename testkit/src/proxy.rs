//! A TCP proxy whose connections can be cut.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP proxy whose connections can be cut, to break a websocket mid-wait
/// without touching the bot.
pub struct Proxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                if let Ok(mut g) = c2.lock() {
                    g.extend(client.try_clone().ok());
                    g.extend(server.try_clone().ok());
                }
                let (mut a, mut b) = (client, server);
                let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b2, &mut a2);
                    let _ = a2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, conns, stop }
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
