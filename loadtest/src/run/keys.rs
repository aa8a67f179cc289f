//! Key popularity for `strata-load run`: which of `count` keys (0 … count-1) the next request asks for.
//!
//! ghz replays its data round-robin, so every key is equally popular and a cache in front sees an unrealistic hit
//! ratio. Real lookups are skewed; these distributions say how.

use rand::Rng;

use crate::zipf::Zipf;

/// How keys are drawn.
#[derive(Debug, Clone)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform { count: u64 },
    /// Key k drawn with probability ∝ 1/(k+1)^exponent: key 0 is the most popular.
    Zipf { zipf: Zipf },
    /// The first `hot` keys share `hot_share` of the requests evenly; the rest share the remainder evenly.
    Hotset {
        count: u64,
        hot: u64,
        hot_share: f64,
    },
}

impl KeyDistribution {
    /// A uniform distribution over `count ≥ 1` keys.
    pub fn uniform(count: u64) -> Self {
        Self::Uniform {
            count: count.max(1),
        }
    }

    /// A Zipf distribution over `count ≥ 1` keys.
    pub fn zipf(count: u64, exponent: f64) -> Self {
        Self::Zipf {
            zipf: Zipf::new(
                usize::try_from(count.max(1)).unwrap_or(usize::MAX),
                exponent,
            ),
        }
    }

    /// A hot set: `hot_fraction` of `count` keys (at least one, at most all) receive `hot_share` of requests.
    pub fn hotset(count: u64, hot_fraction: f64, hot_share: f64) -> Self {
        let count = count.max(1);
        let hot = ((count as f64 * hot_fraction).round() as u64).clamp(1, count);
        Self::Hotset {
            count,
            hot,
            hot_share,
        }
    }

    /// How many keys there are.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        match self {
            Self::Uniform { count } | Self::Hotset { count, .. } => *count,
            Self::Zipf { zipf } => zipf.key_count() as u64,
        }
    }

    /// Draws a key.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match self {
            Self::Uniform { count } => rng.random_range(0..*count),
            Self::Zipf { zipf } => zipf.sample(rng) as u64,
            Self::Hotset {
                count,
                hot,
                hot_share,
            } => {
                if *hot == *count || rng.random_bool(hot_share.clamp(0.0, 1.0)) {
                    rng.random_range(0..*hot)
                } else {
                    rng.random_range(*hot..*count)
                }
            }
        }
    }

    /// The probability of drawing key `k` (what a frequency check compares against).
    #[cfg(test)]
    pub fn probability(&self, k: u64) -> f64 {
        match self {
            Self::Uniform { count } => {
                if k < *count {
                    1.0 / *count as f64
                } else {
                    0.0
                }
            }
            Self::Zipf { zipf } => zipf.probability(usize::try_from(k).unwrap_or(usize::MAX)),
            Self::Hotset {
                count,
                hot,
                hot_share,
            } => {
                if k < *hot {
                    let share = if hot == count { 1.0 } else { *hot_share };
                    share / *hot as f64
                } else if k < *count {
                    (1.0 - hot_share) / (*count - *hot) as f64
                } else {
                    0.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn probabilities_sum_to_one() {
        for dist in [
            KeyDistribution::uniform(100),
            KeyDistribution::zipf(100, 1.2),
            KeyDistribution::hotset(100, 0.1, 0.9),
            KeyDistribution::hotset(5, 1.0, 0.5),
        ] {
            let total: f64 = (0..dist.count()).map(|k| dist.probability(k)).sum();
            assert!((total - 1.0).abs() < 1e-9, "{dist:?}: {total}");
        }
    }

    #[test]
    fn hotset_sends_the_share_to_the_hot_keys() {
        let dist = KeyDistribution::hotset(1000, 0.01, 0.8);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let hot = (0..100_000).filter(|_| dist.sample(&mut rng) < 10).count();
        assert!((79_000..81_000).contains(&hot), "{hot}");
    }
}
