//! Cluster mode: several real `ferry daemon` processes coordinate through a real etcd and
//! share the policies; each tag is written once (counted in the target's access log), a
//! killed member's policies move within its lease TTL, SIGTERM hands over at once, and an
//! etcd outage longer than the lease is survived.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::etcd::TestEtcd;
use crate::support::images::{self, Format, Pusher};
use crate::support::registry::{RegistryOpts, TestRegistry};
use crate::support::{
    daemon_get, daemon_post, free_port, metric, signal, wait_for, wait_until, Daemon, Ferry, Reader,
};

const TOKEN: &str = "test-token-0123456789abcdef";
const NEVER: &str = "0 0 1 1 *";

/// A member's folder: its own state store and listener, the shared registries and policies.
pub(crate) fn member(
    name: &str,
    etcd: &str,
    ttl: &str,
    src: &str,
    dst: &str,
    port: u16,
    policies: &[(String, String)],
) -> Ferry {
    let regs = format!(
        "[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\n\n[cluster]\netcd = [\"{etcd}\"]\nmember = \"{name}\"\nlease_ttl = \"{ttl}\"\n"
    );
    let files: Vec<(&str, &str)> = policies
        .iter()
        .map(|(f, b)| (f.as_str(), b.as_str()))
        .collect();
    let f = Ferry::new(&regs, "1MiB", &files);
    std::fs::write(f.path().join("token"), format!("{TOKEN}\n")).unwrap();
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\napi_token_file = \"token\"\nstop_timeout = \"5s\"\n"
    ));
    f
}

/// Policy `p{i}` copies repository `r{i}`: on events (schedule never comes) or every 2 s.
pub(crate) fn policy(i: usize, events: bool) -> (String, String) {
    let trigger = if events {
        format!("schedule = \"{NEVER}\"\nevents = true")
    } else {
        "interval = \"2s\"".to_owned()
    };
    (
        format!("p{i}.toml"),
        format!("[[policy]]\nname = \"p{i}\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"r{i}\"]\n{trigger}\n"),
    )
}

pub(crate) fn small(seed: u64) -> images::Image {
    images::image(
        Format::Oci,
        &[&images::layer(seed, 8_000)],
        "amd64",
        None,
        &format!("n{seed}"),
    )
}

/// Tag writes (`PUT /v2/REPO/manifests/TAG`) per repo:tag in a registry's access log.
pub(crate) fn tag_writes(r: &TestRegistry) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for line in r.log().lines() {
        let Some(rest) = line.split("\"PUT /v2/").nth(1) else {
            continue;
        };
        let path = rest.split(' ').next().unwrap_or("");
        if let Some((repo, tag)) = path.split_once("/manifests/") {
            if !tag.starts_with("sha256:") {
                *out.entry(format!("{repo}:{tag}")).or_default() += 1;
            }
        }
    }
    out
}

/// Within `secs`, the target has every `(repository, tag)`.
async fn arrive(secs: u64, dst: &Reader, tags: &[(String, &str)]) -> bool {
    wait_for(secs, || async {
        for (repo, tag) in tags {
            if dst.manifest(repo, tag).await.is_none() {
                return false;
            }
        }
        true
    })
    .await
}

/// `GET /v1/runs/{id}` (it needs the API token).
async fn run_view(port: u16, id: u64) -> String {
    let c = crate::support::http_client().build().unwrap();
    let rsp = c
        .get(format!("http://127.0.0.1:{port}/v1/runs/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    rsp.text().await.unwrap()
}

pub(crate) async fn status(port: u16) -> serde_json::Value {
    let (_, body) = daemon_get(port, "/status").await.expect("status answers");
    serde_json::from_str(&body).unwrap()
}

/// Policies each member holds, from one member's `/status` read as the API's own type.
pub(crate) async fn holders(port: u16) -> Vec<(String, Vec<String>)> {
    let (_, body) = daemon_get(port, "/status").await.expect("status answers");
    let doc: ferry::api::StatusDoc = serde_json::from_str(&body).unwrap();
    doc.cluster
        .map(|c| c.members.into_iter().map(|m| (m.name, m.holds)).collect())
        .unwrap_or_default()
}

/// `members` live, `units` policies held once each, each by the member rendezvous hashing
/// gives it to (a handover in progress does not count).
pub(crate) async fn all_held(port: u16, members: usize, units: usize) -> bool {
    let h = holders(port).await;
    let all: BTreeSet<&String> = h.iter().flat_map(|(_, u)| u).collect();
    let settled = status(port).await["cluster"]["members"]
        .as_array()
        .is_some_and(|a| a.iter().all(|m| m["holds"] == m["owns"]));
    settled
        && h.len() == members
        && all.len() == units
        && h.iter().map(|(_, u)| u.len()).sum::<usize>() == units
}

#[tokio::test]
async fn three_members_share_nine_policies_write_each_tag_once_and_fail_over() {
    let etcd = TestEtcd::start();
    let ports = [free_port(), free_port(), free_port()];
    // The source notifies member c only: events for policies a or b own cross over etcd.
    let src = TestRegistry::start_with(RegistryOpts {
        notify: Some((
            format!("http://127.0.0.1:{}/v1/events/distribution/src", ports[2]),
            TOKEN.into(),
        )),
        ..RegistryOpts::default()
    });
    let dst = TestRegistry::start();
    let policies: Vec<(String, String)> = (0..9).map(|i| policy(i, i < 6)).collect();
    let names = ["a", "b", "c"];
    let folders: Vec<Ferry> = names
        .iter()
        .zip(ports)
        .map(|(n, p)| member(n, &etcd.url, "6s", &src.url, &dst.url, p, &policies))
        .collect();
    let mut daemons: Vec<Option<Daemon>> = folders
        .iter()
        .zip(ports)
        .map(|(f, p)| Some(Daemon::start(f, p, "daemon.log")))
        .collect();
    for d in daemons.iter().flatten() {
        assert!(d.ready().await, "{}", d.log());
    }
    assert!(
        wait_for(20, || all_held(ports[0], 3, 9)).await,
        "policies not spread: {:?}\n{}",
        holders(ports[0]).await,
        daemons[0].as_ref().unwrap().log()
    );
    let spread = holders(ports[0]).await;
    assert!(
        spread.iter().all(|(_, u)| !u.is_empty()),
        "a member owns nothing: {spread:?}"
    );
    // Started together, the members waited for each other: nothing was taken and handed over.
    let handovers: usize = daemons
        .iter()
        .flatten()
        .map(|d| d.log().matches("policy handed over").count())
        .sum();
    assert_eq!(handovers, 0, "start-up churn");

    let mut push = Pusher::new(&src.url);
    for i in 0..9 {
        for (t, tag) in ["v1", "v2"].iter().enumerate() {
            push.image(&format!("r{i}"), tag, &small((i * 10 + t) as u64))
                .await;
        }
    }
    let d = Reader::new(&dst.url);
    let all: Vec<(String, &str)> = (0..9)
        .flat_map(|i| [(format!("r{i}"), "v1"), (format!("r{i}"), "v2")])
        .collect();
    let arrived = arrive(30, &d, &all).await;
    let log_files: Vec<std::path::PathBuf> =
        daemons.iter().flatten().map(|d| d.log.clone()).collect();
    let logs = || {
        log_files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(arrived, "not every tag arrived:\n{}", logs());
    // Every event handed over through etcd was done and its key deleted.
    assert!(
        wait_for(10, || async {
            status(ports[0]).await["cluster"]["events_waiting"] == 0
        })
        .await,
        "{}",
        status(ports[0]).await
    );
    let writes = tag_writes(&dst);
    assert_eq!(writes.len(), 18, "{writes:?}");
    assert!(
        writes.values().all(|n| *n == 1),
        "a tag written more than once: {writes:?}"
    );
    assert_eq!(
        metric(ports[1], "ferry_cluster_members", ("", "")).await,
        Some(3.0)
    );
    let fenced: f64 = {
        let mut n = 0.0;
        for p in ports {
            n += metric(p, "ferry_cluster_fence_checks_total", ("outcome", "ok"))
                .await
                .unwrap_or(0.0);
        }
        n
    };
    assert!(fenced >= 18.0, "every tag write is fenced: {fenced} checks");

    // A run asked for on a member that does not own the policy: done by its owner, reported here.
    let owner_of = |p: &str| {
        spread
            .iter()
            .find(|(_, u)| u.iter().any(|x| x == p))
            .map(|(m, _)| m.clone())
            .unwrap()
    };
    let (asker, policy_name) = (0..9)
        .map(|i| format!("p{i}"))
        .find_map(|p| {
            let o = owner_of(&p);
            names.iter().position(|n| *n != o).map(|a| (a, p))
        })
        .unwrap();
    let (code, body) = daemon_post(
        ports[asker],
        "/v1/runs",
        Some(TOKEN),
        "application/json",
        format!("{{\"policy\": \"{policy_name}\"}}").into_bytes(),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let run = || async move { run_view(ports[asker], id).await };
    let done = wait_for(20, || async { run().await.contains("\"outcome\": \"ok\"") }).await;
    assert!(
        done,
        "run on request through etcd: {}\n{}",
        run().await,
        logs()
    );
    let results_left = || {
        etcd.ctl(&["get", "--prefix", "--keys-only", "/ferry/results/"])
            .unwrap()
    };
    assert!(
        wait_until(5, || results_left().trim().is_empty()),
        "result keys left in etcd: {}",
        results_left()
    );

    // kill -9 of a member other than c: its policies run elsewhere, new pushes arrive.
    let victim = names
        .iter()
        .position(|n| *n != "c" && !spread.iter().find(|(m, _)| m == n).unwrap().1.is_empty())
        .unwrap();
    let lost: Vec<String> = spread
        .iter()
        .find(|(m, _)| m == names[victim])
        .unwrap()
        .1
        .clone();
    let killed = Instant::now();
    signal(&daemons[victim].as_ref().unwrap().child, "KILL");
    daemons[victim].take();
    for p in &lost {
        let i: usize = p[1..].parse().unwrap();
        push.image(&format!("r{i}"), "v3", &small(500 + i as u64))
            .await;
    }
    let survivor = names.iter().position(|n| *n == "c").unwrap();
    let v3: Vec<(String, &str)> = lost
        .iter()
        .map(|p| (format!("r{}", &p[1..]), "v3"))
        .collect();
    let moved = arrive(6 + 10, &d, &v3).await;
    assert!(
        moved,
        "{lost:?} not taken over within lease_ttl + 10 s:\n{}",
        logs()
    );
    println!(
        "failover: kill -9 → new tags of {} policies on the target in {:?}",
        lost.len(),
        killed.elapsed()
    );
    assert!(
        wait_for(5, || all_held(ports[survivor], 2, 9)).await,
        "{:?}",
        holders(ports[survivor]).await
    );

    // SIGTERM of the other: it hands over at once, well inside the 6 s lease.
    let leaver = (0..3).find(|i| *i != victim && *i != survivor).unwrap();
    let d_leaver = daemons[leaver].take().unwrap();
    let stopped = Instant::now();
    assert_eq!(d_leaver.stop().0, 0);
    assert!(
        wait_for(5, || all_held(ports[survivor], 1, 9)).await,
        "{:?}",
        holders(ports[survivor]).await
    );
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(4),
        "SIGTERM handover took {handover:?}"
    );
    println!("SIGTERM handover: {handover:?}");
    let writes = tag_writes(&dst);
    assert!(
        writes.values().all(|n| *n == 1),
        "a tag written more than once: {writes:?}"
    );
    assert_eq!(daemons[survivor].take().unwrap().stop().0, 0);
}

#[tokio::test]
async fn an_etcd_outage_longer_than_the_lease_is_survived_and_work_resumes() {
    let mut etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let policies: Vec<(String, String)> = (0..4).map(|i| policy(i, false)).collect();
    let ports = [free_port(), free_port()];
    let folders: Vec<Ferry> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(n, p)| member(n, &etcd.url, "3s", &src.url, &dst.url, p, &policies))
        .collect();
    let mut daemons: Vec<Daemon> = folders
        .iter()
        .zip(ports)
        .map(|(f, p)| Daemon::start(f, p, "daemon.log"))
        .collect();
    for d in &daemons {
        assert!(d.ready().await, "{}", d.log());
    }
    assert!(
        wait_for(15, || all_held(ports[0], 2, 4)).await,
        "{:?}",
        holders(ports[0]).await
    );
    etcd.pause();
    // Longer than the 3 s lease: both members must notice and stop starting work.
    let lost = wait_for(15, || async {
        let mut all = true;
        for p in ports {
            all &= metric(p, "ferry_cluster_lease_lost_total", ("", "")).await == Some(1.0);
        }
        all
    })
    .await;
    assert!(lost, "{}", daemons[0].log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    for d in &mut daemons {
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "a member died while etcd was away:\n{}",
            d.log()
        );
    }
    let (_, body) = daemon_get(ports[0], "/status").await.unwrap();
    assert!(body.contains("\"joined\": false"), "{body}");
    etcd.resume();
    let mut push = Pusher::new(&src.url);
    for i in 0..4 {
        push.image(&format!("r{i}"), "after", &small(900 + i as u64))
            .await;
    }
    let d = Reader::new(&dst.url);
    let resumed = arrive(
        20,
        &d,
        &(0..4)
            .map(|i| (format!("r{i}"), "after"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(
        resumed,
        "work did not resume after etcd came back:\n{}\n----\n{}",
        daemons[0].log(),
        daemons[1].log()
    );
    assert!(
        wait_for(10, || all_held(ports[0], 2, 4)).await,
        "{:?}",
        holders(ports[0]).await
    );
    assert!(
        daemons[0].log().contains("rejoined the cluster"),
        "{}",
        daemons[0].log()
    );
    let writes = tag_writes(&dst);
    assert!(
        writes.values().all(|n| *n == 1),
        "a tag written more than once: {writes:?}"
    );
    for d in daemons {
        assert_eq!(d.stop().0, 0);
    }
}

#[tokio::test]
async fn a_member_waits_for_an_unreachable_etcd_and_joins_when_it_comes() {
    let mut etcd = TestEtcd::start();
    etcd.pause();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.url).image("r0", "v1", &small(1)).await;
    let port = free_port();
    let mut f = member(
        "a",
        &etcd.url,
        "3s",
        &src.url,
        &dst.url,
        port,
        &[policy(0, false)],
    );
    // As systemd would (Type=notify): the start is extended while etcd is awaited, then ready.
    let sock_path = f.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    f.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    let daemon = Daemon::start(&f, port, "daemon.log");
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(
        first.contains("EXTEND_TIMEOUT_USEC=") && first.contains("waiting for etcd"),
        "{first}"
    );
    assert!(
        wait_for(15, || async { daemon.log().contains("etcd unreachable") }).await,
        "{}",
        daemon.log()
    );
    // Alive and answering, but not ready, and refusing work it could not hand on.
    assert_eq!(daemon_get(port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(daemon_get(port, "/readyz").await.map(|r| r.0), Some(503));
    let (code, body) = daemon_post(
        port,
        "/v1/runs",
        Some(TOKEN),
        "application/json",
        b"{\"policy\": \"p0\"}".to_vec(),
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not joined the cluster"), "{body}");
    assert!(
        Reader::new(&dst.url).manifest("r0", "v1").await.is_none(),
        "copied without the cluster"
    );
    etcd.resume();
    assert!(daemon.ready().await, "{}", daemon.log());
    assert!(
        (0..5).map(|_| next()).any(|m| m.contains("READY=1")),
        "no READY=1 after joining"
    );
    let d = Reader::new(&dst.url);
    assert!(
        wait_for(15, || async { d.manifest("r0", "v1").await.is_some() }).await,
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn bad_credentials_tls_and_duplicate_names_refuse_to_start() {
    let etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let policies = [policy(0, false)];
    // Two members with one name: the second waits one lease TTL (2 s) and refuses.
    let (p1, p2) = (free_port(), free_port());
    let first = member("same", &etcd.url, "2s", &src.url, &dst.url, p1, &policies);
    let d1 = Daemon::start(&first, p1, "daemon.log");
    assert!(d1.ready().await, "{}", d1.log());
    let second = member("same", &etcd.url, "2s", &src.url, &dst.url, p2, &policies);
    let started = Instant::now();
    let out = second.run(&["daemon"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all()
            .contains("cluster member name `same` is in use by a live member"),
        "{}",
        out.all()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "refused before the old lease could have expired"
    );
    assert_eq!(d1.stop().0, 0);
    // No daemon here: `ferry sync` would copy outside the cluster, so it refuses.
    let out = first.run(&["sync"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains("a cluster member's config"),
        "{}",
        out.all()
    );

    // Wrong password: exit 1, etcd's reason, never the password.
    etcd.enable_auth("right-password-1");
    let f = member(
        "a",
        &etcd.url,
        "3s",
        &src.url,
        &dst.url,
        free_port(),
        &policies,
    );
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(f.path().join("etcd-pass"), "wrong-password-42\n").unwrap();
    std::fs::write(
        f.config(),
        text.replace(
            "lease_ttl = \"3s\"\n",
            "lease_ttl = \"3s\"\nusername = \"root\"\npassword_file = \"etcd-pass\"\n",
        ),
    )
    .unwrap();
    let out = f.run(&["daemon"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("authentication failed"), "{}", out.all());
    assert!(
        !out.all().contains("wrong-password-42"),
        "the password was printed: {}",
        out.all()
    );

    // TLS against a server whose CA we do not trust: exit 1, said clearly.
    let ca = crate::support::registry::TestCa::new();
    let other = crate::support::registry::TestCa::new();
    let tls = TestEtcd::start_with(Some(ca.server()));
    let f = member(
        "a",
        &tls.url,
        "3s",
        &src.url,
        &dst.url,
        free_port(),
        &policies,
    );
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(
        f.config(),
        text.replace(
            "lease_ttl = \"3s\"\n",
            &format!(
                "lease_ttl = \"3s\"\nca_file = \"{}\"\n",
                other.ca().display()
            ),
        ),
    )
    .unwrap();
    let out = f.run(&["daemon"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().to_lowercase().contains("certificate"),
        "{}",
        out.all()
    );
}

#[tokio::test]
async fn members_with_different_policy_sets_run_only_what_they_define_and_say_so() {
    let etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let mut push = Pusher::new(&src.url);
    for i in 0..3 {
        push.image(&format!("r{i}"), "v1", &small(40 + i as u64))
            .await;
    }
    // a: p0, p1; b: p1 (written differently), p2. p0 can only run on a, p2 only on b.
    let (pa, pb) = (free_port(), free_port());
    let (p1a, mut p1b) = (policy(1, false), policy(1, false));
    let p1a_copy = p1a.clone();
    p1b.1.push_str("jitter = \"1s\"\n");
    let a = member(
        "a",
        &etcd.url,
        "3s",
        &src.url,
        &dst.url,
        pa,
        &[policy(0, false), p1a_copy],
    );
    let b = member(
        "b",
        &etcd.url,
        "3s",
        &src.url,
        &dst.url,
        pb,
        &[p1b, policy(2, false)],
    );
    let (da, db) = (
        Daemon::start(&a, pa, "daemon.log"),
        Daemon::start(&b, pb, "daemon.log"),
    );
    assert!(da.ready().await && db.ready().await);
    let d = Reader::new(&dst.url);
    let all = arrive(
        20,
        &d,
        &(0..3).map(|i| (format!("r{i}"), "v1")).collect::<Vec<_>>(),
    )
    .await;
    assert!(all, "{}\n----\n{}", da.log(), db.log());
    assert!(
        wait_for(10, || all_held(pa, 2, 3)).await,
        "{:?}",
        holders(pa).await
    );
    let h = holders(pa).await;
    let held_by = |m: &str| h.iter().find(|(n, _)| n == m).unwrap().1.clone();
    assert!(
        held_by("a").contains(&"p0".to_owned()) && held_by("b").contains(&"p2".to_owned()),
        "{h:?}"
    );
    let v = status(pb).await;
    let mm = v["cluster"]["mismatches"].as_array().unwrap();
    let find = |p: &str| {
        mm.iter()
            .find(|m| m["policy"] == p)
            .unwrap_or_else(|| panic!("{p} not reported: {v}"))
    };
    assert_eq!(find("p0")["missing_on"], serde_json::json!(["b"]));
    assert_eq!(find("p2")["missing_on"], serde_json::json!(["a"]));
    assert_eq!(find("p1")["differs"], true);
    assert!(
        da.log().contains("p0")
            && !db
                .log()
                .contains("policy taken: this member runs it now policy=\"p0\"")
    );
    let (_, page) = daemon_get(pa, "/").await.unwrap();
    assert!(
        page.contains("id=cluster")
            && page.contains("data-member=\"a\"")
            && page.contains("data-member=\"b\""),
        "{page}"
    );
    assert!(page.contains("Policy p1: defined differently"), "{page}");
    // Beside a running member, `ferry status` shows the cluster and `ferry sync` goes through it.
    let out = a.run(&["status"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("cluster (this member: a")
            && out
                .stdout
                .contains("policy p1: defined differently on a, b"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("policy p2: not defined on a (runs only on b)"),
        "{}",
        out.stdout
    );
    push.image("r1", "v2", &small(77)).await;
    let out = a.run(&["sync", "--policy", "p1"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(d.manifest("r1", "v2").await.is_some(), "{}", out.all());
    // The rest of the rollout reaches b (SIGHUP): it publishes its new policy set and only
    // p2 is left unlike (a still lacks it).
    std::fs::write(b.path().join("policies").join(&p1a.0), &p1a.1).unwrap();
    let p0 = policy(0, false);
    std::fs::write(b.path().join("policies").join(&p0.0), &p0.1).unwrap();
    signal(&db.child, "HUP");
    let converged = wait_for(10, || async {
        let v = status(pa).await;
        v["cluster"]["mismatches"]
            .as_array()
            .is_some_and(|m| m.len() == 1 && m[0]["policy"] == "p2")
    })
    .await;
    assert!(converged, "{}\n{}", status(pa).await, db.log());
    assert!(
        wait_for(10, || all_held(pa, 2, 3)).await,
        "{:?}",
        holders(pa).await
    );
    assert_eq!(da.stop().0, 0);
    // a's daemon is down; `ferry status` there still reads the cluster from etcd.
    assert!(
        wait_for(10, || all_held(pb, 1, 3)).await,
        "{:?}",
        holders(pb).await
    );
    let out = a.run(&["status"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("this member's daemon is not running"),
        "{}",
        out.stdout
    );
    let row = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("b "))
        .unwrap_or_else(|| panic!("no row for b:\n{}", out.stdout));
    assert!(row.contains("p0, p1, p2"), "{row}");
    assert_eq!(db.stop().0, 0);
}

#[tokio::test]
async fn events_waiting_in_etcd_are_bounded_cluster_wide() {
    let etcd = TestEtcd::start();
    let src = TestRegistry::start();
    // The target refuses connections: targeted runs fail and are retried, so events stay.
    let port = free_port();
    let f = member(
        "a",
        &etcd.url,
        "3s",
        &src.url,
        "http://127.0.0.1:1",
        port,
        &[policy(0, true)],
    );
    f.daemon_lines("max_pending_events = 3\n");
    let daemon = Daemon::start(&f, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let mut codes = Vec::new();
    for i in 0..5 {
        let body = serde_json::json!({ "events": [{ "id": format!("ev-{i}"), "timestamp": "2026-11-25T00:00:00Z", "action": "push",
            "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "r0", "tag": format!("t{i}"),
                        "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" } }] });
        let (code, text) = daemon_post(
            port,
            "/v1/events/distribution/src",
            Some(TOKEN),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
        codes.push((code, text));
    }
    assert!(codes[..3].iter().all(|(c, _)| *c == 202), "{codes:?}");
    assert!(
        codes[3..]
            .iter()
            .all(|(c, t)| *c == 503 && t.contains("waiting in etcd")),
        "{codes:?}"
    );
    assert_eq!(
        etcd.ctl(&["get", "--prefix", "--keys-only", "/ferry/events/"])
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        3
    );
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn a_lock_lost_behind_a_members_back_stops_its_next_tag_write() {
    let etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let port = free_port();
    let f = member(
        "a",
        &etcd.url,
        "5s",
        &src.url,
        &dst.url,
        port,
        &[policy(0, false)],
    );
    let daemon = Daemon::start(&f, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    assert!(
        wait_for(10, || all_held(port, 1, 1)).await,
        "{:?}",
        holders(port).await
    );
    // An operator (or an expired lease etcd noticed first) removes the lock: the member still
    // believes it holds p0, so only the fence can stop its next write.
    etcd.ctl(&["del", "/ferry/locks/p0"]).unwrap();
    Pusher::new(&src.url).image("r0", "v9", &small(99)).await;
    let d = Reader::new(&dst.url);
    assert!(
        arrive(20, &d, &[("r0".into(), "v9")]).await,
        "{}",
        daemon.log()
    );
    assert!(
        metric(
            port,
            "ferry_cluster_fence_checks_total",
            ("outcome", "refused")
        )
        .await
        .unwrap_or(0.0)
            >= 1.0,
        "{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("is no longer held by cluster member `a`; write not done"),
        "{}",
        daemon.log()
    );
    // Taken again (a new lock), and the tag written once, by the holder of that lock.
    assert!(etcd.ctl(&["get", "/ferry/locks/p0"]).unwrap().contains('a'));
    assert_eq!(tag_writes(&dst).get("r0:v9"), Some(&1));
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn an_event_accepted_before_its_owner_dies_is_done_by_the_next_owner() {
    use std::sync::atomic::Ordering;
    let etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.url).image("r0", "v1", &small(5)).await;
    // The target answers 503 to everything until the owner is gone.
    let proxy = crate::support::faults::FaultProxy::start(dst.host());
    proxy.faults.every_503.store(1, Ordering::SeqCst);
    let ports = [free_port(), free_port()];
    let folders: Vec<Ferry> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(n, p)| {
            member(
                n,
                &etcd.url,
                "3s",
                &src.url,
                &proxy.url(),
                p,
                &[policy(0, true)],
            )
        })
        .collect();
    let mut daemons: Vec<Option<Daemon>> = folders
        .iter()
        .zip(ports)
        .map(|(f, p)| Some(Daemon::start(f, p, "daemon.log")))
        .collect();
    for d in daemons.iter().flatten() {
        assert!(d.ready().await, "{}", d.log());
    }
    assert!(
        wait_for(10, || all_held(ports[0], 2, 1)).await,
        "{:?}",
        holders(ports[0]).await
    );
    let h = holders(ports[0]).await;
    let owner = h.iter().position(|(_, u)| !u.is_empty()).unwrap();
    let other = 1 - owner;
    let body = serde_json::json!({ "events": [{ "id": "ev-1", "timestamp": "2026-11-25T00:00:00Z", "action": "push",
        "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "r0", "tag": "v1",
                    "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" } }] });
    let (code, text) = daemon_post(
        ports[other],
        "/v1/events/distribution/src",
        Some(TOKEN),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 202, "{text}");
    let owner_log = daemons[owner].as_ref().unwrap().log.clone();
    let failing = wait_until(15, || {
        std::fs::read_to_string(&owner_log)
            .unwrap_or_default()
            .contains("list tags: HTTP 503")
    });
    assert!(
        failing,
        "{}",
        std::fs::read_to_string(&owner_log).unwrap_or_default()
    );
    // The owner lists what it holds for others, though its own journal does not have it.
    let doc = status(ports[owner]).await;
    let listed = doc["pending_events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        doc["pending_events_total"] == 1
            && listed
                .iter()
                .any(|e| e["repository"] == "r0" && e["tag"] == "v1" && e["through_etcd"] == true),
        "{doc}"
    );
    signal(&daemons[owner].as_ref().unwrap().child, "KILL");
    daemons[owner].take();
    proxy.faults.every_503.store(0, Ordering::SeqCst);
    let d = Reader::new(&dst.url);
    let done = arrive(3 + 10, &d, &[("r0".into(), "v1")]).await;
    assert!(
        done,
        "the event died with its owner:\n{}",
        daemons[other].as_ref().unwrap().log()
    );
    assert!(
        wait_for(10, || async {
            status(ports[other]).await["cluster"]["events_waiting"] == 0
        })
        .await
    );
    assert_eq!(daemons[other].take().unwrap().stop().0, 0);
}

#[tokio::test]
async fn a_member_with_credentials_carries_on_after_etcd_restarts() {
    // Tokens that expire after 1 s without use, and die with a restart.
    let mut etcd = TestEtcd::start_args(&["--auth-token-ttl", "1"]);
    etcd.enable_auth("right-password-1");
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let port = free_port();
    let f = member(
        "a",
        &etcd.url,
        "3s",
        &src.url,
        &dst.url,
        port,
        &[policy(0, false)],
    );
    std::fs::write(f.path().join("etcd-pass"), "right-password-1\n").unwrap();
    let text = std::fs::read_to_string(f.config()).unwrap();
    std::fs::write(
        f.config(),
        text.replace(
            "lease_ttl = \"3s\"\n",
            "lease_ttl = \"3s\"\nusername = \"root\"\npassword_file = \"etcd-pass\"\n",
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&f, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    assert!(
        wait_for(10, || all_held(port, 1, 1)).await,
        "{:?}",
        holders(port).await
    );
    // Past the token's TTL, then a restart that forgets every token: the member must
    // authenticate again by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.resume();
    Pusher::new(&src.url)
        .image("r0", "after-restart", &small(61))
        .await;
    let d = Reader::new(&dst.url);
    assert!(
        arrive(20, &d, &[("r0".into(), "after-restart")]).await,
        "{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("right-password-1"));
    assert_eq!(daemon.stop().0, 0);
}

#[tokio::test]
async fn events_left_for_a_policy_no_member_defines_are_swept_after_an_hour() {
    let etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let record = |accepted_ms: u64| {
        serde_json::json!({ "key": { "policy": "gone", "repository": "r0", "tag": "v1", "action": "push" },
                            "registry": "src", "accepted_ms": accepted_ms })
        .to_string()
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    etcd.ctl(&[
        "put",
        "/ferry/events/gone/old",
        &record(now_ms - 2 * 3600 * 1000),
    ])
    .unwrap();
    etcd.ctl(&[
        "put",
        "/ferry/events/gone/recent",
        &record(now_ms - 60 * 1000),
    ])
    .unwrap();
    let port = free_port();
    let f = member(
        "a",
        &etcd.url,
        "3s",
        &src.url,
        &dst.url,
        port,
        &[policy(0, false)],
    );
    let daemon = Daemon::start(&f, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let keys = || {
        etcd.ctl(&["get", "--prefix", "--keys-only", "/ferry/events/"])
            .unwrap()
    };
    assert!(
        wait_until(10, || !keys().contains("/ferry/events/gone/old")),
        "{}\n{}",
        keys(),
        daemon.log()
    );
    // Recent work for a missing policy stays: its only member may be restarting.
    assert!(keys().contains("/ferry/events/gone/recent"), "{}", keys());
    assert_eq!(daemon.stop().0, 0);
}
