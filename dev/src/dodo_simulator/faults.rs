//! Faults on demand: what the simulator does wrong, on purpose, from now on (`/dev/faults`).
//!
//! Each probability is drawn per delivery (webhooks) or per API call (`dodo_errors`) from
//! a seeded generator, so that the `simulate` command replays the same faults for the
//! same seed.

use std::time::Duration;

use paywall::time::parse_duration_seconds;
use serde::{Deserialize, Serialize};

/// What `POST /dev/faults` takes and `GET /dev/faults` shows. `{}` is no fault at all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// A delivery is never sent, nor retried: a lost webhook, which only reconcile repairs.
    pub drop_webhooks: f64,
    /// A delivery that succeeded is sent once more, with the same `webhook-id`.
    pub duplicate_webhooks: f64,
    /// Every delivery's first attempt waits this long (`"<N>d|h|m|s"`).
    pub delay_webhooks: Option<String>,
    /// The events one change produces are sent newest first.
    pub reorder_webhooks: bool,
    /// An API call is answered `500` with Dodo's error body instead.
    pub dodo_errors: f64,
}

impl Faults {
    /// Checks the values: probabilities within 0..1, a delay Dodo could have.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("drop_webhooks", self.drop_webhooks),
            ("duplicate_webhooks", self.duplicate_webhooks),
            ("dodo_errors", self.dodo_errors),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability between 0 and 1"));
            }
        }
        if let Some(delay) = &self.delay_webhooks
            && parse_duration_seconds(delay).is_none()
        {
            return Err("delay_webhooks must look like 30s, 15m, 2h or 1d".to_owned());
        }
        Ok(())
    }

    pub fn delay(&self) -> Option<Duration> {
        self.delay_webhooks
            .as_deref()
            .and_then(parse_duration_seconds)
            .filter(|seconds| *seconds > 0)
            .map(|seconds| Duration::from_secs(seconds as u64))
    }

    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`; never draws when `p` is 0, so that turning a fault
    /// off does not shift the rest of a seeded run.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_fault() {
        let ok: Faults = serde_json::from_str(r#"{"drop_webhooks": 0.2, "delay_webhooks": "2h"}"#)
            .expect("valid");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.delay(), Some(Duration::from_secs(7200)));
        let bad: Faults = serde_json::from_str(r#"{"dodo_errors": 1.5}"#).expect("valid");
        assert!(bad.validate().is_err());
        let bad: Faults = serde_json::from_str(r#"{"delay_webhooks": "soon"}"#).expect("valid");
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"drop": 1}"#).is_err());
        assert!(
            serde_json::from_str::<Faults>("{}")
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn the_same_seed_draws_the_same() {
        let (mut a, mut b) = (Rng::seeded(7), Rng::seeded(7));
        let draws: Vec<u64> = (0..5).map(|_| a.below(1000)).collect();
        assert_eq!(draws, (0..5).map(|_| b.below(1000)).collect::<Vec<_>>());
        assert!((0..1000).all(|_| (0.0..1.0).contains(&a.unit())));
    }
}
