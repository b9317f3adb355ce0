//! A bounded queue between threads that waits without spinning.
//!
//! The hub's events come through this. A channel from crossbeam or std
//! spins and yields for a while before it sleeps, which is cheap for one
//! thread but costs every idle hub wake-up a burst of CPU; this queue
//! sleeps at once, wakes a sleeper only when there is one, and hands its
//! consumer everything waiting in one lock.
//!
//! Next: the rest of [`client`](crate::client), the other end of the
//! connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sync;

struct State<T> {
    items: VecDeque<T>,
    /// Senders alive; with none left, the receiver sees the end.
    senders: usize,
    /// The receiver is gone: nothing sent would be read.
    receiver_gone: bool,
    /// The receiver sleeps, waiting for an item.
    receiver_waiting: bool,
    /// Senders sleeping, waiting for room.
    senders_waiting: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The receiver waits here for items.
    items: Condvar,
    /// Senders wait here for room.
    room: Condvar,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every change is a push, a pop or a count: a panic cannot leave
        // the state half changed.
        sync::lock(&self.state)
    }
}

/// The sending end; clones share the queue.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end, for one consumer.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// The other end is gone; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone<T>(pub T);

/// A queue that holds at most `capacity` items; a sender waits while it is
/// full.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_gone: false,
            receiver_waiting: false,
            senders_waiting: 0,
        }),
        items: Condvar::new(),
        room: Condvar::new(),
        capacity: capacity.max(1),
    });
    let receiver = Receiver {
        shared: Arc::clone(&shared),
    };
    (Sender { shared }, receiver)
}

/// How long a send waits for room, or a receive for an item.
#[derive(Clone, Copy)]
enum Patience<'s> {
    /// As long as it takes.
    Ever,
    /// Until this moment.
    Until(Instant),
    /// Until the flag is set, looked at every so often.
    Unless(&'s AtomicBool, Duration),
}

impl Patience<'_> {
    /// How long the next wait may last: `Some(None)` as long as it takes,
    /// `None` once patience has run out.
    fn next_wait(self) -> Option<Option<Duration>> {
        match self {
            Patience::Ever => Some(None),
            Patience::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(Some(left))
            }
            Patience::Unless(stop, poll) => (!stop.load(Ordering::SeqCst)).then_some(Some(poll)),
        }
    }
}

impl<T> Sender<T> {
    /// Adds `item`, waiting while the queue is full. Fails only if the
    /// receiver is gone.
    pub fn send(&self, item: T) -> Result<(), Gone<T>> {
        self.send_with(item, Patience::Ever).map_err(Gone)
    }

    /// Like [`send`](Sender::send), but waits for room at most `timeout`.
    pub fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), Gone<T>> {
        let deadline = Instant::now() + timeout;
        self.send_with(item, Patience::Until(deadline))
            .map_err(Gone)
    }

    /// Like [`send`](Sender::send), but looks at `stop` at least every
    /// `poll` while it waits for room, and gives the item back once it is
    /// set, as when the receiver is gone.
    pub fn send_unless(&self, item: T, poll: Duration, stop: &AtomicBool) -> Result<(), T> {
        self.send_with(item, Patience::Unless(stop, poll))
    }

    /// Adds `item`, waiting for room as `patience` allows; the item comes
    /// back if it runs out, or if the receiver is gone.
    fn send_with(&self, item: T, patience: Patience<'_>) -> Result<(), T> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        // Patience is looked at only once the queue is full: a send that
        // finds room, as nearly every client's line does, costs the lock
        // and the push, no clock and no flag.
        while state.items.len() >= shared.capacity && !state.receiver_gone {
            let Some(wait) = patience.next_wait() else {
                return Err(item);
            };
            state.senders_waiting += 1;
            state = match wait {
                None => sync::wait(&shared.room, state),
                Some(wait) => sync::wait_timeout(&shared.room, state, wait),
            };
            state.senders_waiting -= 1;
        }
        if state.receiver_gone {
            return Err(item);
        }
        self.push(state, item);
        Ok(())
    }

    /// Adds `item` to a queue found with room, and wakes the receiver if
    /// it sleeps.
    fn push(&self, mut state: MutexGuard<'_, State<T>>, item: T) {
        state.items.push_back(item);
        let wake = std::mem::take(&mut state.receiver_waiting);
        drop(state);
        if wake {
            self.shared.items.notify_one();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.lock().senders += 1;
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        let wake = state.senders == 0 && std::mem::take(&mut state.receiver_waiting);
        drop(state);
        if wake {
            self.shared.items.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// Waits for at least one item, then moves up to `max` of them into
    /// `into`. Returns false, with nothing moved, once the queue is empty
    /// and every sender is gone.
    pub fn recv_batch(&self, into: &mut Vec<T>, max: usize) -> bool {
        self.recv_batch_with(into, max, Patience::Ever)
    }

    /// Like [`recv_batch`](Receiver::recv_batch), but waits for the first
    /// item at most `timeout`: true with nothing moved if none came.
    pub fn recv_batch_timeout(&self, into: &mut Vec<T>, max: usize, timeout: Duration) -> bool {
        self.recv_batch_with(into, max, Patience::Until(Instant::now() + timeout))
    }

    fn recv_batch_with(&self, into: &mut Vec<T>, max: usize, patience: Patience<'_>) -> bool {
        let shared = &*self.shared;
        let mut state = shared.lock();
        while state.items.is_empty() {
            if state.senders == 0 {
                return false;
            }
            let Some(wait) = patience.next_wait() else {
                state.receiver_waiting = false;
                return true;
            };
            state.receiver_waiting = true;
            state = match wait {
                None => sync::wait(&shared.items, state),
                Some(wait) => sync::wait_timeout(&shared.items, state, wait),
            };
        }
        let take = state.items.len().min(max.max(1));
        into.extend(state.items.drain(..take));
        let wake = state.senders_waiting > 0;
        drop(state);
        if wake {
            shared.room.notify_all();
        }
        true
    }
}

impl<T> Receiver<T> {
    /// Ends the queue from this side: every send from now on fails, and
    /// what was sent but not yet taken is returned, so that nothing is lost
    /// between the last batch and the end.
    pub fn close(self) -> Vec<T> {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        let rest = state.items.drain(..).collect();
        drop(state);
        self.shared.room.notify_all();
        rest
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.items.clear();
        drop(state);
        self.shared.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn items_come_out_in_order_in_batches() {
        let (sender, receiver) = bounded(10);
        for n in 0..5 {
            sender.send(n).unwrap();
        }
        let mut got = Vec::new();
        assert!(receiver.recv_batch(&mut got, 3));
        assert_eq!(got, [0, 1, 2]);
        assert!(receiver.recv_batch(&mut got, 3));
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_sender_waits_for_room_and_the_receiver_for_items() {
        let (sender, receiver) = bounded(1);
        sender.send(1).unwrap();
        let other = sender.clone();
        let (done, sent) = crossbeam_channel::bounded(1);
        thread::spawn(move || done.send(other.send(2)));
        assert!(sent.recv_timeout(Duration::from_millis(200)).is_err());
        let mut got = Vec::new();
        assert!(receiver.recv_batch(&mut got, 10));
        assert_eq!(sent.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
        assert!(receiver.recv_batch(&mut got, 10));
        assert_eq!(got, [1, 2]);
        // A receiver waiting for an item is woken by it.
        let later = thread::spawn(move || sender.send(3));
        assert!(receiver.recv_batch(&mut got, 10));
        assert_eq!(got, [1, 2, 3]);
        later.join().unwrap().unwrap();
    }

    #[test]
    fn a_timed_receive_ends_empty_at_its_time_or_with_the_first_item() {
        let (sender, receiver) = bounded(4);
        let mut got = Vec::new();
        let began = Instant::now();
        assert!(receiver.recv_batch_timeout(&mut got, 10, Duration::from_millis(50)));
        assert!(got.is_empty());
        assert!(began.elapsed() >= Duration::from_millis(50));
        let later = thread::spawn(move || sender.send(7));
        assert!(receiver.recv_batch_timeout(&mut got, 10, Duration::from_secs(10)));
        assert_eq!(got, [7]);
        later.join().unwrap().unwrap();
        // Every sender gone: the end, at once.
        assert!(!receiver.recv_batch_timeout(&mut got, 10, Duration::from_secs(10)));
    }

    #[test]
    fn the_end_of_either_side_is_seen_by_the_other() {
        let (sender, receiver) = bounded::<u8>(1);
        let waiting = thread::spawn(move || {
            let mut got = Vec::new();
            receiver.recv_batch(&mut got, 10)
        });
        drop(sender);
        assert!(!waiting.join().unwrap());

        let (sender, receiver) = bounded(1);
        sender.send(1).unwrap();
        let blocked = thread::spawn(move || sender.send(2));
        drop(receiver);
        assert_eq!(blocked.join().unwrap(), Err(Gone(2)));
    }

    #[test]
    fn closing_returns_what_was_not_taken_and_refuses_the_rest() {
        let (sender, receiver) = bounded(4);
        sender.send(1).unwrap();
        sender.send(2).unwrap();
        assert_eq!(receiver.close(), [1, 2]);
        assert_eq!(sender.send(3), Err(Gone(3)));
    }

    #[test]
    fn send_unless_waits_for_room_until_told_to_stop() {
        let (sender, receiver) = bounded(1);
        let stop = AtomicBool::new(false);
        let poll = Duration::from_millis(10);
        assert_eq!(sender.send_unless(1, poll, &stop), Ok(()));
        // Full: it waits, poll after poll, until room is made.
        let other = sender.clone();
        let (done, sent) = crossbeam_channel::bounded(1);
        let waiting = thread::spawn(move || {
            let never = AtomicBool::new(false);
            done.send(other.send_unless(2, poll, &never))
        });
        assert!(sent.recv_timeout(Duration::from_millis(100)).is_err());
        let mut got = Vec::new();
        assert!(receiver.recv_batch(&mut got, 10));
        assert_eq!(sent.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
        waiting.join().unwrap().unwrap();
        // Full again: it gives up once told to stop, and the item comes
        // back.
        let other = sender.clone();
        let stop = std::sync::Arc::new(stop);
        let told = std::sync::Arc::clone(&stop);
        let giving_up = thread::spawn(move || other.send_unless(3, poll, &told));
        stop.store(true, Ordering::SeqCst);
        assert_eq!(giving_up.join().unwrap(), Err(3));
        // And it fails at once when the receiver is gone.
        drop(receiver);
        assert_eq!(sender.send_unless(4, poll, &AtomicBool::new(false)), Err(4));
    }

    #[test]
    fn send_timeout_gives_up_on_a_full_queue() {
        let (sender, _receiver) = bounded(1);
        sender.send(1).unwrap();
        assert_eq!(
            sender.send_timeout(2, Duration::from_millis(20)),
            Err(Gone(2))
        );
    }
}
