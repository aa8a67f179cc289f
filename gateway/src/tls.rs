//! TLS: the data listener's certificate (and client verification for mutual TLS), re-read when the files change —
//! Kubernetes rotates secrets in place — and the TLS settings of backend connections. rustls with ring only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{BackendTlsConfig, ServerTlsConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of the expected kind.
    #[error("{field}: cannot read {path}: {reason}")]
    File {
        field: &'static str,
        path: String,
        reason: String,
    },
    /// rustls refused the material (a key that does not match the certificate, say).
    #[error("{0}")]
    Rustls(String),
}

/// The data listener's TLS, swapped whole when the files change.
pub struct ServerTls {
    config: ServerTlsConfig,
    acceptor: ArcSwap<TlsAcceptor>,
    loaded: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate, key and (for mutual TLS) client CA.
    pub fn load(config: &ServerTlsConfig) -> Result<Arc<Self>, TlsError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(config)?));
        Ok(Arc::new(Self {
            config: config.clone(),
            acceptor: ArcSwap::from_pointee(acceptor),
            loaded: Mutex::new(stamps(config)),
        }))
    }

    /// The acceptor for a new connection (existing connections keep theirs).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::clone(&self.acceptor.load())
    }

    /// Looks at the files every `every` and reloads when any changed; a broken new set is logged and the current one
    /// kept. Runs until aborted.
    pub async fn reload_forever(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let now = stamps(&self.config);
            let changed = *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) != now;
            if !changed {
                continue;
            }
            match server_config(&self.config) {
                Ok(config) => {
                    self.acceptor
                        .store(Arc::new(TlsAcceptor::from(Arc::new(config))));
                    *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = now;
                    tracing::info!("TLS certificate reloaded");
                }
                Err(err) => {
                    tracing::error!(error = %err, "new TLS files rejected; keeping the current certificate")
                }
            }
        }
    }
}

/// The modification times of the files, to notice a change.
fn stamps(config: &ServerTlsConfig) -> Vec<Option<SystemTime>> {
    [
        Some(&config.cert),
        Some(&config.key),
        config.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

fn server_config(config: &ServerTlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates("tls.cert", &config.cert)?;
    let key = private_key("tls.key", &config.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("tls.client_ca", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls(format!("tls.client_ca: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Rustls(format!("tls.client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(format!("tls.cert/tls.key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(server)
}

fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        field,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn private_key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        field,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The tonic TLS settings for connections to a backend.
pub fn backend_client(
    config: &BackendTlsConfig,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let read = |field: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| TlsError::File {
            field,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    tls = match &config.ca {
        Some(ca) => {
            tls.ca_certificate(tonic::transport::Certificate::from_pem(read("tls.ca", ca)?))
        }
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read("tls.cert", cert)?,
            read("tls.key", key)?,
        ));
    }
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}
