//! Choosing the endpoint for a call: round robin, or the power of two choices (least calls in flight of two).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::endpoint::Endpoint;
use crate::config::Lb;

/// Picks endpoints among those available.
#[derive(Debug)]
pub struct Balancer {
    lb: Lb,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer of the given kind.
    pub fn new(lb: Lb) -> Self {
        Self {
            lb,
            next: AtomicUsize::new(0),
        }
    }

    /// The endpoint for the next call, among the available ones; `None` if none is available. Allocates nothing:
    /// it runs on every call to a backend.
    pub fn pick(&self, endpoints: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
        let available = || endpoints.iter().filter(|e| e.is_available());
        let nth = |i: usize| available().nth(i);
        let chosen = match (available().count(), self.lb) {
            (0, _) => None,
            (1, _) => nth(0),
            (n, Lb::RoundRobin) => nth(self.next.fetch_add(1, Ordering::Relaxed) % n),
            (n, Lb::P2c) => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                // A second, different endpoint.
                let b = (a + rng.random_range(1..n)) % n;
                match (nth(a), nth(b)) {
                    (Some(ea), Some(eb)) if eb.outstanding() < ea.outstanding() => Some(eb),
                    (ea, eb) => ea.or(eb),
                }
            }
        };
        // An endpoint can turn unavailable between the count and the pick: then any still available will do.
        chosen.or_else(|| available().next()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::connection::connection_to;
    use crate::backend::endpoint::Transport;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let connection = connection_to(
                    format!("127.0.0.1:{}", 1 + i),
                    std::time::Duration::from_secs(1),
                );
                Arc::new(Endpoint::new(format!("e{i}"), Transport::Plain(connection)))
            })
            .collect()
    }

    #[tokio::test]
    async fn round_robin_takes_turns_over_available_endpoints() {
        let eps = endpoints(3);
        let rr = Balancer::new(Lb::RoundRobin);
        let picks: Vec<_> = (0..6)
            .map(|_| rr.pick(&eps).expect("one").url.clone())
            .collect();
        assert_eq!(picks, ["e0", "e1", "e2", "e0", "e1", "e2"]);
        eps[1].set_healthy(false);
        assert!(
            (0..10).all(|_| rr.pick(&eps).expect("one").url != "e1"),
            "unhealthy endpoints get nothing"
        );
        eps[0].set_healthy(false);
        eps[2].eject(std::time::Duration::from_secs(60));
        assert!(rr.pick(&eps).is_none());
    }

    #[tokio::test]
    async fn p2c_prefers_the_less_busy() {
        let eps = endpoints(2);
        let busy: Vec<_> = (0..5).map(|_| eps[0].start_call()).collect();
        let p2c = Balancer::new(Lb::P2c);
        assert!((0..20).all(|_| p2c.pick(&eps).expect("one").url == "e1"));
        drop(busy);
        assert_eq!(eps[0].outstanding(), 0);
    }
}
