//! The order in which the directory thread does its work: the renewal when
//! due, then the holds and releases (a batch at a time), then one ask. A plain value over two
//! queues it is handed, so the order is tested without Redis; not what each
//! step sends (`names`) nor when the renewal is due (`schedule`).

use std::time::Duration;

/// Where the directory's work waits. `C` is a hold, a release or a call
/// to renew (one per arrival or departure, never dropped); `A` an ask
/// (a claim, a private line, a question).
pub(super) trait Queues<C, A> {
    /// The next change waiting, without waiting for one.
    fn change(&mut self) -> Option<C>;
    /// How many changes wait now.
    fn changes_waiting(&self) -> usize;
    /// The next ask, waiting for one at most `wait`: `Ok(None)` if none
    /// came, `Err(Closed)` if none ever will.
    fn ask(&mut self, wait: Duration) -> Result<Option<A>, Closed>;
}

/// Nobody can send the directory asks any more: the link is gone.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Closed;

/// What the directory does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<C, A> {
    /// Renew every name held: its time came.
    Renew,
    /// Holds, releases or calls to renew, oldest first: as many as wait,
    /// up to the batch (one round trip to Redis for all).
    Changes(Vec<C>),
    /// An ask.
    Ask(A),
    /// Nothing yet: look at the clock and the connection, then ask again.
    Idle,
    /// No more asks will come: stop.
    Closed,
}

/// The directory's order, kept between steps.
///
/// Three promises: the renewal is done when due, whatever else waits (a
/// stream of arrivals cannot let the names lapse, and each step is one
/// round trip, however many changes wait); a release is never
/// overtaken by a later claim of the same name (the hub queues the release
/// first, so the changes that wait when an ask arrives go before it); and
/// an ask is put back at most once, behind only the changes that waited
/// when it arrived (so later arrivals cannot hold it back for ever).
#[derive(Debug)]
pub(super) struct Order<A> {
    /// An ask put back, and how many changes still go before it.
    put_back: Option<(A, usize)>,
    /// The most changes one step takes.
    batch: usize,
}

impl<A> Order<A> {
    /// Nothing put back; up to `batch` changes a step.
    pub(super) fn new(batch: usize) -> Order<A> {
        Order {
            put_back: None,
            batch: batch.max(1),
        }
    }

    /// The next step. `renewal_due` is the schedule's; `wait` is how long
    /// an ask may be waited for, when nothing else is to be done.
    pub(super) fn next<C>(
        &mut self,
        queues: &mut impl Queues<C, A>,
        renewal_due: bool,
        wait: Duration,
    ) -> Step<C, A> {
        if renewal_due {
            return Step::Renew;
        }
        if let Some((ask, ahead)) = self.put_back.take() {
            let changes = take(queues, ahead.min(self.batch));
            if changes.is_empty() {
                return Step::Ask(ask);
            }
            self.put_back = Some((ask, ahead - changes.len()));
            return Step::Changes(changes);
        }
        let changes = take(queues, self.batch);
        if !changes.is_empty() {
            return Step::Changes(changes);
        }
        match queues.ask(wait) {
            Ok(Some(ask)) => {
                // Changes that came while the ask was awaited were queued
                // before it: they go first.
                let ahead = queues.changes_waiting();
                if ahead == 0 {
                    Step::Ask(ask)
                } else {
                    self.put_back = Some((ask, ahead));
                    Step::Idle
                }
            }
            Ok(None) => Step::Idle,
            Err(Closed) => Step::Closed,
        }
    }

    /// Puts back an ask taken while Redis was out of reach, to be the next
    /// step once nothing is due: its first and only time back.
    pub(super) fn put_back_first(&mut self, ask: A) {
        self.put_back = Some((ask, 0));
    }

    /// The ask put back, if any, to be answered otherwise (Redis is out of
    /// reach).
    pub(super) fn take_put_back(&mut self) -> Option<A> {
        self.put_back.take().map(|(ask, _)| ask)
    }
}

/// Up to `most` changes waiting, oldest first, without waiting for any.
fn take<C, A>(queues: &mut impl Queues<C, A>, most: usize) -> Vec<C> {
    std::iter::from_fn(|| queues.change()).take(most).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const WAIT: Duration = Duration::from_millis(100);

    /// Changes and asks in order; `while_waiting` are changes that arrive
    /// while the next ask is awaited (as the hub would queue them).
    #[derive(Default)]
    struct Fake {
        changes: VecDeque<&'static str>,
        asks: VecDeque<&'static str>,
        while_waiting: Vec<&'static str>,
        closed: bool,
        waits: usize,
    }

    impl Queues<&'static str, &'static str> for Fake {
        fn change(&mut self) -> Option<&'static str> {
            self.changes.pop_front()
        }
        fn changes_waiting(&self) -> usize {
            self.changes.len()
        }
        fn ask(&mut self, wait: Duration) -> Result<Option<&'static str>, Closed> {
            assert_eq!(wait, WAIT);
            self.waits += 1;
            self.changes.extend(self.while_waiting.drain(..));
            match self.asks.pop_front() {
                Some(ask) => Ok(Some(ask)),
                None if self.closed => Err(Closed),
                None => Ok(None),
            }
        }
    }

    type Done = Step<&'static str, &'static str>;

    /// Steps until the queues are empty (an `Idle` with nothing waiting)
    /// or closed, the renewal due at the steps `due` names; at most 50.
    fn run(order: &mut Order<&'static str>, fake: &mut Fake, due: &[usize]) -> Vec<Done> {
        let mut steps = Vec::new();
        for n in 0..50 {
            let step = order.next(fake, due.contains(&n), WAIT);
            let quiet = step == Step::Idle
                && fake.changes.is_empty()
                && fake.asks.is_empty()
                && order.put_back.is_none();
            let closed = step == Step::Closed;
            steps.push(step);
            if quiet || closed {
                return steps;
            }
        }
        panic!("no end after 50 steps: {steps:?}");
    }

    #[test]
    fn changes_waiting_go_before_an_ask() {
        let mut order = Order::new(1);
        let mut fake = Fake {
            changes: ["release alice", "hold bob"].into(),
            asks: ["claim alice"].into(),
            ..Fake::default()
        };
        let steps = run(&mut order, &mut fake, &[]);
        assert_eq!(
            steps,
            [
                Step::Changes(vec!["release alice"]),
                Step::Changes(vec!["hold bob"]),
                Step::Ask("claim alice"),
                Step::Idle
            ]
        );
    }

    #[test]
    fn a_release_queued_while_a_claim_was_awaited_goes_first() {
        let mut order = Order::new(1);
        let mut fake = Fake {
            asks: ["claim alice"].into(),
            while_waiting: vec!["release alice"],
            ..Fake::default()
        };
        let steps = run(&mut order, &mut fake, &[]);
        assert_eq!(
            steps,
            [
                Step::Idle,
                Step::Changes(vec!["release alice"]),
                Step::Ask("claim alice"),
                Step::Idle
            ]
        );
    }

    #[test]
    fn an_ask_put_back_waits_only_for_the_changes_before_it() {
        let mut order = Order::new(1);
        let mut fake = Fake {
            asks: ["claim alice", "claim bob"].into(),
            while_waiting: vec!["release alice", "hold carol"],
            ..Fake::default()
        };
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Idle);
        // Arrivals after the ask was put back do not hold it back again.
        fake.changes.push_back("hold dave");
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["release alice"])
        );
        fake.changes.push_back("hold erin");
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold carol"])
        );
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Ask("claim alice"));
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold dave"])
        );
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold erin"])
        );
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Ask("claim bob"));
        assert_eq!(fake.waits, 2);
    }

    #[test]
    fn the_renewal_goes_first_whatever_waits() {
        let mut order = Order::new(1);
        let mut fake = Fake {
            changes: ["hold a", "hold b", "hold c"].into(),
            asks: ["claim d"].into(),
            while_waiting: vec!["release a"],
            ..Fake::default()
        };
        let steps = run(&mut order, &mut fake, &[1, 5]);
        assert_eq!(
            steps,
            [
                Step::Changes(vec!["hold a"]),
                Step::Renew,
                Step::Changes(vec!["hold b"]),
                Step::Changes(vec!["hold c"]),
                Step::Idle,
                Step::Renew,
                Step::Changes(vec!["release a"]),
                Step::Ask("claim d"),
                Step::Idle
            ]
        );
    }

    #[test]
    fn closed_queues_stop_the_thread_and_a_put_back_ask_can_be_taken() {
        let mut order = Order::new(1);
        let mut fake = Fake {
            asks: ["question"].into(),
            while_waiting: vec!["hold a"],
            closed: true,
            ..Fake::default()
        };
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Idle);
        assert_eq!(order.take_put_back(), Some("question"));
        assert_eq!(order.take_put_back(), None);
        // Taken while Redis was away, and Redis is back: the renewal, then
        // that ask, before anything else that waits.
        order.put_back_first("claim bob");
        assert_eq!(order.next(&mut fake, true, WAIT), Step::Renew);
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Ask("claim bob"));
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold a"])
        );
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Closed);
    }

    #[test]
    fn changes_go_a_batch_at_a_time_and_a_put_back_ask_waits_only_for_its_own() {
        let mut order = Order::new(2);
        let mut fake = Fake {
            changes: ["hold a", "hold b", "release c"].into(),
            asks: ["claim d"].into(),
            while_waiting: vec!["hold e", "hold f", "release a"],
            ..Fake::default()
        };
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold a", "hold b"])
        );
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["release c"])
        );
        // The three that came while the claim was awaited go first, two
        // and then one; the one after them waits behind the claim.
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Idle);
        fake.changes.push_back("hold g");
        assert_eq!(
            order.next(&mut fake, true, WAIT),
            Step::Renew,
            "due, whatever waits"
        );
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold e", "hold f"])
        );
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["release a"])
        );
        assert_eq!(order.next(&mut fake, false, WAIT), Step::Ask("claim d"));
        assert_eq!(
            order.next(&mut fake, false, WAIT),
            Step::Changes(vec!["hold g"])
        );
    }
}
