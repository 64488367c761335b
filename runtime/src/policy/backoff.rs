//! Exponential backoff with jitter, and a tiny deterministic random source for it.

use std::time::Duration;

/// `initial * multiplier^(n-1)`, capped at `max`, for the `n`-th retry (n >= 1).
pub fn exponential(initial: Duration, max: Duration, multiplier: f64, n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(64) as i32;
    let secs = initial.as_secs_f64() * multiplier.max(1.0).powi(exp);
    if !secs.is_finite() || secs >= max.as_secs_f64() {
        return max;
    }
    Duration::from_secs_f64(secs.max(0.0))
}

/// Scales `delay` by a factor in `[1 - jitter, 1 + jitter]` picked by `unit` in `[0, 1)`.
pub fn jittered(delay: Duration, jitter: f64, unit: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
    Duration::from_secs_f64((delay.as_secs_f64() * factor).max(0.0))
}

/// SplitMix64: a small, fast, deterministic generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let ms = Duration::from_millis;
        assert_eq!(exponential(ms(100), ms(1000), 2.0, 1), ms(100));
        assert_eq!(exponential(ms(100), ms(1000), 2.0, 3), ms(400));
        assert_eq!(exponential(ms(100), ms(1000), 2.0, 5), ms(1000));
        assert_eq!(exponential(ms(100), ms(1000), 2.0, u32::MAX), ms(1000));
    }

    #[test]
    fn jitter_stays_in_band() {
        let d = Duration::from_millis(1000);
        let mut rng = SplitMix64::new(7);
        for _ in 0..1000 {
            let j = jittered(d, 0.2, rng.next_unit());
            assert!(
                j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
                "{j:?}"
            );
        }
        assert_eq!(jittered(d, 0.0, 0.9), d);
    }
}
