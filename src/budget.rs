//! What the lines waiting to be sent cost, and the one count that bounds them.
//!
//! A line on its way to clients is one [`Outgoing`], shared by every
//! recipient. The [`Budget`] counts its bytes once, plus a pointer's worth
//! for each recipient still waiting for it, and makes the hub wait while
//! the [slow-consumer policy](crate::slow_readers) says so; nothing here
//! ever drops a line. The limit and when to pause are the policy's.
//! What waits for the [`store`](crate::store)'s writer counts here too,
//! as a share of its own (charged when queued, refunded once written):
//! kept out of the pause, so that a stalled disk never stops the chat,
//! and bounded instead, the store dropping lines past it.
//!
//! Next: [`shard`](crate::shard), the writers that send the lines.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::slow_readers::{Overload, Policy};
use crate::sync;

/// What a line costs besides its text: the shared allocation's header and
/// bookkeeping, rounded up. Counted so that a flood of one-byte lines is not
/// free.
pub const LINE_OVERHEAD: usize = 64;

/// What one recipient waiting for a line costs: the pointer in its queue.
pub const REFERENCE_COST: usize = std::mem::size_of::<std::rc::Rc<Outgoing>>();

/// The store's share of the budget: a sixteenth of it (16 MiB at the
/// default), and at least [`STORE_SHARE_FLOOR`], so that even a small
/// budget lets a chat's lines wait through a commit or two.
const STORE_SHARE_DIVISOR: usize = 16;

/// The least share the store gets, whatever the budget: 1 MiB, some
/// thousands of ordinary lines.
pub const STORE_SHARE_FLOOR: usize = 1 << 20;

/// How long the hub sleeps at most before it looks at the count again. The
/// count wakes it when it falls; this only bounds the cost of a wake-up
/// that raced past it.
const RECHECK: Duration = Duration::from_millis(100);

/// The memory that lines waiting for clients take, server-wide, and the
/// hub's wait while the policy calls it an overload.
///
/// Charged when a line is made, for every recipient it is queued for, and
/// for what a writer has encrypted that the kernel has not yet taken;
/// refunded as those go, and when lines are dropped.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    /// What waits for the store's writer: apart from `used`, so that it
    /// never pauses the hub.
    store: AtomicUsize,
    /// The most `store` may hold of lines; see [`Budget::try_charge_store`].
    store_share: usize,
    /// Decides when the hub pauses and when it goes on.
    policy: Policy,
    /// Set while the hub waits in [`Budget::wait_for_room`].
    waiting: AtomicBool,
    /// Set at shutdown: nobody waits any more.
    released: AtomicBool,
    lock: Mutex<()>,
    room: Condvar,
}

impl Budget {
    /// An empty count, which pauses the hub as `policy` says (past its
    /// memory budget).
    pub fn new(policy: &Policy) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            store: AtomicUsize::new(0),
            store_share: (policy.memory_budget / STORE_SHARE_DIVISOR).max(STORE_SHARE_FLOOR),
            policy: *policy,
            waiting: AtomicBool::new(false),
            released: AtomicBool::new(false),
            lock: Mutex::new(()),
            room: Condvar::new(),
        })
    }

    /// Bytes counted right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Bytes waiting for the store's writer right now.
    pub fn store_used(&self) -> usize {
        self.store.load(Ordering::Relaxed)
    }

    /// The most [`Budget::try_charge_store`] lets wait for the store.
    pub fn store_share(&self) -> usize {
        self.store_share
    }

    /// Counts `bytes` more for the store, unless that would pass its
    /// share: then nothing is counted, and the store drops the line.
    pub fn try_charge_store(&self, bytes: usize) -> bool {
        let before = self.store.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.store_share {
            self.store.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Counts `bytes` more for the store, whatever its share: for what it
    /// must not drop (a topic, rules, bans), bounded by the rooms instead.
    pub fn charge_store(&self, bytes: usize) {
        self.store.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` less for the store: written, or not kept.
    pub fn refund_store(&self, bytes: usize) {
        self.store.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// True while so much is waiting that the hub should pause.
    pub fn is_over(&self) -> bool {
        self.policy.pauses(self.used())
    }

    /// The overload, as the log tells it, if the hub should pause.
    pub fn overload(&self) -> Option<Overload> {
        self.policy.overload(self.used())
    }

    /// Counts `bytes` more.
    pub fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Counts `bytes` less, and wakes the hub if that made room for it.
    pub fn refund(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::SeqCst);
        let after = before - bytes;
        // Only the refund that crosses the mark wakes, and only if someone
        // waits: this runs for every line let go, and every round of each
        // writer.
        if self.policy.resumes(after)
            && !self.policy.resumes(before)
            && self.waiting.load(Ordering::SeqCst)
        {
            let _guard = sync::lock(&self.lock);
            self.room.notify_all();
        }
    }

    /// If the policy calls for a pause, blocks until it says the hub may go
    /// on (under three quarters of the memory budget), or until the budget
    /// is [released](Budget::release). Returns how long it waited, if it did.
    pub fn wait_for_room(&self) -> Option<Duration> {
        if !self.is_over() || self.released.load(Ordering::SeqCst) {
            return None;
        }
        let start = Instant::now();
        let mut guard = sync::lock(&self.lock);
        // Set before the count is read again: a refund that crosses the mark
        // after this sees the flag and wakes us; one before it is seen in
        // the count.
        self.waiting.store(true, Ordering::SeqCst);
        while !self.policy.resumes(self.used()) && !self.released.load(Ordering::SeqCst) {
            guard = sync::wait_timeout(&self.room, guard, RECHECK);
        }
        self.waiting.store(false, Ordering::SeqCst);
        Some(start.elapsed())
    }

    /// Ends every wait, now and later: for shutdown, which must not wait
    /// for writers to catch up.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        let _guard = sync::lock(&self.lock);
        self.room.notify_all();
    }
}

/// One line on its way out: its text (with the `\n`), when it was made,
/// and the budget it counts against until the last holder lets go.
///
/// Cloning it is cheap and shares the text. The hub gives each writer shard
/// one clone; a shard shares its clone among its recipients through an
/// `Rc`, whose plain counter only that shard's thread touches. An `Arc` per
/// recipient would have every delivery change a counter that both writer
/// threads write, and the cache line holding it would bounce between cores.
///
/// The text is an `Arc<str>` held in the line itself, so that a writer
/// reading it for each recipient follows one pointer, not three; what the
/// line owes the budget travels beside it, refunded when the last clone
/// goes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    text: Arc<str>,
    born: Instant,
    _charge: Arc<Charge>,
}

/// What one line owes the budget, paid back when it is dropped.
#[derive(Debug)]
struct Charge {
    bytes: usize,
    budget: Arc<Budget>,
}

impl Outgoing {
    /// Makes a line and charges it to `budget`, which gets the bytes back
    /// when the last clone is dropped.
    pub fn new(text: impl Into<Arc<str>>, budget: &Arc<Budget>) -> Outgoing {
        let text = text.into();
        let bytes = text.len() + LINE_OVERHEAD;
        budget.charge(bytes);
        Outgoing {
            text,
            born: Instant::now(),
            _charge: Arc::new(Charge {
                bytes,
                budget: Arc::clone(budget),
            }),
        }
    }

    /// The line as it goes on the wire.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text itself, to keep after the line is sent: a room's history
    /// holds it so, without a copy, and without counting in the budget.
    pub fn shared_text(&self) -> Arc<str> {
        Arc::clone(&self.text)
    }

    /// When the hub made it: the age of the oldest line a client still
    /// waits for is how far behind that client is.
    pub fn born(&self) -> Instant {
        self.born
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.refund(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn with_limit(memory_budget: usize) -> Arc<Budget> {
        Budget::new(&Policy {
            memory_budget,
            ..Policy::default()
        })
    }

    #[test]
    fn a_line_is_counted_once_until_its_last_holder_drops_it() {
        let budget = with_limit(1 << 20);
        let line = Outgoing::new("hello\n".to_string(), &budget);
        let copies: Vec<_> = (0..100).map(|_| line.clone()).collect();
        assert_eq!(budget.used(), 6 + LINE_OVERHEAD);
        drop(line);
        drop(copies);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_stores_share_is_bounded_and_never_pauses_the_hub() {
        let budget = with_limit(1000);
        // The hub's own count at its very limit: one byte of the store's
        // counted there (or looked at when deciding to pause) would pause it.
        budget.charge(1000);
        assert!(!budget.is_over());
        let share = STORE_SHARE_FLOOR;
        assert!(budget.try_charge_store(share - 10));
        assert!(!budget.try_charge_store(11), "past the share");
        assert!(budget.try_charge_store(10));
        assert_eq!(budget.store_used(), share);
        budget.charge_store(5);
        assert_eq!(budget.used(), 1000, "the store's bytes are its own");
        assert!(!budget.is_over());
        assert_eq!(budget.wait_for_room(), None);
        budget.refund_store(share + 5);
        assert_eq!(budget.store_used(), 0);
        assert_eq!(budget.used(), 1000, "refunded from the store's bytes");
        // The edge is real: a byte more of the hub's own pauses it.
        budget.charge(1);
        assert!(budget.is_over());
        budget.refund(1001);
        let big = with_limit(64 << 20);
        assert!(big.try_charge_store(4 << 20));
        assert!(!big.try_charge_store(1));
    }

    #[test]
    fn even_a_tiny_budget_lets_the_hub_go_on_once_it_is_empty() {
        for limit in 1..8 {
            let budget = with_limit(limit);
            budget.charge(limit + 1);
            let waited = waiter(&budget);
            budget.refund(limit + 1);
            let result = waited.recv_timeout(Duration::from_secs(10));
            assert!(matches!(result, Ok(Some(_))), "limit {limit}: {result:?}");
        }
    }

    #[test]
    fn under_the_limit_nobody_waits() {
        let budget = with_limit(1000);
        budget.charge(1000);
        assert!(!budget.is_over());
        assert_eq!(budget.overload(), None);
        assert_eq!(budget.wait_for_room(), None);
    }

    #[test]
    fn a_line_shared_by_many_can_start_the_pause_only_by_its_own_size() {
        // 300 bytes of text, counted once however many hold it.
        let budget = with_limit(1000);
        let lines: Vec<_> = (0..3)
            .map(|_| Outgoing::new("x".repeat(300 - LINE_OVERHEAD), &budget))
            .collect();
        let shared: Vec<_> = (0..50).map(|_| lines[0].clone()).collect();
        assert_eq!(budget.used(), 900);
        assert!(!budget.is_over());
        let fourth = Outgoing::new("x".repeat(300 - LINE_OVERHEAD), &budget);
        assert_eq!(
            budget.overload(),
            Some(Overload {
                used: 1200,
                limit: 1000
            })
        );
        drop((fourth, shared));
        assert!(!budget.is_over());
        drop(lines);
        assert_eq!(budget.used(), 0);
    }

    /// Starts a thread that waits for room, and returns once it waits.
    fn waiter(budget: &Arc<Budget>) -> crossbeam_channel::Receiver<Option<Duration>> {
        let (done, waited) = crossbeam_channel::bounded(1);
        let waiter = Arc::clone(budget);
        thread::spawn(move || done.send(waiter.wait_for_room()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !budget.waiting.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the waiter never waited");
            thread::yield_now();
        }
        waited
    }

    #[test]
    fn over_the_limit_the_waiter_resumes_below_three_quarters() {
        let budget = with_limit(1000);
        budget.charge(1001);
        assert!(budget.is_over());
        let waited = waiter(&budget);
        // Down to the limit is not enough: it waits for room, not the edge.
        budget.refund(100);
        assert!(waited.recv_timeout(Duration::from_millis(300)).is_err());
        budget.refund(200);
        let result = waited.recv_timeout(Duration::from_secs(10));
        assert!(matches!(result, Ok(Some(_))), "{result:?}");
    }

    #[test]
    fn release_ends_a_wait_whatever_the_count() {
        let budget = with_limit(10);
        budget.charge(100);
        let waited = waiter(&budget);
        budget.release();
        let result = waited.recv_timeout(Duration::from_secs(10));
        assert!(matches!(result, Ok(Some(_))), "{result:?}");
        assert_eq!(budget.wait_for_room(), None);
    }
}
