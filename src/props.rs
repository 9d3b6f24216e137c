//! Property tests: every parser of outside input (config files, sizes, durations, schedules,
//! manifests, webhook bodies, names, digests, tag rules, rate-limit headers) returns a value or
//! an error for any input, never a panic; and round-trips hold where a format has them.

use proptest::prelude::*;

use crate::config::schedule::{parse_interval, parse_schedule};
use crate::config::TagRules;
use crate::model::{
    manifest_media_type, manifest_references, tag_version, ByteSize, Digest, RepoName, Tag,
};

/// Text that is mostly the characters these formats are made of, so inputs get past the first
/// check often enough to reach the deeper code.
fn near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(
        prop_oneof![9 => prop::sample::select(chars), 1 => any::<char>()],
        0..max,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// A valid manifest or index, then damaged: a field replaced by any JSON-ish value.
fn manifest_like() -> impl Strategy<Value = (String, Vec<u8>)> {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let value = prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        near("sha256:0123456789abcdef", 80).prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just(format!("[{{\"digest\":\"{digest}\",\"size\":-1}}]")),
    ];
    (0usize..6, value, any::<bool>()).prop_map(move |(field, v, index)| {
        let fields = ["mediaType", "digest", "size", "layers", "config", "manifests"];
        let body = if index {
            format!("{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"{digest}\",\"size\":7}}]}}")
        } else {
            format!("{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{digest}\",\"size\":7}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{digest}\",\"size\":9}}]}}")
        };
        let key = format!("\"{}\":", fields[field]);
        let damaged = match body.find(&key) {
            Some(i) => {
                let start = i + key.len();
                let end = body[start..].find([',', '}']).map_or(body.len(), |e| start + e);
                format!("{}{v}{}", &body[..start], &body[end..])
            }
            None => body,
        };
        (if index { "application/vnd.oci.image.index.v1+json" } else { "application/vnd.oci.image.manifest.v1+json" }.to_owned(), damaged.into_bytes())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sizes_parse_or_refuse(s in near("0123456789.KMGiBb -e", 16)) {
        let _ = s.parse::<ByteSize>();
    }

    #[test]
    fn sizes_round_trip(n in 0u64..(1 << 40)) {
        prop_assert_eq!(format!("{n}").parse::<ByteSize>().unwrap().0, n);
        prop_assert_eq!(format!("{n}KiB").parse::<ByteSize>().unwrap().0, n * 1024);
    }

    #[test]
    fn durations_and_schedules_parse_or_refuse(s in near("0123456789smhd */,-@ ", 24)) {
        if let Ok(d) = parse_interval(&s) {
            prop_assert!(d.as_secs() <= 3650 * 86_400);
        }
        let _ = parse_schedule(&s);
    }

    #[test]
    fn durations_round_trip(n in 1u64..10_000, unit in prop::sample::select(vec![("s", 1u64), ("m", 60), ("h", 3600)])) {
        prop_assert_eq!(parse_interval(&format!("{n}{}", unit.0)).unwrap().as_secs(), n * unit.1);
    }

    #[test]
    fn names_digests_and_tags_round_trip(s in near("abcz019._-/:sha256ABC", 80)) {
        if let Ok(r) = s.parse::<RepoName>() {
            prop_assert_eq!(r.as_str(), s.as_str());
            prop_assert!(!r.as_str().split('/').any(|p| p == ".." || p == "." || p.is_empty()));
        }
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.as_str(), s.as_str());
            prop_assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        if let Ok(t) = s.parse::<Tag>() {
            prop_assert_eq!(t.as_str(), s.as_str());
        }
        let _ = tag_version(&s);
    }

    #[test]
    fn manifests_parse_or_refuse((media_type, body) in manifest_like(), header in prop::option::of(near("application/json.+", 40))) {
        let _ = manifest_media_type(&body, header.as_deref());
        if let Ok(refs) = manifest_references(&media_type, &body) {
            // Whatever got through has real digests and sizes.
            for (d, _) in refs.blobs.iter().chain(&refs.manifests) {
                prop_assert_eq!(d.hex().len(), 64);
            }
        }
    }

    #[test]
    fn any_bytes_as_manifest_or_webhook(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = manifest_media_type(&body, None);
        let _ = manifest_references("application/vnd.oci.image.index.v1+json", &body);
        let _ = crate::events::parse_distribution(&body);
        let _ = crate::events::parse_harbor(&body);
    }

    #[test]
    fn webhooks_parse_or_refuse(repo in near("abc/._-", 30), tag in near("v1.0-_", 20), action in prop::sample::select(vec!["push", "delete", "pull", ""])) {
        let body = serde_json::json!({ "events": [{ "id": "1", "action": action, "target": { "repository": repo, "tag": tag } }] });
        if let Ok(parsed) = crate::events::parse_distribution(body.to_string().as_bytes()) {
            // Nothing invalid gets through as a name: what came out parses again as itself
            // (`..` is fine in a tag, never in a repository path).
            for e in &parsed.events {
                prop_assert!(!e.repository.as_str().contains(".."));
                prop_assert!(e.repository.as_str().parse::<RepoName>().is_ok_and(|r| r.as_str() == e.repository.as_str()));
                if let Some(t) = &e.tag {
                    prop_assert!(t.as_str().parse::<Tag>().is_ok_and(|r| r.as_str() == t.as_str()));
                }
            }
        }
    }

    #[test]
    fn tag_rules_decide_anything(include in near("^$v0-9.*+?()[]\\|", 12), tag in near("v0123456789.-_abc", 20), range in near("^~>=<0123456789., *", 12)) {
        let mut rules = TagRules::default();
        if let Ok(re) = regex::Regex::new(&include) {
            rules.include.push(re);
        }
        rules.semver = semver::VersionReq::parse(&range).ok();
        let _ = rules.dropped(&tag);
    }

    #[test]
    fn config_files_load_or_refuse(body in near("[]=\"\n abcdefgimnoprstuvwxyz._0123456789:/", 300)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let main = format!("[daemon]\nstate_dir = \"s\"\npolicies = \"policies\"\n[registries.a]\nurl = \"http://127.0.0.1:1\"\n{body}");
        std::fs::write(dir.path().join("ferry.toml"), main).unwrap();
        std::fs::write(dir.path().join("policies/p.toml"), format!("[[policy]]\nname = \"p\"\nsource = \"a\"\ntargets = [\"http://127.0.0.1:2\"]\nrepositories = [\"x\"]\n{body}")).unwrap();
        match crate::config::load(&dir.path().join("ferry.toml")) {
            Ok(_) => {}
            Err(diags) => prop_assert!(!diags.is_empty() && diags.iter().all(|d| d.line >= 1 && !d.msg.is_empty())),
        }
    }
}
