//! TLS on the data listener (mutual TLS, certificate rotation) and TLS to backends, with certificates made here.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::backend::TestBackend;
use crate::support::certs::{PemDir, TestCa};
use crate::support::gateway::{TestGateway, config_for};
use crate::support::pb::lookup_client::LookupClient;
use crate::{get, key};

/// A client of the gateway over TLS trusting `ca`, presenting `identity` if given.
async fn tls_client(
    gateway: &TestGateway,
    ca: &str,
    identity: Option<&crate::support::certs::Issued>,
) -> Result<LookupClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    let channel = Channel::from_shared(format!("https://{}", gateway.addr))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(LookupClient::new(channel))
}

/// The gateway config for `backend_url` with TLS from `dir` on the data listener.
fn tls_config(backend_url: &str, dir: &PemDir, mutual: bool) -> String {
    let client_ca = if mutual {
        format!(
            ", client_ca: \"{}\"",
            dir.path().join("client-ca.pem").display()
        )
    } else {
        String::new()
    };
    let tls = format!(
        "tls: {{ cert: \"{}\", key: \"{}\"{client_ca}, reload_interval: 100ms }}\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    format!("{tls}{}", config_for(backend_url))
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let backend = TestBackend::start().await;
    let (server_ca, client_ca) = (TestCa::new("server ca"), TestCa::new("client ca"));
    let dir = PemDir::new("mtls");
    let server = server_ca.issue();
    dir.write("server.pem", &server.cert_pem);
    dir.write("server.key", &server.key_pem);
    dir.write("client-ca.pem", &client_ca.pem());
    let gateway = TestGateway::start(&tls_config(&backend.url(), &dir, true)).await;

    let good = client_ca.issue();
    let mut client = tls_client(&gateway, &server_ca.pem(), Some(&good))
        .await
        .expect("handshake");
    assert_eq!(
        get(&mut client, key("a"), None)
            .await
            .expect("served over mTLS")
            .cache,
        "miss"
    );

    let refused = match tls_client(&gateway, &server_ca.pem(), None).await {
        Err(_) => true,
        Ok(mut client) => get(&mut client, key("a"), None).await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    let stranger = TestCa::new("someone else").issue();
    let refused = match tls_client(&gateway, &server_ca.pem(), Some(&stranger)).await {
        Err(_) => true,
        Ok(mut client) => get(&mut client, key("a"), None).await.is_err(),
    };
    assert!(refused, "a certificate from another CA is refused");
    gateway.stop().await;
}

#[tokio::test]
async fn a_rotated_server_certificate_is_picked_up_without_a_restart() {
    let backend = TestBackend::start().await;
    let (old_ca, new_ca) = (TestCa::new("old"), TestCa::new("new"));
    let dir = PemDir::new("rotation");
    let old = old_ca.issue();
    dir.write("server.pem", &old.cert_pem);
    dir.write("server.key", &old.key_pem);
    let gateway = TestGateway::start(&tls_config(&backend.url(), &dir, false)).await;
    let mut client = tls_client(&gateway, &old_ca.pem(), None)
        .await
        .expect("old certificate");
    get(&mut client, key("a"), None).await.expect("served");
    assert!(
        tls_client(&gateway, &new_ca.pem(), None).await.is_err(),
        "not rotated yet"
    );

    // The secret is rotated in place: key first, then certificate, as a mounted secret would change.
    let new = new_ca.issue();
    dir.write("server.key", &new.key_pem);
    dir.write("server.pem", &new.cert_pem);
    let rotated = crate::support::eventually(Duration::from_secs(5), || async {
        match tls_client(&gateway, &new_ca.pem(), None).await {
            Ok(mut client) => get(&mut client, key("b"), None).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(rotated, "new connections get the new certificate");
    gateway.stop().await;
}

#[tokio::test]
async fn a_backend_over_tls_with_a_client_certificate() {
    let (backend_ca, gateway_ca) = (TestCa::new("backend ca"), TestCa::new("gateway client ca"));
    let server = backend_ca.issue();
    let backend =
        TestBackend::start_tls(&server.cert_pem, &server.key_pem, &gateway_ca.pem()).await;
    let dir = PemDir::new("backend-tls");
    let ca = dir.write("backend-ca.pem", &backend_ca.pem());
    let client = gateway_ca.issue();
    let cert = dir.write("client.pem", &client.cert_pem);
    let key_path = dir.write("client.key", &client.key_pem);
    let yaml = config_for(&format!("https://localhost:{}", backend.addr.port())).replace(
        ", timeout: 5s }",
        &format!(
            ", timeout: 5s, tls: {{ ca: \"{}\", cert: \"{}\", key: \"{}\", server_name: localhost }} }}",
            ca.display(),
            cert.display(),
            key_path.display()
        ),
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;
    let answer = get(&mut client, key("secure"), None)
        .await
        .expect("the backend over mutual TLS");
    assert_eq!(answer.reply.key, "secure");
    assert_eq!(backend.get_calls(), 1);
    gateway.stop().await;
}
