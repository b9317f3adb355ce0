//! The write side of a connection: its outbound queue and the writer thread.
//!
//! Whoever fills a queue never blocks on it; the writer thread drains it in
//! batches, and is the only thread that writes its socket. Everything about
//! how bytes leave the server lives here, behind [`Outbox`] and [`run_writer`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::duplex::WriteHalf;

/// Default for how many lines may wait for one client.
///
/// A burst in a busy room fits easily; a client that is this far behind has
/// stopped reading, and holding more for it would only cost memory.
pub const MAX_QUEUE_MESSAGES: usize = 2048;

/// Default for how many bytes of lines may wait for one client.
///
/// Bounds the memory a stalled client pins (the kernel's socket buffers hold
/// more before the queue even starts to fill).
pub const MAX_QUEUE_BYTES: usize = 512 * 1024;

/// The most plaintext one batch gathers before it is encrypted and sent.
///
/// Large enough that a busy client gets many lines per system call; small
/// enough that a batch is a few TLS records, not megabytes.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What a writer thread is asked to do.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Send this line (with its `\n`). One `Arc` is shared by every
    /// recipient of a broadcast, so fan-out copies a pointer, not the text.
    Line(Arc<str>),
    /// Send whatever rustls has queued on its own (key update replies).
    Flush,
    /// Send what is queued before this, then close_notify, and stop.
    Close,
}

/// How far one client's queue may fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// The most lines waiting to be sent.
    pub max_messages: usize,
    /// The most bytes of lines waiting to be sent.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            max_messages: MAX_QUEUE_MESSAGES,
            max_bytes: MAX_QUEUE_BYTES,
        }
    }
}

/// A push that did not fit: the client was this far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Lines already waiting.
    pub messages: usize,
    /// Bytes already waiting.
    pub bytes: usize,
}

/// Lines and bytes waiting in one queue: raised by the [`Outbox`], lowered by
/// the writer as it takes them.
#[derive(Debug, Default)]
struct Meter {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

/// The filling end of one client's queue.
///
/// The channel itself is unbounded: a bounded crossbeam channel allocates
/// every slot up front, which would cost each idle client its full capacity.
/// The bound is the meter, checked before each push. Only the hub pushes
/// lines, so the check and the increment cannot race with another push; the
/// writer only ever lowers the counts.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The writer thread holds the receiving end.
    tx: Sender<Outgoing>,
    meter: Arc<Meter>,
    limits: QueueLimits,
}

/// The draining end of one client's queue; [`run_writer`] consumes it.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Outgoing>,
    /// `None` for a [`blocking_channel`], whose bound is the channel's own.
    meter: Option<Arc<Meter>>,
}

/// A new queue bounded by `limits`.
pub fn channel(limits: QueueLimits) -> (Outbox, Inbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let meter = Arc::new(Meter::default());
    let inbox = Inbox {
        rx,
        meter: Some(Arc::clone(&meter)),
    };
    (Outbox { tx, meter, limits }, inbox)
}

/// A queue whose senders wait while `capacity` requests are queued.
///
/// For a producer that may block, such as the client's keyboard thread:
/// pasting a whole file then waits for the network instead of filling memory.
pub fn blocking_channel(capacity: usize) -> (Sender<Outgoing>, Inbox) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (tx, Inbox { rx, meter: None })
}

impl Outbox {
    /// Queues a line without ever blocking.
    ///
    /// `Err` means the client is too far behind; the caller decides what
    /// happens to it (the hub disconnects it). A writer that has already
    /// stopped is not an error: its reader will report the disconnect.
    pub fn push(&self, line: Arc<str>) -> Result<(), Overflow> {
        let messages = self.meter.messages.load(Ordering::Acquire);
        let bytes = self.meter.bytes.load(Ordering::Acquire);
        if messages >= self.limits.max_messages || bytes + line.len() > self.limits.max_bytes {
            return Err(Overflow { messages, bytes });
        }
        self.meter.messages.fetch_add(1, Ordering::AcqRel);
        self.meter.bytes.fetch_add(line.len(), Ordering::AcqRel);
        let _ = self.tx.send(Outgoing::Line(line));
        Ok(())
    }

    /// Asks the writer to send what rustls queued by itself.
    pub fn flush(&self) {
        // A stopped writer has nothing left to flush.
        let _ = self.tx.send(Outgoing::Flush);
    }

    /// Asks the writer to send what is queued, then close_notify, and stop.
    pub fn close(&self) {
        // A stopped writer has closed already.
        let _ = self.tx.send(Outgoing::Close);
    }
}

/// The writer thread's loop: batch, encrypt, send, until told to close.
///
/// Then it says close_notify and waits up to `linger` for the peer to hang
/// up too (`reader_done` disconnects when the reading thread ends), so the
/// last lines are read by the peer rather than lost to a TCP reset. A peer
/// that stays on past `linger` is cut off.
pub fn run_writer(mut half: WriteHalf, inbox: Inbox, reader_done: Receiver<()>, linger: Duration) {
    let mut batch = Vec::new();
    // Every sender gone means nobody will ask for more: close as well.
    while let Ok(first) = inbox.rx.recv() {
        let mut closing = take(&inbox, first, &mut batch);
        while !closing && batch.len() < MAX_BATCH_BYTES {
            match inbox.rx.try_recv() {
                Ok(next) => closing = take(&inbox, next, &mut batch),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Err(err) = half.send(&batch) {
            log::debug!("writer stopped: {err}");
            half.disconnect();
            return;
        }
        batch.clear();
        // Give back a batch buffer that a burst made large.
        batch.shrink_to(MAX_BATCH_BYTES);
        if closing {
            break;
        }
    }
    if half.close().is_ok() {
        match reader_done.recv_timeout(linger) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => log::debug!("peer did not close in time"),
        }
    }
    half.disconnect();
}

/// Adds one request to the batch; true if it asks to close.
fn take(inbox: &Inbox, outgoing: Outgoing, batch: &mut Vec<u8>) -> bool {
    match outgoing {
        Outgoing::Line(line) => {
            if let Some(meter) = &inbox.meter {
                meter.messages.fetch_sub(1, Ordering::AcqRel);
                meter.bytes.fetch_sub(line.len(), Ordering::AcqRel);
            }
            batch.extend_from_slice(line.as_bytes());
            false
        }
        Outgoing::Flush => false,
        Outgoing::Close => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn push_refuses_past_the_message_limit() {
        let (outbox, _inbox) = channel(QueueLimits {
            max_messages: 2,
            max_bytes: 1000,
        });
        assert_eq!(outbox.push(line("a\n")), Ok(()));
        assert_eq!(outbox.push(line("b\n")), Ok(()));
        assert_eq!(
            outbox.push(line("c\n")),
            Err(Overflow {
                messages: 2,
                bytes: 4
            })
        );
    }

    #[test]
    fn push_refuses_past_the_byte_limit() {
        let (outbox, _inbox) = channel(QueueLimits {
            max_messages: 100,
            max_bytes: 10,
        });
        assert_eq!(outbox.push(line("12345\n")), Ok(()));
        assert_eq!(outbox.push(line("123\n")), Ok(()));
        assert_eq!(
            outbox.push(line("x\n")),
            Err(Overflow {
                messages: 2,
                bytes: 10
            })
        );
    }

    #[test]
    fn taking_a_line_makes_room_again() {
        let (outbox, inbox) = channel(QueueLimits {
            max_messages: 1,
            max_bytes: 100,
        });
        outbox.push(line("a\n")).unwrap();
        assert!(outbox.push(line("b\n")).is_err());
        let mut batch = Vec::new();
        let next = inbox.rx.try_recv().unwrap();
        assert!(!take(&inbox, next, &mut batch));
        assert_eq!(batch, b"a\n");
        assert_eq!(outbox.push(line("b\n")), Ok(()));
    }

    #[test]
    fn close_and_flush_are_not_counted() {
        let (outbox, inbox) = channel(QueueLimits {
            max_messages: 1,
            max_bytes: 100,
        });
        outbox.flush();
        outbox.close();
        outbox.push(line("a\n")).unwrap();
        let mut batch = Vec::new();
        assert!(!take(&inbox, inbox.rx.try_recv().unwrap(), &mut batch));
        assert!(take(&inbox, inbox.rx.try_recv().unwrap(), &mut batch));
        assert!(batch.is_empty());
    }
}
