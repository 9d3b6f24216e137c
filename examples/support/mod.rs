//! What the examples share: the tests' image generator and rationing proxy, and an HTTP
//! client as ferry builds it.
#![allow(dead_code)]

#[path = "../../tests/e2e/support/faults.rs"]
pub mod faults;
#[path = "../../tests/e2e/support/images.rs"]
pub mod images;
#[path = "../../tests/e2e/support/serve.rs"]
mod serve;

pub use serve::serve_tcp;

/// reqwest is built without a default crypto provider; pick ring as ferry does.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
