//! Invalidation through the admin API of one replica reaches every replica; only the token holder may do it.

use std::time::Duration;

use prost::Message;
use strata_proto::admin::v1::cache_admin_client::CacheAdminClient;
use strata_proto::admin::v1::invalidate_request::Target;
use strata_proto::admin::v1::{EntryTarget, InvalidateRequest, MetadataValue};
use tonic::transport::Channel;

use crate::support::backend::TestBackend;
use crate::support::gateway::{TestGateway, config_with_route};
use crate::support::pb::lookup_client::LookupClient;
use crate::support::{RedisServer, eventually};
use crate::{get, key};

const TOKEN: &str = "s3cret-admin-token";

async fn admin(gateway: &TestGateway) -> CacheAdminClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gateway.admin))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the admin listener");
    CacheAdminClient::new(channel)
}

fn with_token(target: Target, token: Option<&str>) -> tonic::Request<InvalidateRequest> {
    let mut request = tonic::Request::new(InvalidateRequest {
        target: Some(target),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

/// A config with the test backend, a shared Redis (with the lease when `lease`), and the admin token.
fn replica_config(backend: &TestBackend, redis: &RedisServer, lease: bool) -> String {
    let lease = if lease {
        "  lease: { ttl: 5s, wait: 2s }\n"
    } else {
        ""
    };
    let cache = format!(
        "  l2: {{ url: \"{}\", timeout: 100ms }}\n{lease}",
        redis.url()
    );
    config_with_route(&backend.url(), "ttl: 60s, vary: [x-tenant-id]", &cache, "").replace(
        "admin: { listen: 127.0.0.1:0 }",
        &format!("admin: {{ listen: 127.0.0.1:0, token: {TOKEN} }}"),
    )
}

/// Starts three replicas of `yaml` with a client each.
async fn three_replicas(yaml: &str) -> (Vec<TestGateway>, Vec<LookupClient<Channel>>) {
    let (mut gateways, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let gateway = TestGateway::start(yaml).await;
        clients.push(gateway.client().await);
        gateways.push(gateway);
    }
    (gateways, clients)
}

/// Puts `a` (tenant t1) in every replica's L1; returns the newest serial any of them answered with.
async fn warm(clients: &mut [LookupClient<Channel>]) -> u64 {
    let mut serial = 0;
    for client in clients.iter_mut() {
        // The first call of a replica may be answered from Redis: call until L1 answers.
        let warmed = eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            async move {
                get(&mut client, key("a"), Some("t1"))
                    .await
                    .is_ok_and(|a| a.cache == "l1")
            }
        })
        .await;
        assert!(warmed, "replica warmed");
        serial = serial.max(
            get(client, key("a"), Some("t1"))
                .await
                .expect("hit")
                .reply
                .serial,
        );
    }
    serial
}

/// Checks that no replica answers from its L1 any more, and that every one gets a newer answer than `old`.
async fn every_replica_refetches(clients: &mut [LookupClient<Channel>], old: u64) {
    for client in clients.iter_mut() {
        let answer = get(client, key("a"), Some("t1")).await.expect("answer");
        assert_ne!(
            answer.cache, "l1",
            "an invalidated entry is never served from L1"
        );
        assert!(
            answer.reply.serial > old,
            "a fresh answer, not the invalidated one"
        );
    }
}

#[tokio::test]
async fn invalidating_a_method_through_one_replica_reaches_every_replica() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let (gateways, mut clients) = three_replicas(&replica_config(&backend, &redis, true)).await;
    let serial = warm(&mut clients).await;

    let reply = admin(&gateways[1])
        .await
        .invalidate(with_token(
            Target::Method("/testing.v1.Lookup/Get".into()),
            Some(TOKEN),
        ))
        .await
        .expect("invalidated")
        .into_inner();
    assert!(reply.generation >= 1, "{reply:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    every_replica_refetches(&mut clients, serial).await;

    // A whole service, too.
    let newest = get(&mut clients[0], key("a"), Some("t1"))
        .await
        .expect("answer")
        .reply
        .serial;
    admin(&gateways[2])
        .await
        .invalidate(with_token(
            Target::Service("/testing.v1.Lookup/".into()),
            Some(TOKEN),
        ))
        .await
        .expect("invalidated");
    tokio::time::sleep(Duration::from_millis(100)).await;
    every_replica_refetches(&mut clients, newest).await;
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test]
async fn invalidating_one_entry_reaches_every_replica_and_spares_the_others() {
    let redis = RedisServer::start();
    let backend = TestBackend::start().await;
    let (gateways, mut clients) = three_replicas(&replica_config(&backend, &redis, false)).await;
    let mut old = 0;
    for client in &mut clients {
        old = old.max(
            get(client, key("a"), Some("t1"))
                .await
                .expect("a")
                .reply
                .serial,
        );
        get(client, key("a"), Some("t2"))
            .await
            .expect("other tenant");
        get(client, key("b"), Some("t1")).await.expect("other key");
    }

    let entry = EntryTarget {
        method: "/testing.v1.Lookup/Get".into(),
        request: key("a").encode_to_vec().into(),
        vary: vec![MetadataValue {
            name: "X-Tenant-Id".into(),
            value: "t1".into(),
        }],
        ..Default::default()
    };
    admin(&gateways[0])
        .await
        .invalidate(with_token(Target::Entry(entry), Some(TOKEN)))
        .await
        .expect("invalidated");
    tokio::time::sleep(Duration::from_millis(100)).await;

    for client in &mut clients {
        let answer = get(client, key("a"), Some("t1")).await.expect("a");
        // The first replica asked fetches anew; the others find that new answer in Redis.
        assert_ne!(answer.cache, "l1", "the entry is gone from every L1");
        assert!(
            answer.reply.serial > old,
            "and from Redis: the answer is new"
        );
        assert_eq!(
            get(client, key("a"), Some("t2")).await.expect("t2").cache,
            "l1",
            "other tenants untouched"
        );
        assert_eq!(
            get(client, key("b"), Some("t1")).await.expect("b").cache,
            "l1",
            "other keys untouched"
        );
    }
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test]
async fn only_the_token_holder_may_invalidate() {
    let backend = TestBackend::start().await;
    let top = format!("admin: {{ listen: 127.0.0.1:0, token: {TOKEN} }}");
    let yaml = config_with_route(&backend.url(), "ttl: 60s", "", "")
        .replace("admin: { listen: 127.0.0.1:0 }", &top);
    let gateway = TestGateway::start(&yaml).await;
    let mut client = gateway.client().await;
    get(&mut client, key("a"), None).await.expect("miss");

    let method = || Target::Method("/testing.v1.Lookup/Get".into());
    for token in [None, Some("wrong"), Some("")] {
        let status = admin(&gateway)
            .await
            .invalidate(with_token(method(), token))
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
    }
    assert_eq!(
        get(&mut client, key("a"), None).await.expect("hit").cache,
        "l1",
        "nothing was removed"
    );

    // The admin API is not reachable through the data listener (the call goes to the backend, which lacks it).
    let mut on_data_port = CacheAdminClient::new(gateway.channel().await);
    let status = on_data_port
        .invalidate(with_token(method(), Some(TOKEN)))
        .await
        .expect_err("not there");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        get(&mut client, key("a"), None).await.expect("hit").cache,
        "l1",
        "still nothing removed"
    );
    gateway.stop().await;

    // No token configured: every mutation refused.
    let gateway = TestGateway::start(&config_with_route(&backend.url(), "ttl: 60s", "", "")).await;
    let status = admin(&gateway)
        .await
        .invalidate(with_token(method(), Some(TOKEN)))
        .await
        .expect_err("disabled");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    gateway.stop().await;
}

/// An operator names the entry as JSON — decoded with the method's descriptor, then keyed as calls are: by its
/// canonical form on a route with key rules, by its encoding on one without.
#[tokio::test]
async fn an_entry_can_be_named_by_its_request_as_json() {
    use crate::support::backend::Reflection;
    use crate::support::pb::{Filter, SearchRequest};
    let backend = TestBackend::start_reflecting(Reflection::V1AndV1alpha).await;
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0, token: {TOKEN} }}
backends:
  lookup: {{ endpoints: ["{}"], timeout: 5s }}
routes:
  - match: /testing.v1.Lookup/Search
    backend: lookup
    cache: {{ ttl: 60s, ignore_fields: [request_id] }}
  - match: /testing.v1.Lookup/Get
    backend: lookup
    cache: {{ ttl: 60s }}
  - match: /other.v1.Thing/Get
    backend: lookup
    cache: {{ ttl: 60s }}
"#,
        backend.url()
    );
    let gateway = TestGateway::start(&yaml).await;
    crate::method_kinds::wait_for_descriptors(&gateway, "reflection").await;
    let mut client = gateway.client().await;
    let search = |request_id: &str| SearchRequest {
        query: "q".into(),
        request_id: request_id.into(),
        filter: Some(Filter {
            tenant_id: "t".into(),
            trace: String::new(),
        }),
        ..Default::default()
    };
    let cache_of = |response: &tonic::Response<crate::support::pb::GetReply>| {
        crate::metadata(response.metadata(), "x-strata-cache")
    };
    assert_eq!(
        cache_of(&client.search(search("r1")).await.expect("search")),
        "miss"
    );
    assert_eq!(
        cache_of(&client.search(search("r2")).await.expect("search")),
        "l1"
    );
    assert_eq!(
        get(&mut client, key("a"), None).await.expect("get").cache,
        "miss"
    );

    let by_json = |method: &str, json: &str| {
        Target::Entry(EntryTarget {
            method: method.into(),
            request_json: json.into(),
            ..Default::default()
        })
    };
    let mut admin = admin(&gateway).await;
    // Field order, JSON names, and an ignored field do not matter: the canonical form does.
    let json = r#"{"filter": {"tenantId": "t"}, "requestId": "whatever", "query": "q"}"#;
    admin
        .invalidate(with_token(
            by_json("/testing.v1.Lookup/Search", json),
            Some(TOKEN),
        ))
        .await
        .expect("invalidated by JSON");
    assert_eq!(
        cache_of(&client.search(search("r3")).await.expect("search")),
        "miss"
    );
    admin
        .invalidate(with_token(
            by_json("/testing.v1.Lookup/Get", r#"{"key": "a"}"#),
            Some(TOKEN),
        ))
        .await
        .expect("invalidated by JSON");
    assert_eq!(
        get(&mut client, key("a"), None).await.expect("get").cache,
        "miss"
    );

    let refused = admin
        .invalidate(with_token(
            by_json("/testing.v1.Lookup/Search", r#"{"nope": 1}"#),
            Some(TOKEN),
        ))
        .await
        .expect_err("not a SearchRequest");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("testing.v1.SearchRequest"),
        "{}",
        refused.message()
    );
    let refused = admin
        .invalidate(with_token(
            by_json("/other.v1.Thing/Get", r#"{"id": 1}"#),
            Some(TOKEN),
        ))
        .await
        .expect_err("no descriptor");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    gateway.stop().await;
}
