//! `[daemon] tls_cert_file`, `tls_key_file`, `tls_client_ca_file`, `tls_ca_file`,
//! `tls_client_cert_file`, `tls_client_key_file`: the listener's TLS (rustls, ring), built
//! at load so a reload picks up renewed files, and what the CLI trusts and presents when it
//! talks to the daemon.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::diag::Sink;
use super::raw::RawDaemon;

pub struct ListenerTls {
    pub server: Arc<rustls::ServerConfig>,
    /// What a client of this daemon trusts: `tls_ca_file`'s certificates, else the
    /// listener's own (a self-signed certificate is its own anchor).
    pub client_roots: Vec<CertificateDer<'static>>,
    /// Clients must present a certificate from `tls_client_ca_file`.
    pub mutual: bool,
    /// What the CLI presents to a mutual-TLS daemon: the PEM certificate chain followed by
    /// its key, as reqwest takes an identity. Never printed.
    pub client_identity: Option<Vec<u8>>,
}

fn certs(
    f: &Spanned<String>,
    field: &str,
    base: &Path,
    sink: &mut Sink,
) -> Option<Vec<CertificateDer<'static>>> {
    let path = base.join(f.get_ref());
    let certs: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(&path) {
        Ok(it) => it.collect(),
        Err(e) => {
            sink.err(
                f.span(),
                format!("{field}: cannot read `{}`: {e}", f.get_ref()),
            );
            return None;
        }
    };
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            sink.err(
                f.span(),
                format!("{field}: `{}` holds no PEM CERTIFICATE", f.get_ref()),
            );
            None
        }
        Err(e) => {
            sink.err(
                f.span(),
                format!("{field}: `{}` is not PEM certificates: {e}", f.get_ref()),
            );
            None
        }
    }
}

pub(super) fn listener_tls(d: &RawDaemon, base: &Path, sink: &mut Sink) -> Option<ListenerTls> {
    let (cert, key) = match (&d.tls_cert_file, &d.tls_key_file) {
        (None, None) => {
            let client_side = [
                &d.tls_client_ca_file,
                &d.tls_ca_file,
                &d.tls_client_cert_file,
            ];
            if let Some(c) = client_side.into_iter().flatten().next() {
                sink.err(
                    c.span(),
                    "daemon.tls: set tls_cert_file and tls_key_file for the listener first",
                );
            }
            return None;
        }
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) | (None, Some(c)) => {
            sink.err(
                c.span(),
                "daemon.tls: give tls_cert_file and tls_key_file together",
            );
            return None;
        }
    };
    let chain = certs(cert, "daemon.tls_cert_file", base, sink)?;
    // The key's content is never printed: only whether it parses.
    let key_der = match PrivateKeyDer::from_pem_file(base.join(key.get_ref())) {
        Ok(k) => k,
        Err(_) => {
            sink.err(
                key.span(),
                format!(
                    "daemon.tls_key_file: `{}` is not a readable PEM private key",
                    key.get_ref()
                ),
            );
            return None;
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            sink.err(cert.span(), format!("daemon.tls: {e}"));
            return None;
        }
    };
    let builder = match &d.tls_client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "daemon.tls_client_ca_file", base, sink)? {
                if let Err(e) = roots.add(c) {
                    sink.err(ca.span(), format!("daemon.tls_client_ca_file: {e}"));
                    return None;
                }
            }
            match rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(e) => {
                    sink.err(ca.span(), format!("daemon.tls_client_ca_file: {e}"));
                    return None;
                }
            }
        }
    };
    let mut server = match builder.with_single_cert(chain.clone(), key_der) {
        Ok(s) => s,
        Err(e) => {
            sink.err(cert.span(), format!("daemon.tls_cert_file: the certificate and tls_key_file do not make a TLS identity: {e}"));
            return None;
        }
    };
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client_roots = match &d.tls_ca_file {
        Some(f) => certs(f, "daemon.tls_ca_file", base, sink)?,
        None => chain,
    };
    let mutual = d.tls_client_ca_file.is_some();
    let client_identity = client_identity(d, base, sink)?;
    Some(ListenerTls {
        server: Arc::new(server),
        client_roots,
        mutual,
        client_identity,
    })
}

/// `tls_client_cert_file` and `tls_client_key_file`, checked as a pair and as PEM, and read
/// once into the chain-then-key form reqwest takes.
fn client_identity(d: &RawDaemon, base: &Path, sink: &mut Sink) -> Option<Option<Vec<u8>>> {
    let (cert, key) = match (&d.tls_client_cert_file, &d.tls_client_key_file) {
        (None, None) => return Some(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) | (None, Some(c)) => {
            sink.err(
                c.span(),
                "daemon.tls: give tls_client_cert_file and tls_client_key_file together",
            );
            return None;
        }
    };
    certs(cert, "daemon.tls_client_cert_file", base, sink)?;
    let mut pem = std::fs::read(base.join(cert.get_ref())).ok()?;
    match std::fs::read(base.join(key.get_ref())) {
        Ok(k) if PrivateKeyDer::from_pem_slice(&k).is_ok() => {
            pem.push(b'\n');
            pem.extend_from_slice(&k);
            Some(Some(pem))
        }
        _ => {
            sink.err(
                key.span(),
                format!(
                    "daemon.tls_client_key_file: `{}` is not a readable PEM private key",
                    key.get_ref()
                ),
            );
            None
        }
    }
}
