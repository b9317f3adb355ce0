//! Figures about a running server, for Prometheus (`--metrics`): the counts
//! the server's threads keep, the [`Registry`] a scrape reads them through,
//! the text format (`text.rs`) and the HTTP endpoint (`http.rs`). What is
//! counted, and when, is decided where it happens; counting never waits.
//!
//! Counting must not slow the path of a message. A count that every thread
//! adds to would bounce one cache line between cores at every delivery;
//! here a figure of the busy path has one writer (the hub, or one writer
//! shard), is kept apart from the others ([`Tally`]), and the scrape adds
//! them up. What happens once per connection (a handshake, a disconnect) or
//! to a thread about to sleep (flood control) is counted in [`Counters`],
//! shared and cheap enough at that rate.

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chat::CloseReason;
use crate::duplex::HandshakeError;
use crate::line_reader::End;
use crate::slow_readers::TooSlow;
use crate::sync::lock;
use crate::tls::{certificate_problem, CertProblem};

mod http;
mod server;
mod store;
mod text;

pub use http::{Endpoint, MAX_OPEN, MAX_REQUEST, REQUEST_TIMEOUT};
pub use server::ServerFigures;
pub use store::StoreFigures;
pub use text::{Exposition, CONTENT_TYPE};

/// Something that has figures to show: the server, the link to Redis,
/// the store. Each writes its own families, under its own names, whole.
pub trait Source: Send + Sync {
    /// Writes this source's figures as they are now.
    fn collect(&self, out: &mut Exposition);
}

/// Every source of figures, read at each scrape in the order they were
/// registered, after the process's own.
#[derive(Default)]
pub struct Registry {
    sources: Mutex<Vec<Arc<dyn Source>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

// A source is added by one push: a panic cannot leave the list half
// changed, so `lock` takes a poisoned one (see crate::sync).
impl Registry {
    /// A registry with no sources yet: a scrape shows the process's
    /// figures only.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Adds `source` to every scrape from now on.
    ///
    /// This is where a part of the server that has figures of its own
    /// plugs in: the server does at start, the link to Redis when it is
    /// made, and so can the store, with its queue.
    pub fn register(&self, source: Arc<dyn Source>) {
        lock(&self.sources).push(source);
    }

    /// The scrape: every figure, as the text format writes it.
    pub fn render(&self) -> String {
        let mut out = Exposition::new();
        if let Some(threads) = process_threads() {
            out.gauge(
                "chat_server_threads",
                "Threads of the process, from /proc/self/stat.",
                threads as f64,
            );
        }
        // Cloned out, so that a slow source does not hold the lock that a
        // registration waits for.
        let sources = lock(&self.sources).clone();
        for source in sources {
            source.collect(&mut out);
        }
        out.finish()
    }
}

/// The number of threads of this process: the 20th field of
/// `/proc/self/stat`, counted after the command's name, which may hold
/// spaces and parentheses of its own.
fn process_threads() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    // Fields 3 (state) onwards; the 20th is the 18th of these.
    after_name.split_whitespace().nth(17)?.parse().ok()
}

/// A count with one writer: the thread that owns it adds with a plain load
/// and store (no locked instruction), and any thread may read it. Each is
/// alone on its cache lines, so that a count one thread writes does not
/// slow another thread's.
///
/// Two writers would lose counts (never memory safety): only the owner
/// named in each field's documentation adds.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Tally(AtomicU64);

impl Tally {
    /// Adds `n`. Only the owning thread calls it.
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the hub counts; only the hub thread adds to these.
#[derive(Debug, Default)]
pub struct HubFigures {
    /// Lines received from clients (a line refused as too long included).
    pub lines_in: Tally,
    /// Room lines shown on this server (its own, and, linked, the other
    /// servers').
    pub room_lines: Tally,
    /// Times the hub paused because the memory budget was full.
    pub pauses: Tally,
    /// Microseconds it spent in those pauses.
    pub paused_micros: Tally,
}

impl HubFigures {
    /// The hub waited `waited` for the writers to catch up.
    pub fn paused(&self, waited: Duration) {
        self.pauses.add(1);
        self.paused_micros.add(micros(waited));
    }
}

/// `time` in whole microseconds, as the figures keep time (a count that
/// cannot overflow in any real run; saturated if it could).
fn micros(time: Duration) -> u64 {
    u64::try_from(time.as_micros()).unwrap_or(u64::MAX)
}

/// What one writer shard counts; only that shard's thread adds to these.
#[derive(Debug, Default)]
pub struct ShardFigures {
    /// Lines queued for a recipient: one per line per client it is for.
    pub deliveries: Tally,
}

/// How a TLS handshake ended, the label of `chat_server_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It completed.
    Ok,
    /// TLS, or the socket, failed: see [`Failure`] for how.
    Failed,
    /// The handshake's deadline (`--handshake-timeout`) passed.
    TimedOut,
    /// The peer closed the connection before it was done.
    Closed,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Closed,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Closed => "closed",
        }
    }
}

/// Why a handshake failed, the label of
/// `chat_server_handshake_failures_total`: the kinds the log already tells
/// apart (see `duplex::HandshakeError`'s `Display`, and for certificates,
/// [`CertProblem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The socket failed.
    Io,
    /// The first bytes were no TLS record: HTTP, SSH, a port scan.
    NotTls,
    /// A TLS message over the size allowed.
    TooLarge,
    /// Any other malformed TLS message.
    Malformed,
    /// The peer refused the handshake with an alert (it did not trust us,
    /// most often).
    PeerAlert,
    /// A client certificate was required and none came.
    NoCertificate,
    /// A client certificate that does not chain to the client CA.
    NotTrusted,
    /// A client certificate past its validity.
    Expired,
    /// A client certificate not valid yet.
    NotValidYet,
    /// A CA certificate presented as a client's own.
    CaAsLeaf,
    /// Any other certificate problem.
    Certificate,
    /// Any other TLS failure (no protocol version or cipher suite in
    /// common, among others), or the TLS state could not be made.
    Tls,
}

impl Failure {
    const ALL: [Failure; 12] = [
        Failure::Io,
        Failure::NotTls,
        Failure::TooLarge,
        Failure::Malformed,
        Failure::PeerAlert,
        Failure::NoCertificate,
        Failure::NotTrusted,
        Failure::Expired,
        Failure::NotValidYet,
        Failure::CaAsLeaf,
        Failure::Certificate,
        Failure::Tls,
    ];

    fn label(self) -> &'static str {
        match self {
            Failure::Io => "io",
            Failure::NotTls => "not_tls",
            Failure::TooLarge => "too_large",
            Failure::Malformed => "malformed",
            Failure::PeerAlert => "peer_alert",
            Failure::NoCertificate => "no_certificate",
            Failure::NotTrusted => "certificate_not_trusted",
            Failure::Expired => "certificate_expired",
            Failure::NotValidYet => "certificate_not_valid_yet",
            Failure::CaAsLeaf => "certificate_ca_as_leaf",
            Failure::Certificate => "certificate_other",
            Failure::Tls => "tls_other",
        }
    }

    /// The kind of a TLS error during a handshake.
    fn of_tls(err: &rustls::Error) -> Failure {
        use rustls::Error as E;
        use rustls::InvalidMessage as M;
        if let Some(problem) = certificate_problem(err) {
            return match problem {
                CertProblem::NotTrusted(_) => Failure::NotTrusted,
                CertProblem::Expired => Failure::Expired,
                CertProblem::NotValidYet => Failure::NotValidYet,
                CertProblem::CaAsLeaf => Failure::CaAsLeaf,
                CertProblem::WrongName(_) | CertProblem::PinMismatch(_) | CertProblem::Other(_) => {
                    Failure::Certificate
                }
            };
        }
        match err {
            E::AlertReceived(_) => Failure::PeerAlert,
            E::NoCertificatesPresented => Failure::NoCertificate,
            E::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion) => Failure::NotTls,
            E::InvalidMessage(
                M::MessageTooLarge | M::HandshakePayloadTooLarge | M::CertificatePayloadTooLarge,
            ) => Failure::TooLarge,
            E::InvalidMessage(_) => Failure::Malformed,
            _ => Failure::Tls,
        }
    }
}

/// Why a client in the chat left, the label of
/// `chat_server_disconnects_total`: the reasons the server tells apart,
/// from its reading thread ([`End`]), from the chat's rules
/// ([`CloseReason`]) or from its writer shard ([`TooSlow`], a failed send,
/// no hang-up after our close_notify).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed the connection properly (close_notify) before
    /// the server did.
    Closed,
    /// The server closed it after the client's `/quit` (or `bye`).
    Quit,
    /// A server operator's `/kill`, here or on another server.
    Killed,
    /// A server ban made while it was in the chat names it.
    Banned,
    /// The chat turned it away as it came: a server ban, a name someone
    /// else holds, a certificate's name that is no nick, too many
    /// sessions. (Those turned away before the chat heard of them, for
    /// want of a place, are `chat_server_refused_total`, never a
    /// disconnect.)
    Refused,
    /// Another connection reclaimed its nick (`/reclaim`).
    Replaced,
    /// Its certificate's name is someone's on another server (`--redis`).
    NameLost,
    /// The connection ended without close_notify: the peer vanished.
    Lost,
    /// Decrypting what it sent failed, or it sent a TLS alert.
    TlsError,
    /// Reading the socket failed.
    IoError,
    /// Cut as stalled: its socket took nothing for `--stall-timeout`.
    Stalled,
    /// Cut as too far behind its room (`--max-lag`).
    Lagging,
    /// Cut with more waiting for it than `--max-pending`.
    OverCap,
    /// Sending to it failed.
    SendFailed,
    /// It did not hang up after our close_notify.
    NoHangup,
    /// The server was stopping (SIGTERM, SIGINT) when it ended.
    Shutdown,
}

impl Disconnect {
    const ALL: [Disconnect; 16] = [
        Disconnect::Closed,
        Disconnect::Quit,
        Disconnect::Killed,
        Disconnect::Banned,
        Disconnect::Refused,
        Disconnect::Replaced,
        Disconnect::NameLost,
        Disconnect::Lost,
        Disconnect::TlsError,
        Disconnect::IoError,
        Disconnect::Stalled,
        Disconnect::Lagging,
        Disconnect::OverCap,
        Disconnect::SendFailed,
        Disconnect::NoHangup,
        Disconnect::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            Disconnect::Closed => "closed",
            Disconnect::Quit => "quit",
            Disconnect::Killed => "killed",
            Disconnect::Banned => "banned",
            Disconnect::Refused => "refused",
            Disconnect::Replaced => "replaced",
            Disconnect::NameLost => "name_lost",
            Disconnect::Lost => "lost",
            Disconnect::TlsError => "tls_error",
            Disconnect::IoError => "io_error",
            Disconnect::Stalled => "stalled",
            Disconnect::Lagging => "lagging",
            Disconnect::OverCap => "over_cap",
            Disconnect::SendFailed => "send_failed",
            Disconnect::NoHangup => "no_hangup",
            Disconnect::Shutdown => "shutdown",
        }
    }

    /// Why a reading thread stopped reading.
    pub fn of_read(end: &End) -> Disconnect {
        match end {
            End::Closed => Disconnect::Closed,
            End::Lost => Disconnect::Lost,
            End::Failed(_) if end.tls_error().is_some() => Disconnect::TlsError,
            End::Failed(_) => Disconnect::IoError,
        }
    }

    /// Why the chat closed a client, if that is the reason to count:
    /// none for a connection that had ended already, whose reading thread
    /// counted why.
    pub fn of_close(why: CloseReason) -> Option<Disconnect> {
        Some(match why {
            CloseReason::Quit => Disconnect::Quit,
            CloseReason::Killed => Disconnect::Killed,
            CloseReason::Banned => Disconnect::Banned,
            CloseReason::Refused => Disconnect::Refused,
            CloseReason::Replaced => Disconnect::Replaced,
            CloseReason::NameLost => Disconnect::NameLost,
            CloseReason::Shutdown => Disconnect::Shutdown,
            CloseReason::Left => return None,
        })
    }

    /// Why the slow-consumer policy cut a client.
    pub fn of_too_slow(why: &TooSlow) -> Disconnect {
        match why {
            TooSlow::Stalled { .. } => Disconnect::Stalled,
            TooSlow::Lagging { .. } => Disconnect::Lagging,
            TooSlow::OverCap { .. } => Disconnect::OverCap,
        }
    }
}

/// Why a connection was turned away, the label of
/// `chat_server_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// After its handshake: every place in the chat taken
    /// (`--max-clients`); it was told so.
    ServerFull,
    /// After its handshake: its address has every place it may
    /// (`--max-per-ip`); it was told so.
    TooManyFromAddress,
    /// Closed at once when accepted: the server holds all the connections
    /// it may (twice `--max-clients`, or what the machine allows).
    ConnectionCap,
    /// Closed at once when accepted: its address holds all the
    /// connections it may (twice `--max-per-ip`).
    AddressConnectionCap,
}

impl Refused {
    const ALL: [Refused; 4] = [
        Refused::ServerFull,
        Refused::TooManyFromAddress,
        Refused::ConnectionCap,
        Refused::AddressConnectionCap,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::ServerFull => "server_full",
            Refused::TooManyFromAddress => "too_many_from_address",
            Refused::ConnectionCap => "connection_cap",
            Refused::AddressConnectionCap => "address_connection_cap",
        }
    }
}

/// What the server counts once per connection, or per wait of a thread
/// that is about to sleep: shared by every thread, each count an atomic
/// added to at that rate.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicU64,
    handshakes: [AtomicU64; Outcome::ALL.len()],
    failures: [AtomicU64; Failure::ALL.len()],
    disconnects: [AtomicU64; Disconnect::ALL.len()],
    refused: [AtomicU64; Refused::ALL.len()],
    flood_waits: AtomicU64,
    flood_wait_micros: AtomicU64,
}

fn bump(count: &AtomicU64) {
    count.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A connection was accepted and counted as open.
    pub fn accepted(&self) {
        bump(&self.accepted);
    }

    /// A handshake completed.
    pub fn handshake_done(&self) {
        bump(&self.handshakes[Outcome::Ok as usize]);
    }

    /// A handshake failed with `err`.
    pub fn handshake_failed(&self, err: &HandshakeError) {
        let failure = match err {
            HandshakeError::TimedOut(_) => {
                return bump(&self.handshakes[Outcome::TimedOut as usize]);
            }
            HandshakeError::Closed => return bump(&self.handshakes[Outcome::Closed as usize]),
            HandshakeError::Io(_) => Failure::Io,
            HandshakeError::Tls(err) => Failure::of_tls(err),
        };
        self.failed(failure);
    }

    /// The TLS state for a handshake could not be made.
    pub fn handshake_not_started(&self) {
        self.failed(Failure::Tls);
    }

    fn failed(&self, failure: Failure) {
        bump(&self.handshakes[Outcome::Failed as usize]);
        bump(&self.failures[failure as usize]);
    }

    /// A client in the chat left, or was cut, for `why`.
    pub fn disconnected(&self, why: Disconnect) {
        bump(&self.disconnects[why as usize]);
    }

    /// A connection was turned away, for `why`.
    pub fn refused(&self, why: Refused) {
        bump(&self.refused[why as usize]);
    }

    /// Flood control held a client's line for `wait`.
    pub fn flood_wait(&self, wait: Duration) {
        bump(&self.flood_waits);
        self.flood_wait_micros
            .fetch_add(micros(wait), Ordering::Relaxed);
    }

    /// Writes these counts.
    fn collect(&self, out: &mut Exposition) {
        let get = |count: &AtomicU64| count.load(Ordering::Relaxed) as f64;
        out.counter(
            "chat_server_connections_accepted_total",
            "Connections accepted and counted as open (those past a cap are not).",
            get(&self.accepted),
        );
        out.counters(
            "chat_server_handshakes_total",
            "TLS handshakes, by outcome.",
            "outcome",
            Outcome::ALL
                .iter()
                .map(|&o| (o.label(), get(&self.handshakes[o as usize]))),
        );
        out.counters(
            "chat_server_handshake_failures_total",
            "Failed TLS handshakes (outcome=\"failed\"), by kind of failure.",
            "kind",
            Failure::ALL
                .iter()
                .map(|&f| (f.label(), get(&self.failures[f as usize]))),
        );
        out.counters(
            "chat_server_disconnects_total",
            "Clients that left the chat or were cut, by reason.",
            "reason",
            Disconnect::ALL
                .iter()
                .map(|&e| (e.label(), get(&self.disconnects[e as usize]))),
        );
        out.counters(
            "chat_server_refused_total",
            "Connections turned away, by reason: told why after the handshake, or closed at once.",
            "reason",
            Refused::ALL
                .iter()
                .map(|&r| (r.label(), get(&self.refused[r as usize]))),
        );
        out.counter(
            "chat_server_flood_waits_total",
            "Lines that flood control (--rate) held back.",
            get(&self.flood_waits),
        );
        out.counter(
            "chat_server_flood_wait_seconds_total",
            "Time flood control held those lines, in all.",
            get(&self.flood_wait_micros) / 1e6,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_is_read_from_proc() {
        let threads = process_threads().expect("/proc/self/stat");
        assert!(threads >= 1, "{threads}");
    }

    #[test]
    fn a_tally_adds_and_sits_alone_on_its_cache_lines() {
        let tally = Tally::default();
        tally.add(2);
        tally.add(3);
        assert_eq!(tally.get(), 5);
        assert_eq!(std::mem::align_of::<Tally>(), 128);
    }

    #[test]
    fn handshake_failures_are_counted_by_kind() {
        use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
        let counters = Counters::default();
        counters.handshake_done();
        counters.handshake_failed(&HandshakeError::TimedOut(Duration::from_secs(1)));
        counters.handshake_failed(&HandshakeError::Tls(Error::InvalidMessage(
            InvalidMessage::InvalidContentType,
        )));
        counters.handshake_failed(&HandshakeError::Tls(Error::InvalidCertificate(
            CertificateError::Expired,
        )));
        counters.handshake_failed(&HandshakeError::Tls(Error::AlertReceived(
            AlertDescription::UnknownCA,
        )));
        let mut out = Exposition::new();
        counters.collect(&mut out);
        let text = out.finish();
        for sample in [
            "chat_server_handshakes_total{outcome=\"ok\"} 1",
            "chat_server_handshakes_total{outcome=\"timed_out\"} 1",
            "chat_server_handshakes_total{outcome=\"failed\"} 3",
            "chat_server_handshake_failures_total{kind=\"not_tls\"} 1",
            "chat_server_handshake_failures_total{kind=\"certificate_expired\"} 1",
            "chat_server_handshake_failures_total{kind=\"peer_alert\"} 1",
            "chat_server_handshake_failures_total{kind=\"io\"} 0",
        ] {
            assert!(text.contains(&format!("{sample}\n")), "{sample} in\n{text}");
        }
    }

    #[test]
    fn a_registered_source_shows_in_every_scrape_after_the_process() {
        struct Fixed;
        impl Source for Fixed {
            fn collect(&self, out: &mut Exposition) {
                out.gauge("test_fixed", "A fixed figure.", 7.0);
            }
        }
        let registry = Registry::new();
        registry.register(Arc::new(Fixed));
        let text = registry.render();
        let threads = text.find("chat_server_threads ").unwrap();
        let fixed = text.find("test_fixed 7\n").unwrap();
        assert!(threads < fixed, "{text}");
    }
}
