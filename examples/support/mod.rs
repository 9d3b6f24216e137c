//! What the examples share: the tests' image generator, and an HTTP client as ferry builds it.

#[path = "../../tests/e2e/support/images.rs"]
pub mod images;

/// reqwest is built without a default crypto provider; pick ring as ferry does.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
