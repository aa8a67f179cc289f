//! Probabilistic early refresh (XFetch, Vattani et al. 2015): refresh a fresh entry early with a probability that
//! grows as its expiry nears and with how long it takes to fetch, so hot keys never all expire at once and no
//! caller waits for a refresh.

use rand::Rng;

use crate::clock::UnixMs;
use crate::entry::Entry;

/// Whether to refresh `entry` now: `now − delta·beta·ln(u) ≥ fresh_until`, `u` uniform in (0, 1], `delta` the
/// entry's fetch time. `beta` 0 never refreshes early; 1 is the classic setting; larger refreshes earlier.
pub fn should_refresh(entry: &Entry, now: UnixMs, beta: f64, rng: &mut impl Rng) -> bool {
    if beta <= 0.0 || entry.fetch_time.is_zero() {
        return false;
    }
    // `1 - random()` is in (0, 1], so the logarithm is finite and ≤ 0.
    let u: f64 = 1.0 - rng.random::<f64>();
    let delta_ms = entry.fetch_time.as_secs_f64() * 1000.0;
    let gap = -delta_ms * beta * u.ln();
    now as f64 + gap >= entry.fresh_until as f64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use rand::SeedableRng;

    use super::*;

    fn entry(fetch_ms: u64, fresh_until: UnixMs) -> Entry {
        let mut e = Entry::unstamped(Bytes::new(), 0, String::new());
        e.fetch_time = Duration::from_millis(fetch_ms);
        e.fresh_until = fresh_until;
        e
    }

    fn rate(e: &Entry, now: UnixMs, beta: f64) -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        (0..10_000)
            .filter(|_| should_refresh(e, now, beta, &mut rng))
            .count() as f64
            / 10_000.0
    }

    #[test]
    fn probability_grows_towards_expiry() {
        let e = entry(100, 10_000);
        // P = exp(-(fresh_until - now) / (delta·beta)).
        assert!(rate(&e, 0, 1.0) < 0.001);
        assert!((rate(&e, 9_900, 1.0) - (-1.0f64).exp()).abs() < 0.03);
        assert!(rate(&e, 9_990, 1.0) > 0.85);
        assert!(
            rate(&e, 9_900, 3.0) > rate(&e, 9_900, 1.0),
            "a larger beta refreshes earlier"
        );
    }

    #[test]
    fn beta_zero_or_unknown_fetch_time_never_refreshes() {
        assert_eq!(rate(&entry(100, 10_000), 9_999, 0.0), 0.0);
        assert_eq!(rate(&entry(0, 10_000), 9_999, 1.0), 0.0);
    }
}
