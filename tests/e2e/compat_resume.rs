//! kill -9 in the middle of a large layer, per profile whose strategy can resume (chunked):
//! the next run completes the image byte-exact, and resends no more than what was in
//! flight. The bytes resent are printed (`resent after kill -9`) for the README's figures.

use crate::compat::registry_entry;
use crate::support::images::{image, layer, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, signal, wait_until, Ferry, Reader};

const LAYER: u64 = 16 << 20;
const MIB: u64 = 1 << 20;

async fn resume_after_kill(profile: Profile) {
    let name = profile.name();
    let src = TestRegistry::start();
    let backend = TestRegistry::start();
    let mut knobs = profile.knobs();
    knobs.throttle = Some(4 * MIB);
    let proxy = QuirksProxy::with(Some(profile), knobs, &backend.url);
    proxy.create("big");
    let img = image(
        Format::Oci,
        &[&layer(91, LAYER as usize)],
        "amd64",
        None,
        "resume",
    );
    Pusher::new(&src.url).image("big", "v1", &img).await;
    let (entry, env) = registry_entry("target", profile, &proxy.url());
    let policy = "[[policy]]\nname = \"big\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [\"big\"]\n";
    let mut ferry = Ferry::new(
        &format!("[registries.source]\nurl = \"{}\"\n\n{entry}", src.url),
        "1MiB",
        &[("p.toml", policy)],
    );
    ferry.env = env;
    let child = ferry.spawn(&["sync"]);
    assert!(
        wait_until(60, || proxy.blob_bytes() > 7 * MIB),
        "{name}: the upload did not start"
    );
    signal(&child, "KILL");
    let _ = child.wait_with_output();
    let at_kill = proxy.blob_bytes();
    let seen = proxy.stats().lines().len();
    // No tag points at an incomplete image after the kill.
    let d = Reader::new(&backend.url);
    assert_eq!(
        d.digest("big", "v1").await,
        None,
        "{name}: a tag before its blobs"
    );
    let t = std::time::Instant::now();
    let run = ferry.run(&["sync"]);
    run.assert_code(0);
    let total: u64 = img.blobs.iter().map(|b| b.bytes.len() as u64).sum();
    assert_same_image(&Reader::new(&src.url), &d, "big", "big", "v1").await;
    let resent = proxy.blob_bytes().saturating_sub(total);
    eprintln!(
        "{name}: resent after kill -9: {:.1} MiB of {:.1} MiB sent before it; rerun {:.1} s, {} requests",
        resent as f64 / MIB as f64,
        at_kill as f64 / MIB as f64,
        t.elapsed().as_secs_f64(),
        proxy.stats().lines().len()
    );
    let rerun = proxy.stats().lines()[seen..].join("\n");
    assert_bounded(
        profile,
        resent,
        at_kill,
        &format!("{}\nproxy:\n{rerun}", run.all()),
    );
}

/// Where parts are atomic (ECR, ACR), at most the part cut mid-body is resent. Elsewhere the
/// backend is Distribution, which keeps the cut part's bytes and then refuses the saved
/// offset on every method, status included: a restart, so never more than what was sent
/// before the kill plus that part. GAR and GHCR cannot resume at all.
fn assert_bounded(profile: Profile, resent: u64, at_kill: u64, log: &str) {
    let part = if profile == Profile::Ecr {
        5 * MIB
    } else {
        MIB
    };
    let most = match profile {
        Profile::Gar | Profile::Ghcr => at_kill + LAYER,
        p if p.knobs().whole_parts => part,
        _ => at_kill + part,
    };
    if std::env::var_os("FERRY_DUMP").is_some() {
        eprintln!("{log}");
    }
    assert!(
        resent <= most,
        "{}: resent {resent} bytes, {at_kill} sent before the kill\n{log}",
        profile.name()
    );
}

macro_rules! profiles {
    ($($test:ident: $p:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            resume_after_kill($p).await;
        }
    )*};
}

profiles! {
    after_kill_on_hub: Profile::Hub,
    after_kill_on_ecr: Profile::Ecr,
    after_kill_on_acr: Profile::Acr,
    after_kill_on_quay: Profile::Quay,
    after_kill_on_harbor: Profile::Harbor,
    after_kill_on_gitlab: Profile::Gitlab,
    after_kill_on_artifactory: Profile::Artifactory,
    after_kill_on_nexus: Profile::Nexus,
    after_kill_on_zot: Profile::Zot,
    after_kill_on_dist3: Profile::Dist3,
    after_kill_on_gar: Profile::Gar,
    after_kill_on_ghcr: Profile::Ghcr,
}
