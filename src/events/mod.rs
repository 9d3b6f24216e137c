//! Registry webhooks as ferry reads them: CNCF Distribution notification envelopes and
//! Harbor webhook payloads (default and CloudEvents formats), parsed into [`Event`]s.
//!
//! Pure parsing: nothing here is trusted beyond its shape. An event is a hint that makes the
//! daemon ask the registry now; what gets copied or deleted is decided by what the registry
//! answers then. Imports only `model`.

use serde_json::Value;

use crate::model::Digest;
use crate::model::Invalid;
use crate::model::RepoName;
use crate::model::Tag;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Delete,
}

/// One change a registry reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The sender's event id (Distribution, CloudEvents), or a digest of the event's fields
    /// (Harbor's default format has none): the key for dropping redelivered events.
    pub id: String,
    pub action: Action,
    pub repository: RepoName,
    /// Push events without a tag (blobs, manifests pushed by digest) are not events here.
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

/// What one webhook body held: the events to act on and how many were ignored.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// Pulls, mounts, tagless pushes and event types ferry does not act on.
    pub ignored: usize,
}

/// Longest event id kept: ids go into the state store's dedup tree.
const MAX_ID: usize = 200;
/// Events one body may carry; Distribution batches a few, nobody sends thousands.
const MAX_EVENTS: usize = 1000;

fn field<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn json(body: &[u8]) -> Result<Value, Invalid> {
    serde_json::from_slice(body).map_err(|e| Invalid::new(format!("body is not JSON: {e}")))
}

fn check_id(id: &str, at: &str) -> Result<String, Invalid> {
    if id.len() > MAX_ID || id.chars().any(|c| c.is_control()) {
        return Err(Invalid::new(format!(
            "{at}: id is longer than {MAX_ID} characters or holds control characters"
        )));
    }
    Ok(id.to_owned())
}

fn repository(s: Option<&str>, at: &str) -> Result<RepoName, Invalid> {
    let s = s.ok_or_else(|| Invalid::new(format!("{at}: no repository")))?;
    s.parse()
        .map_err(|e| Invalid::new(format!("{at}: repository: {e}")))
}

fn tag(s: Option<&str>, at: &str) -> Result<Option<Tag>, Invalid> {
    s.map(|t| {
        t.parse()
            .map_err(|e| Invalid::new(format!("{at}: tag: {e}")))
    })
    .transpose()
}

fn digest(s: Option<&str>, at: &str) -> Result<Option<Digest>, Invalid> {
    s.map(|d| {
        d.parse()
            .map_err(|e| Invalid::new(format!("{at}: digest: {e}")))
    })
    .transpose()
}

/// A Distribution notification envelope: `{"events": [{id, action, target: {repository,
/// tag, digest, mediaType}}, ...]}`. Pushes carrying a tag and deletes (by tag or digest)
/// are kept; pulls, mounts and tagless pushes are ignored.
///
/// # Errors
/// A body that is not such an envelope, or an event with a missing or invalid field, with
/// a one-line reason naming the event.
pub fn parse_distribution(body: &[u8]) -> Result<Parsed, Invalid> {
    let v = json(body)?;
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| Invalid::new("no `events` array (not a Distribution envelope)"))?;
    if events.len() > MAX_EVENTS {
        return Err(Invalid::new(format!(
            "{} events in one body; at most {MAX_EVENTS}",
            events.len()
        )));
    }
    let mut out = Parsed::default();
    for (i, e) in events.iter().enumerate() {
        let at = format!("events[{i}]");
        let id = check_id(
            field(e, "/id").ok_or_else(|| Invalid::new(format!("{at}: no id")))?,
            &at,
        )?;
        let action = match field(e, "/action") {
            Some("push") => Action::Push,
            Some("delete") => Action::Delete,
            Some("pull" | "mount") => {
                out.ignored += 1;
                continue;
            }
            Some(other) => {
                return Err(Invalid::new(format!(
                    "{at}: unknown action `{}`",
                    other.chars().take(40).collect::<String>()
                )))
            }
            None => return Err(Invalid::new(format!("{at}: no action"))),
        };
        let repository = repository(field(e, "/target/repository"), &at)?;
        let tag = tag(field(e, "/target/tag"), &at)?;
        let digest = digest(field(e, "/target/digest"), &at)?;
        if action == Action::Push && tag.is_none() {
            out.ignored += 1; // a blob, or a manifest pushed by digest (an index's child)
            continue;
        }
        if action == Action::Delete && tag.is_none() && digest.is_none() {
            return Err(Invalid::new(format!(
                "{at}: a delete with neither tag nor digest"
            )));
        }
        out.events.push(Event {
            id,
            action,
            repository,
            tag,
            digest,
        });
    }
    Ok(out)
}

/// A Harbor webhook: the default format (`type`, `occur_at`, `event_data`) or CloudEvents
/// (`specversion`, `id`, `type`, `data`). `PUSH_ARTIFACT` / `harbor.artifact.pushed` gives one
/// push per tag of each resource; `DELETE_ARTIFACT` / `harbor.artifact.deleted` one delete per
/// resource. Other types are ignored.
///
/// # Errors
/// A body that is not a Harbor payload, or a push/delete with invalid fields.
pub fn parse_harbor(body: &[u8]) -> Result<Parsed, Invalid> {
    let v = json(body)?;
    let cloud = v.get("specversion").is_some();
    let (kind, data) = if cloud {
        (
            field(&v, "/type").ok_or_else(|| Invalid::new("no `type`"))?,
            v.get("data")
                .ok_or_else(|| Invalid::new("no `data` (not a Harbor CloudEvent)"))?,
        )
    } else {
        (
            field(&v, "/type").ok_or_else(|| Invalid::new("no `type` (not a Harbor webhook)"))?,
            v.get("event_data")
                .ok_or_else(|| Invalid::new("no `event_data` (not a Harbor webhook)"))?,
        )
    };
    let action = match kind {
        "PUSH_ARTIFACT" | "harbor.artifact.pushed" => Action::Push,
        "DELETE_ARTIFACT" | "harbor.artifact.deleted" => Action::Delete,
        _ => {
            return Ok(Parsed {
                events: vec![],
                ignored: 1,
            })
        }
    };
    let repository = repository(
        field(data, "/repository/repo_full_name"),
        "event_data.repository",
    )?;
    let resources = data
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| Invalid::new("no `resources` array"))?;
    if resources.len() > MAX_EVENTS {
        return Err(Invalid::new(format!(
            "{} resources in one body; at most {MAX_EVENTS}",
            resources.len()
        )));
    }
    let base_id = match (cloud, field(&v, "/id")) {
        (true, Some(id)) => check_id(id, "id")?,
        (true, None) => return Err(Invalid::new("a CloudEvent without an id")),
        // No id in Harbor's default format: the same delivery repeated hashes the same.
        (false, _) => format!("harbor:{}", crate::model::Digest::of(body).hex()),
    };
    let mut out = Parsed::default();
    for (i, r) in resources.iter().enumerate() {
        let at = format!("resources[{i}]");
        let tag = tag(field(r, "/tag"), &at)?;
        let digest = digest(field(r, "/digest"), &at)?;
        if action == Action::Push && tag.is_none() {
            out.ignored += 1;
            continue;
        }
        if action == Action::Delete && tag.is_none() && digest.is_none() {
            return Err(Invalid::new(format!(
                "{at}: a delete with neither tag nor digest"
            )));
        }
        out.events.push(Event {
            id: format!("{base_id}/{i}"),
            action,
            repository: repository.clone(),
            tag,
            digest,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn distribution_keeps_tagged_pushes_and_deletes() {
        let body = format!(
            r#"{{"events":[
            {{"id":"a","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"team/app","tag":"v1","digest":"{D}"}}}},
            {{"id":"b","action":"push","target":{{"repository":"team/app","digest":"{D}"}}}},
            {{"id":"c","action":"pull","target":{{"repository":"team/app","tag":"v1"}}}},
            {{"id":"d","action":"delete","target":{{"repository":"team/app","digest":"{D}"}}}}]}}"#
        );
        let p = parse_distribution(body.as_bytes()).unwrap();
        assert_eq!(p.ignored, 2);
        assert_eq!(p.events.len(), 2);
        assert_eq!(
            (
                p.events[0].action,
                p.events[0].tag.as_ref().unwrap().as_str()
            ),
            (Action::Push, "v1")
        );
        assert_eq!(
            (
                p.events[1].action,
                p.events[1].digest.as_ref().unwrap().as_str()
            ),
            (Action::Delete, D)
        );
    }

    #[test]
    fn distribution_refuses_what_it_cannot_use() {
        for (body, want) in [
            ("not json", "not JSON"),
            (r#"{"foo":1}"#, "no `events`"),
            (r#"{"events":[{"action":"push"}]}"#, "events[0]: no id"),
            (
                r#"{"events":[{"id":"x","action":"push","target":{"repository":"../x","tag":"v1"}}]}"#,
                "repository",
            ),
            (
                r#"{"events":[{"id":"x","action":"delete","target":{"repository":"a","digest":"sha256:../../x"}}]}"#,
                "digest",
            ),
            (
                r#"{"events":[{"id":"x","action":"push","target":{"repository":"a","tag":"bad tag"}}]}"#,
                "tag",
            ),
            (
                r#"{"events":[{"id":"x","action":"explode","target":{"repository":"a"}}]}"#,
                "unknown action",
            ),
        ] {
            let e = parse_distribution(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn harbor_default_and_cloudevents() {
        let body = format!(
            r#"{{"type":"PUSH_ARTIFACT","occur_at":1,"operator":"admin","event_data":{{"resources":[{{"digest":"{D}","tag":"v2","resource_url":"h/library/app:v2"}}],"repository":{{"name":"app","namespace":"library","repo_full_name":"library/app","repo_type":"private"}}}}}}"#
        );
        let p = parse_harbor(body.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].repository.as_str(), "library/app");
        assert_eq!(
            p.events[0].id,
            parse_harbor(body.as_bytes()).unwrap().events[0].id,
            "same delivery, same id"
        );
        let cloud = format!(
            r#"{{"specversion":"1.0","id":"e-1","type":"harbor.artifact.deleted","data":{{"resources":[{{"digest":"{D}","tag":"v2"}}],"repository":{{"repo_full_name":"library/app"}}}}}}"#
        );
        let p = parse_harbor(cloud.as_bytes()).unwrap();
        assert_eq!(
            (p.events[0].action, p.events[0].id.as_str()),
            (Action::Delete, "e-1/0")
        );
        let p = parse_harbor(br#"{"type":"SCANNING_COMPLETED","event_data":{}}"#).unwrap();
        assert_eq!((p.events.len(), p.ignored), (0, 1));
        assert!(parse_harbor(br#"{"events":[]}"#).is_err());
    }
}
