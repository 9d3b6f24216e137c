//! What a TOML parse error means for a ferry user: serde and toml describe the grammar,
//! so the usual slips (a misspelt key, a policy in the main config, a regex in double
//! quotes) get a sentence that says what to write instead.

use std::ops::Range;

/// The parser's message, with a hint when one is known.
pub(super) fn explain(msg: &str, src: &str, span: Range<usize>) -> String {
    if let Some((field, expected)) = unknown_field(msg) {
        if field == "policy" && expected.contains(&"registries") {
            return "unknown field `policy`: policies live in their own files, in the policy \
                    folder (daemon.policies, by default `policies/` beside this file), as \
                    [[policy]] tables"
                .to_owned();
        }
        if let Some(near) = closest(field, &expected) {
            return format!("unknown field `{field}`: did you mean `{near}`? ({msg})");
        }
        return msg.to_owned();
    }
    let quoted = src
        .get(..span.start.min(src.len()))
        .and_then(|b| b.rfind('\n').map_or(Some(b), |i| b.get(i + 1..)))
        .is_some_and(|line| line.matches('"').count() % 2 == 1);
    if msg.contains("escape") && quoted {
        return format!(
            "{msg}: a backslash in a double-quoted TOML string starts an escape; write regular \
             expressions in single quotes, which take them as written: include = ['^v\\d+$']"
        );
    }
    msg.to_owned()
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`").
fn unknown_field(msg: &str) -> Option<(&str, Vec<&str>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).collect();
    Some((field, expected))
}

/// The valid name a typo most likely meant: at most a third of its letters off.
fn closest<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    let budget = (field.chars().count() / 3).max(1);
    expected
        .iter()
        .map(|e| (strsim::damerau_levenshtein(field, e), *e))
        .filter(|(d, _)| *d <= budget)
        .min()
        .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_key() {
        let msg = "unknown field `usernme`, expected one of `url`, `username`, `password_env`";
        assert!(
            explain(msg, "", 0..0).starts_with("unknown field `usernme`: did you mean `username`?")
        );
        let far = "unknown field `colour`, expected `url` or `username`";
        assert_eq!(explain(far, "", 0..0), far);
    }

    #[test]
    fn a_policy_in_the_main_config_is_pointed_at_the_policy_folder() {
        let msg =
            "unknown field `policy`, expected one of `daemon`, `registries`, `notify`, `cluster`";
        assert!(explain(msg, "", 0..0).contains("policy folder"));
    }

    #[test]
    fn an_escape_in_double_quotes_suggests_single_quotes() {
        let src = "include = [\"^v\\d+$\"]\n";
        let at = src.find("\\d").unwrap() + 1;
        let out = explain("missing escaped value", src, at..at + 1);
        assert!(out.contains("single quotes"), "{out}");
        assert_eq!(
            explain("missing escaped value", "x = '\\d'", 6..7),
            "missing escaped value"
        );
    }
}
