//! Interrupted uploads: a stop by signal resends nothing already acknowledged; a crash
//! (kill -9) recovers with correct digests.

use crate::support::images::{self, Format, Pusher};
use crate::support::proxy::Proxy;
use crate::support::registry::TestRegistry;
use crate::support::{signal, wait_until, Ferry, Reader};

const CHUNK: u64 = 1 << 20;
const LAYER: usize = 24 << 20;

struct Setup {
    src: TestRegistry,
    _dst: TestRegistry,
    proxy: Proxy,
    ferry: Ferry,
    image: images::Image,
}

/// One image with a 24 MiB layer; the target sits behind a proxy that counts the bytes sent
/// to it and slows them to 4 MiB/s, so a signal lands mid-upload.
async fn setup() -> Setup {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let big = images::layer(4242, LAYER);
    let image = images::image(Format::Docker, &[&big], "amd64", None, "big");
    Pusher::new(&src.url).image("big", "v1", &image).await;
    let proxy = Proxy::start(dst.host());
    proxy.set_rate(4 << 20);
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n\n[registries.dst]\nurl = \"{}\"\n",
        src.url,
        proxy.url()
    );
    let policy = "[[policy]]\nname = \"big\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"big\"]\n";
    let ferry = Ferry::new(&regs, "1MiB", &[("big.toml", policy)]);
    Setup {
        src,
        _dst: dst,
        proxy,
        ferry,
        image,
    }
}

async fn assert_complete(s: &Setup) {
    let d = Reader::new(&s.proxy.url());
    crate::support::assert_same_image(&Reader::new(&s.src.url), &d, "big", "big", "v1").await;
    let layer = &s.image.blobs[1];
    assert_eq!(
        images::sha256(&d.blob("big", &layer.digest).await),
        layer.digest,
        "target layer content"
    );
}

#[tokio::test]
async fn sigint_mid_upload_then_rerun_resends_at_most_one_chunk() {
    let s = setup().await;
    let child = s.ferry.spawn(&["sync"]);
    assert!(
        wait_until(60, || s.proxy.sent() > 6 << 20),
        "upload did not start"
    );
    signal(&child, "INT");
    let first = crate::support::Run::from(child.wait_with_output().unwrap());
    first.assert_code(1);
    assert!(first.stdout.contains("sync interrupted"), "{}", first.all());
    let sent_first = s.proxy.sent();

    let status = s.ferry.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let inflight = &v["uploads_in_flight"][0];
    let offset = inflight["offset"]
        .as_u64()
        .expect("an upload in flight after SIGINT");
    assert!(
        offset >= 5 * CHUNK && offset.is_multiple_of(CHUNK),
        "checkpoint at a chunk boundary: {offset}"
    );
    assert_eq!(v["runs"][0]["outcome"], "interrupted");

    s.proxy.set_rate(0);
    let second = s.ferry.run(&["sync"]);
    second.assert_code(0);
    let sent_second = s.proxy.sent() - sent_first;
    let total = s
        .image
        .blobs
        .iter()
        .map(|b| b.bytes.len() as u64)
        .sum::<u64>();
    // Everything both runs sent, less the image itself: what was sent twice, plus request
    // headers and the manifest. At most one chunk.
    let resent = (sent_first + sent_second).saturating_sub(total);
    assert!(
        resent <= CHUNK,
        "resent {resent} bytes (first run {sent_first}, second {sent_second}, image {total})"
    );
    assert!(
        sent_second < total - offset + CHUNK,
        "second run sent {sent_second}, expected about {}",
        total - offset
    );
    assert_complete(&s).await;
    let v: serde_json::Value =
        serde_json::from_str(&s.ferry.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(v["uploads_in_flight"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn kill9_mid_upload_then_rerun_completes_with_right_digests() {
    let s = setup().await;
    let mut child = s.ferry.spawn(&["sync"]);
    assert!(
        wait_until(60, || s.proxy.sent() > 5 << 20),
        "upload did not start"
    );
    signal(&child, "KILL");
    child.wait().unwrap();
    s.proxy.set_rate(0);
    let second = s.ferry.run(&["sync"]);
    second.assert_code(0);
    assert_eq!(second.summary("copied"), 1);
    assert_complete(&s).await;
}
