//! The directory thread's clock: when its names are renewed, and when the
//! answers to a question are no longer waited for. A value that is always
//! told the time, so its timing is tested with made-up instants; not what
//! is sent to Redis (`names`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The shortest time between two renewals, however short the expiry.
const RENEW_MIN: Duration = Duration::from_millis(10);

/// When the names are renewed, and which questions' answers are due.
#[derive(Debug)]
pub(super) struct Schedule {
    /// A third of the names' expiry: a name survives two renewals lost.
    renew_every: Duration,
    renew_at: Instant,
    /// How long the nodes have to answer a question.
    answer_within: Duration,
    /// Questions to every node, by when their answers are due (asked in
    /// order, so due in order).
    waiting: VecDeque<(Instant, u64)>,
}

impl Schedule {
    /// Names that expire after `ttl`; questions answered within
    /// `answer_within`. The first renewal is a third of the expiry after
    /// `now`.
    pub(super) fn new(ttl: Duration, answer_within: Duration, now: Instant) -> Schedule {
        let renew_every = (ttl / 3).max(RENEW_MIN);
        Schedule {
            renew_every,
            renew_at: now + renew_every,
            answer_within,
            waiting: VecDeque::new(),
        }
    }

    /// Every name is to be taken back at once: the thread reconnected, or
    /// Redis is back.
    pub(super) fn renew_now(&mut self, now: Instant) {
        self.renew_at = now;
    }

    /// Whether the names are due for renewal at `now`.
    pub(super) fn renewal_due(&self, now: Instant) -> bool {
        now >= self.renew_at
    }

    /// The names were renewed at `now`: the next time is a third of the
    /// expiry later.
    pub(super) fn renewed(&mut self, now: Instant) {
        self.renew_at = now + self.renew_every;
    }

    /// How long the thread may wait for work at `now`: until the next
    /// renewal, and never more than `poll` (it also looks whether the link
    /// is stopping).
    pub(super) fn wait(&self, now: Instant, poll: Duration) -> Duration {
        self.renew_at.saturating_duration_since(now).min(poll)
    }

    /// A question was asked of every node at `now`, under `ticket`.
    pub(super) fn asked(&mut self, ticket: u64, now: Instant) {
        self.waiting.push_back((now + self.answer_within, ticket));
    }

    /// The next question whose answers are due at `now`, if any; each is
    /// given once.
    pub(super) fn due(&mut self, now: Instant) -> Option<u64> {
        let &(due, ticket) = self.waiting.front()?;
        if due > now {
            return None;
        }
        self.waiting.pop_front();
        Some(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const ANSWER: Duration = Duration::from_secs(2);
    const POLL: Duration = Duration::from_millis(200);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn names_are_renewed_three_times_per_expiry() {
        let start = Instant::now();
        let mut schedule = Schedule::new(TTL, ANSWER, start);
        assert!(!schedule.renewal_due(start));
        assert!(!schedule.renewal_due(start + secs(9)));
        assert!(schedule.renewal_due(start + secs(10)));
        // Renewed late, at 11 s: the next is 10 s after that, not at 20 s.
        schedule.renewed(start + secs(11));
        assert!(!schedule.renewal_due(start + secs(20)));
        assert!(schedule.renewal_due(start + secs(21)));
    }

    #[test]
    fn a_tiny_expiry_still_leaves_time_between_renewals() {
        let start = Instant::now();
        let schedule = Schedule::new(Duration::from_millis(3), ANSWER, start);
        assert!(!schedule.renewal_due(start + Duration::from_millis(9)));
        assert!(schedule.renewal_due(start + RENEW_MIN));
    }

    #[test]
    fn after_a_reconnection_every_name_is_taken_back_at_once() {
        let start = Instant::now();
        let mut schedule = Schedule::new(TTL, ANSWER, start);
        let back = start + secs(1);
        schedule.renew_now(back);
        assert!(schedule.renewal_due(back));
        assert_eq!(schedule.wait(back, POLL), Duration::ZERO);
        schedule.renewed(back);
        assert!(!schedule.renewal_due(back + secs(9)));
    }

    #[test]
    fn the_wait_ends_at_the_next_renewal_and_never_exceeds_the_poll() {
        let start = Instant::now();
        let schedule = Schedule::new(TTL, ANSWER, start);
        assert_eq!(schedule.wait(start, POLL), POLL);
        let almost = start + secs(10) - Duration::from_millis(50);
        assert_eq!(schedule.wait(almost, POLL), Duration::from_millis(50));
        // Overdue: no wait at all.
        assert_eq!(schedule.wait(start + secs(12), POLL), Duration::ZERO);
    }

    #[test]
    fn questions_time_out_in_the_order_asked_each_once() {
        let start = Instant::now();
        let mut schedule = Schedule::new(TTL, ANSWER, start);
        schedule.asked(1, start);
        schedule.asked(2, start + secs(1));
        assert_eq!(schedule.due(start + secs(1)), None);
        assert_eq!(schedule.due(start + secs(2)), Some(1));
        assert_eq!(schedule.due(start + secs(2)), None, "1 is given once");
        assert_eq!(schedule.due(start + secs(5)), Some(2));
        assert_eq!(schedule.due(start + secs(60)), None);
    }
}
