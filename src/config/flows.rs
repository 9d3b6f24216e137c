//! Where policies write, checked across all of them: a tag that comes back to the repository
//! it was copied from (a replication loop, also through renames and registries named twice),
//! and two policies filling one target repository from different sources. Each policy alone
//! can be valid; only the set of them shows these.
//!
//! Repositories named by glob are followed through one sample name per glob (`apps/*` →
//! `apps/x`), so what is found through them may not happen with the real catalog: collisions
//! found that way are warnings, loops are errors (the sample is the shape every match has).

use std::collections::BTreeMap;

use super::diag::Diagnostic;
use super::registries::RegistrySpec;
use super::types::Policy;
use crate::model::RepoName;

/// One repository on one registry, the registry known by its address so two names for the
/// same registry are the same place.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    registry: String,
    repo: RepoName,
}

/// One policy writing one place: a step of a chain.
#[derive(Clone)]
struct Hop {
    policy: usize,
    target: String,
    to: Place,
}

/// Longest chain followed from one repository, and most places visited on the way: a config
/// of hundreds of policies fanning out must not make `validate` slow.
const MAX_HOPS: usize = 32;
const MAX_VISITS: usize = 10_000;

pub(super) fn check(
    policies: &[Policy],
    at: &[Diagnostic],
    registries: &BTreeMap<String, RegistrySpec>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    let address = |name: &str| {
        registries.get(name).map_or_else(
            || name.to_owned(),
            |r| match r.url.scheme() {
                "oci" => r.url.as_str().to_owned(),
                _ => format!(
                    "{}:{}",
                    r.url.host_str().unwrap_or(""),
                    r.url.port_or_known_default().unwrap_or(0)
                ),
            },
        )
    };
    let mut reported_loops = std::collections::BTreeSet::new();
    let mut writers: BTreeMap<Place, (usize, Place, bool)> = BTreeMap::new();
    for (i, p) in policies.iter().enumerate() {
        for (repo, sampled) in samples(p) {
            let from = Place {
                registry: address(&p.source),
                repo: repo.clone(),
            };
            if let Some(chain) = loop_from(policies, &address, i, &from) {
                let mut members: Vec<usize> = chain.iter().map(|h| h.policy).collect();
                members.sort_unstable();
                members.dedup();
                if reported_loops.insert(members) {
                    let path: Vec<String> = chain
                        .iter()
                        .map(|h| {
                            format!(
                                "{}/{} (policy `{}`)",
                                h.target, h.to.repo, policies[h.policy].name
                            )
                        })
                        .collect();
                    diags.push(located(
                        &at[i],
                        format!(
                            "policy `{}`: replication loop: {}/{} → {}; give one policy a target_repository its own repositories do not match",
                            p.name,
                            p.source,
                            repo,
                            path.join(" → ")
                        ),
                    ));
                }
            }
            for t in &p.targets {
                let Ok(out) = p.target_repo(&repo) else {
                    continue;
                };
                let to = Place {
                    registry: address(t),
                    repo: out.clone(),
                };
                match writers.get(&to) {
                    Some((j, src, other_sampled)) if *src != from && *j != i => {
                        let q = &policies[*j];
                        let msg = format!(
                            "policy `{}`: writes {t}/{out} from {}/{repo}, as policy `{}` (at {}:{}) does from {}/{}; their tags would overwrite each other",
                            p.name, p.source, q.name, at[*j].file.display(), at[*j].line, q.source, src.repo
                        );
                        if sampled || *other_sampled {
                            warnings.push(located(
                                &at[i],
                                format!("{msg} if both source registries have such a repository"),
                            ));
                        } else {
                            diags.push(located(&at[i], msg));
                        }
                    }
                    Some(_) => {}
                    None => {
                        writers.insert(to, (i, from.clone(), sampled));
                    }
                }
            }
        }
    }
}

/// The repositories a policy reads: its exact names, and one sample per simple glob (true).
fn samples(p: &Policy) -> Vec<(RepoName, bool)> {
    let sel = &p.repositories;
    let exact = sel
        .exact
        .iter()
        .filter(|r| !sel.excluded(r.as_str()))
        .map(|r| (r.clone(), false));
    let sampled = sel
        .globs
        .iter()
        .filter(|g| !g.contains(['[', '{']))
        .filter_map(|g| {
            g.replace("**", "x")
                .replace(['*', '?'], "x")
                .parse::<RepoName>()
                .ok()
        })
        .filter(|r| sel.matches_glob(r.as_str()))
        .map(|r| (r, true));
    exact.chain(sampled).collect()
}

/// Follow what policy `start` writes from `from` through every policy that reads it, breadth
/// first; the chain that reaches a place `start` reads again.
fn loop_from(
    policies: &[Policy],
    address: &dyn Fn(&str) -> String,
    start: usize,
    from: &Place,
) -> Option<Vec<Hop>> {
    let reads = |q: &Policy, at: &Place| {
        address(&q.source) == at.registry && q.repositories.covers(&at.repo)
    };
    let mut frontier: Vec<(Place, Vec<Hop>)> = vec![(from.clone(), Vec::new())];
    let mut visits = 0;
    for _ in 0..MAX_HOPS {
        let mut next = Vec::new();
        for (place, chain) in frontier {
            for (q, policy) in policies.iter().enumerate() {
                let first = chain.is_empty();
                if (first && q != start) || !reads(policy, &place) {
                    continue;
                }
                for t in &policy.targets {
                    let Ok(out) = policy.target_repo(&place.repo) else {
                        continue;
                    };
                    let to = Place {
                        registry: address(t),
                        repo: out,
                    };
                    let mut longer = chain.clone();
                    longer.push(Hop {
                        policy: q,
                        target: t.clone(),
                        to: to.clone(),
                    });
                    if reads(&policies[start], &to) {
                        return Some(longer);
                    }
                    visits += 1;
                    if visits > MAX_VISITS {
                        return None;
                    }
                    if !chain.iter().any(|h| h.to == to) {
                        next.push((to, longer));
                    }
                }
            }
        }
        if next.is_empty() {
            return None;
        }
        frontier = next;
    }
    None
}

fn located(at: &Diagnostic, msg: String) -> Diagnostic {
    Diagnostic { msg, ..at.clone() }
}
