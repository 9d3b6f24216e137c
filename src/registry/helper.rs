//! Docker credential helpers (`docker-credential-<name> get`): the server address on stdin,
//! `{"Username": ..., "Secret": ...}` on stdout. Bounded in time and output; what the helper
//! prints is never logged or put in an error (it may hold the secret, or a keychain's words
//! about it): errors name the helper and its exit code.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::Secret;

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
pub async fn get(program: &str, server: &str) -> Result<(String, Secret), String> {
    tokio::time::timeout(TIMEOUT, ask(program, server))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "credential helper {program} did not answer within {}s",
                TIMEOUT.as_secs()
            ))
        })
}

async fn ask(program: &str, server: &str) -> Result<(String, Secret), String> {
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("credential helper {program} not found on PATH")
            }
            _ => format!("credential helper {program} could not start: {e}"),
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
    let status = child
        .wait()
        .await
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| format!("code {c}"));
        return Err(format!(
            "credential helper {program} exited with {code} for {server}"
        ));
    }
    if read.is_err() || out.len() as u64 > MAX_OUTPUT {
        return Err(format!(
            "credential helper {program}: output unreadable or over {} KiB",
            MAX_OUTPUT >> 10
        ));
    }
    let reply: Reply = serde_json::from_slice(&out)
        .map_err(|_| format!("credential helper {program} printed no credentials (want JSON with Username and Secret)"))?;
    if reply.secret.is_empty() {
        return Err(format!(
            "credential helper {program} has no credentials for {server}"
        ));
    }
    Ok((reply.username, Secret::new(reply.secret)))
}
