//! Counting calls in flight: the gateway's (load shedding), each backend's (its `max_concurrent_requests`) and each
//! endpoint's (least-requests balancing) — one counter type, and one guard that holds a count until dropped, so no
//! path that ends a call early (an error, a cancelled future) can leave a count behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A count of calls in flight; its clones share it.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// Calls in flight now.
    pub fn now(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more call until the guard is dropped; returns the guard and the count with this call.
    pub fn enter(&self) -> (Guard, usize) {
        let now = self.0.fetch_add(1, Ordering::AcqRel) + 1;
        (Guard(self.0.clone()), now)
    }
}

/// One call counted in a [`Counter`] until dropped.
#[derive(Debug)]
pub struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_until_dropped() {
        let counter = Counter::default();
        let (first, now) = counter.enter();
        assert_eq!(now, 1);
        let (second, now) = counter.enter();
        assert_eq!((now, counter.now()), (2, 2));
        drop(first);
        assert_eq!(counter.now(), 1);
        drop(second);
        assert_eq!(counter.now(), 0);
    }
}
