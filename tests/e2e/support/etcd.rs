//! A real etcd (`etcd-server` from Debian) on free loopback ports with a temporary data
//! folder: started, stopped and restarted by the tests (same ports and data on restart).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct TestEtcd {
    child: Option<Child>,
    pub port: u16,
    peer: u16,
    pub url: String,
    pub dir: TempDir,
    /// Server certificate and key: clients connect with https.
    tls: Option<(PathBuf, PathBuf)>,
    /// More `etcd` flags.
    pub args: Vec<String>,
}

impl TestEtcd {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    pub fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, peer) = (super::free_port(), super::free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut e = TestEtcd {
            child: None,
            port,
            peer,
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            tls,
            args: vec![],
        };
        e.resume();
        e
    }

    /// Started with more flags.
    pub fn start_args(args: &[&str]) -> Self {
        let mut e = Self::start();
        e.pause();
        e.args = args.iter().map(|a| (*a).to_owned()).collect();
        e.resume();
        e
    }

    /// Start (again) on the same ports and data; returns once it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("t={peer}"),
                "--log-level",
                "warn",
            ]);
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        cmd.args(&self.args);
        let child = cmd
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("etcd not found: run scripts/test.sh, or apt-get install -y etcd-server");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.tls.is_none() {
            // Answers once it has a leader.
            // With auth on, an anonymous health check is refused by a healthy etcd.
            let healthy = |r: Result<String, String>| {
                r.is_ok() || r.is_err_and(|e| e.contains("user name is empty"))
            };
            while !healthy(self.ctl(&["endpoint", "health"])) {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "etcd not healthy:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Stop it (SIGKILL: an etcd that vanishes, as in a crash or a partition).
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// `etcdctl` against this etcd (v3 API); its stdout, or stderr as the error.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.url,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "3s",
            ])
            .args(args)
            .output()
            .expect("etcdctl not found: apt-get install -y etcd-client");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Turn on authentication with user `root` and `password`.
    pub fn enable_auth(&self, password: &str) {
        self.ctl(&["user", "add", &format!("root:{password}")])
            .unwrap();
        self.ctl(&["auth", "enable"]).unwrap();
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.pause();
    }
}
