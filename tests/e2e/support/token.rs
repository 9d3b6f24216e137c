//! A small Docker token server: checks Basic credentials and issues RS256 JWTs granting the
//! requested scopes, signed by a generated RSA key whose certificate the registry trusts
//! (`auth.token.rootcertbundle`). Tokens name the key by its libtrust key ID (`kid`), which
//! is how Distribution looks up keys from the bundle.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::registry::{TOKEN_ISSUER, TOKEN_SERVICE};

pub struct TokenServer {
    pub port: u16,
    pub issued: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
    dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(user: &str, pass: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| super::registry::openssl(d, args);
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ]);
        run(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ]);
        run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=ferry-test-token",
            "-days",
            "2",
            "-out",
            "cert.pem",
        ]);
        run(&[
            "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der",
        ]);
        let key =
            ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(d.join("key.der")).unwrap())
                .expect("RSA key");
        let kid = libtrust_key_id(&std::fs::read(d.join("pub.der")).unwrap());
        let (issued, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let creds = (user.to_owned(), pass.to_owned());
        let (iss, rf) = (issued.clone(), refused.clone());
        let key = Arc::new(key);
        let port = super::serve_tcp(move |mut sock| {
            let (key, kid, creds, iss, rf) = (
                key.clone(),
                kid.clone(),
                creds.clone(),
                iss.clone(),
                rf.clone(),
            );
            async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                // A POST (an identity-token exchange) carries its form in the body.
                let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&buf[..split]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    })
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < split + length {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let form = String::from_utf8_lossy(&buf[split..]).into_owned();
                let (status, body) = answer(&head, &form, &creds, &key, &kid);
                if status == 200 {
                    iss.fetch_add(1, Ordering::SeqCst)
                } else {
                    rf.fetch_add(1, Ordering::SeqCst)
                };
                let rsp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(rsp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        TokenServer {
            port,
            issued,
            refused,
            dir,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
}

/// GET with Basic `user:pass`, or POST `grant_type=refresh_token` with `pass` as the identity
/// token (OAuth2, as docker credential helpers' `<token>` logins use).
fn answer(
    head: &str,
    form: &str,
    (user, pass): &(String, String),
    key: &ring::signature::RsaKeyPair,
    kid: &str,
) -> (u16, String) {
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
    let post = head.starts_with("POST ");
    let params: Vec<(String, String)> = if post {
        url::form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect()
    } else {
        url.query_pairs().into_owned().collect()
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let authorized = if post {
        param("grant_type") == Some("refresh_token")
            && param("refresh_token") == Some(pass.as_str())
    } else {
        head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("authorization") && v.trim() == expected
            })
        })
    };
    if !authorized {
        return (
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.into(),
        );
    }
    let access: Vec<_> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": kid });
    let claims = json!({ "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()), "access": access });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let token = format!("{signing_input}.{}", b64(&sig));
    (
        200,
        json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string(),
    )
}

/// libtrust's key ID: the first 240 bits of sha256(DER SubjectPublicKeyInfo), base32,
/// in 12 groups of 4 joined by `:`.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let b32 = base32(&hash[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &b in data {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}
