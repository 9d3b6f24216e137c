//! Who is in the cluster and who owns what. Ownership is rendezvous hashing (HRW): each
//! policy goes to the live member, among those that define it, with the highest
//! hash(member, policy). Every member computes the same answer from the same member list,
//! and a join or a leave moves only the policies whose top score changed: about 1/n of them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::Mismatch;
use sha2::{Digest as _, Sha256};

/// What a member publishes under `members/NAME`, bound to its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub started_ms: u64,
    /// The daemon's API address, for people reading `/status`.
    pub api: String,
    /// Each policy this member defines, with a fingerprint of its definition: members that
    /// disagree (a config rolled out halfway) are reported.
    pub policies: BTreeMap<String, String>,
    /// The member's lease id, so `/status` can ask etcd when it was last renewed.
    #[serde(default)]
    pub lease: i64,
}

fn score(member: &str, unit: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0]);
    h.update(unit.as_bytes());
    h.finalize()[..8].try_into().expect("8 bytes")
}

/// The member that owns `unit`: the highest score among the members defining it.
pub fn owner<'a>(unit: &str, members: &'a BTreeMap<String, MemberRecord>) -> Option<&'a str> {
    members
        .values()
        .filter(|m| m.policies.contains_key(unit))
        .max_by_key(|m| (score(&m.name, unit), &m.name))
        .map(|m| m.name.as_str())
}

pub fn mismatches(members: &BTreeMap<String, MemberRecord>) -> Vec<Mismatch> {
    let all: BTreeSet<&String> = members.values().flat_map(|m| m.policies.keys()).collect();
    all.into_iter()
        .filter_map(|p| {
            let defined: Vec<&MemberRecord> = members
                .values()
                .filter(|m| m.policies.contains_key(p))
                .collect();
            let prints: BTreeSet<&String> = defined.iter().map(|m| &m.policies[p]).collect();
            let missing_on: Vec<String> = members
                .values()
                .filter(|m| !m.policies.contains_key(p))
                .map(|m| m.name.clone())
                .collect();
            (prints.len() > 1 || !missing_on.is_empty()).then(|| Mismatch {
                policy: p.clone(),
                defined_on: defined.iter().map(|m| m.name.clone()).collect(),
                missing_on,
                differs: prints.len() > 1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str], policies: &[&str]) -> BTreeMap<String, MemberRecord> {
        names
            .iter()
            .map(|n| {
                let rec = MemberRecord {
                    name: (*n).into(),
                    host: "h".into(),
                    pid: 1,
                    started_ms: 0,
                    api: String::new(),
                    policies: policies
                        .iter()
                        .map(|p| ((*p).to_owned(), "x".to_owned()))
                        .collect(),
                    lease: 0,
                };
                ((*n).to_owned(), rec)
            })
            .collect()
    }

    #[test]
    fn a_leave_moves_only_the_leavers_policies() {
        let policies: Vec<String> = (0..300).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = policies.iter().map(String::as_str).collect();
        let three = members(&["a", "b", "c"], &refs);
        let two = members(&["a", "b"], &refs);
        let mut per = BTreeMap::<&str, usize>::new();
        for p in &refs {
            let before = owner(p, &three).unwrap();
            *per.entry(before).or_default() += 1;
            if before != "c" {
                assert_eq!(
                    owner(p, &two),
                    Some(before),
                    "{p} moved although its owner stayed"
                );
            }
        }
        // Balanced enough: each of three members owns 70..130 of 300.
        assert!(per.values().all(|n| (70..=130).contains(n)), "{per:?}");
    }

    #[test]
    fn only_members_defining_a_policy_own_it() {
        let mut m = members(&["a", "b"], &["shared"]);
        m.get_mut("a")
            .unwrap()
            .policies
            .insert("only-a".into(), "x".into());
        assert_eq!(owner("only-a", &m), Some("a"));
        assert_eq!(owner("nowhere", &m), None);
        m.get_mut("b")
            .unwrap()
            .policies
            .insert("shared".into(), "y".into());
        let mm = mismatches(&m);
        assert_eq!(mm.len(), 2);
        assert!(mm
            .iter()
            .any(|x| x.policy == "only-a" && x.missing_on == ["b"]));
        assert!(mm.iter().any(|x| x.policy == "shared" && x.differs));
    }
}
