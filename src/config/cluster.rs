//! `[cluster]`: the etcd cluster several daemons coordinate through, and this member's name.

use std::path::Path;
use std::time::Duration;

use super::check::{login, pem_file};
use super::diag::Sink;
use super::raw::RawConfig;
use super::schedule::parse_interval;
use crate::model::Secret;

#[derive(Clone)]
pub struct ClusterSettings {
    /// etcd client URLs (`http://` or `https://`).
    pub etcd: Vec<String>,
    /// This daemon's name in the cluster; unique among live members.
    pub member: String,
    /// How long a member that stops answering keeps its units: its lease's TTL.
    pub lease_ttl: Duration,
    /// Every key ferry writes lives under it; several ferry clusters can share one etcd.
    pub prefix: String,
    pub ca_pem: Option<Vec<u8>>,
    /// Username and password for etcd's authentication.
    pub login: Option<(String, Secret)>,
}

pub(super) fn cluster_settings(
    raw: &RawConfig,
    base: &Path,
    sink: &mut Sink,
) -> Option<ClusterSettings> {
    let c = raw.cluster.as_ref()?;
    let (span, c) = (c.span(), c.get_ref());
    let mut etcd = Vec::new();
    for e in c.etcd.get_ref() {
        match url::Url::parse(e.get_ref()) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none() =>
            {
                etcd.push(e.get_ref().trim_end_matches('/').to_owned());
            }
            _ => sink.err(
                e.span(),
                format!(
                    "cluster.etcd: `{}` is not an etcd client URL like http://127.0.0.1:2379",
                    e.get_ref()
                ),
            ),
        }
    }
    if c.etcd.get_ref().is_empty() {
        sink.err(
            c.etcd.span(),
            "cluster.etcd: give at least one etcd client URL",
        );
    }
    let mixed =
        etcd.iter().any(|u| u.starts_with("https:")) && etcd.iter().any(|u| u.starts_with("http:"));
    if mixed {
        sink.err(
            c.etcd.span(),
            "cluster.etcd: all URLs http:// or all https://, not both",
        );
    }
    let member = match &c.member {
        None => crate::model::hostname(),
        Some(m) => {
            let ok = !m.get_ref().is_empty()
                && m.get_ref().len() <= 64
                && m.get_ref()
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !ok {
                sink.err(
                    m.span(),
                    "cluster.member: 1 to 64 characters of letters, digits, `-`, `_` and `.`",
                );
            }
            m.get_ref().clone()
        }
    };
    let mut lease_ttl = Duration::from_secs(10);
    if let Some(t) = &c.lease_ttl {
        match parse_interval(t.get_ref()) {
            // etcd refuses TTLs under its own minimum (a few heartbeats); past 5 minutes a dead
            // member's units would wait that long for a new owner.
            Ok(v) if (Duration::from_secs(2)..=Duration::from_secs(300)).contains(&v) => {
                lease_ttl = v
            }
            Ok(_) => sink.err(t.span(), "cluster.lease_ttl: must be between 2s and 5m"),
            Err(e) => sink.err(t.span(), format!("cluster.lease_ttl: {e}")),
        }
    }
    let mut prefix = "/ferry/".to_owned();
    if let Some(p) = &c.prefix {
        let v = p.get_ref();
        if v.is_empty() || v.chars().any(char::is_control) {
            sink.err(
                p.span(),
                "cluster.prefix: a non-empty key prefix like /ferry/",
            );
        } else {
            prefix = if v.ends_with('/') {
                v.clone()
            } else {
                format!("{v}/")
            };
        }
    }
    let ca_pem = c
        .ca_file
        .as_ref()
        .and_then(|f| pem_file(f, "cluster.ca_file", base, sink));
    if ca_pem.is_some() && etcd.iter().all(|u| u.starts_with("http:")) {
        sink.err(
            span.clone(),
            "cluster.ca_file: given, but the etcd URLs are http://; use https:// URLs",
        );
    }
    let login = login(
        c.username.as_ref(),
        c.password_env.as_ref(),
        c.password_file.as_ref(),
        "cluster",
        span,
        base,
        sink,
    );
    Some(ClusterSettings {
        etcd,
        member,
        lease_ttl,
        prefix,
        ca_pem,
        login,
    })
}
