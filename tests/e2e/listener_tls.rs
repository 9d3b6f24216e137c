//! The daemon's listener over TLS (rustls), checked with curl: the certificate from a test
//! CA, plain HTTP refused, mutual TLS when a client CA is set, and `ferry status` beside the
//! daemon trusting the CA the config names.

use std::process::Command;

use crate::support::registry::{TestCa, TestRegistry};
use crate::support::{free_port, wait_until, Daemon, Ferry};

/// curl's exit code and body for `url` with these extra arguments.
fn curl(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

fn daemon_with(tls: &str, port: u16, src: &str, dst: &str) -> Ferry {
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{src}\"\n[registries.dst]\nurl = \"{dst}\"\n"),
        "1MiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\nschedule = \"0 0 1 1 *\"\n")],
    );
    std::fs::write(f.path().join("admin"), "admin-token-0123456789abcdef").unwrap();
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\napi_token_file = \"admin\"\n{tls}"
    ));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_tls_and_mutual_tls_when_asked() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let ca = TestCa::new();
    let (cert, key) = ca.server();
    let cacert = ca.ca().display().to_string();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let tls = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_ca_file = \"{cacert}\"\n",
        cert.display(),
        key.display()
    );
    let f = daemon_with(&tls, port, &src.url, &dst.url);
    let d = Daemon::start(&f, port, "daemon.log");
    assert!(
        wait_until(20, || curl(&url, &["--cacert", &cacert]).0 == 0),
        "{}",
        d.log()
    );
    assert_eq!(curl(&url, &["--cacert", &cacert]).1, "ok\n");
    assert_ne!(curl(&url, &[]).0, 0, "an unknown CA is refused");
    assert_ne!(
        curl(&format!("http://127.0.0.1:{port}/healthz"), &[]).1,
        "ok\n",
        "no plain HTTP"
    );
    // `ferry status` beside the daemon reads its /status over TLS, trusting tls_ca_file.
    let status = f.run(&["status"]);
    status.assert_code(0);
    assert!(status.stdout.contains("p"), "{}", status.all());
    assert_eq!(d.stop().0, 0);

    // Mutual TLS: no client certificate, no answer.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let mtls = format!("{tls}tls_client_ca_file = \"{cacert}\"\n");
    let f = daemon_with(&mtls, port, &src.url, &dst.url);
    let (ccert, ckey) = ca.client();
    let (ccert, ckey) = (ccert.display().to_string(), ckey.display().to_string());
    let d = Daemon::start(&f, port, "daemon.log");
    let with_cert = [
        "--cacert",
        cacert.as_str(),
        "--cert",
        ccert.as_str(),
        "--key",
        ckey.as_str(),
    ];
    assert!(
        wait_until(20, || curl(&url, &with_cert).0 == 0),
        "{}",
        d.log()
    );
    assert_eq!(curl(&url, &with_cert).1, "ok\n");
    assert_ne!(
        curl(&url, &["--cacert", &cacert]).1,
        "ok\n",
        "a client without a certificate"
    );
    // The CLI beside it: without a certificate of its own it is refused, and validate said so.
    let warned = f.run(&["validate"]);
    assert!(
        warned.all().contains("set daemon.tls_client_cert_file"),
        "{}",
        warned.all()
    );
    assert_ne!(f.run(&["status"]).code, 0);
    f.daemon_lines(&format!(
        "tls_client_cert_file = \"{ccert}\"\ntls_client_key_file = \"{ckey}\"\n"
    ));
    let status = f.run(&["status"]);
    status.assert_code(0);
    assert!(!f
        .run(&["validate"])
        .all()
        .contains("no certificate to present"));
    assert_eq!(d.stop().0, 0);
}

#[test]
fn tls_mistakes_and_an_exposed_plain_listener_are_named_by_validate() {
    let f = daemon_with(
        "tls_cert_file = \"nope.crt\"\n",
        9,
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("give tls_cert_file and tls_key_file together"),
        "{}",
        run.all()
    );
    let f = daemon_with("", 9, "http://127.0.0.1:1", "http://127.0.0.1:2");
    let cfg = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(
        f.config(),
        cfg.replace("listen = \"127.0.0.1:9\"", "listen = \"0.0.0.0:9464\""),
    )
    .unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(
        run.all().contains("reachable from other hosts without TLS"),
        "{}",
        run.all()
    );
}

/// One peer cannot hold every connection slot: past 64 its new connections are closed,
/// while others (here 127.0.0.1) are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_connection() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let port = free_port();
    let f = daemon_with("", port, &src.url, &dst.url);
    let d = Daemon::start(&f, port, "daemon.log");
    assert!(d.ready().await, "{}", d.log());
    let from = |ip: [u8; 4]| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
        s.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(from([127, 0, 0, 2]).await);
    }
    let ask = |mut c: tokio::net::TcpStream| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await;
        let mut buf = [0u8; 12];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf)).await;
        matches!(n, Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200"))
    };
    assert!(
        !ask(from([127, 0, 0, 2]).await).await,
        "the 65th connection of one peer"
    );
    assert!(ask(from([127, 0, 0, 3]).await).await, "another peer");
    assert!(ask(from([127, 0, 0, 1]).await).await, "a local proxy");
    drop(held);
    assert_eq!(d.stop().0, 0);
}

/// A renewed certificate pair, written over the configured files, serves the next
/// connection after a reload (SIGHUP), without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (old, renewed) = (TestCa::new(), TestCa::new());
    let port = free_port();
    let f = daemon_with(
        "tls_cert_file = \"tls.crt\"\ntls_key_file = \"tls.key\"\n",
        port,
        &src.url,
        &dst.url,
    );
    let install = |ca: &TestCa| {
        let (c, k) = ca.server();
        std::fs::copy(c, f.path().join("tls.crt")).unwrap();
        std::fs::copy(k, f.path().join("tls.key")).unwrap();
    };
    install(&old);
    let d = Daemon::start(&f, port, "daemon.log");
    let url = format!("https://127.0.0.1:{port}/healthz");
    let trusts = |ca: &TestCa| curl(&url, &["--cacert", &ca.ca().display().to_string()]).0 == 0;
    assert!(wait_until(20, || trusts(&old)), "{}", d.log());
    assert!(!trusts(&renewed));
    install(&renewed);
    crate::support::signal(&d.child, "HUP");
    assert!(wait_until(20, || trusts(&renewed)), "{}", d.log());
    assert!(!trusts(&old), "the old certificate is no longer served");
    assert_eq!(d.stop().0, 0);
}
