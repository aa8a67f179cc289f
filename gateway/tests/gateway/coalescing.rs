//! Single-flight through the gateway: one backend call per key at a time, and no stranded waiters.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::gateway::{config_for, start};
use crate::{get, key};

#[tokio::test]
async fn a_thousand_concurrent_calls_make_one_backend_call() {
    let (backend, gateway) = start(&config_for).await;
    let mut req = key("cold");
    req.delay_ms = 300;

    // Four connections, as a real client pool would use.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(gateway.client().await);
    }
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let req = req.clone();
            tokio::spawn(async move { get(&mut client, req, None).await })
        })
        .collect();
    let mut by_source = BTreeMap::new();
    for call in calls {
        let answer = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("no call hangs")
            .expect("task")
            .expect("every call succeeds");
        assert_eq!(answer.reply.key, "cold");
        assert_eq!(
            answer.reply.serial, 1,
            "everyone got the first backend answer"
        );
        *by_source.entry(answer.cache).or_insert(0) += 1;
    }
    assert_eq!(backend.get_calls(), 1, "answers by source: {by_source:?}");
    assert_eq!(by_source.get("miss"), Some(&1), "{by_source:?}");
    assert_eq!(by_source.values().sum::<i32>(), 1000);
    gateway.stop().await;
}

#[tokio::test]
async fn a_cancelled_leaders_fetch_still_answers_its_followers() {
    let (backend, gateway) = start(&config_for).await;
    let mut req = key("slow");
    req.delay_ms = 500;

    let leader = {
        let mut client = gateway.client().await;
        let req = req.clone();
        tokio::spawn(async move { get(&mut client, req, None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let followers: Vec<_> = (0..20)
        .map(|_| {
            let req = req.clone();
            let gateway_addr = gateway.addr;
            tokio::spawn(async move {
                let channel =
                    tonic::transport::Channel::from_shared(format!("http://{gateway_addr}"))
                        .expect("uri")
                        .connect()
                        .await
                        .expect("connect");
                let mut client = crate::support::pb::lookup_client::LookupClient::new(channel);
                get(&mut client, req, None).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    leader.abort();

    for follower in followers {
        let answer = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("no follower hangs")
            .expect("task")
            .expect("followers get their answer");
        assert_eq!(answer.reply.key, "slow");
        assert_eq!(answer.cache, "coalesced");
    }
    assert_eq!(
        backend.get_calls(),
        1,
        "the fetch the cancelled caller started answered everyone"
    );
    gateway.stop().await;
}
