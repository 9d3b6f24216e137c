//! The proxy's own authentication in front of an anonymous Distribution: Basic, or Bearer
//! tokens from its own token endpoint (`/token`, or `/oauth2/token` for ACR), with the
//! challenge shapes and token-server habits of the profiles.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use super::knobs::{Auth, Knobs};

/// What a request needs: `repository:NAME:pull`, `…:push`, `registry:catalog:*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Need {
    pub resource: String,
    pub action: &'static str,
}

impl Need {
    pub fn scope(&self) -> String {
        match self.action {
            "pull" => format!("{}:pull", self.resource),
            "*" => format!("{}:*", self.resource),
            _ => format!("{}:pull,push", self.resource),
        }
    }
}

/// A token's grants (repository, action) and when it expires.
type Grant = (HashSet<(String, String)>, Instant);

#[derive(Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, Grant>>,
    pub count: std::sync::atomic::AtomicU64,
}

/// How a request's credentials stand.
pub enum Verdict {
    Ok,
    /// No or wrong credentials, or a token without the scope (`insufficient`).
    Refused {
        insufficient: bool,
    },
}

fn basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// `repository:a/b:pull,push` → (resource, each action).
fn grants(scope: &str) -> Vec<(String, String)> {
    let Some((resource, actions)) = scope.rsplit_once(':') else {
        return vec![];
    };
    actions
        .split(',')
        .map(|a| (resource.to_owned(), a.to_owned()))
        .collect()
}

impl Tokens {
    fn mint(&self, scopes: &[String], ttl: u64) -> String {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let token = format!("quirks-token-{n}-{:x}", Instant::now().elapsed().as_nanos());
        let set = scopes.iter().flat_map(|s| grants(s)).collect();
        let until = Instant::now() + Duration::from_secs(ttl);
        self.issued
            .lock()
            .unwrap()
            .insert(token.clone(), (set, until));
        token
    }

    fn covers(&self, token: &str, need: &Need) -> Option<bool> {
        let issued = self.issued.lock().unwrap();
        let (set, until) = issued.get(token)?;
        if Instant::now() >= *until {
            return None;
        }
        let has = |a: &str| set.contains(&(need.resource.clone(), a.to_owned()));
        Some(match need.action {
            "pull" => has("pull") || has("push") || has("*"),
            "*" => has("*"),
            _ => has("push") || has("*"),
        })
    }
}

/// Check `authorization` for `needs` under the profile's scheme.
pub fn verify(k: &Knobs, tokens: &Tokens, authorization: Option<&str>, needs: &[Need]) -> Verdict {
    let refused = Verdict::Refused {
        insufficient: false,
    };
    match &k.auth {
        Auth::None => Verdict::Ok,
        Auth::Basic { user, pass, .. } => match authorization.and_then(basic) {
            Some((u, p)) if &u == user && &p == pass => Verdict::Ok,
            _ => refused,
        },
        Auth::Bearer { user, pass } => {
            // Harbor takes Basic credentials on the v2 API too (HBR-4).
            if k.basic_if_authorized
                && authorization
                    .and_then(basic)
                    .is_some_and(|(u, p)| &u == user && &p == pass)
            {
                return Verdict::Ok;
            }
            bearer(tokens, authorization, needs)
        }
        Auth::OAuth2 { .. } => bearer(tokens, authorization, needs),
    }
}

fn bearer(tokens: &Tokens, authorization: Option<&str>, needs: &[Need]) -> Verdict {
    let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Verdict::Refused {
            insufficient: false,
        };
    };
    for need in needs {
        match tokens.covers(token.trim(), need) {
            None => {
                return Verdict::Refused {
                    insufficient: false,
                }
            }
            Some(false) => return Verdict::Refused { insufficient: true },
            Some(true) => {}
        }
    }
    Verdict::Ok
}

/// The `WWW-Authenticate` of a 401; `None` when the profile sends none.
pub fn challenge(
    k: &Knobs,
    origin: &str,
    ping: bool,
    carried: bool,
    needs: &[Need],
    insufficient: bool,
) -> Option<String> {
    if k.challenge_ping_only && !ping {
        return None;
    }
    if k.basic_if_authorized && carried {
        return Some("Basic realm=\"harbor\"".into());
    }
    let scope = needs.iter().map(Need::scope).collect::<Vec<_>>().join(" ");
    let scope = if scope.is_empty() {
        String::new()
    } else {
        format!(",scope=\"{scope}\"")
    };
    let error = if insufficient {
        ",error=\"insufficient_scope\""
    } else {
        ""
    };
    match &k.auth {
        Auth::None => None,
        Auth::Basic { upper, .. } => {
            let scheme = if *upper { "BASIC" } else { "Basic" };
            Some(format!("{scheme} realm=\"{origin}/\",service=\"quirks\""))
        }
        Auth::Bearer { .. } => Some(format!(
            "Bearer realm=\"{origin}/token\",service=\"quirks\"{scope}{error}"
        )),
        Auth::OAuth2 { .. } => Some(format!(
            "Bearer realm=\"{origin}/oauth2/token\",service=\"quirks\"{scope}{error}"
        )),
    }
}

/// The token endpoint: (status, JSON body).
pub fn token_endpoint(
    k: &Knobs,
    tokens: &Tokens,
    method: &str,
    query: &str,
    form: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    let pairs = |s: &str| -> Vec<(String, String)> {
        url::form_urlencoded::parse(s.as_bytes())
            .into_owned()
            .collect()
    };
    let mut scopes: Vec<String> = Vec::new();
    match &k.auth {
        Auth::OAuth2 { refresh_token } => {
            // ACR-3: only a POSTed refresh token; Basic with it is refused.
            let f = pairs(form);
            let get = |key: &str| f.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            if method != "POST"
                || get("grant_type").as_deref() != Some("refresh_token")
                || get("refresh_token").as_deref() != Some(refresh_token.as_str())
            {
                return (
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"refresh token required"}]}"#
                        .into(),
                );
            }
            scopes.extend(
                get("scope")
                    .unwrap_or_default()
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        Auth::Bearer { user, pass } => {
            if !user.is_empty()
                && !authorization
                    .and_then(basic)
                    .is_some_and(|(u, p)| &u == user && &p == pass)
            {
                return (
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.into(),
                );
            }
            scopes.extend(
                pairs(query)
                    .into_iter()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v),
            );
        }
        _ => return (404, "{}".into()),
    }
    if k.reject_odd_scopes
        && scopes
            .iter()
            .any(|s| s.contains(":delete") || s.starts_with("registry:catalog"))
    {
        return (
            400,
            r#"{"error":"Unable to decode repository and actions"}"#.into(),
        );
    }
    if k.first_scope_only {
        scopes.truncate(1);
    }
    let token = tokens.mint(&scopes, k.token_ttl);
    let field = if k.access_token_field {
        "access_token"
    } else {
        "token"
    };
    let expires = if k.omit_expires_in {
        String::new()
    } else {
        format!(",\"expires_in\":{}", k.token_ttl)
    };
    (200, format!("{{\"{field}\":\"{token}\"{expires}}}"))
}
