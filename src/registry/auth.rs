//! Authentication for one registry: anonymous, HTTP Basic, or the Docker/OCI bearer-token
//! flow. The scheme is learnt from the first 401 challenge; tokens are cached per scope set
//! until shortly before they expire, so steady-state requests carry a header up front and
//! cost no extra round trip.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::error::RegistryError;
use crate::model::{Credentials, Secret};

/// The scopes a request needs, e.g. `repository:app:pull,push`. Kept as strings because
/// that is what challenges and token servers speak.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repo: &str) -> Self {
        Scope(vec![format!("repository:{repo}:pull")])
    }
    pub fn push(repo: &str) -> Self {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }
    /// Push on `repo` plus pull on `from`: what a cross-repository mount needs.
    pub fn mount(repo: &str, from: &str) -> Self {
        Scope(vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    pub fn catalog() -> Self {
        Scope(vec!["registry:catalog:*".into()])
    }
}

#[derive(Clone, Debug)]
enum Scheme {
    Unknown,
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    value: Secret,
    renew_at: Instant,
}

/// One scope's token. Its own lock makes fetching single-flight: concurrent requests for a
/// scope wait for one token instead of each asking the token server.
type TokenSlot = Arc<Mutex<Option<Token>>>;

pub struct Auth {
    registry: String,
    credentials: Option<Credentials>,
    /// What a credential helper answered, and when: asked again after HELPER_TTL or a refusal.
    from_helper: Mutex<Option<((String, Secret), Instant)>>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<Scope, TokenSlot>>,
}

/// How long a credential helper's answer is used: helpers hand out short-lived tokens (ECR's
/// last 12 hours), so a long-running daemon asks again now and then.
const HELPER_TTL: Duration = Duration::from_secs(15 * 60);
/// The username by which a helper says its secret is an identity (OAuth2 refresh) token.
const IDENTITY_TOKEN: &str = "<token>";

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// A token server that omits `expires_in` means 60 s (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Renew this long before expiry, so a token never expires between header and server.
const RENEW_MARGIN: Duration = Duration::from_secs(15);

impl Auth {
    pub fn new(registry: &str, credentials: Option<Credentials>) -> Self {
        Auth {
            registry: registry.to_owned(),
            credentials,
            from_helper: Mutex::new(None),
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The username and secret, running the credential helper when its last answer is stale.
    async fn creds(&self, op: &'static str) -> Result<Option<(String, Secret)>, RegistryError> {
        match &self.credentials {
            None => Ok(None),
            Some(Credentials::Password(u, p)) => Ok(Some((u.clone(), p.clone()))),
            Some(Credentials::Helper { program, server }) => {
                let mut cached = self.from_helper.lock().await;
                if let Some((c, _)) = cached.as_ref().filter(|(_, at)| at.elapsed() < HELPER_TTL) {
                    return Ok(Some(c.clone()));
                }
                let c = super::helper::get(program, server).await.map_err(|e| {
                    RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        op,
                        detail: e.to_string(),
                    }
                })?;
                *cached = Some((c.clone(), Instant::now()));
                Ok(Some(c))
            }
        }
    }

    /// Credentials were refused: a helper is asked again next time (it may have renewed them).
    async fn refused(&self) {
        *self.from_helper.lock().await = None;
    }

    async fn basic(&self, op: &'static str) -> Result<Option<String>, RegistryError> {
        match self.creds(op).await? {
            Some((u, _)) if u == IDENTITY_TOKEN => Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                op,
                detail: "the credential helper gave an identity token, which needs a token server; this registry asks for Basic auth"
                    .into(),
            }),
            Some((u, p)) => Ok(Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()))))),
            None => Ok(None),
        }
    }

    /// The `Authorization` value to send up front for `scope`, if the scheme is known.
    /// Fetches a fresh token when the cached one is about to expire.
    pub async fn header(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
    ) -> Result<Option<String>, RegistryError> {
        let scheme = self.scheme.lock().await.clone();
        match scheme {
            Scheme::Unknown | Scheme::Anonymous => Ok(None),
            Scheme::Basic => self.basic("auth").await,
            Scheme::Bearer { realm, service } => {
                let token = self
                    .token(http, &realm, service.as_deref(), scope, None)
                    .await?;
                Ok(Some(format!("Bearer {}", token.expose())))
            }
        }
    }

    /// Learn from a 401 to a request sent with `sent` as its Authorization. Returns true when
    /// a retry with new credentials can succeed.
    pub async fn challenged(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
        sent: Option<&str>,
        www_authenticate: Option<&str>,
        op: &'static str,
    ) -> Result<bool, RegistryError> {
        let unauthorized = |detail: &str| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            op,
            detail: detail.to_owned(),
        };
        let Some(challenge) = www_authenticate.and_then(parse_challenge) else {
            return Err(unauthorized(
                "the registry sent 401 without a usable WWW-Authenticate challenge",
            ));
        };
        let mut scheme = self.scheme.lock().await;
        match challenge {
            Challenge::Basic => {
                if self.credentials.is_none() {
                    return Err(unauthorized(
                        "the registry wants a username and password; none are configured",
                    ));
                }
                // Only a request that carried the credentials can prove them wrong; a concurrent
                // request may have learnt the scheme while this one was in flight.
                if sent.is_some_and(|h| h.starts_with("Basic ")) {
                    self.refused().await;
                    return Err(unauthorized("credentials rejected"));
                }
                *scheme = Scheme::Basic;
                Ok(true)
            }
            Challenge::Bearer { realm, service } => {
                // The caller retries once after a challenge, so re-fetching here cannot loop.
                *scheme = Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                };
                drop(scheme);
                // Only the token this request carried is known bad; one fetched meanwhile by a
                // concurrent request is used as it is.
                let refused = sent.and_then(|h| h.strip_prefix("Bearer "));
                self.token(http, &realm, service.as_deref(), scope, refused)
                    .await?;
                Ok(true)
            }
        }
    }

    /// The token for `scope`: the cached one unless it is about to expire or is `refused`,
    /// else a new one (one fetch at a time per scope).
    async fn token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        refused: Option<&str>,
    ) -> Result<Secret, RegistryError> {
        let slot = self
            .tokens
            .lock()
            .await
            .entry(scope.clone())
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some(t) = cached
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at && refused != Some(t.value.expose()))
        {
            return Ok(t.value.clone());
        }
        let token = self.fetch_token(http, realm, service, scope).await?;
        *cached = Some(token.clone());
        Ok(token.value)
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<Token, RegistryError> {
        let op = "token";
        let mut url = url::Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: self.registry.clone(),
            op,
            detail: format!("bad token realm: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scope.0 {
                q.append_pair("scope", s);
            }
        }
        let req = match self.creds(op).await? {
            // An identity token is exchanged the OAuth2 way (distribution's token spec, POST).
            Some((u, token)) if u == IDENTITY_TOKEN => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.expose()),
                    ("client_id", "ferry"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let scopes = scope.0.join(" ");
                form.push(("scope", &scopes));
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish();
                http.post(url.as_str().split('?').next().unwrap_or(realm))
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
            }
            Some((u, p)) => http.get(url).basic_auth(u, Some(p.expose())),
            None => http.get(url),
        };
        let req = req.timeout(Duration::from_secs(30));
        let rsp = req.send().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            op,
            source: e.without_url(),
        })?;
        let status = rsp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            self.refused().await;
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                op,
                detail: format!("token server answered {}", status.as_u16()),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                registry: self.registry.clone(),
                op,
                status: status.as_u16(),
                code: None,
                message: "token server".into(),
                retry_after: None,
            });
        }
        let body = rsp.bytes().await.map_err(|e| RegistryError::Transport {
            registry: self.registry.clone(),
            op,
            source: e.without_url(),
        })?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                op,
                detail: format!("token response is not JSON: {e}"),
            })?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                op,
                detail: "token response has no token".into(),
            })?;
        let lifetime =
            Duration::from_secs(parsed.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME).max(1));
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_MARGIN).max(lifetime / 2);
        Ok(Token {
            value: Secret::new(value),
            renew_at,
        })
    }

    /// Remember that the registry accepted a request without credentials.
    pub async fn anonymous_ok(&self) {
        let mut s = self.scheme.lock().await;
        if matches!(*s, Scheme::Unknown) {
            *s = Scheme::Anonymous;
        }
    }
}

#[derive(Debug, PartialEq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// `Bearer realm="https://auth/token",service="registry",scope="..."` or `Basic realm="x"`.
fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
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
            parse_challenge(
                r#"Bearer realm="https://a/token",service="reg",scope="repository:x:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://a/token".into(),
                service: Some("reg".into())
            })
        );
        assert_eq!(parse_challenge("Bearer service=reg"), None);
    }
}
