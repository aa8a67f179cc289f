//! Zipf-distributed key popularity: key `k` (0-based) is drawn with probability ∝ 1/(k+1)^s.

use rand::Rng;

/// A Zipf sampler over `n` keys, by binary search in the precomputed cumulative distribution.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n ≥ 1` keys with exponent `s > 0` (1.0 ≈ real-world catalog popularity).
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut total = 0.0;
        for k in 0..n.max(1) {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    /// How many keys it draws from.
    #[cfg(test)]
    pub fn key_count(&self) -> usize {
        self.cdf.len()
    }

    /// The probability of drawing key `k` (0 beyond the last key).
    #[cfg(test)]
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf[0],
            k if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// Draws a key index.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|p| *p < u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn popular_keys_dominate() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // P(key 0) = 1/H(1000) ≈ 0.134; key 1 about half of that.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert!((5_500..7_800).contains(&counts[1]), "{}", counts[1]);
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
    }
}
