//! A room's rules in Redis, versioned: the script that writes a change
//! only on the version it was made on (and puts a marker, not the text,
//! in the room's order), the merge that makes a change again on rules
//! that moved meanwhile, and how long the rules' key must live. Not who
//! calls them: the publisher writes, the subscriber reads.

// The link's types, constants and helpers, which this part shares.
use super::publisher::Tried;
use super::subscriber::{lost, SubscriberEnd};
use super::*;
use crate::chat::check_shared_rules;

/// A room's rules as Redis had them at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesCopy {
    /// 0 while Redis has none on record; one more for each write. Kept
    /// with the rules, so it lapses with them.
    pub version: u64,
    /// The rules, whole, one per line; `None` for none.
    pub rules: Option<String>,
}

/// A change of a room's rules on its way to Redis: `rules` is the whole
/// new text, made on `base`.
#[derive(Debug)]
pub(super) struct RulesWrite {
    pub(super) room: String,
    pub(super) base: RulesCopy,
    pub(super) rules: Option<String>,
}

/// The version in a marker a write puts in the room's order ([`RULES_SCRIPT`]),
/// `v VERSION`; `None` for anything else. No line of a room's starts so
/// (see `wire::encode`).
pub(super) fn marker_version(line: &str) -> Option<u64> {
    line.strip_prefix("v ")?.parse().ok()
}

/// The script that writes a room's rules, as one atomic step, if they
/// are still at the version the change was made on.
///
/// KEYS: the room's sequence counter, its history stream, its topic, the
/// bytes and the lines its history holds, and its rules (a hash:
/// `version`, `text`). ARGV: the room's channel, the version the change was made
/// on, the new text (empty: none), how long (ms) the rules are kept, how long the room's keys live once quiet, the node's name,
/// the moderation channel, the room's name, and the command that
/// publishes on the room's channel (as for the line script's).
///
/// Another version in Redis: nothing is written, and the reply is `{0,
/// VERSION, TEXT}`, what Redis has. Else the rules take the next version
/// and their own expiry, and the room's order gets the entry `v VERSION`
/// (numbered, kept and published as a batch of one line is, but in the
/// field `line` of an entry of its own, so every node in the room
/// reads the rules at their place among its lines), the moderation channel
/// `r ROOM VERSION` (for the nodes not in it); the reply is `{1, VERSION,
/// ''}`. A version is never given twice while the key lives: with no
/// rules left, it keeps the version alone.
///
/// The line script's own keys keep what it asks of them: a numbering that
/// starts over clears what an earlier one left, the byte count grows by
/// the entry's and the line count by one (if there is one: a history
/// without it is counted by the next line), and the room's keys are
/// renewed when less than half their time is left. The history is
/// trimmed by the next line, not here.
pub(super) const RULES_SCRIPT: &str = r"
local current = tonumber(redis.call('HGET', KEYS[6], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
  return {0, current, redis.call('HGET', KEYS[6], 'text') or ''}
end
local version = current + 1
redis.call('HSET', KEYS[6], 'version', string.format('%d', version))
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[6], 'text')
else
  redis.call('HSET', KEYS[6], 'text', ARGV[3])
end
redis.call('PEXPIRE', KEYS[6], ARGV[4])
local seq = redis.call('INCR', KEYS[1])
if seq == 1 then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
end
local marker = 'v ' .. string.format('%d', version)
redis.call('XADD', KEYS[2], string.format('%d-0', seq), 'node', ARGV[6], 'line', marker)
redis.call('INCRBY', KEYS[4], #marker)
if seq == 1 or redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('INCR', KEYS[5])
end
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < ttl / 2 then
  for i = 1, 5 do
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
local framed = string.format('%d', #marker) .. ':' .. marker
redis.call(ARGV[9], ARGV[1], string.format('%d', seq) .. ' ' .. ARGV[6] .. ' ' .. framed)
redis.call('PUBLISH', ARGV[7], 'r ' .. ARGV[8] .. ' ' .. string.format('%d', version))
return {1, version, ''}
";

/// The change `ours` made on `base`, made again on `theirs`: the lines it
/// took away go from `theirs` (if still there), those it added are added
/// (if not there already), the rest of `theirs` stays. A room's rules are
/// a set of lines (an operator, a ban, a mode each), so this is the
/// change itself, whoever else changed what meanwhile; a change made on
/// no known rules (`base` `None`) only adds.
pub fn merge(base: Option<&str>, ours: Option<&str>, theirs: Option<&str>) -> Option<String> {
    fn lines(text: Option<&str>) -> Vec<&str> {
        text.map(|text| text.lines().filter(|line| !line.is_empty()).collect())
            .unwrap_or_default()
    }
    let (base, ours, theirs) = (lines(base), lines(ours), lines(theirs));
    let taken_away = |line: &&str| base.contains(line) && !ours.contains(line);
    let mut merged: Vec<&str> = theirs
        .iter()
        .filter(|line| !taken_away(line))
        .copied()
        .collect();
    for line in ours {
        if !base.contains(&line) && !merged.contains(&line) {
            merged.push(line);
        }
    }
    (!merged.is_empty()).then(|| merged.join("\n"))
}

/// The longest a room nobody is in keeps its rules in Redis, however long
/// a ban in them runs (one without an end included): without a bound,
/// anyone could leave a key behind for good in room after room. A server
/// in the room renews them (`TOUCH_SCRIPT`); one that enters after they
/// lapsed finds none.
pub const RULES_KEPT_MOST: Duration = Duration::from_secs(30 * 86_400);

/// How long a room's rules are kept: as long as its other keys
/// (`room_ttl`), or until the last ban or mute in them ends if that is
/// later, so that whom a ban names cannot make the room anew meanwhile;
/// with a ban or mute without an end, or one that ends later still,
/// [`RULES_KEPT_MOST`] (or `room_ttl`, if longer). Rules only guests
/// stand behind (`guests-only`) are theirs alone, and go with the room.
/// `now` in Unix seconds, as the rules write their ends.
pub(super) fn keep_for(rules: Option<&str>, now: u64, room_ttl: Duration) -> Duration {
    let Some(rules) = rules else {
        return room_ttl;
    };
    if rules.lines().any(|line| line == "guests-only") {
        return room_ttl;
    }
    let mut last_end = now;
    for line in rules.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next()) {
            (Some("ban" | "mute"), Some("-")) => last_end = u64::MAX,
            (Some("ban" | "mute"), Some(end)) => {
                last_end = last_end.max(end.parse().unwrap_or(now));
            }
            _ => {}
        }
    }
    let ban = Duration::from_secs(last_end - now).min(RULES_KEPT_MOST);
    room_ttl.max(ban)
}

/// What the rules script answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// Written, as this version.
    As(u64),
    /// Not written: Redis has these, at another version.
    Stale(RulesCopy),
}

/// Reads the rules script's reply.
fn written((done, version, text): (u8, u64, String)) -> Written {
    if done == 1 {
        return Written::As(version);
    }
    Written::Stale(RulesCopy {
        version,
        rules: (!text.is_empty()).then_some(text),
    })
}

/// How many times one change is made again on rules that moved before
/// it is dropped: each time, another server wrote in between, so only a
/// storm of changes to one room gets here.
const MERGES_BEFORE_DROP: u32 = 16;

impl Publisher {
    /// Writes a change of a room's rules, on the version it was made on,
    /// or again on the rules Redis has, until it is in or no longer
    /// changes anything. False if the link stops first.
    pub(super) fn write_rules(&self, connection: &mut Router, write: RulesWrite) -> bool {
        let RulesWrite {
            room,
            mut base,
            mut rules,
        } = write;
        let keys = Keys::of(&room);
        let settings = &self.target.settings;
        for _ in 0..MERGES_BEFORE_DROP {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            let keep = millis(keep_for(rules.as_deref(), now, settings.room_ttl));
            let mut call = redis::cmd("EVALSHA");
            call.arg(self.rules_script.get_hash())
                .arg(keys.of_rules().len());
            for key in keys.of_rules() {
                call.arg(key);
            }
            call.arg(&keys.channel)
                .arg(base.version)
                .arg(rules.as_deref().unwrap_or_default())
                .arg(keep)
                .arg(millis(settings.room_ttl))
                .arg(&self.node)
                .arg(MODERATION_CHANNEL)
                .arg(&room)
                .arg(self.publish_command);
            let reply = self.until_done(connection, &self.rules_script, "a change of rules", |c| {
                call.query::<(u8, u64, String)>(c)
            });
            let theirs = match reply {
                Tried::Done(reply) => match written(reply) {
                    Written::As(_) => return true,
                    Written::Stale(theirs) => theirs,
                },
                Tried::Dropped => return true,
                Tried::Stopping => return false,
            };
            let merged = merge(
                base.rules.as_deref(),
                rules.as_deref(),
                theirs.rules.as_deref(),
            );
            // Already in (a retry whose first reply never came), or
            // taken back meanwhile: nothing left to write.
            if merged == theirs.rules {
                return true;
            }
            // Each within the shared bounds, two changes together may not
            // be: every server would refuse the result and keep its own.
            if let Some(Err(why)) = merged.as_deref().map(check_shared_rules) {
                log::warn!("a change of the rules of {room} dropped: with theirs, {why}");
                return true;
            }
            base = theirs;
            rules = merged;
        }
        log::warn!("a change of the rules of {room} dropped: they kept changing under it");
        true
    }
}

impl Subscriber {
    /// `room`'s rules as Redis has them now.
    pub(super) fn read_rules(
        &self,
        query: &mut Router,
        room: &str,
    ) -> Result<RulesCopy, SubscriberEnd> {
        let (version, rules): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(Keys::of(room).rules)
            .arg("version")
            .arg("text")
            .query(query)
            .map_err(|error| lost(&self.target, error))?;
        Ok(RulesCopy {
            version: version.unwrap_or(0),
            rules,
        })
    }

    /// Delivers `room`'s rules as Redis has them now, unless this node
    /// delivered that version last, and notes the version. (A version is
    /// given once while the rules' key lives; one that lapsed starts at 0
    /// again, unlike any this node was told, unless it had none.)
    pub(super) fn deliver_rules(
        &mut self,
        query: &mut Router,
        room: &str,
    ) -> Result<(), SubscriberEnd> {
        let rules = self.read_rules(query, room)?;
        let seen = self.rules_seen.insert(room.to_owned(), rules.version);
        if seen == Some(rules.version) {
            return Ok(());
        }
        self.send(Delivery::RoomRules {
            room: room.to_owned(),
            rules,
        })
    }

    /// An entry of `room`'s order, or what is left of it: its lines from
    /// `first` on, delivered as one batch; or a marker of its rules (an
    /// entry of its own, of one line), read (once per version) and
    /// delivered in its place. `lines` is never empty: a message of no
    /// lines is refused as malformed (`parse_payload`), and `fill` passes on
    /// only entries that hold a line it still wants.
    pub(super) fn entry(
        &mut self,
        query: &mut Router,
        room: &str,
        first: u64,
        node: &str,
        lines: &[&str],
    ) -> Result<(), SubscriberEnd> {
        debug_assert!(!lines.is_empty(), "an entry of no lines");
        let version = match lines {
            [line] => marker_version(line),
            _ => None,
        };
        let Some(version) = version else {
            return self.send(Delivery::Lines {
                room: room.to_owned(),
                first,
                node: node.to_owned(),
                lines: lines.iter().map(|&line| line.to_owned()).collect(),
            });
        };
        // Read with the room's past, or at a later marker, already.
        if self
            .rules_seen
            .get(room)
            .is_some_and(|&seen| seen >= version)
        {
            return Ok(());
        }
        self.deliver_rules(query, room)
    }

    /// `r ROOM VERSION` on the moderation channel: a room's rules
    /// changed. A room this node is in has the marker in its order; for
    /// another, its rules are read now.
    pub(super) fn rules_changed(
        &mut self,
        query: &mut Router,
        text: &str,
    ) -> Result<(), SubscriberEnd> {
        let Some((room, _version)) = text.split_once(' ') else {
            log::warn!("redis {}: a malformed moderation message", self.target.addr);
            return Ok(());
        };
        if self.next.contains_key(room) {
            return Ok(());
        }
        let rules = self.read_rules(query, room)?;
        self.send(Delivery::RoomRules {
            room: room.to_owned(),
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_made_again_on_what_moved_meanwhile() {
        let base = Some("op sha256:a\nban - op troll");
        // Ours: an invitation added, the ban lifted.
        let ours = Some("op sha256:a\ninvited alice");
        // Theirs: a mute added, the operator gone.
        let theirs = Some("ban - op troll\nmute - op loud");
        assert_eq!(
            merge(base, ours, theirs).as_deref(),
            Some("mute - op loud\ninvited alice")
        );
        // Made again on itself, it changes nothing.
        let done = merge(base, ours, theirs);
        assert_eq!(merge(base, ours, done.as_deref()), done);
        // Taking away the last rule leaves none.
        assert_eq!(merge(Some("invite-only"), None, Some("invite-only")), None);
        // On no known rules, a change only adds.
        assert_eq!(
            merge(None, Some("topic-lock"), Some("ban - op troll")).as_deref(),
            Some("ban - op troll\ntopic-lock")
        );
    }

    #[test]
    fn rules_are_kept_as_long_as_their_last_ban() {
        let day = Duration::from_secs(86_400);
        let now = 1_000_000;
        assert_eq!(keep_for(None, now, day), day);
        assert_eq!(keep_for(Some("invite-only"), now, day), day);
        let long = format!(
            "ban {} op troll\nmute {} op loud",
            now + 10,
            now + 3 * 86_400
        );
        assert_eq!(keep_for(Some(&long), now, day), 3 * day);
        // Without an end, or past the most: the most, not for good.
        assert_eq!(keep_for(Some("ban - op troll"), now, day), RULES_KEPT_MOST);
        let later = format!("ban {} op troll", now + 400 * 86_400);
        assert_eq!(keep_for(Some(&later), now, day), RULES_KEPT_MOST);
        // ... unless the room itself is kept longer.
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(keep_for(Some("ban - op troll"), now, year), year);
        // Guests' rules go with the room, whatever they hold.
        let guests = "ban - op troll\nguests-only";
        assert_eq!(keep_for(Some(guests), now, day), day);
        // A ban that ended already keeps nothing longer.
        let ended = format!("ban {} op troll", now - 5);
        assert_eq!(keep_for(Some(&ended), now, day), day);
    }

    #[test]
    fn markers_round_trip() {
        assert_eq!(marker_version("v 42"), Some(42));
        assert_eq!(marker_version("h - chat a v 1\n"), None);
        assert_eq!(marker_version("v x"), None);
    }
}
