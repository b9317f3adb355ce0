//! What each client checks in the lines it receives, and what it tells the
//! main thread: no sockets here, so a blocking reader thread and a polling
//! one check exactly the same way.
//!
//! A bench line is `MARKER SENDER SEQ SENT_NS xxx...`: the marker is this
//! run's, so lines from anyone else are told apart; the sequence number
//! checks order per sender; the send time gives latency.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use secure_chat::line::Frame;
use secure_chat::line_reader;

use crate::peer::{Incoming, Peer};

/// Flags one crowd of clients shares with the main thread and the watchdog.
#[derive(Debug)]
pub struct RunFlags {
    /// Set when the bench starts closing: a connection that ends before
    /// was cut by the server.
    pub closing: AtomicBool,
    /// Set when the bench stops waiting for the server to close and cuts
    /// the connections left.
    pub gave_up: AtomicBool,
    /// The watchdog's flag: set when the deadline passes.
    pub expired: Arc<AtomicBool>,
}

impl RunFlags {
    /// Fresh flags tied to the watchdog's.
    pub fn new(expired: Arc<AtomicBool>) -> RunFlags {
        RunFlags {
            closing: AtomicBool::new(false),
            gave_up: AtomicBool::new(false),
            expired,
        }
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

/// What every client of one crowd checks, and where it reports.
#[derive(Debug)]
pub struct Rules {
    /// First word of every line this crowd's senders send.
    pub marker: Arc<str>,
    /// Senders numbered `0..senders`, whose order is checked.
    pub senders: usize,
    /// Zero point of the send times in latency lines.
    pub epoch: Instant,
    /// What the server's lines look like.
    pub peer: Peer,
    /// To the main thread.
    pub notes: Sender<Note>,
    /// Shared with the main thread.
    pub flags: Arc<RunFlags>,
    /// Bench lines received by every client together, for the progress
    /// display; added to in batches.
    pub lines: Arc<AtomicU64>,
}

/// What one client expects, besides the crowd's [`Rules`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// Bench lines to expect in all, if known: reaching it sends [`Note::Done`].
    pub lines: Option<u64>,
    /// Keep each line's delay.
    pub record_latency: bool,
    /// A client that never reads (slow mode): its end is data, not a failure.
    pub stalled: bool,
}

/// What a client tells the main thread while it runs.
#[derive(Debug)]
pub enum Note {
    /// The server's greeting arrived (or, for a server without one, the
    /// handshake finished).
    Greeted,
    /// Every expected bench line arrived; `at` is when the last one did.
    Done {
        /// When the last expected line was read.
        at: Instant,
    },
    /// The connection ended.
    Ended {
        /// The server ended it, before the bench closed it or the deadline.
        early: bool,
        /// It was a stalled client, whose end is expected.
        stalled: bool,
    },
    /// A stalled client saw its connection reset or hung up, without reading.
    StalledCut {
        /// When the poller saw it.
        at: Instant,
    },
}

/// The main thread's count of [`Note`]s.
#[derive(Debug, Default)]
pub struct Tally {
    /// Clients that read their greeting.
    pub greeted: usize,
    /// Clients that received every expected line.
    pub done: usize,
    /// When the last of those did.
    pub last_done: Option<Instant>,
    /// Connections that ended.
    pub ended: usize,
    /// Connections other than stalled ones that the server ended before
    /// the bench closed them.
    pub ended_early: usize,
    /// When each stalled client was seen cut.
    pub stalled_cuts: Vec<Instant>,
}

impl Tally {
    /// Takes notes until `enough` holds (true) or `until` passes (false).
    pub fn wait(
        &mut self,
        notes: &Receiver<Note>,
        until: Instant,
        enough: impl Fn(&Tally) -> bool,
    ) -> bool {
        // Each client sends at most four notes, and `recv_deadline` stops
        // at `until`: the loop is bounded both in count and in time.
        while !enough(self) {
            match notes.recv_deadline(until) {
                Ok(note) => self.count(note),
                Err(_) => return false,
            }
        }
        true
    }

    /// Counts one note.
    fn count(&mut self, note: Note) {
        match note {
            Note::Greeted => self.greeted += 1,
            Note::Done { at } => {
                self.done += 1;
                self.last_done = self.last_done.max(Some(at));
            }
            Note::Ended { early, stalled } => {
                self.ended += 1;
                self.ended_early += usize::from(early && !stalled);
            }
            Note::StalledCut { at } => self.stalled_cuts.push(at),
        }
    }
}

/// How a connection ended, from the client's side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum End {
    /// The client had not ended when the report was taken (it panicked).
    #[default]
    Unknown,
    /// The server sent close_notify: a clean close.
    CloseNotify,
    /// The TCP stream ended without close_notify.
    Eof,
    /// The socket or TLS failed.
    Failed(String),
}

impl From<line_reader::End> for End {
    /// How the library's line reader saw the end, for the report.
    fn from(end: line_reader::End) -> End {
        match end {
            line_reader::End::Closed => End::CloseNotify,
            line_reader::End::Lost => End::Eof,
            line_reader::End::Failed(err) => End::Failed(err.to_string()),
        }
    }
}

/// What one client saw, once it has ended.
#[derive(Debug, Default)]
pub struct ClientReport {
    /// The client's number in its crowd.
    pub index: usize,
    /// What it expected.
    pub expect: Expect,
    /// Bench lines received (this run's marker, well formed).
    pub received: u64,
    /// Bench lines whose sequence number was not the next from their sender.
    pub out_of_order: u64,
    /// Lines that mean trouble: `error` lines, notices of a client cut as
    /// too slow or of the server shutting down, unparsable lines.
    pub problems: u64,
    /// The first of those, for the report.
    pub first_problem: Option<String>,
    /// Chat lines from someone else (another marker), and replayed history.
    pub foreign: u64,
    /// Times rustls wanted to write while a blocking reader held the
    /// connection (a key update): only counted, as that reader cannot.
    pub wants_write: u64,
    /// `(sequence number, delay in ns)` of each line, in latency mode.
    pub latencies: Vec<(u64, u64)>,
    /// How the connection ended.
    pub end: End,
    /// The server ended it, before the bench closed it or the deadline.
    pub early: bool,
    /// It was still open when the bench stopped waiting (`--close-wait`
    /// or `--timeout`) and cut it.
    pub cut_by_bench: bool,
}

/// Checks the lines of one client.
pub struct Checker {
    /// The crowd's rules.
    rules: Arc<Rules>,
    /// What was seen.
    report: ClientReport,
    /// Per sender, the sequence number expected next.
    next_seq: Vec<u64>,
    /// The greeting was seen.
    greeted: bool,
    /// Bench lines not yet added to [`Rules::lines`].
    uncounted: u64,
}

impl Checker {
    /// A checker for client `index`, whose handshake has just finished.
    pub fn new(rules: Arc<Rules>, index: usize, expect: Expect) -> Checker {
        let mut checker = Checker {
            next_seq: vec![0; rules.senders],
            report: ClientReport {
                index,
                expect,
                ..ClientReport::default()
            },
            greeted: false,
            uncounted: 0,
            rules,
        };
        // A stalled client never reads its greeting: for it the handshake
        // is as far as a greeting goes.
        if expect.stalled {
            checker.greet();
        }
        checker
    }

    /// Checks one line from the server, decrypted at `now` (since the epoch).
    pub fn take(&mut self, frame: Frame, now: Duration) {
        let line = match frame {
            Frame::Line(line) => line,
            other => return self.problem(format!("unreadable line from the server: {other:?}")),
        };
        match self.rules.peer.classify(&line) {
            Incoming::Chat(text) => self.chat(text, now),
            Incoming::Greeting if !self.greeted => self.greet(),
            Incoming::Greeting | Incoming::Routine => {}
            Incoming::Foreign => self.report.foreign += 1,
            Incoming::Trouble => self.problem(line),
        }
    }

    /// Notes the greeting, once.
    fn greet(&mut self) {
        self.greeted = true;
        // The main thread may have stopped listening; nothing to do then.
        let _ = self.rules.notes.send(Note::Greeted);
    }

    /// Checks one chat line: ours, well formed, next in its sender's order.
    fn chat(&mut self, text: &str, now: Duration) {
        let mut words = text.split(' ');
        if words.next() != Some(&*self.rules.marker) {
            self.report.foreign += 1;
            return;
        }
        let mut number = || words.next().and_then(|word| word.parse::<u64>().ok());
        let (Some(sender), Some(seq), Some(sent_ns)) = (number(), number(), number()) else {
            return self.problem(format!("malformed bench line: {text}"));
        };
        let Some(next) = usize::try_from(sender)
            .ok()
            .and_then(|sender| self.next_seq.get_mut(sender))
        else {
            return self.problem(format!("bench line from unknown sender {sender}"));
        };
        if seq != *next {
            self.report.out_of_order += 1;
            let text = format!("sender {sender}: line {seq} arrived when {next} was due");
            *next = seq + 1;
            self.problem(text);
        } else {
            *next = seq + 1;
        }
        self.report.received += 1;
        self.uncounted += 1;
        if self.report.expect.record_latency {
            let delay = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
            self.report
                .latencies
                .push((seq, delay.saturating_sub(sent_ns)));
        }
        if Some(self.report.received) == self.report.expect.lines {
            let _ = self.rules.notes.send(Note::Done { at: Instant::now() });
        }
    }

    /// Counts something unexpected, keeping the first for the report.
    fn problem(&mut self, text: String) {
        self.report.problems += 1;
        self.report.first_problem.get_or_insert(text);
    }

    /// The zero of the send times in latency lines.
    pub fn epoch(&self) -> Instant {
        self.rules.epoch
    }

    /// Where this client's notes go, for what its reader sees itself.
    pub fn notes(&self) -> &Sender<Note> {
        &self.rules.notes
    }

    /// Counts `times` a key update or other write rustls wanted but a
    /// blocking reader could not make.
    pub fn wanted_writes(&mut self, times: u64) {
        self.report.wants_write += times;
    }

    /// Adds the lines counted since the last call to the crowd's total.
    pub fn flush_progress(&mut self) {
        if self.uncounted > 0 {
            self.rules
                .lines
                .fetch_add(self.uncounted, Ordering::Relaxed);
            self.uncounted = 0;
        }
    }

    /// Ends the client: tells the main thread and hands over the report.
    pub fn finish(mut self, end: End) -> ClientReport {
        self.flush_progress();
        let flags = &self.rules.flags;
        // Only the server can have ended a connection that neither the
        // close phase nor the watchdog touched.
        let early = !flags.closing.load(Ordering::SeqCst) && !flags.expired();
        let _ = self.rules.notes.send(Note::Ended {
            early,
            stalled: self.report.expect.stalled,
        });
        self.report.end = end;
        self.report.early = early;
        self.report.cut_by_bench = flags.gave_up.load(Ordering::SeqCst) || flags.expired();
        self.report
    }
}

/// Appends one bench line: `MARKER SENDER SEQ SENT_NS ` padded with `x` to
/// `size` bytes, then `\n`.
pub fn push_line(
    out: &mut Vec<u8>,
    marker: &str,
    sender: usize,
    seq: u64,
    sent_ns: u64,
    size: usize,
) {
    let start = out.len();
    write!(out, "{marker} {sender} {seq} {sent_ns} ").expect("writing to a Vec cannot fail");
    if out.len() - start < size {
        out.resize(start + size, b'x');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(peer: Peer, senders: usize) -> (Arc<Rules>, Receiver<Note>) {
        let (notes, rx) = crossbeam_channel::unbounded();
        let rules = Rules {
            marker: "b7".into(),
            senders,
            epoch: Instant::now(),
            peer,
            notes,
            flags: Arc::new(RunFlags::new(Arc::new(AtomicBool::new(false)))),
            lines: Arc::new(AtomicU64::new(0)),
        };
        (Arc::new(rules), rx)
    }

    fn line(text: &str) -> Frame {
        Frame::Line(text.to_string())
    }

    fn bench_line(sender: usize, seq: u64) -> String {
        let mut out = Vec::new();
        push_line(&mut out, "b7", sender, seq, 0, 20);
        String::from_utf8(out).unwrap().trim_end().to_string()
    }

    #[test]
    fn lines_in_order_complete_the_client() {
        let (rules, notes) = rules(Peer::SecureChat, 2);
        let expect = Expect {
            lines: Some(4),
            ..Expect::default()
        };
        let mut checker = Checker::new(rules, 0, expect);
        checker.take(line("notice you are guest1"), Duration::ZERO);
        for seq in 0..2 {
            for sender in 0..2 {
                let text = format!("chat guest{sender} {}", bench_line(sender, seq));
                checker.take(line(&text), Duration::ZERO);
            }
        }
        checker.take(line("chat bob hello"), Duration::ZERO);
        let report = checker.finish(End::CloseNotify);
        assert_eq!((report.received, report.out_of_order), (4, 0));
        assert_eq!((report.problems, report.foreign), (0, 1));
        let notes: Vec<Note> = notes.try_iter().collect();
        assert!(matches!(notes[0], Note::Greeted));
        assert!(matches!(notes[1], Note::Done { .. }));
        assert!(matches!(notes[2], Note::Ended { early: true, .. }));
    }

    #[test]
    fn a_gap_is_out_of_order_and_a_bad_line_a_problem() {
        let (rules, _notes) = rules(Peer::SecureChat, 1);
        let mut checker = Checker::new(rules, 0, Expect::default());
        for seq in [0, 2, 3] {
            let text = format!("chat guest1 {}", bench_line(0, seq));
            checker.take(line(&text), Duration::ZERO);
        }
        checker.take(line("chat guest1 b7 zero"), Duration::ZERO);
        checker.take(line("chat guest1 b7 5 0 0"), Duration::ZERO);
        checker.take(line("error you are sending too fast"), Duration::ZERO);
        let report = checker.finish(End::Eof);
        assert_eq!(report.received, 3);
        assert_eq!(report.out_of_order, 1);
        assert_eq!(report.problems, 4);
        assert!(report
            .first_problem
            .unwrap()
            .contains("line 2 arrived when 1"));
    }

    #[test]
    fn ncat_greets_with_its_list_and_relays_bare_lines() {
        let (rules, notes) = rules(Peer::Ncat, 1);
        let mut checker = Checker::new(rules, 0, Expect::default());
        checker.take(
            line("<announce> 127.0.0.1 is connected as <user4>."),
            Duration::ZERO,
        );
        assert!(notes.try_recv().is_err());
        checker.take(
            line("<announce> already connected: nobody."),
            Duration::ZERO,
        );
        assert!(matches!(notes.try_recv(), Ok(Note::Greeted)));
        checker.take(
            line(&format!("<user4> {}", bench_line(0, 0))),
            Duration::ZERO,
        );
        checker.take(line(&bench_line(0, 1)), Duration::ZERO);
        let report = checker.finish(End::Eof);
        assert_eq!((report.received, report.problems), (2, 0));
    }

    #[test]
    fn latency_is_arrival_minus_send_time() {
        let (rules, _notes) = rules(Peer::Go, 1);
        let expect = Expect {
            record_latency: true,
            ..Expect::default()
        };
        let mut checker = Checker::new(rules, 0, expect);
        let mut out = Vec::new();
        push_line(&mut out, "b7", 0, 0, 1_000, 64);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), 65);
        checker.take(
            line(&format!("chat guest1 {}", text.trim_end())),
            Duration::from_nanos(3_500),
        );
        assert_eq!(checker.finish(End::Eof).latencies, vec![(0, 2_500)]);
    }
}
