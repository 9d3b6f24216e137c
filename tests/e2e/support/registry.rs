//! A real CNCF Distribution registry (`docker-registry` from Debian) on a free loopback port,
//! with temporary storage, optional htpasswd or token auth, and optional TLS.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[derive(Default)]
pub struct RegistryOpts {
    /// htpasswd (bcrypt) user and password.
    pub basic: Option<(String, String)>,
    /// Token auth: realm URL, and the PEM of the certificate whose key signs tokens.
    pub token: Option<(String, PathBuf)>,
    /// Server certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Webhook notifications: POST push and delete events (pulls ignored) to this URL with
    /// `Authorization: Bearer <token>`.
    pub notify: Option<(String, String)>,
}

pub struct TestRegistry {
    child: Child,
    pub port: u16,
    pub url: String,
    pub dir: TempDir,
}

pub const TOKEN_SERVICE: &str = "ferry-test-registry";
pub const TOKEN_ISSUER: &str = "ferry-test-issuer";

impl TestRegistry {
    pub fn start() -> Self {
        Self::start_with(RegistryOpts::default())
    }

    pub fn start_with(opts: RegistryOpts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:0\n  secret: ferry-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &opts.tls {
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, pass)) = &opts.basic {
            let hash = bcrypt::hash(pass, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        if let Some((realm, cert)) = &opts.token {
            cfg += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            );
        }
        if let Some((url, token)) = &opts.notify {
            // Layers are ignored by media type, as in a real deployment: only manifests matter.
            cfg += &format!(
                "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: ferry\n      url: {url}\n      headers:\n        Authorization: [Bearer {token}]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n      ignoredmediatypes:\n        - application/octet-stream\n      ignore:\n        actions:\n          - pull\n"
            );
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let access_log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::from(access_log))
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry not found: run scripts/test.sh, or apt-get install -y docker-registry");
        let port = wait_for_listen(
            child.stderr.take().unwrap(),
            &dir.path().join("registry.log"),
        );
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        TestRegistry {
            child,
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Every log line (access log and app log) so far.
    /// Manifest PUTs (tags and digests) in the access log: what a run wrote.
    pub fn manifest_puts(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"PUT /v2/") && l.contains("/manifests/"))
            .count()
    }

    pub fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        s += &std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        s
    }

    /// Requests with this method seen so far (from the access log).
    pub fn requests(&self, method: &str) -> usize {
        let needle = format!("\"{method} /v2/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read stderr until Distribution says where it listens, then keep draining it to a file
/// (a full pipe would block the registry).
fn wait_for_listen(stderr: std::process::ChildStderr, log: &Path) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.to_owned();
    std::thread::spawn(move || {
        let mut out = std::fs::File::create(&log).unwrap();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(out, "{line}");
            if !sent {
                if let Some(pos) = line.find("listening on ") {
                    let rest = &line[pos + "listening on ".len()..];
                    let addr: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                        .collect();
                    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok())
                    {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(port) = rx.recv_timeout(Duration::from_millis(100)) {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start listening within 20s"
        );
    }
}

/// Run the `openssl` command in `dir`; its failure fails the test with openssl's words.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl not found: apt-get install -y openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` command.
pub struct TestCa {
    pub dir: TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-sha256",
                "-subj",
                "/CN=ferry-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let ca = TestCa { dir };
        ca.issue("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n");
        ca
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A client certificate (`clientAuth`) from this CA, for mutual TLS: (cert, key).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        self.issue(
            "client",
            "/CN=ops",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
    }

    /// A key and a certificate `NAME.key`/`NAME.crt` for `subject`, with these extensions,
    /// signed by this CA.
    fn issue(&self, name: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let (key, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(
            d,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", subject, "-keyout",
                &key, "-out", &csr,
            ],
        );
        std::fs::write(d.join(&extf), ext).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                &extf,
                "-out",
                &crt,
            ],
        );
        (d.join(crt), d.join(key))
    }
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        )
    }
}
