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

use super::challenge::{parse_challenge, Challenge};
use super::error::RegistryError;
use crate::model::{Credentials, Secret};

/// The scopes a request needs, e.g. `repository:app:pull,push`. Kept as strings because
/// that is what challenges and token servers speak.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    /// No resource: what `GET /v2/` needs.
    pub fn none() -> Self {
        Scope(Vec::new())
    }
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
    /// These scopes with `first` in front (those not already there), for a registry that
    /// asked for more than a token had.
    pub fn led_by(&self, first: &[String]) -> Self {
        let mut all: Vec<String> = first.to_vec();
        all.extend(self.0.iter().filter(|s| !first.contains(s)).cloned());
        Scope(all)
    }

    /// The repository a scope is about (`repository:NAME:…`, the first one).
    pub fn repository(&self) -> Option<&str> {
        self.0
            .first()?
            .strip_prefix("repository:")?
            .rsplit_once(':')
            .map(|(r, _)| r)
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
    /// The registry is reached over https: its token realm must be too.
    tls: bool,
    credentials: Option<Credentials>,
    /// What a credential helper answered, and when: asked again after HELPER_TTL or a refusal.
    from_helper: Mutex<Option<((String, Secret), Instant)>>,
    /// A password file as last read: read again after a refusal.
    from_file: Mutex<Option<Secret>>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<Scope, TokenSlot>>,
    /// What the last token answer looked like, for `ferry probe`.
    last_token: std::sync::Mutex<Option<TokenFacts>>,
}

/// How a registry's token server answers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenFacts {
    /// `token` or `access_token`.
    pub field: &'static str,
    /// `expires_in` as sent; `None`: absent (read as 60 s).
    pub expires_in: Option<u64>,
    /// Exchanged the OAuth2 way (an identity token: ACR, credential helpers).
    pub oauth2: bool,
}

/// How a registry authenticates, as far as ferry has seen.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuthFacts {
    /// `bearer realm=… service=…`, `basic`, `anonymous` or `unknown`.
    pub scheme: String,
    pub token: Option<TokenFacts>,
}

/// How long a credential helper's answer is used: helpers hand out short-lived tokens (ECR's
/// last 12 hours), so a long-running daemon asks again now and then.
const HELPER_TTL: Duration = Duration::from_secs(15 * 60);
/// The usernames that say the secret is an identity (OAuth2 refresh) token: a credential
/// helper's, and the one `docker login` stores for Azure's refresh tokens (ACR-3).
const IDENTITY_USERS: [&str; 2] = ["<token>", "00000000-0000-0000-0000-000000000000"];

fn is_identity(user: &str) -> bool {
    IDENTITY_USERS.contains(&user)
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// A token server that omits `expires_in` means 60 s (the token spec's default); a shorter
/// one is read as 60 s too, as regclient does: a few seconds would mean a fetch per request.
const MIN_TOKEN_LIFETIME: u64 = 60;
/// Renew this long before expiry, so a token never expires between header and server.
const RENEW_MARGIN: Duration = Duration::from_secs(15);

impl Auth {
    pub fn new(registry: &str, tls: bool, credentials: Option<Credentials>) -> Self {
        Auth {
            registry: registry.to_owned(),
            tls,
            credentials,
            from_helper: Mutex::new(None),
            from_file: Mutex::new(None),
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
            last_token: std::sync::Mutex::new(None),
        }
    }

    /// The username and secret, running the credential helper when its last answer is stale.
    async fn creds(&self, op: &'static str) -> Result<Option<(String, Secret)>, RegistryError> {
        match &self.credentials {
            None => Ok(None),
            Some(Credentials::Password(u, p)) => Ok(Some((u.clone(), p.clone()))),
            Some(Credentials::PasswordFile {
                username,
                path,
                password,
            }) => {
                let mut cached = self.from_file.lock().await;
                let secret = match cached.as_ref() {
                    Some(s) => s.clone(),
                    // Read again after a refusal; a file that cannot be read keeps the old one.
                    None => std::fs::read_to_string(path)
                        .ok()
                        .map(|t| Secret::new(t.trim_end_matches(['\n', '\r'])))
                        .filter(|s| !s.expose().is_empty())
                        .unwrap_or_else(|| password.clone()),
                };
                *cached = Some(secret.clone());
                Ok(Some((username.clone(), secret)))
            }
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

    /// Credentials were refused: a helper is asked again next time, a password file read
    /// again (either may have been renewed).
    async fn refused(&self) {
        *self.from_helper.lock().await = None;
        *self.from_file.lock().await = None;
    }

    async fn basic(&self, op: &'static str) -> Result<Option<String>, RegistryError> {
        match self.creds(op).await? {
            Some((u, _)) if is_identity(&u) => Err(RegistryError::Unauthorized {
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
                    .token(http, &realm, service.as_deref(), scope, scope, None)
                    .await?;
                Ok(Some(format!("Bearer {}", token.expose())))
            }
        }
    }

    /// Whether the scheme is known (from a 401 or an anonymous success): a 401 without a
    /// challenge can then be answered without asking the registry's `/v2/` for one.
    pub async fn scheme_known(&self) -> bool {
        !matches!(*self.scheme.lock().await, Scheme::Unknown)
    }

    /// Learn from a 401 to a request sent with `sent` as its Authorization, so that a retry
    /// with new credentials can succeed. A 401 without a challenge (GCR has sent such: GCP-3)
    /// is answered with the scheme already learnt.
    pub async fn challenged(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
        sent: Option<&str>,
        www_authenticate: Option<&str>,
        op: &'static str,
    ) -> Result<(), RegistryError> {
        let unauthorized = |detail: &str| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            op,
            detail: detail.to_owned(),
        };
        let known = self.scheme.lock().await.clone();
        let challenge = match (www_authenticate.and_then(parse_challenge), known) {
            (Some(c), _) => c,
            (None, Scheme::Basic) => Challenge::Basic,
            (None, Scheme::Bearer { realm, service }) => Challenge::Bearer {
                realm,
                service,
                scope: vec![],
                insufficient: false,
            },
            (None, _) => {
                return Err(unauthorized(
                    "the registry sent 401 without a usable WWW-Authenticate challenge",
                ))
            }
        };
        match challenge {
            Challenge::Basic => {
                if self.credentials.is_none() {
                    return Err(unauthorized(
                        "the registry wants a username and password; none are configured",
                    ));
                }
                *self.scheme.lock().await = Scheme::Basic;
                // Only a request that carried the credentials can prove them wrong; a concurrent
                // request may have learnt the scheme while this one was in flight.
                if sent.is_some_and(|h| h.starts_with("Basic ")) {
                    self.refused().await;
                    // A helper or a password file may hold renewed ones by now (ECR's).
                    if self.basic(op).await?.as_deref() == sent {
                        return Err(unauthorized("credentials rejected"));
                    }
                }
                Ok(())
            }
            Challenge::Bearer {
                realm,
                service,
                scope: wanted,
                insufficient,
            } => {
                // The caller retries once after a challenge, so re-fetching here cannot loop.
                *self.scheme.lock().await = Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                };
                // Only the token this request carried is known bad; one fetched meanwhile by a
                // concurrent request is used as it is.
                let refused = sent.and_then(|h| h.strip_prefix("Bearer "));
                // Some token servers read only the first scope (ggcr #1312): the one the
                // registry asks for goes first.
                let asked = if insufficient {
                    scope.led_by(&wanted)
                } else {
                    scope.clone()
                };
                self.token(http, &realm, service.as_deref(), scope, &asked, refused)
                    .await?;
                Ok(())
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
        asked: &Scope,
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
        let token = self.fetch_token(http, realm, service, asked).await?;
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
        // The realm may be another host (Docker Hub's is), but never a downgrade: a plain
        // http realm for an https registry would carry the password in clear.
        if self.tls && url.scheme() != "https" {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                op,
                detail: format!(
                    "the registry names a token server over plain http ({}); refused, since the \
                     credentials would travel in clear to it",
                    url.origin().ascii_serialization()
                ),
            });
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scope.0 {
                q.append_pair("scope", s);
            }
        }
        let creds = self.creds(op).await?;
        let oauth2 = matches!(&creds, Some((u, _)) if is_identity(u));
        let req = match creds {
            // An identity token is exchanged the OAuth2 way (distribution's token spec, POST).
            Some((u, token)) if is_identity(&u) => {
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
        // A token is a few KiB; a server that sends more is not a token server. One byte
        // past the limit tells a long answer from one that fits exactly.
        const MAX_TOKEN_BODY: usize = 1 << 20;
        let body = super::http::read_limited(rsp, MAX_TOKEN_BODY + 1)
            .await
            .map_err(|e| RegistryError::Transport {
                registry: self.registry.clone(),
                op,
                source: e.without_url(),
            })?;
        if body.len() > MAX_TOKEN_BODY {
            return Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                op,
                detail: "token response larger than 1 MiB: not read further".into(),
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.registry.clone(),
                op,
                detail: format!("token response is not JSON: {e}"),
            })?;
        let field = if parsed.token.is_some() {
            "token"
        } else {
            "access_token"
        };
        *self.last_token.lock().expect("lock poisoned") = Some(TokenFacts {
            field,
            expires_in: parsed.expires_in,
            oauth2,
        });
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.clone(),
                op,
                detail: "token response has no token".into(),
            })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(0).max(MIN_TOKEN_LIFETIME));
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_MARGIN).max(lifetime / 2);
        Ok(Token {
            value: Secret::new(value),
            renew_at,
        })
    }

    /// How this registry authenticates, as seen so far.
    pub async fn facts(&self) -> AuthFacts {
        let scheme = match &*self.scheme.lock().await {
            Scheme::Unknown => "unknown".to_owned(),
            Scheme::Anonymous => "anonymous".to_owned(),
            Scheme::Basic => "basic".to_owned(),
            Scheme::Bearer { realm, service } => {
                format!(
                    "bearer realm={realm} service={}",
                    service.as_deref().unwrap_or("-")
                )
            }
        };
        let token = self.last_token.lock().expect("lock poisoned").clone();
        AuthFacts { scheme, token }
    }

    /// Remember that the registry accepted a request without credentials.
    pub async fn anonymous_ok(&self) {
        let mut s = self.scheme.lock().await;
        if matches!(*s, Scheme::Unknown) {
            *s = Scheme::Anonymous;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A challenge from an https registry naming a plain-http token server (on another
    /// host) is refused before anything is sent: the password would cross in clear.
    #[tokio::test]
    async fn a_plain_http_realm_for_an_https_registry_gets_no_password() {
        let creds = Credentials::Password("robot".into(), Secret::new("Victim-Passw0rd"));
        let auth = Auth::new("secure", true, Some(creds));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let scope = Scope(vec!["repository:app:pull".into()]);
        let Err(e) = auth
            .fetch_token(&http, "http://127.0.0.2:9/token", Some("reg"), &scope)
            .await
        else {
            panic!("a token over plain http");
        };
        let said = e.to_string();
        assert!(said.contains("plain http (http://127.0.0.2:9)"), "{said}");
        assert!(!said.contains("Victim"), "{said}");
    }
}
