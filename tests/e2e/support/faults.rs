//! An HTTP/1.1 fault-injecting proxy in front of a real registry. Per request it forwards,
//! or answers 429 (with Retry-After) or 503 itself, or cuts a PATCH halfway through its
//! body (a reset mid-upload). Rules are deterministic ("every n-th"), so tests are too.
//! It can also ration manifest GETs the way Docker Hub does: `RateLimit-Limit: N;w=W` and
//! `RateLimit-Remaining: R;w=W` on manifest responses, and 429 without Retry-After past the
//! budget (HEADs are free).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
pub struct Faults {
    /// Every n-th bodiless request gets 429 with `Retry-After: 1` (0: never).
    pub every_429: AtomicU64,
    /// Every n-th bodiless request gets 503 (0: never).
    pub every_503: AtomicU64,
    /// Every n-th PATCH is cut after half its body (0: never), at most `max_resets` times:
    /// Distribution invalidates a cut upload, so a link that cuts every few chunks forever
    /// would let no blob larger than a few chunks through, with any tool.
    pub every_patch_reset: AtomicU64,
    pub max_resets: AtomicU64,
    /// When not 0: every manifest PUT gets 503 with `Retry-After:` this many seconds, its body
    /// read and dropped (a registry in maintenance, as a member's write meets it).
    pub manifest_put_503: AtomicU64,
    /// Manifest PUTs answered 503 that way.
    pub manifest_puts_refused: AtomicU64,
    /// When not 0: the next closing blob-upload PUT gets 503 with `Retry-After:` this many
    /// seconds (once; the value is cleared when used).
    pub upload_put_503: AtomicU64,
    /// Sent as `RateLimit-Reset:` beside rationed answers' budget headers, verbatim.
    pub rate_reset: std::sync::Mutex<Option<String>>,
    /// Answer 401 to the catalog, as most public registries do.
    pub deny_catalog: std::sync::atomic::AtomicBool,
    pub requests: AtomicU64,
    pub bodiless: AtomicU64,
    pub patches: AtomicU64,
    pub injected_429: AtomicU64,
    pub injected_503: AtomicU64,
    pub resets: AtomicU64,
    /// Manifest GETs allowed per window (0: no rationing), and the window in seconds.
    pub pull_budget: AtomicU64,
    pub pull_window_secs: AtomicU64,
    /// Manifest GETs counted against the budget, and those refused with 429.
    pub pulls_counted: AtomicU64,
    pub pulls_refused: AtomicU64,
    window: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl Faults {
    /// For a manifest request: the budget's (limit, remaining, window) after counting it,
    /// and whether it is refused. None when rationing is off or the request is not a manifest's.
    fn ration(&self, method: &str, path: &str) -> Option<(u64, u64, u64, bool)> {
        let limit = self.pull_budget.load(Ordering::SeqCst);
        if limit == 0 || !path.contains("/manifests/") {
            return None;
        }
        let secs = self.pull_window_secs.load(Ordering::SeqCst).max(1);
        let mut w = self.window.lock().unwrap();
        let now = std::time::Instant::now();
        let (start, spent) = w.get_or_insert((now, 0));
        if now.duration_since(*start).as_secs() >= secs {
            *start = now;
            *spent = 0;
        }
        if method != "GET" {
            return Some((limit, limit - *spent, secs, false));
        }
        if *spent >= limit {
            self.pulls_refused.fetch_add(1, Ordering::SeqCst);
            return Some((limit, 0, secs, true));
        }
        *spent += 1;
        self.pulls_counted.fetch_add(1, Ordering::SeqCst);
        Some((limit, limit - *spent, secs, false))
    }
}

pub struct FaultProxy {
    pub port: u16,
    pub faults: Arc<Faults>,
}

impl FaultProxy {
    pub fn start(upstream: String) -> Self {
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        let port = super::serve_tcp(move |client| {
            let (f, up) = (f.clone(), upstream.clone());
            async move {
                let _ = connection(client, up, f).await;
            }
        });
        FaultProxy { port, faults }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn injected(&self) -> u64 {
        let f = &self.faults;
        f.injected_429.load(Ordering::SeqCst)
            + f.injected_503.load(Ordering::SeqCst)
            + f.resets.load(Ordering::SeqCst)
    }
}

fn hit(every: &AtomicU64, n: u64) -> bool {
    let e = every.load(Ordering::SeqCst);
    e > 0 && n % e == e - 1
}

/// Read until the end of an HTTP head; returns it, leaving extra bytes in `buf`.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok(Some(std::mem::replace(buf, rest)));
        }
        let mut tmp = [0u8; 16384];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    })
}

/// Move exactly `n` bytes from `from` (after what is already in `buf`) to `to`.
async fn copy_n(
    from: &mut TcpStream,
    buf: &mut Vec<u8>,
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    mut n: u64,
) -> std::io::Result<()> {
    while n > 0 {
        if buf.is_empty() {
            let mut tmp = vec![0u8; 65536];
            let got = from.read(&mut tmp).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&tmp[..got]);
        }
        let take = (buf.len() as u64).min(n) as usize;
        to.write_all(&buf[..take]).await?;
        buf.drain(..take);
        n -= take as u64;
    }
    Ok(())
}

/// Forward a chunked body, chunk by chunk, up to and including the last (empty) chunk.
async fn copy_chunked(
    from: &mut TcpStream,
    buf: &mut Vec<u8>,
    to: &mut TcpStream,
) -> std::io::Result<()> {
    loop {
        let line = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = buf.drain(..pos + 2).collect();
                break line;
            }
            let mut tmp = [0u8; 4096];
            let got = from.read(&mut tmp).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&tmp[..got]);
        };
        to.write_all(&line).await?;
        let size = u64::from_str_radix(
            String::from_utf8_lossy(&line)
                .trim()
                .split(';')
                .next()
                .unwrap_or("0"),
            16,
        )
        .unwrap_or(0);
        copy_n(from, buf, to, size + 2).await?; // data and its CRLF (for the last chunk: the final CRLF)
        if size == 0 {
            return Ok(());
        }
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: String,
    f: Arc<Faults>,
) -> std::io::Result<()> {
    let mut server: Option<TcpStream> = None;
    let (mut cbuf, mut sbuf) = (Vec::new(), Vec::new());
    while let Some(head) = read_head(&mut client, &mut cbuf).await? {
        let text = String::from_utf8_lossy(&head).into_owned();
        let method = text.split_whitespace().next().unwrap_or("").to_owned();
        let body_len: u64 = header(&text, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        f.requests.fetch_add(1, Ordering::SeqCst);
        // Status faults go to bodiless requests only, counted among themselves, so "every
        // n-th" is deterministic whatever mix of uploads the client sends.
        let n = if body_len == 0 {
            f.bodiless.fetch_add(1, Ordering::SeqCst)
        } else {
            u64::MAX
        };
        if text
            .split_whitespace()
            .nth(1)
            .is_some_and(|p| p.starts_with("/v2/_catalog"))
            && f.deny_catalog.load(Ordering::SeqCst)
        {
            client.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 64\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"no catalog here\"}]}").await?;
            return client.shutdown().await;
        }
        if body_len == 0 && hit(&f.every_429, n) {
            f.injected_429.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 69\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down, please\"}]}").await?;
            return client.shutdown().await;
        }
        if body_len == 0 && hit(&f.every_503, n) {
            f.injected_503.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            return client.shutdown().await;
        }
        let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
        let wait = f.manifest_put_503.load(Ordering::SeqCst);
        if wait > 0 && method == "PUT" && path.contains("/manifests/") {
            copy_n(&mut client, &mut cbuf, &mut tokio::io::sink(), body_len).await?;
            f.manifest_puts_refused.fetch_add(1, Ordering::SeqCst);
            let rsp = format!("HTTP/1.1 503 Service Unavailable\r\nRetry-After: {wait}\r\nContent-Length: 0\r\n\r\n");
            client.write_all(rsp.as_bytes()).await?;
            continue;
        }
        if method == "PUT" && path.contains("/blobs/uploads/") {
            let wait = f.upload_put_503.swap(0, Ordering::SeqCst);
            if wait > 0 {
                copy_n(&mut client, &mut cbuf, &mut tokio::io::sink(), body_len).await?;
                let rsp = format!("HTTP/1.1 503 Service Unavailable\r\nRetry-After: {wait}\r\nContent-Length: 0\r\n\r\n");
                client.write_all(rsp.as_bytes()).await?;
                continue;
            }
        }
        let ration = f.ration(&method, &path);
        let reset = f.rate_reset.lock().unwrap().clone();
        let rate_headers = ration.map(|(l, r, w, _)| {
            let reset = reset.map(|v| format!("RateLimit-Reset: {v}\r\n"));
            format!(
                "RateLimit-Limit: {l};w={w}\r\nRateLimit-Remaining: {r};w={w}\r\n{}",
                reset.unwrap_or_default()
            )
        });
        if let Some((_, _, _, true)) = ration {
            let body = "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"pull rate limit reached\"}]}";
            let rsp = format!(
                "HTTP/1.1 429 Too Many Requests\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                rate_headers.unwrap_or_default(),
                body.len()
            );
            client.write_all(rsp.as_bytes()).await?;
            return client.shutdown().await;
        }
        if server.is_none() {
            server = Some(TcpStream::connect(&upstream).await?);
        }
        let up = server.as_mut().expect("connected");
        up.write_all(&head).await?;
        let may_reset = f.resets.load(Ordering::SeqCst) < f.max_resets.load(Ordering::SeqCst);
        if method == "PATCH"
            && body_len > 1
            && hit(
                &f.every_patch_reset,
                f.patches.fetch_add(1, Ordering::SeqCst),
            )
            && may_reset
        {
            // Half the body reaches the registry, then both connections die: a reset mid-upload.
            f.resets.fetch_add(1, Ordering::SeqCst);
            copy_n(&mut client, &mut cbuf, up, body_len / 2).await?;
            return Ok(());
        }
        copy_n(&mut client, &mut cbuf, up, body_len).await?;
        let Some(rhead) = read_head(up, &mut sbuf).await? else {
            return Ok(());
        };
        let rtext = String::from_utf8_lossy(&rhead).into_owned();
        match &rate_headers {
            // The head ends with an empty line: the rate-limit headers go just before it.
            Some(h) => {
                client
                    .write_all(format!("{}{h}\r\n", &rtext[..rtext.len() - 2]).as_bytes())
                    .await?
            }
            None => client.write_all(&rhead).await?,
        }
        let status: u16 = rtext
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let bodiless =
            method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        if !bodiless {
            if let Some(len) = header(&rtext, "content-length").and_then(|v| v.parse::<u64>().ok())
            {
                copy_n(up, &mut sbuf, &mut client, len).await?;
            } else if header(&rtext, "transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
            {
                copy_chunked(up, &mut sbuf, &mut client).await?;
            } else {
                // Body until close.
                client.write_all(&sbuf).await?;
                tokio::io::copy(up, &mut client).await?;
                return client.shutdown().await;
            }
        }
        if header(&rtext, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return client.shutdown().await;
        }
    }
    Ok(())
}
