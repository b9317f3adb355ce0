//! What the link's threads share, and the small values they pass: the
//! state behind every thread ([`LinkState`]), a line on its way to the
//! publisher, and the helpers for names, numbers and waits. Not the
//! threads themselves (`publisher/`, `subscriber.rs`, `names.rs`).

// The link's types, constants and helpers, which this part shares.
use super::*;

/// Lines as the scripts keep and publish a batch of them: each as its
/// length in bytes, `:`, and the line, one after another. Whatever a line
/// holds (a newline, a space, a `:`), it cannot break the framing.
pub(super) fn frame<'l>(lines: impl IntoIterator<Item = &'l str>) -> String {
    let mut framed = String::new();
    for line in lines {
        framed.push_str(&line.len().to_string());
        framed.push(':');
        framed.push_str(line);
    }
    framed
}

/// The lines of [`frame`]d text, in order; `None` if it is not framed so
/// (a length that is no number, runs past the end or cuts a character).
pub(super) fn unframe(mut framed: &str) -> Option<Vec<&str>> {
    let mut lines = Vec::new();
    while !framed.is_empty() {
        let (len, rest) = framed.split_once(':')?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: usize = len.parse().ok()?;
        lines.push(rest.get(..len)?);
        framed = rest.get(len..)?;
    }
    Some(lines)
}

/// Reads a room channel's message back, `FIRST NODE LINES` as the scripts
/// write it (the lines [`frame`]d, numbered from FIRST on); `None` for
/// anything else, or for no lines.
pub(super) fn parse_payload(bytes: &[u8]) -> Option<(u64, &str, Vec<&str>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, ' ');
    let first = parts.next()?.parse().ok()?;
    let node = parts.next()?;
    let lines = unframe(parts.next()?)?;
    if lines.is_empty() {
        return None;
    }
    Some((first, node, lines))
}

/// A node name: what other nodes and the logs know this server by, and
/// part of what goes on each channel (so no spaces).
pub(super) fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NODE_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 64 random bits, for naming this run of the node. Not for
/// secrets: std's hasher keys are random per process, which is all that
/// is needed here.
pub(super) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

/// The waits between reconnection attempts of each of the link's threads:
/// [`BACKOFF_MIN`], doubled after each failure up to [`BACKOFF_MAX`], with
/// the crate's jitter.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
}

/// A duration as Redis takes it, in whole milliseconds, at least one (0
/// would mean "expire now" to `PEXPIRE`, "no expiry" elsewhere).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The names a node holds for its users, in lower case.
pub(super) type Held = Arc<Mutex<BTreeSet<String>>>;

/// What every thread of the link shares.
pub(super) struct LinkState {
    /// Set by [`RedisLink`]'s drop: the threads end.
    pub(super) stop: AtomicBool,
    /// Whether the subscriber is connected: [`RedisLink::publish`] refuses
    /// while it is not.
    pub(super) up: AtomicBool,
    /// The rooms the hub wants the node in, each with the number of the
    /// join that put it there: a room left and joined again between two
    /// looks of the subscriber is a new join all the same.
    pub(super) rooms: Mutex<Rooms>,
    /// Set when `rooms` changed, cleared by the subscriber when it looks.
    pub(super) rooms_changed: AtomicBool,
    /// See [`RedisLink::number`]: taken again when Redis lost its data.
    pub(super) number: AtomicU64,
    /// For the metrics, each added to by one thread only (see [`Tally`]):
    /// lines put in the outbox (the hub), and taken out (the publisher);
    /// deliveries handed to the link's sink (the subscriber, and the names
    /// thread), and taken from it (the hub, as it handles each).
    pub(super) outbox_in: Tally,
    pub(super) outbox_out: Tally,
    pub(super) delivered: Tally,
    pub(super) delivered_names: Tally,
    pub(super) deliveries_taken: Tally,
    /// Times the link came back after it was down.
    pub(super) reconnects: AtomicU64,
}

impl LinkState {
    /// A link that is up, in no room, as node `number`, with nothing
    /// counted yet.
    pub(super) fn new(number: u64) -> LinkState {
        LinkState {
            stop: AtomicBool::new(false),
            up: AtomicBool::new(true),
            rooms: Mutex::new(Rooms::default()),
            rooms_changed: AtomicBool::new(false),
            number: AtomicU64::new(number),
            outbox_in: Tally::default(),
            outbox_out: Tally::default(),
            delivered: Tally::default(),
            delivered_names: Tally::default(),
            deliveries_taken: Tally::default(),
            reconnects: AtomicU64::new(0),
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(super) fn wanted_rooms(&self) -> BTreeMap<String, u64> {
        self.rooms_changed.store(false, Ordering::SeqCst);
        // Rooms are changed by one insert or remove at a time (change_rooms):
        // whole even after a panic.
        sync::lock(&self.rooms).wanted.clone()
    }
}

/// The rooms to be in, by the number of the join that asked.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    pub(super) wanted: BTreeMap<String, u64>,
    pub(super) joins: u64,
}

/// One line for the publisher thread.
#[derive(Debug)]
pub(super) struct ToPublish {
    pub(super) room: String,
    pub(super) line: String,
    /// The room's new topic, if the line sets one.
    pub(super) topic: Option<String>,
}

/// What waits for the publisher thread, in order.
#[derive(Debug)]
pub(super) enum Outgoing {
    Line(ToPublish),
    Rules(RulesWrite),
}

impl fmt::Debug for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkState")
            .field("up", &self.up.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// `PING`s a subscribed connection. The reply may take longer than a poll:
/// it is waited for as any reply is, and messages that come first are kept.
pub(super) fn ping(
    pubsub: &mut redis::PubSub<'_>,
    settings: &LinkSettings,
) -> redis::RedisResult<()> {
    pubsub
        .set_read_timeout(Some(settings.reply_timeout))
        .and_then(|()| pubsub.ping::<Value>())
        .and_then(|_| pubsub.set_read_timeout(Some(settings.poll)))
}
