//! The test certificate authority (`tests/tls/`): a CA and two server certificates for `localhost` and
//! `127.0.0.1` (`server-a`, `server-b`: a renewal), and clients that trust it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;

/// `tests/tls/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    crate::workspace_root().join("tests").join("tls").join(name)
}

/// The CA that signed both test server certificates (PEM).
pub fn ca() -> PathBuf {
    fixture("ca.pem")
}

/// A reqwest client trusting the test CA only, recording the server's certificate (`TlsInfo`).
pub fn client() -> reqwest::Client {
    let pem = std::fs::read(ca()).expect("tests/tls/ca.pem is in the repository");
    let ca = reqwest::Certificate::from_pem(&pem).expect("the test CA is PEM");
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .tls_info(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a reqwest client with static settings builds")
}

/// The DER of the first certificate of a PEM file.
pub fn first_certificate(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).context("PEM body")
}

/// The certificate `url`'s server presented (DER), with the answer's status.
pub async fn served_certificate(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>)> {
    let resp = client.get(url).send().await.with_context(|| url.to_owned())?;
    let cert = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate().map(<[u8]>::to_vec))
        .context("no peer certificate recorded")?;
    Ok((resp.status().as_u16(), cert))
}
