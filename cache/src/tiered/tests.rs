use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;

use super::*;
use crate::entry::Lifetime;
use crate::key::KeyBuilder;
use crate::loader::Fetched;

/// A fake backend: counts its calls, waits `delay`, then answers `answer <n>` (n = its call number), or fails
/// while `failing` is set. Shared by clones, so a test can flip it while the cache holds a clone.
#[derive(Clone)]
struct CountingLoader {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    delay: Duration,
    lifetime: Lifetime,
    /// What it says its time limit is (it does not keep to it when `delay` is longer: a stuck fetch).
    limit: Duration,
}

impl CountingLoader {
    fn new(delay: Duration) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
            delay,
            lifetime: Lifetime::fresh_for(Duration::from_secs(30)),
            limit: Duration::from_secs(30),
        }
    }

    fn with_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    fn with_lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Loader for CountingLoader {
    fn time_limit(&self) -> Duration {
        self.limit
    }

    async fn load(self, _mode: LoadMode) -> Result<Fetched, LoadError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(LoadError::new(std::io::Error::other("backend down")));
        }
        let entry = Entry::unstamped(Bytes::from(format!("answer {n}")), 0, String::new());
        Ok(Fetched::store(entry, self.lifetime))
    }
}

fn tiered(flight_wait: Duration) -> Arc<Tiered> {
    Arc::new(Tiered::new(
        &TieredConfig {
            l1_max_bytes: 1 << 20,
            flight_wait,
            write_queue: 16,
            lease: None,
            l1_max_age_out_of_step: Duration::from_secs(60),
        },
        None,
    ))
}

/// Starts a lookup of key `a` in a task of its own.
fn spawn_get<L: Loader>(
    cache: &Arc<Tiered>,
    loader: L,
) -> tokio::task::JoinHandle<Result<Lookup, LoadError>> {
    let cache = cache.clone();
    tokio::spawn(async move { cache.get(key("a"), &POLICY, loader).await })
}

fn key(s: &str) -> Key {
    KeyBuilder::new("t", "/m").finish(s.as_bytes())
}

const POLICY: Policy = Policy {
    early_refresh_beta: 0.0,
};

#[tokio::test(start_paused = true)]
async fn miss_then_l1_then_expiry() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(10));
    let first = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("loads");
    assert_eq!(first.source, Source::Miss);
    let second = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("hits");
    assert_eq!(second.source, Source::L1);
    assert!(Arc::ptr_eq(&first.entry, &second.entry));
    assert_eq!(loader.calls(), 1);

    tokio::time::advance(Duration::from_secs(31)).await;
    let third = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("reloads");
    assert_eq!(
        third.source,
        Source::Miss,
        "past its ttl the entry is not fresh"
    );
    assert_eq!(loader.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_load() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(100));
    let calls: Vec<_> = (0..100)
        .map(|_| spawn_get(&cache, loader.clone()))
        .collect();
    let mut sources = Vec::new();
    for call in calls {
        let lookup = call.await.expect("task").expect("answer");
        assert_eq!(lookup.entry.message, Bytes::from_static(b"answer 1"));
        sources.push(lookup.source);
    }
    assert_eq!(loader.calls(), 1);
    assert_eq!(sources.iter().filter(|s| **s == Source::Miss).count(), 1);
    assert_eq!(cache.flights.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn errors_are_shared_but_not_cached() {
    let cache = tiered(Duration::from_secs(5));
    let failing = CountingLoader::new(Duration::from_millis(50));
    failing.fail(true);
    let (a, b) = tokio::join!(
        cache.get(key("a"), &POLICY, failing.clone()),
        cache.get(key("a"), &POLICY, failing.clone())
    );
    assert!(a.is_err() && b.is_err());
    assert_eq!(failing.calls(), 1, "the follower shared the leader's error");

    let healthy = CountingLoader::new(Duration::from_millis(1));
    let next = cache
        .get(key("a"), &POLICY, healthy.clone())
        .await
        .expect("loads");
    assert_eq!(next.source, Source::Miss, "the error was not cached");
    assert_eq!(healthy.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_outlives_its_leaders_caller_and_still_answers_the_others() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(100));
    let leader = spawn_get(&cache, loader.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let followers: Vec<_> = (0..5).map(|_| spawn_get(&cache, loader.clone())).collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The leader's caller goes away (its deadline, its client): the fetch it started goes on.
    leader.abort();
    for f in followers {
        let lookup = f.await.expect("task").expect("answer");
        assert_eq!(lookup.entry.message, Bytes::from_static(b"answer 1"));
        assert_eq!(lookup.source, Source::Coalesced);
    }
    assert_eq!(loader.calls(), 1, "one fetch for everyone");
    let next = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("hit");
    assert_eq!(
        next.source,
        Source::L1,
        "the abandoned caller's fetch filled L1"
    );
    assert_eq!(cache.stats().snapshot().leader_takeovers, 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_fetch_within_its_limit_is_waited_for_past_flight_wait() {
    let cache = tiered(Duration::from_millis(200));
    let slow = CountingLoader::new(Duration::from_secs(6)).with_limit(Duration::from_secs(10));
    let callers: Vec<_> = (0..40).map(|_| spawn_get(&cache, slow.clone())).collect();
    for caller in callers {
        let lookup = caller.await.expect("task").expect("answer");
        assert_eq!(lookup.entry.message, Bytes::from_static(b"answer 1"));
    }
    assert_eq!(slow.calls(), 1, "no follower gave up on a healthy fetch");
    assert_eq!(cache.stats().snapshot().flight_wait_timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_stuck_past_its_limit_does_not_hold_the_others() {
    let cache = tiered(Duration::from_millis(200));
    // Says it ends within 1 s, takes 10 s.
    let stuck = CountingLoader::new(Duration::from_secs(10)).with_limit(Duration::from_secs(1));
    let leader = spawn_get(&cache, stuck.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let fast = CountingLoader::new(Duration::from_millis(1));
    let started = Instant::now();
    let lookup = cache
        .get(key("a"), &POLICY, fast.clone())
        .await
        .expect("answers");
    assert_eq!(lookup.source, Source::Miss);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1190) && waited < Duration::from_millis(1300),
        "waited for the limit and the grace: {waited:?}"
    );
    assert_eq!(cache.stats().snapshot().flight_wait_timeouts, 1);
    leader.abort();
}

/// A loader whose answer may not be stored: it answers with the name it was given.
struct Personal(&'static str);

impl Loader for Personal {
    fn time_limit(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn load(self, _mode: LoadMode) -> Result<Fetched, LoadError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Fetched::relay(Entry::unstamped(
            Bytes::from(self.0),
            0,
            String::new(),
        )))
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_may_not_be_stored_reaches_its_own_caller_only() {
    let cache = tiered(Duration::from_secs(5));
    let names: [&'static str; 6] = ["t1", "t2", "t3", "t4", "t5", "t6"];
    let calls: Vec<_> = names
        .into_iter()
        .map(|name| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(key("a"), &POLICY, Personal(name)).await })
        })
        .collect();
    for (call, name) in calls.into_iter().zip(names) {
        let lookup = call.await.expect("task").expect("answer");
        assert_eq!(lookup.entry.message, Bytes::from(name), "each got its own");
        assert_eq!(lookup.source, Source::Miss);
    }
    assert_eq!(
        cache.stats().snapshot().not_shared,
        15,
        "5 + 4 + … + 1 rejoins"
    );
}

#[tokio::test(start_paused = true)]
async fn the_leaders_own_error_is_not_given_to_the_others() {
    struct Refused;
    impl Loader for Refused {
        fn time_limit(&self) -> Duration {
            Duration::from_secs(5)
        }
        async fn load(self, _mode: LoadMode) -> Result<Fetched, LoadError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(LoadError::callers_own(std::io::Error::other(
                "rate limited",
            )))
        }
    }
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(10));
    let (refused, follower) = tokio::join!(cache.get(key("a"), &POLICY, Refused), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.get(key("a"), &POLICY, loader.clone()).await
    });
    assert!(refused.is_err());
    let follower = follower.expect("the follower fetched for itself");
    assert_eq!(follower.entry.message, Bytes::from_static(b"answer 1"));
    assert_eq!(loader.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_fetch_wins() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(100));
    let fetch = spawn_get(&cache, loader.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    cache.invalidate_key(key("a")).await.expect("L1 only");
    let fetched = fetch.await.expect("task").expect("answer");
    assert_eq!(
        fetched.source,
        Source::Miss,
        "the caller still gets its answer"
    );
    let next = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("answer");
    assert_eq!(
        next.source,
        Source::Miss,
        "the fetch begun before the invalidation stored nothing"
    );
    assert_eq!(cache.stats().snapshot().fills_overtaken, 1);
}

/// Serves every call of `count` concurrent gets and returns their sources and answers, checking none waited.
async fn concurrent_gets(
    cache: &Arc<Tiered>,
    loader: &CountingLoader,
    count: usize,
) -> Vec<(Source, Bytes)> {
    let started = Instant::now();
    let calls: Vec<_> = (0..count)
        .map(|_| spawn_get(cache, loader.clone()))
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        let lookup = call.await.expect("task").expect("answer");
        answers.push((lookup.source, lookup.entry.message.clone()));
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "nobody waited for the backend"
    );
    answers
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(100)).with_lifetime(Lifetime {
        fresh: Duration::from_secs(10),
        stale_while_revalidate: Duration::from_secs(20),
        stale_if_error: Duration::ZERO,
    });
    cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("loads");

    tokio::time::advance(Duration::from_secs(11)).await;
    let answers = concurrent_gets(&cache, &loader, 200).await;
    assert!(
        answers
            .iter()
            .all(|(s, m)| *s == Source::Stale && m == "answer 1"),
        "every call got the stale answer at once"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(loader.calls(), 2, "exactly one background refresh");
    assert_eq!(cache.stats().snapshot().refreshes_stale, 1);

    let after = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("hits");
    assert_eq!(
        (after.source, after.entry.message.clone()),
        (Source::L1, Bytes::from_static(b"answer 2"))
    );

    // Past the stale-while-revalidate window the entry is not served: the caller waits for the backend.
    tokio::time::advance(Duration::from_secs(31)).await;
    let expired = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("loads");
    assert_eq!(expired.source, Source::Miss);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_stands_in_for_a_failing_backend_within_its_window() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(10)).with_lifetime(Lifetime {
        fresh: Duration::from_secs(10),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::from_secs(60),
    });
    cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("loads");

    tokio::time::advance(Duration::from_secs(11)).await;
    loader.fail(true);
    let stale = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("stale instead of the error");
    assert_eq!(
        (stale.source, stale.entry.message.clone()),
        (Source::Stale, Bytes::from_static(b"answer 1"))
    );
    assert_eq!(cache.stats().snapshot().stale_if_error_served, 1);

    // A key never cached has nothing to stand in: the failure reaches the caller.
    assert!(
        cache
            .get(key("never"), &POLICY, loader.clone())
            .await
            .is_err()
    );

    // The backend recovers: a past-freshness entry is replaced, not served.
    loader.fail(false);
    let fresh = cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("loads");
    assert_eq!(fresh.source, Source::Miss);

    // Beyond the window, the failure is the answer.
    tokio::time::advance(Duration::from_secs(75)).await;
    loader.fail(true);
    assert!(cache.get(key("a"), &POLICY, loader.clone()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_hot_key_is_refreshed_early_and_nobody_waits() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(100))
        .with_lifetime(Lifetime::fresh_for(Duration::from_secs(1)));
    let policy = Policy {
        early_refresh_beta: 1.0,
    };
    cache
        .get(key("a"), &policy, loader.clone())
        .await
        .expect("loads");
    // A call every millisecond for five lifetimes of the entry.
    for _ in 0..5_000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let lookup = cache
            .get(key("a"), &policy, loader.clone())
            .await
            .expect("answers");
        assert_eq!(
            lookup.source,
            Source::L1,
            "no call may wait for the backend"
        );
    }
    let stats = cache.stats().snapshot();
    assert!(stats.refreshes_early >= 4, "{stats:?}");
    assert_eq!(loader.calls() as u64, 1 + stats.refreshes_early);
}

#[tokio::test(start_paused = true)]
async fn answers_to_relay_are_not_stored() {
    let cache = tiered(Duration::from_secs(5));
    for _ in 0..2 {
        let lookup = cache
            .get(key("a"), &POLICY, Personal("private"))
            .await
            .expect("relayed");
        assert_eq!(lookup.source, Source::Miss);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answered_with_what_may_not_be_stored_withdraws_the_stale_entry() {
    let cache = tiered(Duration::from_secs(5));
    let loader = CountingLoader::new(Duration::from_millis(10)).with_lifetime(Lifetime {
        fresh: Duration::from_secs(10),
        stale_while_revalidate: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(60),
    });
    cache
        .get(key("a"), &POLICY, loader.clone())
        .await
        .expect("loads");
    tokio::time::advance(Duration::from_secs(11)).await;
    // The item is gone: the refresh is answered with something that may not be stored.
    let stale = cache
        .get(key("a"), &POLICY, Personal("gone"))
        .await
        .expect("stale at once");
    assert_eq!(stale.source, Source::Stale);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = cache
        .get(key("a"), &POLICY, Personal("gone"))
        .await
        .expect("the new truth");
    assert_eq!(
        (next.source, next.entry.message.clone()),
        (Source::Miss, Bytes::from_static(b"gone"))
    );
    assert_eq!(cache.stats().snapshot().withdrawn, 1);
}

#[tokio::test]
async fn a_lookup_carries_only_the_l1_step_until_it_needs_more() {
    // A call's future is allocated and moved with every call, hits included; the steps past L1 (flight, L2, lease,
    // loader) are boxed so that a hit does not pay for them: 1 KiB here, where unboxed it was 3 KiB (5 KiB with the
    // gateway's loader).
    let cache = tiered(Duration::from_secs(1));
    let lookup = cache.get(key("a"), &POLICY, CountingLoader::new(Duration::ZERO));
    let size = std::mem::size_of_val(&lookup);
    assert!(size <= 1536, "Tiered::get's future is {size} bytes");
}
