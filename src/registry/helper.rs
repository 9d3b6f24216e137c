//! Docker credential helpers (`docker-credential-<name> get`): the server address on stdin,
//! `{"Username": ..., "Secret": ...}` on stdout. Bounded in time and output; what the helper
//! prints is never logged or put in an error (it may hold the secret, or a keychain's words
//! about it): errors name the helper and its exit code.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::Secret;

/// Why a credential helper gave no credentials. It carries no word the helper printed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("credential helper {program} did not answer within {secs}s")]
    Timeout { program: String, secs: u64 },
    #[error("credential helper {program} not found on PATH")]
    NotFound { program: String },
    #[error("credential helper {program} could not start: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("credential helper {program} exited with {code} for {server}")]
    Exit {
        program: String,
        code: String,
        server: String,
    },
    #[error("credential helper {program}: output unreadable or over {} KiB", MAX_OUTPUT >> 10)]
    Output { program: String },
    #[error(
        "credential helper {program} printed no credentials (want JSON with Username and Secret)"
    )]
    NotCredentials { program: String },
    #[error("credential helper {program} has no credentials for {server}")]
    Empty { program: String, server: String },
}

/// Long enough for a helper that asks a cloud API (ECR, GCR), short enough that a helper
/// waiting on a desktop prompt that will never come does not hold a run.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Credentials are a few KiB at most (a GCR access token is about 2 KiB).
const MAX_OUTPUT: u64 = 64 << 10;

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Ask `program` for the credentials of `server`: (username, secret). A username of
/// `<token>` means the secret is an identity token (an OAuth2 refresh token).
pub async fn get(program: &str, server: &str) -> Result<(String, Secret), HelperError> {
    tokio::time::timeout(TIMEOUT, ask(program, server))
        .await
        .unwrap_or_else(|_| {
            Err(HelperError::Timeout {
                program: program.to_owned(),
                secs: TIMEOUT.as_secs(),
            })
        })
}

/// The variables ferry's own secrets come from: a helper is a program of someone else's,
/// asked for one registry's credentials, and gets none of them.
static SCRUB: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Keep these environment variables from every credential helper started from now on.
pub fn keep_from_helpers(names: &[String]) {
    *SCRUB.write().expect("lock poisoned") = names.to_vec();
}

async fn ask(program: &str, server: &str) -> Result<(String, Secret), HelperError> {
    let program_ = || program.to_owned();
    let mut cmd = tokio::process::Command::new(program);
    for name in SCRUB.read().expect("lock poisoned").iter() {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HelperError::NotFound {
                program: program_(),
            },
            _ => HelperError::Start {
                program: program_(),
                source: e,
            },
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    // A helper that exits without reading its input is judged by its exit code below.
    let _ = stdin.write_all(server.as_bytes()).await;
    drop(stdin);
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("piped")
        .take(MAX_OUTPUT + 1)
        .read_to_end(&mut out)
        .await;
    let status = child.wait().await.map_err(|e| HelperError::Start {
        program: program_(),
        source: e,
    })?;
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| format!("code {c}"));
        return Err(HelperError::Exit {
            program: program_(),
            code,
            server: server.to_owned(),
        });
    }
    if read.is_err() || out.len() as u64 > MAX_OUTPUT {
        return Err(HelperError::Output {
            program: program_(),
        });
    }
    let reply: Reply = serde_json::from_slice(&out).map_err(|_| HelperError::NotCredentials {
        program: program_(),
    })?;
    if reply.secret.is_empty() {
        return Err(HelperError::Empty {
            program: program_(),
            server: server.to_owned(),
        });
    }
    Ok((reply.username, Secret::new(reply.secret)))
}
