//! Moderation's state as plain values: what a ban or mute names
//! ([`Target`]), a ban or mute itself ([`Sanction`]), a room's rules
//! ([`RoomRules`]), and the text they are saved as. Every decision here
//! takes the time as an argument. Not who may change them (`moderation`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::moderation::format_left;
use crate::protocol::Nick;
use crate::seats::Block;
use crate::tls::Fingerprint;

/// Where the chat reads the wall clock, for the expiries of bans and
/// mutes: the system's by default; a test gives one it moves itself.
/// Wall-clock seconds, not [`Instant`](std::time::Instant)s, so that an
/// expiry means the same after a restart.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The time now, in seconds since the Unix epoch (0 before it).
    pub(crate) fn unix_now(&self) -> u64 {
        (self.0)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// The most bans, mutes, invitations or operators by key one room keeps,
/// each: a room's rules are saved whole on every change and listed whole
/// by `/bans`, so one operator's script must not grow them without end.
/// A hundred is far more than a room moderated by people needs.
pub(crate) const MAX_PER_ROOM: usize = 100;

/// The longest reason, in bytes, a ban or mute may give on linked
/// servers: it is kept in the room's rules, which every change writes
/// whole to Redis and every server in the room reads whole, so a reason is
/// a line, not a letter.
pub(crate) const MAX_SHARED_REASON_LEN: usize = 200;

/// The most bytes a room's rules take as text on linked servers. Every
/// change writes them whole to Redis (the room's order gets only a marker,
/// `v N`), and every server that hears of it reads them whole from there:
/// this bounds what one short command makes every server receive. A
/// hundred bans with short reasons fit; long reasons fill it sooner.
pub(crate) const MAX_SHARED_RULES_LEN: usize = 16 * 1024;

/// The shared rules' line that says only guests stand behind them.
const GUESTS_ONLY: &str = "guests-only";

/// Someone's identifiers, which a ban, a mute or an invitation
/// ([`Target`]) is matched against: their nick (in lower case), their
/// certificate's key if they have one, and the address of every session
/// (a person with a certificate may have several, from several places: a
/// ban of any of them holds). Not what a client presents to be known
/// (that is [`tls::Identity`](crate::tls::Identity)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identifiers {
    pub(crate) nick: String,
    pub(crate) key: Option<Fingerprint>,
    pub(crate) blocks: Vec<Block>,
}

/// What a ban, a mute or an invitation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A nick, in lower case.
    Nick(String),
    /// A certificate's key.
    Key(Fingerprint),
    /// An IPv4 address or an IPv6 /64.
    Address(Block),
}

impl Target {
    /// Reads a target as typed (and as saved): `sha256:...` is a key, an
    /// IP address (an IPv6 one with or without `/64`) an address, anything
    /// else a nick.
    pub(crate) fn parse(text: &str) -> Result<Target, String> {
        if text
            .get(..7)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("sha256:"))
        {
            return text.parse().map(Target::Key);
        }
        let bare = text.strip_suffix("/64").unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Target::Address(Block::of(ip)));
        }
        match Nick::parse(text) {
            Ok(nick) => Ok(Target::Nick(nick.key())),
            Err(why) => Err(format!(
                "{text:?} is neither a nick ({why}), nor a sha256: key, nor an IP address"
            )),
        }
    }

    /// True if this names `who`.
    pub(crate) fn names(&self, who: &Identifiers) -> bool {
        match self {
            Target::Nick(nick) => *nick == who.nick,
            Target::Key(key) => who.key == Some(*key),
            Target::Address(block) => who.blocks.contains(block),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Nick(nick) => f.write_str(nick),
            Target::Key(key) => write!(f, "{key}"),
            Target::Address(block) => write!(f, "{block}"),
        }
    }
}

/// A ban or a mute: whom it names (one or several ways), who gave it,
/// why, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sanction {
    pub(crate) targets: Vec<Target>,
    /// The operator's nick.
    pub(crate) by: String,
    pub(crate) reason: Option<String>,
    /// Unix seconds; `None` until lifted.
    pub(crate) until: Option<u64>,
}

impl Sanction {
    /// True if it still holds at `now`.
    pub(crate) fn live(&self, now: u64) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    /// True if it names `who`.
    pub(crate) fn names(&self, who: &Identifiers) -> bool {
        self.targets.iter().any(|target| target.names(who))
    }

    /// True if it still holds at `now` and names `who`: whether it
    /// applies to them.
    pub(crate) fn holds(&self, now: u64, who: &Identifiers) -> bool {
        self.live(now) && self.names(who)
    }

    /// How long it lasts from `now`: `1h 5m left`, or `until lifted`.
    pub(crate) fn left(&self, now: u64) -> String {
        match self.until {
            Some(until) => format!("{} left", format_left(until.saturating_sub(now))),
            None => "until lifted".to_owned(),
        }
    }

    /// `by alice (1h left): spamming`, as told to the one it names.
    pub(crate) fn told(&self, now: u64) -> String {
        let mut text = format!("by {} ({})", self.by, self.left(now));
        if let Some(reason) = &self.reason {
            text.push_str(": ");
            text.push_str(reason);
        }
        text
    }

    /// One saved line's words after its kind: `UNTIL BY TARGETS [REASON]`,
    /// `UNTIL` in Unix seconds or `-`, `TARGETS` joined by `,`.
    fn to_text(&self) -> String {
        let until = self.until.map_or("-".to_owned(), |until| until.to_string());
        let targets: Vec<String> = self.targets.iter().map(Target::to_string).collect();
        let mut text = format!("{until} {} {}", self.by, targets.join(","));
        if let Some(reason) = &self.reason {
            text.push(' ');
            text.push_str(reason);
        }
        text
    }

    /// Reads what [`to_text`](Sanction::to_text) writes.
    fn from_text(text: &str) -> Result<Sanction, String> {
        let mut words = text.splitn(4, ' ');
        let (Some(until), Some(by), Some(targets)) = (words.next(), words.next(), words.next())
        else {
            return Err("expected UNTIL BY TARGETS [REASON]".to_owned());
        };
        let until = match until {
            "-" => None,
            seconds => Some(
                seconds
                    .parse()
                    .map_err(|_| format!("{seconds:?} is not a time in Unix seconds"))?,
            ),
        };
        let by = Nick::parse(by)
            .map_err(|why| format!("{by:?} is not a nick ({why})"))?
            .to_string();
        let targets = targets
            .split(',')
            .map(Target::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let reason = words.next().map(str::to_owned);
        Ok(Sanction {
            targets,
            by,
            reason,
            until,
        })
    }
}

/// A room's operators, bans, mutes, invitations and modes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RoomRules {
    /// Operators by certificate key: they stay operators when they leave.
    pub(crate) ops: Vec<Fingerprint>,
    /// Operators without a certificate, by nick: only while connected
    /// under it, so never saved.
    pub(crate) guest_ops: Vec<String>,
    pub(crate) bans: Vec<Sanction>,
    pub(crate) mutes: Vec<Sanction>,
    /// Who may enter once while the room is invite-only.
    pub(crate) invited: Vec<Target>,
    pub(crate) invite_only: bool,
    pub(crate) topic_locked: bool,
    /// Someone with a certificate changed them (a server operator in a
    /// room of guests, say), or they were restored: they are saved, and
    /// outlive the room's operators by nick. Rules only guests made are
    /// theirs alone, forgotten when the last of them goes, so that guests
    /// who come and go cannot leave rules behind without end.
    pub(crate) kept: bool,
    /// Shared: the rules came from the others marked as only guests'
    /// (`guests-only`), and no guest operator of them is here. They are
    /// held while the others say so: the guest's own server takes them
    /// back, everywhere, when the guest goes.
    pub(crate) held_elsewhere: bool,
}

impl RoomRules {
    /// True if nothing is left: the room needs no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.guest_ops.is_empty() && !self.is_durable() && !self.held_elsewhere
    }

    /// True if something here is saved: it holds something beyond the
    /// operators by nick, and someone with a certificate stands behind it.
    pub(crate) fn is_durable(&self) -> bool {
        let holds = !self.ops.is_empty()
            || !self.bans.is_empty()
            || !self.mutes.is_empty()
            || self
                .invited
                .iter()
                .any(|who| !matches!(who, Target::Nick(_)))
            || self.invite_only
            || self.topic_locked;
        holds && (self.kept || !self.ops.is_empty())
    }

    /// True if someone is an operator (by key or by nick).
    pub(crate) fn has_operators(&self) -> bool {
        !self.ops.is_empty() || !self.guest_ops.is_empty()
    }

    /// Forgets the bans and mutes that ended by `now`; true if any did.
    pub(crate) fn drop_expired(&mut self, now: u64) -> bool {
        let before = self.bans.len() + self.mutes.len();
        self.bans.retain(|ban| ban.live(now));
        self.mutes.retain(|mute| mute.live(now));
        self.bans.len() + self.mutes.len() != before
    }

    /// What is saved of the rules at `now`, one line each; `None` if
    /// nothing is (or they are only guests', see [`RoomRules::kept`]).
    /// Bans and mutes that ended are left out. `shared`: the text is the
    /// room's rules as every linked server holds them, not what outlives
    /// a restart, so a guest operator's rules and invitations by nick go
    /// too (and are taken back, everywhere, when the guest goes); rules
    /// nobody with a certificate stands behind say so (`guests-only`), so
    /// that coming back from the others they are still only the guests'.
    pub(crate) fn to_text(&self, now: u64, shared: bool) -> Option<String> {
        let durable = self.is_durable();
        if !shared && !durable {
            return None;
        }
        let mut lines = Vec::new();
        lines.extend(self.ops.iter().map(|key| format!("op {key}")));
        if self.invite_only {
            lines.push("invite-only".to_owned());
        }
        if self.topic_locked {
            lines.push("topic-lock".to_owned());
        }
        // Alone, an invitation by nick is a guest's, which ends with the
        // guest.
        let invited = self
            .invited
            .iter()
            .filter(|who| shared || !matches!(who, Target::Nick(_)));
        lines.extend(invited.map(|who| format!("invited {who}")));
        lines.extend(sanction_lines("ban", &self.bans, now));
        lines.extend(sanction_lines("mute", &self.mutes, now));
        if !durable && !lines.is_empty() {
            lines.push(GUESTS_ONLY.to_owned());
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Reads what [`to_text`](RoomRules::to_text) writes; the error
    /// names the line. Restored rules are kept ([`RoomRules::kept`])
    /// unless they say they are only guests'.
    pub(crate) fn from_text(text: &str) -> Result<RoomRules, String> {
        let mut rules = RoomRules {
            kept: true,
            ..RoomRules::default()
        };
        for (number, line) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}", number + 1);
            let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
            match kind {
                "op" => rules.ops.push(rest.parse().map_err(at)?),
                "invite-only" => rules.invite_only = true,
                "topic-lock" => rules.topic_locked = true,
                GUESTS_ONLY => rules.kept = false,
                "invited" => rules.invited.push(Target::parse(rest).map_err(at)?),
                "ban" => rules.bans.push(Sanction::from_text(rest).map_err(at)?),
                "mute" => rules.mutes.push(Sanction::from_text(rest).map_err(at)?),
                "" => {}
                other => return Err(at(format!("unknown rule {other:?}"))),
            }
        }
        Ok(rules)
    }
}

/// Refuses rules from the other servers that this server would not have
/// written: longer than [`MAX_SHARED_RULES_LEN`], more than
/// [`MAX_PER_ROOM`] of anything, or a reason over
/// [`MAX_SHARED_REASON_LEN`].
pub(crate) fn check_shared_rules(text: &str) -> Result<(), String> {
    if text.len() > MAX_SHARED_RULES_LEN {
        return Err(format!(
            "{} bytes, over the {MAX_SHARED_RULES_LEN} rules may take",
            text.len()
        ));
    }
    let rules = RoomRules::from_text(text)?;
    let counts = [
        ("operators", rules.ops.len()),
        ("bans", rules.bans.len()),
        ("mutes", rules.mutes.len()),
        ("invitations", rules.invited.len()),
    ];
    if let Some((what, count)) = counts.iter().find(|(_, count)| *count > MAX_PER_ROOM) {
        return Err(format!(
            "{count} {what}, over the {MAX_PER_ROOM} a room keeps"
        ));
    }
    check_reasons(rules.bans.iter().chain(&rules.mutes))
}

/// Refuses server bans from the other servers with a reason this server
/// would not have taken (over [`MAX_SHARED_REASON_LEN`]).
pub(crate) fn check_shared_server_bans(text: &str) -> Result<(), String> {
    check_reasons(&server_bans_from_text(text)?)
}

fn check_reasons<'s>(sanctions: impl IntoIterator<Item = &'s Sanction>) -> Result<(), String> {
    let long = sanctions
        .into_iter()
        .filter_map(|sanction| sanction.reason.as_ref())
        .find(|reason| reason.len() > MAX_SHARED_REASON_LEN);
    match long {
        Some(reason) => Err(format!(
            "a reason of {} bytes, over {MAX_SHARED_REASON_LEN}",
            reason.len()
        )),
        None => Ok(()),
    }
}

/// The saved lines of the sanctions still live at `now`.
pub(crate) fn sanction_lines<'s>(
    kind: &'s str,
    sanctions: &'s [Sanction],
    now: u64,
) -> impl Iterator<Item = String> + 's {
    sanctions
        .iter()
        .filter(move |sanction| sanction.live(now))
        .map(move |sanction| format!("{kind} {}", sanction.to_text()))
}

/// Reads saved server bans: `ban` lines only.
pub(crate) fn server_bans_from_text(text: &str) -> Result<Vec<Sanction>, String> {
    let rules = RoomRules::from_text(text)?;
    let RoomRules {
        bans,
        ops,
        mutes,
        invited,
        invite_only,
        topic_locked,
        ..
    } = rules;
    if !ops.is_empty() || !mutes.is_empty() || !invited.is_empty() || invite_only || topic_locked {
        return Err("the server's bans hold only ban lines".to_owned());
    }
    Ok(bans)
}
