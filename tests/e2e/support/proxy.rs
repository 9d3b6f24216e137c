//! A TCP proxy in front of a real registry: counts the bytes clients send through it, can
//! slow the client→registry direction to a given rate, and can cut every open connection.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
pub struct ProxyStats {
    pub upstream_bytes: AtomicU64,
    /// Bytes/s for client→registry; 0 = unlimited.
    pub rate: AtomicU64,
    pub cut: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    pub stats: Arc<ProxyStats>,
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `upstream` (host:port). Runs on its own
    /// thread and runtime, so tests can drive it from blocking code.
    pub fn start(upstream: String) -> Self {
        let stats = Arc::new(ProxyStats::default());
        let st = stats.clone();
        let port = super::serve_tcp(move |client| {
            let (st, upstream) = (st.clone(), upstream.clone());
            async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    pipe(client, server, st).await;
                }
            }
        });
        Proxy { port, stats }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn sent(&self) -> u64 {
        self.stats.upstream_bytes.load(Ordering::SeqCst)
    }
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.stats.rate.store(bytes_per_sec, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, server: TcpStream, st: Arc<ProxyStats>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = {
        let st = st.clone();
        async move {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                if st.cut.load(Ordering::SeqCst) {
                    break;
                }
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                st.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst);
                let rate = st.rate.load(Ordering::SeqCst);
                if rate > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
            }
            let _ = sw.shutdown().await;
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
