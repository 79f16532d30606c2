//! Exponential backoff with jitter, for every retry loop.
//!
//! Retries that double a fixed delay wake in lockstep: after a failover
//! every client of the old leader retries at the same instants and the new
//! one takes the whole herd at once. Kafka's clients spread them with a
//! random factor (KIP-580: `retry.backoff.ms` doubling up to
//! `retry.backoff.max.ms`, times a factor in 0.8–1.2); this is the same rule.

use std::time::Duration;

use rand::Rng;

/// How far a delay may stray either side of its exponential value (Kafka's 0.2).
const JITTER: f64 = 0.2;

/// The delays between attempts of one retry loop: `initial`, doubling each
/// attempt up to `max`, each scaled by a random factor in 0.8–1.2.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The delay before jitter for the next attempt.
    next: Duration,
}

impl Backoff {
    /// Delays starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait before the next attempt; each call doubles the next.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER)))
    }

    /// Sleeps for [`next_delay`](Self::next_delay).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts again from `initial`, after an attempt that succeeded.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The delay before jitter that the next attempt would use.
    pub fn current(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_jitter(delay: Duration, base: Duration) -> bool {
        delay >= base.mul_f64(1.0 - JITTER) && delay <= base.mul_f64(1.0 + JITTER)
    }

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        for base in [50, 100, 200, 300, 300] {
            let d = b.next_delay();
            assert!(
                within_jitter(d, Duration::from_millis(base)),
                "{d:?} vs {base} ms"
            );
        }
        b.reset();
        assert_eq!(b.current(), Duration::from_millis(50));
    }

    #[test]
    fn delays_are_spread_not_in_lockstep() {
        let delays: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(
            delays.len() > 40,
            "only {} distinct delays in 50",
            delays.len()
        );
    }

    #[test]
    fn an_initial_above_the_cap_is_capped() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.current(), Duration::from_secs(1));
    }
}
