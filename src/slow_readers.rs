//! The slow-consumer policy, whole: every limit and deadline for clients
//! that read slower than their room talks, and each decision (keep, wait,
//! probe, cut and why; pause the hub, let it go on). No sockets and no
//! clock (the time is passed in): the shards and the budget ask it. Why a
//! growing queue is no proof of a slow reader, and what healthy, too slow
//! and overload mean: README, "Slow readers".
//!
//! Next: [`server`](crate::server), which builds the policy from its flags
//! and starts the shards, the hub and a thread per client.

use std::fmt;
use std::time::{Duration, Instant};

/// Default for how long a client's socket may take nothing, while lines
/// wait for it, before the client is cut as stalled (`--stall-timeout`).
///
/// The kernel already holds up to [`UNSENT_LIMIT`] unsent for each socket,
/// besides what the peer's receive buffer took; when that is full and five
/// more seconds pass without a byte taken (the socket is probed meanwhile),
/// the peer is not reading. A reader that pauses for a second or two is not
/// cut.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Default for how old the oldest line waiting for a client may get before
/// the client is cut as too far behind (`--max-lag`).
///
/// A reader that takes bytes, but slower than the room talks, falls further
/// behind for ever; half a minute behind, a chat is no longer a
/// conversation, and the client is better off reconnecting.
pub const MAX_LAG: Duration = Duration::from_secs(30);

/// Default for the bytes that may wait for one client (its lines as the
/// budget counts them, plus a pointer per line) before it is cut, whatever
/// its socket does (`--max-pending`).
///
/// Half the default [`MEMORY_BUDGET`]: one client alone can never bring the
/// whole server to a stop.
pub const MAX_PENDING: usize = 128 * 1024 * 1024;

/// Default for the memory all waiting lines may take, server-wide, before
/// the hub stops taking new ones (`--memory-budget`).
///
/// About 1 % of a 24 GiB machine. Healthy readers keep far less waiting
/// (each socket's kernel buffer holds up to [`UNSENT_LIMIT`] of its own,
/// plus what is in flight); the budget is reached only when a flood outruns
/// the writers, and then the senders wait.
pub const MEMORY_BUDGET: usize = 256 * 1024 * 1024;

/// Unsent bytes the kernel may hold for one client (`TCP_NOTSENT_LOWAT`).
///
/// Left to itself, the kernel buffers up to 4 MiB per socket (tcp_wmem),
/// a private copy for each client; past this mark the socket reports
/// itself full, and the lines wait in the writer's queue instead: shared,
/// counted against the memory budget, and measured for lag. Enough to
/// keep a fast reader's connection busy between two sends.
pub const UNSENT_LIMIT: u32 = 128 * 1024;

/// How soon after a socket is found full it is first tried again; after
/// that, every quarter of the stall timeout (see [`Policy::review`]).
///
/// The kernel reports room only once half of [`UNSENT_LIMIT`] has gone, so
/// a peer that reads a few KB a second takes bytes without a word from
/// epoll: without these tries it would look stalled while it reads.
pub const FIRST_PROBE: Duration = Duration::from_millis(100);

/// The policy's limits, and every decision made from them.
///
/// Built once from the server's flags; the shards and the budget each hold
/// it and ask it, so that no limit is copied anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// See [`STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// See [`MAX_LAG`].
    pub max_lag: Duration,
    /// See [`MAX_PENDING`].
    pub max_pending: usize,
    /// See [`MEMORY_BUDGET`].
    pub memory_budget: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            stall_timeout: STALL_TIMEOUT,
            max_lag: MAX_LAG,
            max_pending: MAX_PENDING,
            memory_budget: MEMORY_BUDGET,
        }
    }
}

/// How a client's socket has been taking bytes: what the policy judges a
/// stall by. Its writer shard keeps one per client and tells it what each
/// send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Since when the kernel has refused everything we had for it; moved on
    /// by every send that got anything through.
    blocked_since: Option<Instant>,
    /// When to try the full socket again, whatever epoll says.
    next_probe: Instant,
}

impl Progress {
    /// A client whose socket has refused nothing yet.
    pub fn new(now: Instant) -> Progress {
        Progress {
            blocked_since: None,
            next_probe: now,
        }
    }

    /// A send at `now` left bytes the kernel would not take; `moved` says
    /// whether it got anything through, which restarts the stall clock.
    pub fn blocked(&mut self, now: Instant, moved: bool) {
        if self.blocked_since.is_none() {
            self.next_probe = now + FIRST_PROBE;
        }
        if moved || self.blocked_since.is_none() {
            self.blocked_since = Some(now);
        }
    }

    /// A send got everything through: the socket is not full.
    pub fn cleared(&mut self) {
        self.blocked_since = None;
    }

    /// True while the kernel holds the client's socket full.
    pub fn is_blocked(&self) -> bool {
        self.blocked_since.is_some()
    }
}

/// What the policy decided about one client, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing to watch: its socket is not full.
    Keep,
    /// Behind, but not stuck: look again at this time (the next probe, or
    /// its stall or lag deadline).
    Wait(Instant),
    /// Try the full socket now, then ask [`Policy::stalled`]; if it is kept,
    /// look again at this time.
    Probe(Instant),
    /// Cut it, for this reason.
    Cut(TooSlow),
}

/// Why a client is cut as too slow. Its `Display` is the log's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooSlow {
    /// Its socket took nothing for `idle`, at least the stall timeout.
    Stalled {
        /// How long nothing was taken.
        idle: Duration,
        /// The stall timeout.
        limit: Duration,
    },
    /// The oldest line waiting for it was made `lag` ago, at least the lag
    /// limit.
    Lagging {
        /// How old the oldest waiting line is.
        lag: Duration,
        /// The lag limit.
        limit: Duration,
    },
    /// More bytes wait for it than the per-client cap allows.
    OverCap {
        /// The bytes waiting.
        pending: usize,
        /// The cap.
        limit: usize,
    },
}

impl fmt::Display for TooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TooSlow::Stalled { idle, limit } => write!(
                f,
                "stalled: its connection took nothing for {:.1} s (--stall-timeout {} s)",
                idle.as_secs_f32(),
                limit.as_secs_f32()
            ),
            TooSlow::Lagging { lag, limit } => write!(
                f,
                "too slow: {:.1} s behind the room (--max-lag {} s)",
                lag.as_secs_f32(),
                limit.as_secs_f32()
            ),
            TooSlow::OverCap { pending, limit } => write!(
                f,
                "too slow: {pending} bytes waiting for it (--max-pending {limit})"
            ),
        }
    }
}

/// The hub's pause: more lines wait in the whole server than the memory
/// budget allows. Its `Display` is the log's warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    /// Bytes waiting.
    pub used: usize,
    /// The memory budget.
    pub limit: usize,
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overload: {} MiB of lines wait for the writers (--memory-budget {} MiB): \
             taking no new lines until they catch up",
            self.used >> 20,
            self.limit >> 20
        )
    }
}

impl Policy {
    /// A warning for limits that work against each other, if these do.
    pub fn caution(&self) -> Option<&'static str> {
        (self.max_pending > self.memory_budget / 2).then_some(
            "--max-pending is more than half of --memory-budget: one client that stops \
             reading can then pause every sender until it is cut",
        )
    }

    /// A line was queued and `pending` bytes now wait for the client: cut
    /// it if that is over the cap. Asked on every line, so kept to one
    /// comparison.
    #[inline]
    pub fn over_cap(&self, pending: usize) -> Option<TooSlow> {
        (pending > self.max_pending).then_some(TooSlow::OverCap {
            pending,
            limit: self.max_pending,
        })
    }

    /// When the client must next be looked at, while its socket is full:
    /// the next probe, its stall deadline or its lag deadline, whichever
    /// comes first. `None`: nothing to look at. `oldest` is when the oldest
    /// line still waiting for it was made.
    pub fn deadline(&self, progress: &Progress, oldest: Option<Instant>) -> Option<Instant> {
        let since = progress.blocked_since?;
        let mut at = (since + self.stall_timeout).min(progress.next_probe);
        if let Some(born) = oldest {
            at = at.min(born + self.max_lag);
        }
        Some(at)
    }

    /// Looks at a client at `now`: cut it if it is too far behind, have its
    /// socket tried if a probe or its stall deadline is due, or say when to
    /// look again. A probe due moves the next one a quarter of the stall
    /// timeout on.
    pub fn review(
        &self,
        progress: &mut Progress,
        oldest: Option<Instant>,
        now: Instant,
    ) -> Verdict {
        let Some(at) = self.deadline(progress, oldest) else {
            return Verdict::Keep;
        };
        if at > now {
            return Verdict::Wait(at);
        }
        let lag = oldest.map_or(Duration::ZERO, |born| now.saturating_duration_since(born));
        if lag >= self.max_lag {
            return Verdict::Cut(TooSlow::Lagging {
                lag,
                limit: self.max_lag,
            });
        }
        // The stall deadline may be past already: the probe decides, since
        // a byte it moves is progress.
        progress.next_probe = now + self.probe_every();
        Verdict::Probe(progress.next_probe)
    }

    /// After a probe at `now`: cut the client if its socket has taken
    /// nothing for the stall timeout.
    pub fn stalled(&self, progress: &Progress, now: Instant) -> Option<TooSlow> {
        let idle = now.saturating_duration_since(progress.blocked_since?);
        (idle >= self.stall_timeout).then_some(TooSlow::Stalled {
            idle,
            limit: self.stall_timeout,
        })
    }

    /// How often a full socket is tried after the first probe.
    fn probe_every(&self) -> Duration {
        (self.stall_timeout / 4).max(FIRST_PROBE)
    }

    /// True when `used` bytes waiting should pause the hub: more than the
    /// budget (at least one byte). Asked after every event the hub handles,
    /// so kept to one comparison.
    #[inline]
    pub fn pauses(&self, used: usize) -> bool {
        used > self.memory_budget.max(1)
    }

    /// The pause, with what the log says of it, if `used` bytes waiting
    /// call for one.
    pub fn overload(&self, used: usize) -> Option<Overload> {
        self.pauses(used).then_some(Overload {
            used,
            limit: self.memory_budget.max(1),
        })
    }

    /// True once `used` is under three quarters of the budget, where a
    /// paused hub goes on: it does not stop and start again on every line.
    /// Even a budget of a byte lets it go on once nothing waits.
    #[inline]
    pub fn resumes(&self, used: usize) -> bool {
        let limit = self.memory_budget.max(1);
        used < limit - limit / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            stall_timeout: Duration::from_secs(5),
            max_lag: Duration::from_secs(30),
            max_pending: 1000,
            memory_budget: 4000,
        }
    }

    /// A fake clock's start, and the times after it.
    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    /// A reader on the other end of a full socket, as the writer sees it:
    /// the writer looks when the policy says, probes when it says, and the
    /// probe moves bytes or not as `moves(now)` says. Lines come from
    /// `oldest(now)`. Returns the cut, if any, and when it came, looking no
    /// later than `until`.
    fn run(
        policy: &Policy,
        start: Instant,
        until: Instant,
        moves: impl Fn(Instant) -> bool,
        oldest: impl Fn(Instant) -> Option<Instant>,
    ) -> Option<(TooSlow, Instant)> {
        let mut progress = Progress::new(start);
        progress.blocked(start, false);
        let mut now = start;
        while now <= until {
            match policy.review(&mut progress, oldest(now), now) {
                Verdict::Keep => return None,
                Verdict::Wait(next) => {
                    assert!(next > now, "a wait goes forward");
                    now = next;
                }
                Verdict::Probe(next) => {
                    progress.blocked(now, moves(now));
                    if let Some(cut) = policy.stalled(&progress, now) {
                        return Some((cut, now));
                    }
                    let look = policy.deadline(&progress, oldest(now)).expect("still full");
                    assert!(look <= next, "the probe's own time bounds the next look");
                    now = look.max(now + Duration::from_millis(1));
                }
                Verdict::Cut(cut) => return Some((cut, now)),
            }
        }
        None
    }

    #[test]
    fn a_client_whose_socket_is_not_full_is_kept_with_nothing_to_watch() {
        let start = Instant::now();
        let policy = policy();
        let mut progress = Progress::new(start);
        assert_eq!(policy.deadline(&progress, Some(start)), None);
        let later = at(start, 3_600_000);
        assert_eq!(
            policy.review(&mut progress, Some(start), later),
            Verdict::Keep
        );
        assert_eq!(policy.stalled(&progress, later), None);
        // Full, then clear again: nothing to watch any more.
        progress.blocked(start, false);
        assert!(progress.is_blocked());
        progress.cleared();
        assert_eq!(
            policy.review(&mut progress, Some(start), later),
            Verdict::Keep
        );
    }

    #[test]
    fn healthy_but_behind_is_kept_and_nothing_is_dropped() {
        let start = Instant::now();
        let policy = policy();
        // Every probe moves a few bytes; the oldest waiting line stays 20 s
        // old (a burst it is working through): under the lag limit.
        let oldest = |now: Instant| Some(now - Duration::from_secs(20));
        let cut = run(&policy, start, at(start, 600_000), |_| true, oldest);
        assert_eq!(cut, None);
        // That it loses no line is the shard's to show: no verdict here
        // drops one (see the shard's backlog tests).
    }

    #[test]
    fn a_pause_shorter_than_the_stall_timeout_is_not_a_stall() {
        let start = Instant::now();
        let policy = policy();
        // Nothing for 4.9 s, then it reads again.
        let moves = |now: Instant| now >= at(start, 4_900);
        let cut = run(&policy, start, at(start, 60_000), moves, |_| None);
        assert_eq!(cut, None);
    }

    #[test]
    fn a_stalled_client_is_cut_at_the_stall_timeout_and_not_before() {
        let start = Instant::now();
        let policy = policy();
        let (cut, when) = run(&policy, start, at(start, 60_000), |_| false, |_| None).unwrap();
        assert_eq!(when, at(start, 5_000), "cut exactly at the stall timeout");
        assert_eq!(
            cut,
            TooSlow::Stalled {
                idle: Duration::from_secs(5),
                limit: Duration::from_secs(5)
            }
        );
        assert_eq!(
            cut.to_string(),
            "stalled: its connection took nothing for 5.0 s (--stall-timeout 5 s)"
        );
        // Looked at just before: kept, and told when to look again.
        let mut progress = Progress::new(start);
        progress.blocked(start, false);
        assert_eq!(policy.stalled(&progress, at(start, 4_999)), None);
        assert!(policy.stalled(&progress, at(start, 5_000)).is_some());
    }

    #[test]
    fn the_first_probe_comes_soon_then_every_quarter_of_the_stall_timeout() {
        let start = Instant::now();
        let policy = policy();
        let mut progress = Progress::new(start);
        progress.blocked(start, false);
        assert_eq!(policy.deadline(&progress, None), Some(at(start, 100)));
        assert_eq!(
            policy.review(&mut progress, None, at(start, 50)),
            Verdict::Wait(at(start, 100))
        );
        assert_eq!(
            policy.review(&mut progress, None, at(start, 100)),
            Verdict::Probe(at(start, 1_350))
        );
        // A blocked send that moves nothing keeps the stall clock's start.
        progress.blocked(at(start, 100), false);
        assert_eq!(policy.deadline(&progress, None), Some(at(start, 1_350)));
        assert_eq!(policy.stalled(&progress, at(start, 4_999)), None);
    }

    #[test]
    fn a_reader_slower_than_its_room_is_cut_for_lag_when_its_oldest_line_is_too_old() {
        let start = Instant::now();
        let policy = policy();
        // Moves bytes at every probe (never stalled), but the line at the
        // head of its queue was made at the start and is still there.
        let (cut, when) = run(
            &policy,
            start,
            at(start, 120_000),
            |_| true,
            |_| Some(start),
        )
        .unwrap();
        assert_eq!(when, at(start, 30_000));
        assert_eq!(
            cut,
            TooSlow::Lagging {
                lag: Duration::from_secs(30),
                limit: Duration::from_secs(30)
            }
        );
        assert_eq!(
            cut.to_string(),
            "too slow: 30.0 s behind the room (--max-lag 30 s)"
        );
    }

    #[test]
    fn lag_is_judged_only_while_the_socket_is_full() {
        // A client whose kernel takes everything is sending as fast as it
        // can: an old line in hand is no reason to cut it.
        let start = Instant::now();
        let policy = policy();
        let mut progress = Progress::new(start);
        let verdict = policy.review(&mut progress, Some(start), at(start, 300_000));
        assert_eq!(verdict, Verdict::Keep);
    }

    #[test]
    fn over_the_pending_cap_is_cut_and_at_it_is_kept() {
        let policy = policy();
        assert_eq!(policy.over_cap(0), None);
        assert_eq!(policy.over_cap(1000), None);
        let cut = policy.over_cap(1001).unwrap();
        assert_eq!(
            cut,
            TooSlow::OverCap {
                pending: 1001,
                limit: 1000
            }
        );
        assert_eq!(
            cut.to_string(),
            "too slow: 1001 bytes waiting for it (--max-pending 1000)"
        );
    }

    #[test]
    fn the_pause_starts_past_the_budget_and_ends_below_three_quarters_of_it() {
        let policy = policy();
        assert!(!policy.pauses(4000), "at the budget: no pause yet");
        assert!(policy.pauses(4001));
        assert_eq!(policy.overload(4000), None);
        let overload = policy.overload(5 << 20).unwrap();
        assert_eq!(
            overload.to_string(),
            "overload: 5 MiB of lines wait for the writers (--memory-budget 0 MiB): \
             taking no new lines until they catch up"
        );
        // Back to the budget is not enough: it waits for room, not the edge.
        assert!(!policy.resumes(4000));
        assert!(!policy.resumes(3000));
        assert!(policy.resumes(2999));
    }

    #[test]
    fn even_a_tiny_budget_resumes_once_nothing_waits() {
        for memory_budget in 0..8 {
            let policy = Policy {
                memory_budget,
                ..policy()
            };
            assert!(policy.resumes(0), "budget {memory_budget}");
            assert!(policy.pauses(memory_budget.max(1) + 1));
        }
    }

    #[test]
    fn the_defaults_keep_one_client_from_taking_more_than_half_the_budget() {
        assert_eq!(Policy::default().caution(), None);
        let lopsided = Policy {
            max_pending: MEMORY_BUDGET,
            ..Policy::default()
        };
        assert!(lopsided.caution().is_some());
    }
}
