//! `ferry sync` on a terminal: a progress line, and a bar per large layer while it is sent.
//! A pseudo-terminal from util-linux's `script` stands in for the user's.

use crate::support::images::{self, Format, Pusher};
use crate::support::proxy::Proxy;
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

#[tokio::test]
async fn a_large_layer_gets_a_progress_bar_on_a_terminal_and_none_in_a_pipe() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let layer = images::layer(91, 40 << 20);
    let img = images::image(Format::Oci, &[&layer], "amd64", None, "big");
    Pusher::new(&src.url).image("big", "v1", &img).await;
    // 16 MiB/s to the target: the 40 MiB layer takes a few seconds, long enough to draw.
    let slow = Proxy::start(dst.host());
    slow.set_rate(16 << 20);
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\n",
        src.url,
        slow.url()
    );
    let policy = "[[policy]]\nname = \"big\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"big\"]\n";
    let f = Ferry::new(&regs, "4MiB", &[("p.toml", policy)]);
    let cmd = format!(
        "{} --config {} sync",
        crate::support::ferry_bin().display(),
        f.config().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    let short = &layer.blob.digest["sha256:".len()..][..12];
    assert!(
        screen.contains(&format!("big@{short} → dst")),
        "no bar for the layer:\n{screen}"
    );
    // The bar moves: some frame shows part of the layer sent, in MiB.
    let moving = screen
        .split("\u{1b}")
        .any(|frame| frame.contains(" MiB/40.01 MiB") && !frame.contains(" 0 B/40.01 MiB"));
    assert!(moving, "no byte counts:\n{screen}");
    assert!(
        screen.contains("ferry: ") && screen.contains("blobs"),
        "no overall line:\n{screen}"
    );
    assert!(
        screen.contains("sync ok: 1 tags copied"),
        "the summary:\n{screen}"
    );
    assert_same_image(
        &Reader::new(&src.url),
        &Reader::new(&dst.url),
        "big",
        "big",
        "v1",
    )
    .await;

    // Not a terminal: no bars, no escape codes, the summary only.
    let piped = f.run(&["sync"]);
    piped.assert_code(0);
    assert!(
        !piped.all().contains('\u{1b}') && !piped.all().contains(" → dst"),
        "{}",
        piped.all()
    );
}
