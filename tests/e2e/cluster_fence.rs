//! A fenced write is not retried past its member's hold on the policy: the owner's tag PUT
//! meets `503 Retry-After: 15`, the owner loses etcd, another member takes the policy and
//! writes the moved tag, and the old owner's retry must never land (it would write the older
//! digest 10 s after it lost the lock).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cluster::{all_held, holders, member, policy, small, tag_writes};
use crate::support::etcd::TestEtcd;
use crate::support::faults::FaultProxy;
use crate::support::images::Pusher;
use crate::support::proxy::Proxy;
use crate::support::registry::TestRegistry;
use crate::support::{free_port, wait_for, wait_until, Daemon, Reader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_out_a_503_ends_when_its_member_loses_the_policy() {
    let etcd = TestEtcd::start();
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // Member a reaches etcd and the target through proxies that can cut and refuse.
    let a_etcd = Proxy::start(format!("127.0.0.1:{}", etcd.port));
    let a_dst = FaultProxy::start(dst.url.trim_start_matches("http://").to_owned());
    let (pa, pb) = (free_port(), free_port());
    let policies = [policy(0, false)];
    let fa = member(
        "a",
        &a_etcd.url(),
        "5s",
        &src.url,
        &a_dst.url(),
        pa,
        &policies,
    );
    let fb = member("b", &etcd.url, "5s", &src.url, &dst.url, pb, &policies);
    let (d1, d2, d3) = (small(71), small(72), small(73));
    let mut push = Pusher::new(&src.url);
    push.image("r0", "v1", &d1).await;
    let a = Daemon::start(&fa, pa, "daemon.log");
    assert!(a.ready().await, "{}", a.log());
    assert!(
        wait_for(15, || all_held(pa, 1, 1)).await,
        "{:?}",
        holders(pa).await
    );
    let target = Reader::new(&dst.url);
    let at = |want: String| {
        let target = &target;
        move || {
            let want = want.clone();
            async move { target.digest("r0", "v1").await.as_deref() == Some(want.as_str()) }
        }
    };
    assert!(wait_for(20, at(d1.digest.clone())).await, "{}", a.log());

    // a plans the move to d2; its tag PUT is told to come back in 15 s.
    a_dst.faults.manifest_put_503.store(15, Ordering::SeqCst);
    push.image("r0", "v1", &d2).await;
    assert!(
        wait_until(20, || a_dst
            .faults
            .manifest_puts_refused
            .load(Ordering::SeqCst)
            >= 1),
        "{}",
        a.log()
    );
    // a loses etcd while it waits; the tag moves on to d3; b takes the policy once a's
    // lease is gone and writes d3.
    a_etcd.stats.cut.store(true, Ordering::SeqCst);
    push.image("r0", "v1", &d3).await;
    let b = Daemon::start(&fb, pb, "daemon.log");
    assert!(b.ready().await, "{}", b.log());
    assert!(
        wait_for(40, at(d3.digest.clone())).await,
        "b never wrote d3\n{}\n----\n{}",
        a.log(),
        b.log()
    );
    // The registry is back for a: a retry made now would land.
    a_dst.faults.manifest_put_503.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        target.digest("r0", "v1").await,
        Some(d3.digest.clone()),
        "the old owner's retried write landed\n{}",
        a.log()
    );
    // d1 by a, d3 by b: nothing else reached the registry.
    assert_eq!(
        tag_writes(&dst).get("r0:v1"),
        Some(&2),
        "{:?}\n{}",
        tag_writes(&dst),
        a.log()
    );
    assert_eq!(b.stop().0, 0);
}
