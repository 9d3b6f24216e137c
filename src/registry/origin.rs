//! Credentials go only where they belong: the registry's own origin (scheme, host, port), or
//! one `trusted_origins` names. A `Location` or `Link` elsewhere is followed bare, and a 401
//! there is refused with what to do, never answered with this registry's password.

use reqwest::header::AUTHORIZATION;
use reqwest::RequestBuilder;

use super::http::Http;
use super::RegistryError;

impl Http {
    /// The request, with this registry's credentials only when it goes to the registry's
    /// own origin or one `trusted_origins` names. A `Location` or `Link` elsewhere is
    /// followed bare; the other origin, when it is one, is returned (`Some`).
    pub(super) fn authorized(
        &self,
        rb: RequestBuilder,
        header: Option<String>,
    ) -> reqwest::Result<(reqwest::Request, Option<String>)> {
        let (client, req) = rb.build_split();
        let req = req?;
        let origin = req.url().origin();
        if origin == self.base.origin() || self.trusted.contains(&origin) {
            let rb = RequestBuilder::from_parts(client, req);
            let rb = match header {
                Some(h) => rb.header(AUTHORIZATION, h),
                None => rb,
            };
            return Ok((rb.build()?, None));
        }
        if header.is_some() {
            tracing::debug!(registry = %self.name, to = %origin.ascii_serialization(), "request to another origin sent without credentials");
        }
        Ok((req, Some(origin.ascii_serialization())))
    }

    /// A 401 from an origin the registry sent ferry to: its credentials are not for there.
    pub(super) fn foreign_401(&self, op: &'static str, origin: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.name.clone(),
            op,
            detail: format!(
                "the registry sent ferry to {origin}, which asks for credentials; ferry sends them \
                 only to the registry's own origin ({}). If {origin} is the same service (a proxy \
                 on another port), list it in trusted_origins",
                self.base.origin().ascii_serialization()
            ),
        }
    }
}
