//! Flood control: a token bucket for each client's lines.
//!
//! A client may send `burst` lines at once, then `per_second` lines a
//! second. Over that, its reader waits before taking the next line, so the
//! client's own TCP connection pushes back: nothing is dropped, it is only
//! slowed down. Pure arithmetic on instants given by the caller, so it is
//! tested without a clock.
//!
//! Next: [`capacity`](crate::capacity).

use std::time::{Duration, Instant};

/// Default for the lines a second a client may keep sending.
///
/// Faster than anyone types; slow enough that one client cannot keep the
/// hub busy for everyone else.
pub const RATE_PER_SECOND: u32 = 5;

/// Default for the lines a client may send at once before it is slowed:
/// a pasted paragraph or a short code snippet goes through at full speed.
pub const BURST: u32 = 20;

/// How fast one client may send lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Lines per second, on average.
    pub per_second: u32,
    /// Lines that may come at once.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            per_second: RATE_PER_SECOND,
            burst: BURST,
        }
    }
}

/// One client's bucket: it holds up to `burst` tokens, refills at
/// `per_second`, and each line takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// May go below zero: the debt is the wait owed.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            updated: now,
        }
    }

    /// The tokens the bucket will hold at `at`, none taken meanwhile.
    fn refilled(&self, at: Instant) -> f64 {
        let elapsed = at.saturating_duration_since(self.updated).as_secs_f64();
        let rate = f64::from(self.limit.per_second);
        (self.tokens + elapsed * rate).min(f64::from(self.limit.burst))
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.refilled(now);
        self.updated = now;
    }

    /// Takes a token for one line; returns how long to wait before
    /// passing the line on (zero within the limit).
    pub fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / f64::from(self.limit.per_second))
        }
    }

    /// True when the bucket will have refilled completely by `at`: the
    /// client has been within its limit for a while. It takes nothing and
    /// changes nothing, so `at` may be a moment already counted.
    pub fn is_full(&self, at: Instant) -> bool {
        self.refilled(at) >= f64::from(self.limit.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_passes_then_lines_are_spaced() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Duration::ZERO);
        }
        // The fourth line at once owes one token: a tenth of a second.
        assert_eq!(bucket.take(start), Duration::from_millis(100));
        // The fifth, still at once, owes two.
        assert_eq!(bucket.take(start), Duration::from_millis(200));
    }

    #[test]
    fn waiting_pays_the_debt() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        for _ in 0..3 {
            bucket.take(start);
        }
        let wait = bucket.take(start);
        // After waiting as told, the next line owes exactly one more token.
        let later = start + wait;
        assert_eq!(bucket.take(later), Duration::from_millis(100));
    }

    #[test]
    fn refills_up_to_the_burst_only() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, start);
        bucket.take(start);
        assert!(!bucket.is_full(start));
        let much_later = start + Duration::from_secs(60);
        assert!(bucket.is_full(much_later));
        // Asking changes nothing: the tokens are still those of `start`.
        assert!(!bucket.is_full(start));
        for _ in 0..3 {
            assert_eq!(bucket.take(much_later), Duration::ZERO);
        }
        assert!(bucket.take(much_later) > Duration::ZERO);
    }
}
