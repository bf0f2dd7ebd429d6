//! TLS material both binaries read from PEM files: a listener's certificate, read again when its files
//! change (a renewed certificate is served to new connections without a restart; open connections keep
//! theirs), and the certificate authorities trusted for upstreams (`--upstream-ca`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the certificate files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The two files' contents when last read (a few KiB): any change means load them again. Contents, not
/// modification times, which are too coarse to see two writes in a row and which a Kubernetes Secret
/// volume's symlink swap does not change.
type Stamp = [Option<Vec<u8>>; 2];

/// A listener's certificate chain and key, from `cert` and `key` (PEM), reloaded by [`Self::watch`].
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Stamp>,
}

impl ReloadingCert {
    /// Reads both files; an unreadable or mismatched pair is refused (the process must not start without).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, String> {
        let stamp = stamp(cert, key);
        let certified = read(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(certified)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// Reads the files again if either changed since the last read: `Ok(true)` when a new certificate is
    /// served from now on. A pair that does not load (a half-written renewal) keeps the current one and
    /// is tried again at the next change.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.cert, &self.key);
        let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if *last == now {
            return Ok(false);
        }
        *last = now;
        let certified = read(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(true)
    }

    /// Looks at the files every [`RELOAD_EVERY`] for as long as the process runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "Serving the renewed TLS certificate.")
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    cert = %self.cert.display(),
                    %error,
                    "The changed TLS certificate does not load; still serving the previous one."
                ),
            }
        }
    }

    /// A TLS 1.2/1.3 server configuration serving this certificate (ring; `alpn` in preference order).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, String> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key].map(|p| std::fs::read(p).ok())
}

fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = certificates(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: no private key: {e}", key.display()))?;
    let signer = any_supported_type(&key).map_err(|e| format!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| format!("{} and its key do not match: {e}", cert.display()))?;
    Ok(certified)
}

/// The certificates of a PEM file (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// A root store of the certificate authorities in a PEM file.
pub fn root_store(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(store)
}

/// Mozilla's web PKI roots: what upstreams, collectors and IdPs are trusted by unless told otherwise.
pub fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// Adds the certificate authorities of PEM text to `store`.
pub fn add_pem(store: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), String> {
    for cert in CertificateDer::pem_slice_iter(pem) {
        store.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A TLS 1.2/1.3 client (ring) trusting `roots`: every hand-made TLS connection of both binaries (wss://
/// upstreams, the OTLP/HTTP exporter) is made with one.
pub fn client_connector(roots: rustls::RootCertStore) -> tokio_rustls::TlsConnector {
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tls").join(name)
    }

    fn leaf(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_replaced_pair_is_served_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!("mcpgw-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::copy(fixture("server-a.pem"), &cert).unwrap();
        std::fs::copy(fixture("server-a.key"), &key).unwrap();
        let loaded = ReloadingCert::load(&cert, &key).unwrap();
        let first = leaf(&loaded);
        assert_eq!(loaded.reload_if_changed(), Ok(false), "nothing changed");

        // Half a renewal: the new certificate with the old key does not load; the old pair stays.
        std::fs::copy(fixture("server-b.pem"), &cert).unwrap();
        assert!(loaded.reload_if_changed().unwrap_err().contains("do not match"));
        assert_eq!(leaf(&loaded), first);
        std::fs::copy(fixture("server-b.key"), &key).unwrap();
        assert_eq!(loaded.reload_if_changed(), Ok(true));
        assert_ne!(leaf(&loaded), first);
        assert_eq!(leaf(&loaded), certificates(&fixture("server-b.pem")).unwrap()[0].to_vec());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_files_are_refused_with_their_name() {
        let missing =
            ReloadingCert::load(Path::new("/nonexistent.pem"), &fixture("server-a.key")).unwrap_err();
        assert!(missing.contains("/nonexistent.pem"), "{missing}");
        let no_key = ReloadingCert::load(&fixture("server-a.pem"), &fixture("ca.pem")).unwrap_err();
        assert!(no_key.contains("no private key"), "{no_key}");
        assert_eq!(root_store(&fixture("ca.pem")).unwrap().len(), 1);
    }
}
