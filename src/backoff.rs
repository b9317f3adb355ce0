//! Waits between attempts to reconnect: doubled after each failure up to a
//! ceiling, each moved at random by up to a quarter either way, so that the
//! clients of a server that restarts do not all come back in the same instant.
//! It only counts time: sleeping, and what to try, are the caller's.
//!
//! Used by [`terminal`](crate::terminal) between reconnects, and by the
//! Redis link's threads between attempts to reach Redis.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The waits between attempts: `first`, doubled after each failure up to
/// `max`, each ±25 % at random; [`Backoff::reset`] after a success.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The wait before jitter that the next failure gets.
    next: Duration,
    random: Xorshift,
}

impl Backoff {
    /// Starts at `first` and doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first.min(max),
            random: Xorshift::seeded(),
        }
    }

    /// The wait before the next attempt; the one after will be twice as
    /// long, up to the ceiling.
    pub fn next_wait(&mut self) -> Duration {
        let jitter = self.random.unit();
        self.next_wait_with(jitter)
    }

    /// [`Backoff::next_wait`] with `jitter` (0 to 1) chosen by the caller:
    /// 0 is 25 % shorter, 0.5 exact, 1 is 25 % longer.
    pub fn next_wait_with(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// After a success: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

/// Numbers from 0 to 1 for the jitter: xorshift, seeded from std's hasher
/// keys, which are random for each process; that is all the randomness
/// jitter needs (nothing here is secret).
#[derive(Debug)]
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Xorshift {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(0);
        // Never zero: zero is xorshift's one fixed point.
        Xorshift(hasher.finish() | 1)
    }

    /// The next number, at least 0 and less than 1.
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn waits_double_up_to_the_ceiling() {
        let mut backoff = Backoff::new(FIRST, MAX);
        let waits: Vec<Duration> = (0..9).map(|_| backoff.next_wait_with(0.5)).collect();
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                MAX,
                MAX,
                MAX
            ]
        );
        for _ in 0..100 {
            assert_eq!(backoff.next_wait_with(0.5), MAX);
        }
    }

    #[test]
    fn jitter_moves_a_wait_by_a_quarter_at_most() {
        let mut backoff = Backoff::new(FIRST, MAX);
        assert_eq!(backoff.next_wait_with(0.0), Duration::from_millis(375));
        assert_eq!(backoff.next_wait_with(1.0), Duration::from_millis(1250));
        assert_eq!(backoff.next_wait_with(7.0), Duration::from_millis(2500));
        while backoff.next_wait_with(0.5) < MAX {}
        for _ in 0..1000 {
            let wait = backoff.next_wait();
            assert!(
                wait >= MAX.mul_f64(0.75) && wait <= MAX.mul_f64(1.25),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn reset_starts_again_from_the_first_wait() {
        let mut backoff = Backoff::new(FIRST, MAX);
        for _ in 0..5 {
            backoff.next_wait();
        }
        backoff.reset();
        assert_eq!(backoff.next_wait_with(0.5), FIRST);
        // A first wait above the ceiling is the ceiling.
        let mut odd = Backoff::new(MAX * 2, MAX);
        assert_eq!(odd.next_wait_with(0.5), MAX);
    }

    #[test]
    fn the_random_numbers_stay_in_range_and_vary() {
        let mut random = Xorshift::seeded();
        let numbers: Vec<f64> = (0..1000).map(|_| random.unit()).collect();
        assert!(numbers.iter().all(|x| (0.0..1.0).contains(x)));
        let low = numbers.iter().filter(|&&x| x < 0.5).count();
        assert!((300..700).contains(&low), "{low} of 1000 below one half");
    }
}
