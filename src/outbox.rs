//! The client's write side: the lines typed ahead, and the writer thread.
//!
//! The keyboard thread queues lines (waiting when too many are typed ahead
//! of the network); the writer thread takes everything queued at once,
//! encrypts it as one batch, and is the only thread that writes the socket.
//! The server writes differently, through its shards ([`crate::shard`]).
//!
//! Next: [`screen`](crate::screen), how the client shows lines.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::duplex::WriteHalf;
use crate::sync;

/// How much may be typed ahead of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// The most lines waiting to be sent.
    pub max_messages: usize,
    /// The most bytes of lines waiting to be sent.
    pub max_bytes: usize,
}

/// The writer has stopped; nothing pushed now would be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterGone;

/// What waits for one writer, guarded by [`Queue::state`].
#[derive(Debug, Default)]
struct State {
    /// Lines with their `\n`, as the keyboard thread handed them over.
    lines: VecDeque<Arc<str>>,
    /// Total length of `lines`.
    bytes: usize,
    /// Send what rustls queued by itself, even with no lines.
    flush: bool,
    /// Send what is queued, then close_notify, and stop.
    closing: bool,
    /// The writer has ended; pushes are dropped.
    writer_gone: bool,
    /// How many [`Outbox`] handles exist. When the last one goes, nobody
    /// can ask for anything more, and the writer closes.
    outboxes: usize,
}

/// One client's queue: a deque under a mutex, and condition variables for
/// the two kinds of waiting.
///
/// Not a channel, on purpose: the writer takes the whole queue in one lock
/// (a batch, not one message at a time), and when it is idle it sleeps at
/// once. (A crossbeam receiver spins and yields before it sleeps: cheap for
/// one thread, but the hub wakes every recipient's writer for every line,
/// and hundreds of them yielding cost most of the server's CPU in the
/// latency benchmark.) Nothing is allocated until a line is queued.
#[derive(Debug)]
struct Queue {
    state: Mutex<State>,
    /// The writer waits here for lines or requests.
    work: Condvar,
    /// A [`Outbox::push_waiting`] caller waits here for room.
    room: Condvar,
    limits: QueueLimits,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain queue, consistent between any two statements
        // that could panic; a panicking thread leaves nothing half done.
        sync::lock(&self.state)
    }

    fn is_full(&self, state: &State, len: usize) -> bool {
        state.lines.len() >= self.limits.max_messages || state.bytes + len > self.limits.max_bytes
    }
}

/// The filling end of one client's queue. Clones share the queue; when the
/// last one is dropped, the writer sends what is queued and closes.
#[derive(Debug)]
pub struct Outbox {
    queue: Arc<Queue>,
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.queue.lock().outboxes += 1;
        Outbox {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.outboxes -= 1;
        if state.outboxes == 0 {
            state.closing = true;
            drop(state);
            self.wake();
        }
    }
}

/// The draining end of one client's queue; [`run_writer`] consumes it.
#[derive(Debug)]
pub struct Drain {
    queue: Arc<Queue>,
}

/// A new queue bounded by `limits`.
pub fn channel(limits: QueueLimits) -> (Outbox, Drain) {
    let queue = Arc::new(Queue {
        state: Mutex::default(),
        work: Condvar::new(),
        room: Condvar::new(),
        limits,
    });
    queue.lock().outboxes = 1;
    let drain = Drain {
        queue: Arc::clone(&queue),
    };
    (Outbox { queue }, drain)
}

impl Outbox {
    /// Queues a line, waiting while the queue is full: for a producer that
    /// may wait, such as the client's keyboard thread (pasting a whole file
    /// then waits for the network instead of filling memory).
    pub fn push_waiting(&self, line: Arc<str>) -> Result<(), WriterGone> {
        let mut state = self.queue.lock();
        // An over-long line must still go out alone, once the queue is empty.
        while !state.writer_gone
            && !state.lines.is_empty()
            && self.queue.is_full(&state, line.len())
        {
            state = sync::wait(&self.queue.room, state);
        }
        if state.writer_gone {
            return Err(WriterGone);
        }
        let first = add(&mut state, line);
        drop(state);
        if first {
            self.wake();
        }
        Ok(())
    }

    /// Wakes the writer. Called after the lock is released: woken while the
    /// lock is still held, the writer would only wake to wait for the lock.
    fn wake(&self) {
        self.queue.work.notify_one();
    }

    /// Asks the writer to send what rustls queued by itself: an alert, or
    /// the refusal of a TLS 1.2 renegotiation. (A TLS 1.3 key update reply
    /// needs no flush: rustls sends it ahead of the next data.)
    pub fn flush(&self) {
        self.queue.lock().flush = true;
        self.wake();
    }

    /// Asks the writer to send what is queued, then close_notify, and stop.
    pub fn close(&self) {
        self.queue.lock().closing = true;
        self.wake();
    }
}

/// Adds a line; true if the writer may be asleep and must be woken. It
/// only sleeps on an empty queue, so only the first line needs to.
fn add(state: &mut State, line: Arc<str>) -> bool {
    state.bytes += line.len();
    state.lines.push_back(line);
    state.lines.len() == 1
}

impl Drain {
    /// Waits until there is something to do, then moves every queued line
    /// into `batch` as bytes. Returns true if the writer should close after
    /// sending them.
    ///
    /// The lock is held only to swap the queue for an empty one: the hub
    /// pushes into every recipient's queue, and must not wait while a
    /// writer (perhaps preempted) copies bytes under the lock.
    fn take_batch(&self, batch: &mut Vec<u8>) -> bool {
        let taken;
        let closing = {
            let mut state = self.queue.lock();
            while state.lines.is_empty() && !state.flush && !state.closing {
                state = sync::wait(&self.queue.work, state);
            }
            taken = std::mem::take(&mut state.lines);
            state.bytes = 0;
            state.flush = false;
            state.closing
        };
        self.queue.room.notify_all();
        for line in taken {
            batch.extend_from_slice(line.as_bytes());
        }
        closing
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.writer_gone = true;
        state.lines.clear();
        state.bytes = 0;
        self.queue.room.notify_all();
    }
}

/// The writer thread's loop: take everything queued, encrypt, send, until
/// told to close.
///
/// Then it says close_notify and waits up to `linger` for the peer to hang
/// up too (`reader_done` disconnects when the reading thread ends), so the
/// last lines are read by the peer rather than lost to a TCP reset. A peer
/// that stays on past `linger` is cut off. Returns the bytes it sent.
pub fn run_writer(
    mut half: WriteHalf,
    drain: Drain,
    reader_done: Receiver<()>,
    linger: Duration,
) -> u64 {
    let mut batch = Vec::new();
    loop {
        let closing = drain.take_batch(&mut batch);
        if let Err(err) = half.send(&batch) {
            log::debug!("writer stopped: {err}");
            half.disconnect();
            return half.bytes_sent();
        }
        batch.clear();
        // Give back what a burst made large.
        batch.shrink_to(4096);
        if closing {
            break;
        }
    }
    drop(drain);
    if half.close().is_ok() {
        match reader_done.recv_timeout(linger) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => log::debug!("peer did not close in time"),
        }
    }
    half.disconnect();
    half.bytes_sent()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn line(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    const ROOMY: QueueLimits = QueueLimits {
        max_messages: 100,
        max_bytes: 1000,
    };

    #[test]
    fn taking_a_batch_takes_everything_and_makes_room() {
        let (outbox, drain) = channel(ROOMY);
        outbox.push_waiting(line("a\n")).unwrap();
        outbox.push_waiting(line("b\n")).unwrap();
        let mut batch = Vec::new();
        assert!(!drain.take_batch(&mut batch));
        assert_eq!(batch, b"a\nb\n");
    }

    #[test]
    fn close_is_seen_after_the_lines_before_it() {
        let (outbox, drain) = channel(ROOMY);
        outbox.push_waiting(line("last\n")).unwrap();
        outbox.close();
        let mut batch = Vec::new();
        assert!(drain.take_batch(&mut batch));
        assert_eq!(batch, b"last\n");
    }

    #[test]
    fn flush_wakes_the_writer_with_no_lines() {
        let (outbox, drain) = channel(ROOMY);
        outbox.flush();
        let mut batch = Vec::new();
        assert!(!drain.take_batch(&mut batch));
        assert!(batch.is_empty());
    }

    #[test]
    fn dropping_the_last_outbox_closes_the_writer() {
        let (outbox, drain) = channel(ROOMY);
        let other = outbox.clone();
        outbox.push_waiting(line("queued\n")).unwrap();
        drop(outbox);
        let mut batch = Vec::new();
        assert!(!drain.take_batch(&mut batch), "one outbox is still there");
        drop(other);
        batch.clear();
        assert!(drain.take_batch(&mut batch));
        assert!(batch.is_empty());
    }

    #[test]
    fn pushes_after_the_writer_is_gone_fail() {
        let (outbox, drain) = channel(ROOMY);
        drop(drain);
        assert_eq!(outbox.push_waiting(line("c\n")), Err(WriterGone));
    }

    #[test]
    fn push_waiting_waits_for_room_by_lines_and_by_bytes() {
        for limits in [
            QueueLimits {
                max_messages: 1,
                max_bytes: 100,
            },
            QueueLimits {
                max_messages: 100,
                max_bytes: 8,
            },
        ] {
            let (outbox, drain) = channel(limits);
            outbox.push_waiting(line("first\n")).unwrap();
            let (done, pushed) = crossbeam_channel::bounded(1);
            let pusher = outbox.clone();
            thread::spawn(move || done.send(pusher.push_waiting(line("second\n"))));
            // The pusher cannot finish until the batch below makes room.
            let mut batch = Vec::new();
            drain.take_batch(&mut batch);
            let result = pushed.recv_timeout(Duration::from_secs(10));
            assert_eq!(result, Ok(Ok(())));
            batch.clear();
            drain.take_batch(&mut batch);
            assert_eq!(batch, b"second\n");
        }
    }
}
