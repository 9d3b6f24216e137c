//! Pure decisions: which tags a policy keeps (and why the others are dropped), and what to
//! do with each kept tag. No I/O.

use std::collections::HashMap;

use serde::Serialize;

use super::TagAction;
use crate::config::{Platform, TagRules};
use crate::model::{tag_version, Digest, Tag};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DroppedTag {
    pub tag: Tag,
    pub reason: String,
}

/// Apply include, exclude and semver; `latest` comes after, in [`keep_latest`].
pub fn filter_tags(all: &[Tag], rules: &TagRules) -> (Vec<Tag>, Vec<DroppedTag>) {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for t in all {
        match rules.dropped(t.as_str()) {
            None => kept.push(t.clone()),
            Some(reason) => dropped.push(DroppedTag {
                tag: t.clone(),
                reason,
            }),
        }
    }
    kept.sort();
    (kept, dropped)
}

/// Whether `latest` needs the images' creation times: some kept tag is not semver.
pub fn needs_created(kept: &[Tag], rules: &TagRules) -> bool {
    rules.latest.is_some_and(|n| kept.len() > n)
        && kept.iter().any(|t| tag_version(t.as_str()).is_none())
}

/// Keep the newest `rules.latest` tags: by semver when every kept tag is one, else by image
/// creation time (`created`, Unix seconds; unknown counts as oldest), newest first.
pub fn keep_latest(
    kept: Vec<Tag>,
    rules: &TagRules,
    created: &HashMap<Tag, i64>,
) -> (Vec<Tag>, Vec<DroppedTag>) {
    let Some(n) = rules.latest.filter(|n| kept.len() > *n) else {
        return (kept, Vec::new());
    };
    let mut order = kept;
    if order.iter().all(|t| tag_version(t.as_str()).is_some()) {
        order.sort_by(|a, b| {
            tag_version(b.as_str())
                .cmp(&tag_version(a.as_str()))
                .then_with(|| a.cmp(b))
        });
    } else {
        order.sort_by(|a, b| {
            created
                .get(b)
                .unwrap_or(&i64::MIN)
                .cmp(created.get(a).unwrap_or(&i64::MIN))
                .then_with(|| a.cmp(b))
        });
    }
    let dropped = order
        .split_off(n)
        .into_iter()
        .map(|tag| DroppedTag {
            tag,
            reason: format!("not among the newest {n} (tags.latest)"),
        })
        .collect();
    order.sort();
    (order, dropped)
}

/// Keep only the wanted platforms of an index (OCI index or Docker manifest list). `None`
/// when every child is wanted: the index is then copied byte-exact. Otherwise a new index
/// with the same media type, annotations and other fields, serialised deterministically
/// (sorted keys), so the same source index always filters to the same digest. Children
/// without a platform are kept. An index left with no child is an error.
pub fn filter_index(body: &[u8], wanted: &[Platform]) -> Result<Option<Vec<u8>>, String> {
    let mut index: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("index is not JSON: {e}"))?;
    let Some(children) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) else {
        return Ok(None);
    };
    let before = children.len();
    children.retain(|c| {
        let Some(p) = c.get("platform") else {
            return true;
        };
        let field = |k: &str| p.get(k).and_then(|v| v.as_str());
        wanted.iter().any(|w| {
            field("os") == Some(w.os.as_str())
                && field("architecture") == Some(w.architecture.as_str())
                && w.variant
                    .as_ref()
                    .is_none_or(|v| field("variant") == Some(v.as_str()))
        })
    });
    if children.is_empty() {
        let list: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no child for the wanted platforms ({})",
            list.join(", ")
        ));
    }
    if children.len() == before {
        return Ok(None);
    }
    Ok(Some(
        serde_json::to_vec_pretty(&index).expect("JSON value serialises"),
    ))
}

/// What to do with one tag, given its digest on each side.
pub fn tag_action(source: &Digest, target: Option<&Digest>, overwrite: bool) -> TagAction {
    match target {
        None => TagAction::Create,
        Some(t) if t == source => TagAction::InSync,
        Some(_) if overwrite => TagAction::Move,
        Some(_) => TagAction::Conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn tags(list: &[&str]) -> Vec<Tag> {
        list.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn names(list: &[Tag]) -> Vec<&str> {
        list.iter().map(Tag::as_str).collect()
    }

    #[test]
    fn index_filtering_is_exact_or_deterministic() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","annotations":{"a":"b"},"manifests":[
            {"digest":"sha256:1","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:2","platform":{"os":"linux","architecture":"arm","variant":"v7"}},
            {"digest":"sha256:3"}]}"#;
        let p = |s: &str| {
            let v: Vec<&str> = s.split('/').collect();
            Platform {
                os: v[0].into(),
                architecture: v[1].into(),
                variant: v.get(2).map(|x| (*x).into()),
            }
        };
        assert_eq!(
            filter_index(idx, &[p("linux/amd64"), p("linux/arm")]).unwrap(),
            None,
            "all wanted: byte-exact"
        );
        let f = filter_index(idx, &[p("linux/arm/v7")]).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(v["annotations"]["a"], "b");
        assert_eq!(
            f,
            filter_index(idx, &[p("linux/arm/v7")]).unwrap().unwrap(),
            "deterministic"
        );
        assert!(
            filter_index(idx, &[p("windows/amd64")]).unwrap().is_some(),
            "unplatformed child kept"
        );
    }

    #[test]
    fn actions() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(tag_action(&a, None, false), TagAction::Create);
        assert_eq!(tag_action(&a, Some(&a), false), TagAction::InSync);
        assert_eq!(tag_action(&a, Some(&b), true), TagAction::Move);
        assert_eq!(tag_action(&a, Some(&b), false), TagAction::Conflict);
    }

    #[test]
    fn include_exclude_with_reasons() {
        let rules = TagRules {
            include: vec![Regex::new(r"^v\d+\.\d+\.\d+").unwrap()],
            exclude: vec![Regex::new(r"-rc\d*$").unwrap()],
            ..Default::default()
        };
        let (kept, dropped) =
            filter_tags(&tags(&["v1.2.3", "v1.3.0-rc1", "latest", "v2.0.0"]), &rules);
        assert_eq!(names(&kept), ["v1.2.3", "v2.0.0"]);
        assert_eq!(dropped[0].reason, "excluded by tags.exclude `-rc\\d*$`");
        assert_eq!(dropped[1].reason, "matches no tags.include");
    }

    #[test]
    fn semver_ranges_and_prereleases() {
        let rules = TagRules {
            semver: Some(">=1.2.0".parse().unwrap()),
            ..Default::default()
        };
        let (kept, dropped) = filter_tags(
            &tags(&["1.1.9", "v1.2.0", "1.3.0-rc.1", "2.0.0", "latest"]),
            &rules,
        );
        assert_eq!(names(&kept), ["2.0.0", "v1.2.0"]);
        assert_eq!(dropped.len(), 3);
        assert!(dropped
            .iter()
            .any(|d| d.tag.as_str() == "latest" && d.reason.contains("not a semver tag")));
        let pre = TagRules {
            semver: Some(">=1.3.0-rc.0".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            names(&filter_tags(&tags(&["1.3.0-rc.1", "1.3.0"]), &pre).0),
            ["1.3.0", "1.3.0-rc.1"]
        );
    }

    #[test]
    fn latest_by_semver_then_by_creation_time() {
        let rules = TagRules {
            latest: Some(2),
            ..Default::default()
        };
        let (kept, dropped) = keep_latest(
            tags(&["1.10.0", "1.2.0", "1.9.1", "v2.0.0"]),
            &rules,
            &HashMap::new(),
        );
        assert_eq!(names(&kept), ["1.10.0", "v2.0.0"]);
        assert_eq!(dropped.len(), 2);
        assert!(!needs_created(&tags(&["1.0.0", "2.0.0", "3.0.0"]), &rules));
        let mixed = tags(&["nightly", "stable", "1.0.0"]);
        assert!(needs_created(&mixed, &rules));
        let created: HashMap<Tag, i64> = [("nightly", 300), ("stable", 100), ("1.0.0", 200)]
            .iter()
            .map(|(t, c)| (t.parse().unwrap(), *c))
            .collect();
        assert_eq!(
            names(&keep_latest(mixed, &rules, &created).0),
            ["1.0.0", "nightly"]
        );
    }
}
