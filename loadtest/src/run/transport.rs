//! The run's connections, as ghz opens them: plaintext or TLS (a CA, a client certificate, a name to verify, or no
//! verification at all with `skipTLS`), an `:authority` of choice, HTTP/2 keepalive, and `round_robin` over every
//! address the host resolves to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::config::RunConfig;
use super::go_units;

/// How connections pick among the addresses `host` resolves to (`lb-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    /// The first address that connects.
    PickFirst,
    /// Every address, calls spread round-robin.
    RoundRobin,
}

/// The connections of a run.
#[derive(Debug, Clone)]
pub struct Transport {
    /// `host:port`.
    pub host: String,
    /// TLS, unless `insecure`.
    pub tls: Option<Tls>,
    /// The `:authority` to send instead of `host`.
    pub authority: Option<String>,
    /// How many.
    pub connections: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive ping interval.
    pub keepalive: Option<Duration>,
    /// How addresses are picked.
    pub balancing: Balancing,
    /// Compress requests with gzip.
    pub compression: bool,
    /// Largest answer accepted.
    pub max_recv_message_size: Option<usize>,
    /// Largest request sent.
    pub max_send_message_size: Option<usize>,
}

/// TLS settings.
#[derive(Debug, Clone)]
pub struct Tls {
    /// CA certificate (PEM), or the system roots.
    pub cacert: Option<PathBuf>,
    /// Client certificate and key (PEM), presented to the server.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify.
    pub cname: Option<String>,
    /// Verify nothing (`skipTLS`).
    pub skip_verify: bool,
}

/// The connections: TLS or not, their number and HTTP/2 settings.
pub fn resolve(
    config: &RunConfig,
    host: String,
    connections: u64,
    problems: &mut Vec<String>,
) -> Transport {
    if config.insecure
        && (config.cname.is_some()
            || config.cacert.is_some()
            || config.cert.is_some()
            || config.skip_tls)
    {
        problems.push(
            "cacert, cert, key, cname, skipTLS: only apply with TLS; leave insecure out".to_owned(),
        );
    }
    let identity = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => {
            problems.push("cert, key: give both or neither".to_owned());
            None
        }
    };
    let balancing = match config.lb_strategy.as_deref().unwrap_or("pick_first") {
        "" | "pick_first" => Balancing::PickFirst,
        "round_robin" if config.skip_tls => {
            problems.push(
                "lb-strategy: round_robin with skipTLS is not supported; use pick_first".to_owned(),
            );
            Balancing::PickFirst
        }
        "round_robin" => Balancing::RoundRobin,
        other => {
            problems.push(format!(
                "lb-strategy: `{other}` is not one of pick_first, round_robin"
            ));
            Balancing::PickFirst
        }
    };
    let size = |key: &str, value: &Option<String>, problems: &mut Vec<String>| {
        let text = value.as_deref().filter(|t| !t.is_empty())?;
        match go_units::parse_size(text).map(usize::try_from) {
            Ok(Ok(bytes)) if bytes > 0 => Some(bytes),
            Ok(_) => {
                problems.push(format!("{key}: must be more than 0"));
                None
            }
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        }
    };
    // ghz's host is a gRPC target: `dns:///name:port` (what its lb-strategy wants) is name:port resolved by DNS,
    // which is what is done here anyway.
    let host = host
        .strip_prefix("dns:///")
        .or_else(|| host.strip_prefix("dns:"))
        .map_or(host.clone(), str::to_owned);
    Transport {
        host,
        tls: (!config.insecure).then(|| Tls {
            cacert: config.cacert.clone(),
            identity,
            cname: config.cname.clone(),
            skip_verify: config.skip_tls,
        }),
        authority: config.authority.clone().filter(|a| !a.is_empty()),
        connections: usize::try_from(connections).unwrap_or(usize::MAX),
        connect_timeout: config.connect_timeout.unwrap_or(Duration::from_secs(10)),
        keepalive: config.keepalive.filter(|d| !d.is_zero()),
        balancing,
        compression: config.enable_compression,
        max_recv_message_size: size(
            "max-recv-message-size",
            &config.max_recv_message_size,
            problems,
        ),
        max_send_message_size: size(
            "max-send-message-size",
            &config.max_send_message_size,
            problems,
        ),
    }
}

/// Opens the run's connections (each one a channel; with `round_robin`, each balancing over every address).
pub async fn connect(transport: &Transport) -> anyhow::Result<Vec<Channel>> {
    let addresses: Vec<String> = match transport.balancing {
        Balancing::PickFirst => vec![transport.host.clone()],
        Balancing::RoundRobin => {
            let resolved: Vec<String> = tokio::net::lookup_host(&transport.host)
                .await
                .with_context(|| format!("host: cannot resolve {}", transport.host))?
                .map(|a| a.to_string())
                .collect();
            anyhow::ensure!(
                !resolved.is_empty(),
                "host: {} resolves to no address",
                transport.host
            );
            resolved
        }
    };
    let endpoints = addresses
        .iter()
        .map(|address| endpoint(transport, address))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let unverified = match &transport.tls {
        Some(tls) if tls.skip_verify => Some(unverified_tls(tls, &transport.host)?),
        _ => None,
    };
    let failed = || {
        let hint = if transport.tls.is_some() {
            " (TLS; add insecure for a plaintext server)"
        } else {
            " (plaintext)"
        };
        format!("cannot connect to {}{hint}", transport.host)
    };
    if endpoints.len() > 1 {
        // A balanced channel connects lazily: each address is tried once now, so a refused one is an error here
        // rather than failed calls later.
        for endpoint in &endpoints {
            endpoint.connect().await.with_context(failed)?;
        }
    }
    let mut channels = Vec::with_capacity(transport.connections);
    for _ in 0..transport.connections {
        let channel = match (&unverified, endpoints.as_slice()) {
            (Some(connector), [endpoint]) => endpoint
                .connect_with_connector(connector.clone())
                .await
                .with_context(failed)?,
            (None, [endpoint]) => endpoint.connect().await.with_context(failed)?,
            // skipTLS with round_robin is refused when the plan is resolved.
            (_, many) => Channel::balance_list(many.iter().cloned()),
        };
        channels.push(channel);
    }
    Ok(channels)
}

/// The endpoint of one address, with the run's settings.
fn endpoint(transport: &Transport, address: &str) -> anyhow::Result<Endpoint> {
    // With skipTLS the connector speaks TLS itself; tonic sees a plain stream.
    let tonic_tls = transport.tls.as_ref().filter(|t| !t.skip_verify);
    let scheme = if tonic_tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .with_context(|| format!("host: `{address}` is not host:port"))?
        .connect_timeout(transport.connect_timeout)
        .tcp_nodelay(true);
    if let Some(authority) = &transport.authority {
        let origin = format!("{scheme}://{authority}")
            .parse()
            .with_context(|| format!("authority: `{authority}` is not a valid authority"))?;
        endpoint = endpoint.origin(origin);
    }
    if let Some(interval) = transport.keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(interval)
            .keep_alive_while_idle(true);
    }
    if let Some(tls) = tonic_tls {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &tls.cacert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cacert: cannot read {}", path.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &tls.identity {
            let cert = std::fs::read(cert)
                .with_context(|| format!("cert: cannot read {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("key: cannot read {}", key.display()))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &tls.cname {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(config).context("TLS settings")?;
    }
    Ok(endpoint)
}

/// A connector speaking TLS without verifying the server (`skipTLS`), still presenting a client certificate if one
/// is given, and offering HTTP/2 by ALPN.
fn unverified_tls(tls: &Tls, host: &str) -> anyhow::Result<UnverifiedConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)));
    let mut config = match &tls.identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cert: cannot read {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("cert: {} is not PEM certificates", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("key: {} is not a PEM private key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("cert, key: do not match")?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = tls.cname.clone().unwrap_or_else(|| {
        host.rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_owned()
    });
    let server_name = ServerName::try_from(name.clone())
        .with_context(|| format!("cname: `{name}` is not a server name"))?;
    let address = host.to_owned();
    Ok(UnverifiedConnector {
        connector,
        server_name,
        address,
    })
}

/// Connects to one address and speaks TLS there without verifying the server (`skipTLS`).
#[derive(Clone)]
struct UnverifiedConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    address: String,
}

impl std::fmt::Debug for UnverifiedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedConnector")
            .field("address", &self.address)
            .finish()
    }
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for UnverifiedConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&this.address).await?;
            tcp.set_nodelay(true)?;
            let stream = this.connector.connect(this.server_name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A certificate verifier that accepts any certificate (`skipTLS`); signatures are still checked, so the session
/// is at least with whoever holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
