//! Pure decisions: which tags a policy keeps, and what to do with each. No I/O.

use crate::config::TagRules;
use crate::model::{Digest, Tag};

use super::TagAction;

/// The source tags the policy's tag rules keep, in a stable order.
pub fn select_tags(all: &[Tag], rules: &TagRules) -> Vec<Tag> {
    let mut kept: Vec<Tag> = all.iter().filter(|t| rules.keeps(t.as_str())).cloned().collect();
    kept.sort();
    kept
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
    fn tag_rules_include_then_exclude() {
        let rules = TagRules { include: vec![Regex::new(r"^v\d+\.\d+\.\d+").unwrap()], exclude: vec![Regex::new(r"-rc\d*$").unwrap()] };
        let all: Vec<Tag> = ["v1.2.3", "v1.3.0-rc1", "latest", "v2.0.0"].iter().map(|t| t.parse().unwrap()).collect();
        let kept: Vec<String> = select_tags(&all, &rules).iter().map(|t| t.to_string()).collect();
        assert_eq!(kept, ["v1.2.3", "v2.0.0"]);
        assert_eq!(select_tags(&all, &TagRules::default()).len(), 4);
    }
}
