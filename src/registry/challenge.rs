//! `WWW-Authenticate` challenges, parsed the lenient way registries need: the scheme in any
//! case (Nexus says `BASIC`), quoted or bare values, and the scope and error a Bearer
//! challenge can carry (`insufficient_scope`).

#[derive(Debug, PartialEq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scopes the registry says the request needs.
        scope: Vec<String>,
        /// `error="insufficient_scope"`: the token was good, its scopes too narrow.
        insufficient: bool,
    },
}

/// `Bearer realm="https://auth/token",service="registry",scope="..."` or `Basic realm="x"`.
pub(super) fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope, mut insufficient) = (None, None, Vec::new(), false);
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            // Several scopes are separated by spaces.
            "scope" => scope.extend(
                value
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "error" => insufficient = value == "insufficient_scope",
            _ => {}
        }
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
        insufficient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"BASIC realm="Sonatype Nexus Repository Manager""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://a/token",service="reg",scope="repository:x:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://a/token".into(),
                service: Some("reg".into()),
                scope: vec!["repository:x:pull".into()],
                insufficient: false,
            })
        );
        assert_eq!(
            parse_challenge(
                r#"bearer realm="r",scope="repository:a:pull,push repository:b:pull",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "r".into(),
                service: None,
                scope: vec!["repository:a:pull,push".into(), "repository:b:pull".into()],
                insufficient: true,
            })
        );
        assert_eq!(parse_challenge("Bearer service=reg"), None);
    }
}
