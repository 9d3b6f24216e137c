//! `prune = true`: target tags the policy's own rules exclude (beyond `latest`, outside the
//! include list) are deleted, shown by `ferry plan` first, under `max_delete`, and never a
//! signature tag.

use crate::support::images::{self, signature_tag, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader};

fn config(src: &str, dst: &str, rules: &str) -> (String, String) {
    (
        format!("[registries.src]\nurl = \"{src}\"\n[registries.dst]\nurl = \"{dst}\"\n"),
        format!("[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n{rules}[policy.tags]\ninclude = ['^\\d+\\.\\d+\\.\\d+$']\n"),
    )
}

fn small(seed: u64) -> images::Image {
    images::image(
        Format::Oci,
        &[&images::layer(seed, 20_000)],
        "amd64",
        None,
        &format!("p-{seed}"),
    )
}

#[tokio::test]
async fn prune_deletes_what_the_rules_exclude_after_plan_shows_it_and_within_max_delete() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let mut p = Pusher::new(&src.url);
    for (i, t) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].iter().enumerate() {
        p.image("app", t, &small(10 + i as u64)).await;
    }
    let (regs, all) = config(&src.url, &dst.url, "");
    let f = Ferry::new(&regs, "1MiB", &[("p.toml", &all)]);
    f.run(&["sync"]).assert_code(0);
    // On the target only: a scratch tag outside the rules, and a signature of 1.3.0.
    let d = Reader::new(&dst.url);
    let kept_digest = d.digest("app", "1.3.0").await.unwrap();
    let mut q = Pusher::new(&dst.url);
    q.image("app", "scratch", &small(20)).await;
    q.image("app", &signature_tag(&kept_digest), &small(21))
        .await;
    assert_eq!(d.tags("app").await.len(), 6);

    // latest = 2 with prune, max_delete 1: three would go, so none does; plan names them.
    let (_, pruning) = config(&src.url, &dst.url, "prune = true\nmax_delete = 1\n");
    let pruning = pruning.replace("[policy.tags]\n", "[policy.tags]\nlatest = 2\n");
    std::fs::write(f.path().join("policies/p.toml"), &pruning).unwrap();
    let refused = f.run(&["sync"]);
    refused.assert_code(1);
    assert!(
        refused.all().contains("3 of the target's 6 tags would go"),
        "{}",
        refused.all()
    );
    assert_eq!(d.tags("app").await.len(), 6);

    std::fs::write(
        f.path().join("policies/p.toml"),
        pruning.replace("max_delete = 1", "max_delete = 3"),
    )
    .unwrap();
    let plan = f.run(&["plan"]);
    plan.assert_code(0);
    for (tag, why) in [
        ("1.0.0", "pruned: not among the newest 2 (tags.latest)"),
        ("1.1.0", "pruned: not among the newest 2 (tags.latest)"),
        ("scratch", "pruned: matches no tags.include"),
    ] {
        assert!(
            plan.stdout
                .lines()
                .any(|l| l.contains("delete") && l.contains(tag) && l.contains(why)),
            "{tag}: `{why}` not in:\n{}",
            plan.stdout
        );
    }
    assert_eq!(d.tags("app").await.len(), 6, "plan touched the target");
    let run = f.run(&["sync"]);
    run.assert_code(0);
    assert_eq!(run.summary("deleted"), 3);
    let mut left = d.tags("app").await;
    left.sort();
    let mut want = vec![
        "1.2.0".to_owned(),
        "1.3.0".to_owned(),
        signature_tag(&kept_digest),
    ];
    want.sort();
    assert_eq!(left, want);
    // The source is untouched.
    assert_eq!(Reader::new(&src.url).tags("app").await.len(), 4);
}
