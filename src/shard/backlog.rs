//! One client's backlog: the lines waiting for it, in order, and what they
//! are charged to the memory budget as they are queued, sealed (encrypted
//! into records), sent and let go. Plain values in and out, no socket, no
//! budget: the writer gathers the [`Ledger`]s it returns, and applies them
//! once per round.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Instant;

use crate::budget::{Outgoing, LINE_OVERHEAD, REFERENCE_COST};
use crate::duplex::Offered;

/// Plaintext offered to rustls per send: four full records. Bigger batches
/// save little, since the per-send cost is already shared by hundreds of
/// short lines; smaller ones would cost a system call each.
const CHUNK: usize = 64 * 1024;

/// Lines offered per send, at most: `IoSlice`s are built for each send.
const MAX_SLICES: usize = 1024;

/// Queues longer than this after a burst give their memory back once empty.
const KEEP_CAPACITY: usize = 64;

/// What one waiting line costs a client: its text and bookkeeping, as the
/// budget counts them, and the pointer in the client's queue. The cap on a
/// client counts in these units, so that a client whose lines nobody else
/// shares reaches the cap before it can take more of the budget.
pub(super) fn line_cost(line: &Outgoing) -> usize {
    line.text().len() + LINE_OVERHEAD + REFERENCE_COST
}

/// Bytes to charge to the budget and to refund, gathered so that the
/// shared count changes once per round of the writer, not once per send.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ledger {
    /// Bytes to count more.
    pub(super) charge: usize,
    /// Bytes to count less.
    pub(super) refund: usize,
}

impl std::ops::AddAssign for Ledger {
    fn add_assign(&mut self, other: Ledger) {
        self.charge += other.charge;
        self.refund += other.refund;
    }
}

/// The lines waiting for one client, and what of them rustls still holds.
///
/// Charged to the budget, besides each line's own text (which the line
/// pays itself, once however many share it): [`REFERENCE_COST`] per line
/// queued here, until rustls has encrypted it whole; and the plaintext
/// size of what rustls sealed that the kernel has not yet taken.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// Lines not yet encrypted, oldest first.
    lines: VecDeque<Rc<Outgoing>>,
    /// How much of the first line rustls has already taken.
    offset: usize,
    /// What `lines` would pin if nobody else shared them (see
    /// [`line_cost`]): what the per-client cap is measured in.
    bytes: usize,
    /// Plaintext bytes encrypted for this client that rustls still holds,
    /// unsent.
    sealed_unsent: usize,
    /// When the oldest line already encrypted, but not yet all in the
    /// kernel, was made.
    in_flight_born: Option<Instant>,
}

impl Backlog {
    /// Queues a line; returns the bytes now waiting (see [`line_cost`]).
    /// The caller charges [`REFERENCE_COST`] for it.
    pub(super) fn push(&mut self, line: &Rc<Outgoing>) -> usize {
        self.lines.push_back(Rc::clone(line));
        self.bytes += line_cost(line);
        self.bytes
    }

    /// True if no line waits to be encrypted.
    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Lines waiting to be encrypted.
    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Bytes waiting, as the per-client cap counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True if nothing of this client counts in the budget any more.
    pub(super) fn is_settled(&self) -> bool {
        self.lines.is_empty() && self.sealed_unsent == 0
    }

    /// When the oldest line still waiting for this client, encrypted or
    /// not, was made.
    pub(super) fn oldest_born(&self) -> Option<Instant> {
        self.in_flight_born
            .or_else(|| self.lines.front().map(|line| line.born()))
    }

    /// The next batch to offer rustls: up to [`CHUNK`] bytes or
    /// [`MAX_SLICES`] lines, the first from where rustls stopped.
    pub(super) fn batch(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(self.lines.len().min(MAX_SLICES));
        let mut skip = self.offset;
        let mut bytes = 0;
        for line in &self.lines {
            let text = &line.text().as_bytes()[std::mem::take(&mut skip)..];
            slices.push(IoSlice::new(text));
            bytes += text.len();
            if bytes >= CHUNK || slices.len() == MAX_SLICES {
                break;
            }
        }
        slices
    }

    /// Takes note of what one offer of [`batch`](Backlog::batch) did:
    /// whole lines encrypted leave the queue (their reference refunded); a
    /// line cut in two by rustls' buffer limit stays, with how much of it
    /// is gone; what is sealed but unsent is charged until the kernel has
    /// it all.
    pub(super) fn settle(&mut self, offered: &Offered) -> Ledger {
        let mut ledger = Ledger::default();
        let first_born = self.lines.front().map(|line| line.born());
        let mut taken = self.offset + offered.taken;
        while let Some(line) = self.lines.front() {
            if taken < line.text().len() {
                break;
            }
            taken -= line.text().len();
            self.bytes -= line_cost(line);
            ledger.refund += REFERENCE_COST;
            self.lines.pop_front();
        }
        assert!(
            taken == 0 || !self.lines.is_empty(),
            "rustls took more than offered"
        );
        self.offset = taken;
        // What rustls holds, sealed and unsent, is what it held plus what
        // it sealed now, less what went out (counted at the size of the
        // text: records add a few bytes of framing each). Nothing, once
        // the kernel took everything.
        let held = if offered.blocked {
            if offered.taken > 0 {
                self.in_flight_born = first_born;
            }
            (self.sealed_unsent + offered.taken).saturating_sub(offered.sent)
        } else {
            self.in_flight_born = None;
            0
        };
        ledger.refund += std::mem::replace(&mut self.sealed_unsent, held);
        ledger.charge += held;
        if self.lines.is_empty() && self.lines.capacity() > KEEP_CAPACITY {
            // Give back what a burst made large.
            self.lines.shrink_to(KEEP_CAPACITY);
        }
        ledger
    }

    /// Lets everything go, for a client that is cut: what it still held
    /// is refunded (each line's own text goes back to the budget when its
    /// last holder lets go, here or elsewhere).
    pub(super) fn clear(&mut self) -> Ledger {
        let refund = self.lines.len() * REFERENCE_COST + std::mem::take(&mut self.sealed_unsent);
        *self = Backlog::default();
        Ledger { charge: 0, refund }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use crate::slow_readers::Policy;
    use std::sync::Arc;

    fn budget() -> Arc<Budget> {
        Budget::new(&Policy::default())
    }

    fn apply(budget: &Budget, ledger: Ledger) {
        budget.charge(ledger.charge);
        budget.refund(ledger.refund);
    }

    fn line(text: &str, budget: &Arc<Budget>) -> Rc<Outgoing> {
        Rc::new(Outgoing::new(text, budget))
    }

    /// Queues a line for every backlog, charging as the writer does: one
    /// reference per recipient.
    fn deliver(line: &Rc<Outgoing>, to: &mut [&mut Backlog], budget: &Budget) {
        for backlog in to.iter_mut() {
            backlog.push(line);
        }
        budget.charge(to.len() * REFERENCE_COST);
    }

    /// What a socket took: `taken` of the batch sealed, `sent` on the wire.
    fn offered(taken: usize, sent: usize, blocked: bool) -> Offered {
        Offered {
            taken,
            sent,
            blocked,
        }
    }

    /// The bytes a batch offers, as one string.
    fn offered_text(backlog: &Backlog) -> String {
        let bytes: Vec<u8> = backlog.batch().iter().flat_map(|s| s.to_vec()).collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_queued_line_costs_its_text_once_and_a_reference_per_recipient() {
        let budget = budget();
        let (mut a, mut b, mut c) = (Backlog::default(), Backlog::default(), Backlog::default());
        let hello = line("hello\n", &budget);
        deliver(&hello, &mut [&mut a, &mut b, &mut c], &budget);
        drop(hello);
        assert_eq!(budget.used(), 6 + LINE_OVERHEAD + 3 * REFERENCE_COST);
        assert_eq!(a.bytes(), line_cost(&a.lines[0]));
        assert_eq!(a.oldest_born(), Some(a.lines[0].born()));
    }

    #[test]
    fn a_line_sent_whole_is_refunded_and_its_text_goes_with_its_last_holder() {
        let budget = budget();
        let (mut a, mut b) = (Backlog::default(), Backlog::default());
        let hello = line("hello\n", &budget);
        deliver(&hello, &mut [&mut a, &mut b], &budget);
        drop(hello);
        assert_eq!(offered_text(&a), "hello\n");
        apply(&budget, a.settle(&offered(6, 40, false)));
        assert!(a.is_settled() && a.oldest_born().is_none());
        assert_eq!(budget.used(), 6 + LINE_OVERHEAD + REFERENCE_COST);
        apply(&budget, b.settle(&offered(6, 40, false)));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn sealed_but_unsent_is_charged_until_the_kernel_takes_it() {
        let budget = budget();
        let mut a = Backlog::default();
        let text = "x".repeat(999) + "\n";
        let first = line(&text, &budget);
        let second = line(&text, &budget);
        deliver(&first, &mut [&mut a], &budget);
        deliver(&second, &mut [&mut a], &budget);
        let born = first.born();
        drop((first, second));
        let lines = 2 * (1000 + LINE_OVERHEAD);
        assert_eq!(budget.used(), lines + 2 * REFERENCE_COST);

        // Both sealed; the kernel took 300 bytes and is full: 1,700 stay
        // in rustls, charged, and the lag is still the first line's.
        apply(&budget, a.settle(&offered(2000, 300, true)));
        assert!(a.is_empty() && !a.is_settled());
        assert_eq!(a.oldest_born(), Some(born));
        assert_eq!(budget.used(), 1700);
        // A probe: 500 more bytes out, nothing new sealed.
        apply(&budget, a.settle(&offered(0, 500, true)));
        assert_eq!(budget.used(), 1200);
        // The socket drained.
        apply(&budget, a.settle(&offered(0, 1200, false)));
        assert!(a.is_settled() && a.oldest_born().is_none());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_line_taken_in_part_stays_and_the_rest_is_offered_next() {
        let budget = budget();
        let mut a = Backlog::default();
        for text in ["first line\n", "second\n"] {
            deliver(&line(text, &budget), &mut [&mut a], &budget);
        }
        let before = budget.used();
        // rustls' buffer took four bytes only.
        let ledger = a.settle(&offered(4, 0, true));
        assert_eq!(
            ledger,
            Ledger {
                charge: 4,
                refund: 0
            }
        );
        apply(&budget, ledger);
        assert_eq!(a.len(), 2, "a line cut in two stays queued");
        assert_eq!(offered_text(&a), "t line\nsecond\n");
        assert_eq!(budget.used(), before + 4);
        // The rest of it and the next line, all sent.
        apply(&budget, a.settle(&offered(14, 60, false)));
        assert!(a.is_settled());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_cut_client_gives_back_all_it_held_and_shared_lines_stay_counted_once() {
        let budget = budget();
        let (mut slow, mut fast) = (Backlog::default(), Backlog::default());
        for i in 0..10 {
            let l = line(&format!("line {i}\n"), &budget);
            deliver(&l, &mut [&mut slow, &mut fast], &budget);
        }
        let texts = 10 * (7 + LINE_OVERHEAD);
        // The slow one had three lines sealed, and the kernel took none.
        apply(&budget, slow.settle(&offered(21, 0, true)));
        assert_eq!(budget.used(), texts + 17 * REFERENCE_COST + 21);

        apply(&budget, slow.clear());
        assert!(slow.is_settled() && slow.bytes() == 0 && slow.oldest_born().is_none());
        // The fast one still holds every line: their text is still counted,
        // once.
        assert_eq!(budget.used(), texts + 10 * REFERENCE_COST);
        let all = offered_text(&fast);
        apply(
            &budget,
            fast.settle(&offered(all.len(), all.len() + 200, false)),
        );
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_healthy_reader_far_behind_gets_every_line_once_in_order() {
        // A burst of 2,000 lines, read a little at a time: every send
        // seals a few hundred bytes and finds the socket full again.
        let budget = budget();
        let mut a = Backlog::default();
        let mut sent = String::new();
        let mut expected = String::new();
        for i in 0..2000 {
            let text = format!("chat bob {i} {}\n", "y".repeat(i % 50));
            expected.push_str(&text);
            deliver(&line(&text, &budget), &mut [&mut a], &budget);
        }
        let mut round = 0;
        while !a.is_settled() {
            round += 1;
            assert!(round < 10_000, "no progress");
            let batch = offered_text(&a);
            let taken = batch.len().min(97 + round % 300);
            sent.push_str(&batch[..taken]);
            let drained = a.is_empty() || taken == batch.len();
            apply(&budget, a.settle(&offered(taken, taken, !drained)));
        }
        assert_eq!(sent, expected);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_batch_is_bounded_by_its_chunk() {
        let budget = budget();
        let mut a = Backlog::default();
        let text = "z".repeat(1023) + "\n";
        for _ in 0..100 {
            deliver(&line(&text, &budget), &mut [&mut a], &budget);
        }
        let batch = a.batch();
        assert_eq!(batch.len(), CHUNK / 1024);
        let short = line("a\n", &budget);
        let mut b = Backlog::default();
        for _ in 0..MAX_SLICES + 10 {
            b.push(&short);
        }
        assert_eq!(b.batch().len(), MAX_SLICES);
    }
}
