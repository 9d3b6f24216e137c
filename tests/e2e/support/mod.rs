//! Test support: real registries, generated images, a fault proxy, a token server, and a
//! runner for the `ferry` binary. Verification here talks to registries directly, never
//! through ferry, so a ferry bug cannot hide itself.

#![allow(dead_code)]

pub mod bloat;
pub mod cosign;
pub mod disk;
pub mod etcd;
pub mod faults;
pub mod fulcio;
pub mod hostile;
pub mod images;
pub mod proxy;
pub mod quirks;
pub mod receiver;
pub mod registry;
pub mod serve;
pub mod token;

pub use serve::serve_tcp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use base64::Engine;

/// reqwest is built without a default crypto provider (ferry picks ring); tests pick it too.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// Every file below `dir`, depth first.
/// Run `cmd` to its end, failing the test with its stderr unless it succeeded; its stdout.
pub fn succeeded(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?} {:?}: {}{}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A config folder for one test: `ferry.toml` plus `policies/*.toml`, and the state store.
pub struct Ferry {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Ferry {
    /// `registries` is the body of the main config after `[daemon]`; `chunk_size` is set small
    /// so tests cover multi-chunk uploads with small images.
    pub fn new(registries: &str, chunk_size: &str, policies: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(
            dir.path().join("ferry.toml"),
            format!("[daemon]\nstate_dir = \"state\"\npolicies = \"policies\"\nchunk_size = \"{chunk_size}\"\nmax_concurrent_blobs = 4\n\n{registries}"),
        )
        .unwrap();
        for (name, body) in policies {
            std::fs::write(dir.path().join("policies").join(name), body).unwrap();
        }
        Ferry {
            dir,
            env: Vec::new(),
        }
    }

    /// Add `lines` to the main config's `[daemon]` table.
    pub fn daemon_lines(&self, lines: &str) {
        let cfg = std::fs::read_to_string(self.config()).unwrap();
        let with = cfg.replacen("[daemon]\n", &format!("[daemon]\n{lines}"), 1);
        std::fs::write(self.config(), with).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("ferry.toml")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ferry_bin());
        c.arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run ferry");
        Run::from(out)
    }

    /// `plan --json`'s tags, over every repository and target planned.
    pub fn plan_tags(&self) -> Vec<serde_json::Value> {
        let run = self.run(&["plan", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("plan --json: {e}\n{}", run.all()));
        v.as_array()
            .expect("a list of plans")
            .iter()
            .flat_map(|p| p["tags"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry")
    }
}

/// The plan of tag `name` among `tags` (from `Ferry::plan_tags`).
pub fn tag_named<'a>(tags: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    tags.iter()
        .find(|t| t["tag"] == name)
        .unwrap_or_else(|| panic!("no tag {name} in {tags:#?}"))
}

/// A finished ferry process: exit code and both outputs.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// A number from the `sync` summary line, e.g. `summary("uploaded")`.
    pub fn summary(&self, word: &str) -> u64 {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("sync "))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.all()));
        let words: Vec<&str> = line
            .split([' ', ',', ';', ':'])
            .filter(|w| !w.is_empty())
            .collect();
        let i = words
            .iter()
            .position(|w| *w == word)
            .unwrap_or_else(|| panic!("`{word}` not in summary: {line}"));
        // The nearest number before the word: "14 tags copied" → 14.
        words[..i]
            .iter()
            .rev()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count before `{word}` in: {line}"))
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code; output:\n{}", self.all());
        self
    }
}

/// How a verifying client authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic(String, String),
    /// Token server realm, user, password.
    Token(String, String, String),
}

/// A direct registry reader for assertions.
pub struct Reader {
    pub url: String,
    pub http: reqwest::Client,
    pub auth: Auth,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

impl Reader {
    pub fn new(url: &str) -> Self {
        Self::with(url, Auth::None, None)
    }

    pub fn with(url: &str, auth: Auth, ca: Option<&Path>) -> Self {
        let mut b = http_client();
        if let Some(ca) = ca {
            b = b.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap(),
            );
        }
        Reader {
            url: url.to_owned(),
            http: b.build().unwrap(),
            auth,
        }
    }

    async fn header(&self, repo: &str) -> Option<String> {
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        match &self.auth {
            Auth::None => None,
            Auth::Basic(u, p) => Some(format!("Basic {}", b64(format!("{u}:{p}")))),
            Auth::Token(realm, u, p) => {
                let rsp = self
                    .http
                    .get(format!(
                        "{realm}?service={}&scope=repository:{repo}:pull",
                        registry::TOKEN_SERVICE
                    ))
                    .header(
                        "authorization",
                        format!("Basic {}", b64(format!("{u}:{p}"))),
                    )
                    .send()
                    .await
                    .unwrap();
                let v: serde_json::Value = rsp.json().await.unwrap();
                Some(format!("Bearer {}", v["token"].as_str().unwrap()))
            }
        }
    }

    async fn get(&self, repo: &str, path: &str, head: bool) -> reqwest::Response {
        let url = format!("{}/v2/{repo}/{path}", self.url);
        let mut req = if head {
            self.http.head(url)
        } else {
            self.http.get(url)
        }
        .header("accept", ACCEPT);
        if let Some(h) = self.header(repo).await {
            req = req.header("authorization", h);
        }
        req.send().await.unwrap()
    }

    /// A manifest's exact bytes, or None.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let rsp = self
            .get(repo, &format!("manifests/{reference}"), false)
            .await;
        rsp.status().is_success().then_some(())?;
        Some(rsp.bytes().await.unwrap().to_vec())
    }

    /// The digest of a manifest's exact bytes, or None.
    pub async fn digest(&self, repo: &str, reference: &str) -> Option<String> {
        self.manifest(repo, reference)
            .await
            .map(|b| images::sha256(&b))
    }

    pub async fn blob_size(&self, repo: &str, digest: &str) -> Option<u64> {
        let rsp = self.get(repo, &format!("blobs/{digest}"), true).await;
        rsp.status().is_success().then(|| {
            rsp.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
    }

    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let rsp = self.get(repo, &format!("blobs/{digest}"), false).await;
        assert!(
            rsp.status().is_success(),
            "GET blob {repo}@{digest}: {}",
            rsp.status()
        );
        rsp.bytes().await.unwrap().to_vec()
    }

    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let rsp = self.get(repo, "tags/list", false).await;
        if !rsp.status().is_success() {
            return vec![];
        }
        let v: serde_json::Value = rsp.json().await.unwrap();
        let mut t: Vec<String> = v["tags"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        t.sort();
        t
    }
}

/// The target holds `repo:tag` with the same bytes (so the same digest) as the source, and
/// every blob and child manifest it references, with the right sizes.
pub async fn assert_same_image(
    src: &Reader,
    dst: &Reader,
    src_repo: &str,
    dst_repo: &str,
    tag: &str,
) {
    let a = src
        .manifest(src_repo, tag)
        .await
        .unwrap_or_else(|| panic!("source lacks {src_repo}:{tag}"));
    let b = dst
        .manifest(dst_repo, tag)
        .await
        .unwrap_or_else(|| panic!("target lacks {dst_repo}:{tag}"));
    assert_eq!(
        images::sha256(&a),
        images::sha256(&b),
        "{dst_repo}:{tag}: digests differ"
    );
    assert_eq!(a, b, "{dst_repo}:{tag}: bytes differ");
    let mut queue = vec![b];
    while let Some(m) = queue.pop() {
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        for child in v["manifests"].as_array().into_iter().flatten() {
            let d = child["digest"].as_str().unwrap();
            let body = dst
                .manifest(dst_repo, d)
                .await
                .unwrap_or_else(|| panic!("target lacks child {dst_repo}@{d}"));
            assert_eq!(images::sha256(&body), d);
            queue.push(body);
        }
        let blobs = v["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(v.get("config"));
        for desc in blobs {
            let d = desc["digest"].as_str().unwrap();
            let size = desc["size"].as_u64().unwrap();
            assert_eq!(
                dst.blob_size(dst_repo, d).await,
                Some(size),
                "blob {dst_repo}@{d}"
            );
        }
    }
}

/// Poll `f` every 20 ms until it is true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Poll an async condition every 50 ms until it holds or `secs` pass.
pub async fn wait_for<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET on the daemon's endpoints: (status, body), or None when nothing answers.
pub async fn daemon_get(port: u16, path: &str) -> Option<(u16, String)> {
    let rsp = http_client()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    Some((rsp.status().as_u16(), rsp.text().await.ok()?))
}

/// A running `ferry daemon`, its log in a file (a pipe nobody reads could fill and block it).
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(ferry: &Ferry, port: u16, log_name: &str) -> Self {
        let log = ferry.path().join(log_name);
        let file = std::fs::File::create(&log).unwrap();
        let child = ferry
            .command(&["daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn ferry daemon");
        Daemon { child, port, log }
    }

    pub async fn ready(&self) -> bool {
        wait_for(20, || async {
            daemon_get(self.port, "/readyz")
                .await
                .is_some_and(|(s, _)| s == 200)
        })
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code and how long the stop took.
    pub fn stop(mut self) -> (i32, std::time::Duration) {
        let start = std::time::Instant::now();
        signal(&self.child, "TERM");
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), start.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// One sample of the daemon's `/metrics` (first match of name and label), parsed as
/// Prometheus text; None when absent.
pub async fn metric(port: u16, name: &str, label: (&str, &str)) -> Option<f64> {
    let (_, body) = daemon_get(port, "/metrics").await?;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name && (label.0.is_empty() || s.labels.get(label.0) == Some(label.1))
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            _ => -1.0,
        })
}

/// POST to the daemon: (status, body). `token`: the bearer token to send, if any.
pub async fn daemon_post(
    port: u16,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let mut req = http_client()
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let rsp = req.send().await.expect("daemon answers");
    (rsp.status().as_u16(), rsp.text().await.unwrap_or_default())
}
