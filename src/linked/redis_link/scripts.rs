//! The Lua scripts the link runs in Redis for rooms, and the oldest Redis
//! they run on. Names' scripts live with the directory (`names.rs`); what
//! calls these and when lives in `publisher/` and `subscriber.rs`.

// The link's types, constants and helpers, which this part shares.
use super::*;

/// The script that numbers, keeps and publishes lines of one room, as one
/// atomic step (see the module documentation): the publisher's lines of
/// that room in one batch, up to one that sets the topic. However many
/// lines a call holds, they are one history entry and one message.
///
/// KEYS: the room's sequence counter, its history stream, its hash of
/// senders (per node and run, the last count it published here), its
/// topic, the bytes its history holds, and the lines it holds
/// ([`Keys::of_lines`]). ARGV: the room's channel, the most lines and the
/// most bytes the history keeps, how long (ms) the room's keys live once
/// quiet, the sender, the node's name, the command that publishes
/// (`PUBLISH` on one Redis, `SPUBLISH` on a cluster: a room's channel is
/// then served by the master of its slot alone), the call's flags, the
/// topic (empty without `t`), how many lines the call holds, the last
/// line's count, the lines framed ([`frame`]), then, with `c` only, each
/// line's count in order. Flags, any of: `c` check each line's count (a
/// retry; without it the call is checked by its last count alone), `t` the
/// last line sets the topic, `r` renew the room's keys. Returns the last
/// line's seq, or 0 when every count was published before.
///
/// The call's lines, numbered F..F+n-1 by one `INCRBY`, are kept as one
/// entry `F-0` of the history (fields `node`, and `lines`: the lines
/// framed) and published as one message, `F NODE LINES`. A room's rules
/// markers are entries of their own (`rules.rs`); entries written before
/// batches, one line each in a field `line`, are read as batches of one,
/// so a Redis upgraded with its data keeps its rooms' past. (Servers that
/// wrote those cannot share a Redis with these: neither reads the
/// other's messages.)
///
/// A retry after a reply that never arrived sends the same lines again,
/// with `c`: those whose count is at most the sender's last here were
/// published before, and they are always the first ones (a sender's
/// counts in a room only grow), so they are skipped and the rest
/// numbered, once. A first send is checked too, more cheaply: the call
/// is skipped whole if the sender's last count has reached its last
/// line's. Its counts are new when it leaves, but not always when Redis
/// runs it: a first send that timed out may still sit unread in Redis
/// (a big pipeline is read in pieces, other clients served between
/// them) when its retry, on a new connection, runs; without the check
/// it would then number its lines a second time. The same calls go in
/// every try, and a call that numbered any line wrote its last count in
/// the same step, so a call whose last count is in was done (or cut
/// short, see below, never to be redone). The sender's last count is
/// written once,
/// right after the numbers are taken and before anything is published:
/// Redis does not undo what a script did before an error, so a call that
/// fails half way (a command the Redis lacks, a refused key) has its
/// lines marked as done and is not published again by the retry; the
/// lines it did not reach are lost, not doubled.
///
/// A room's rules are not this script's: they have their own
/// (`rules.rs`), their own expiry, and are not cleared when a room's
/// numbering starts over, as its topic is.
///
/// The history is trimmed here, whole entries oldest first, but never its
/// newest: once it holds more than either cap, down to 15/16 of both at
/// once, so that the cost of a trim (reading the entries that go, to
/// count their bytes) is paid once per many lines, not per line. A whole
/// entry goes or stays, so a trim may take up to a call's lines more than
/// needed, and one call larger than a cap is kept alone. The lines held
/// are counted (numbers have no holes: after a trim, the last seq less
/// the first kept entry's, plus one); a history without the count (kept
/// before it was) is counted once from its first entry. Both counts stay
/// true only if nothing else trims.
/// The room's keys get their expiry again, all at once, when a numbering
/// starts and when the publisher asks (`r`: its first call in a room, and
/// one at least every half of the expiry after, see
/// [`LinkSettings::room_ttl`]); a topic set gets the full expiry. So a
/// topic may outlive the rest by up to half the expiry: the line that
/// starts a room's numbering over clears what an earlier one left.
///
/// `string.format('%d')`, because Lua 5.1 would write a big number as
/// `1e+14`, which is no stream id.
pub(super) const PUBLISH_SCRIPT: &str = r"
local n = tonumber(ARGV[10])
local body = ARGV[12]
local flags = ARGV[8]
if string.find(flags, 'c', 1, true) then
  local last = tonumber(redis.call('HGET', KEYS[3], ARGV[5]) or '0')
  local skip = 0
  while skip < n and tonumber(ARGV[13 + skip]) <= last do
    skip = skip + 1
  end
  if skip == n then
    return 0
  end
  local at = 1
  for _ = 1, skip do
    local colon = string.find(body, ':', at, true)
    at = colon + 1 + tonumber(string.sub(body, at, colon - 1))
  end
  body = string.sub(body, at)
  n = n - skip
elseif tonumber(redis.call('HGET', KEYS[3], ARGV[5]) or '0') >= tonumber(ARGV[11]) then
  return 0
end
local seq = redis.call('INCRBY', KEYS[1], string.format('%d', n))
local first = seq - n + 1
if first == 1 then
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5], KEYS[6])
end
redis.call('HSET', KEYS[3], ARGV[5], ARGV[11])
local id = string.format('%d', first)
redis.call('XADD', KEYS[2], id .. '-0', 'node', ARGV[6], 'lines', body)
redis.call(ARGV[7], ARGV[1], id .. ' ' .. ARGV[6] .. ' ' .. body)
local size = redis.call('INCRBY', KEYS[5], string.format('%d', #body))
local held = redis.call('INCRBY', KEYS[6], string.format('%d', n))
if held == n and first > 1 then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  local counted = seq - tonumber(string.match(oldest[1][1], '^(%d+)')) + 1
  redis.call('INCRBY', KEYS[6], string.format('%d', counted - held))
  held = counted
end
local max_lines = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
if held > max_lines or size > max_bytes then
  local keep_lines = max_lines - math.floor(max_lines / 16)
  local keep_bytes = max_bytes - math.floor(max_bytes / 16)
  local entries = redis.call('XLEN', KEYS[2])
  local left, lines, bytes = entries, held, size
  local start = '-'
  while left > 1 and (lines > keep_lines or bytes > keep_bytes) do
    local oldest = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', 128)
    if #oldest < 2 then
      break
    end
    local i = 1
    while i < #oldest and left > 1 and (lines > keep_lines or bytes > keep_bytes) do
      local fields = oldest[i][2]
      for j = 1, #fields, 2 do
        if fields[j] == 'lines' or fields[j] == 'line' then
          bytes = bytes - #fields[j + 1]
        end
      end
      lines = seq - tonumber(string.match(oldest[i + 1][1], '^(%d+)')) + 1
      left = left - 1
      i = i + 1
    end
    start = oldest[i][1]
  end
  if left < entries then
    redis.call('XTRIM', KEYS[2], 'MAXLEN', string.format('%d', left))
    redis.call('INCRBY', KEYS[5], string.format('%d', bytes - size))
    redis.call('INCRBY', KEYS[6], string.format('%d', lines - held))
  end
end
local ttl = tonumber(ARGV[4])
if string.find(flags, 't', 1, true) then
  redis.call('SET', KEYS[4], ARGV[9], 'PX', ttl)
end
if first == 1 or string.find(flags, 'r', 1, true) then
  for _, key in ipairs(KEYS) do
    redis.call('PEXPIRE', key, ttl)
  end
end
return seq
";

/// Keeps a room's keys while a node has members in it, however quiet:
/// each gets the expiry `ARGV[1]` (ms) again. KEYS: the room's keys
/// ([`Keys::all`]), its rules last: they only ever get more time here,
/// so what a ban in them was given (`rules::keep_for`) is never cut
/// short, and rules that lapsed are not made again. One room per call,
/// so its keys share a slot.
pub(super) const TOUCH_SCRIPT: &str = r"
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
local left = redis.call('PTTL', KEYS[#KEYS])
if left >= 0 and left < ttl then
  redis.call('PEXPIRE', KEYS[#KEYS], ttl)
end
return 0
";

/// The oldest Redis the link runs on, as (major, minor): streams (`XADD`,
/// `XRANGE`, `XTRIM`) came in 5.0. The scripts keep to what 5.0 has (no
/// `XTRIM MINID`, no `SET KEEPTTL`, no exclusive `XRANGE` bounds): a
/// command a Redis lacks fails only when a script reaches it, which for
/// the trim is once a room's history is full, after the line was numbered.
pub(super) const OLDEST_REDIS: (u32, u32) = (5, 0);

/// Redis' version, (major, minor), from what `INFO server` says
/// (`redis_version:7.0.15`); `None` if it says none.
pub(super) fn redis_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.trim_end().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The oldest Redis a cluster may run: sharded pub/sub (`SPUBLISH`,
/// `SSUBSCRIBE`) came in 7.0.
pub(super) const OLDEST_CLUSTER: (u32, u32) = (7, 0);

/// Refuses a Redis older than `oldest` ([`OLDEST_REDIS`], or
/// [`OLDEST_CLUSTER`]), at start. A Redis that
/// will not say (an ACL user not allowed `INFO`) is let be: the scripts
/// then fail, as they would anyway.
pub(super) fn check_version(
    target: &Target,
    connection: &mut Connection,
    oldest: (u32, u32),
) -> Result<(), LinkError> {
    let info: String = match redis::cmd("INFO").arg("server").query(connection) {
        Ok(info) => info,
        Err(error) => {
            let reason = target.describe(&error);
            log::debug!("Redis at {} did not say its version: {reason}", target.addr);
            return Ok(());
        }
    };
    match redis_version(&info) {
        Some((major, minor)) if (major, minor) < oldest => Err(LinkError::TooOld {
            addr: target.addr.clone(),
            version: format!("{major}.{minor}"),
            needs: format!("{}.{}", oldest.0, oldest.1),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words of commands and options newer than [`OLDEST_REDIS`], as a
    /// script would spell them.
    const NEWER: [&str; 14] = [
        "MINID",
        "KEEPTTL",
        "NOMKSTREAM",
        "GETDEL",
        "GETEX",
        "LPOS",
        "EXPIRETIME",
        "'NX'",
        "'XX'",
        "'LIMIT'",
        "'GT'",
        "'LT'",
        "'('",
        "'='",
    ];

    #[test]
    fn the_scripts_use_only_what_the_oldest_redis_has() {
        let scripts = [
            ("publish", PUBLISH_SCRIPT),
            ("touch", TOUCH_SCRIPT),
            ("rules", super::rules::RULES_SCRIPT),
            ("claim", names::CLAIM_SCRIPT),
            ("release", names::RELEASE_SCRIPT),
            ("private", names::PRIVATE_SCRIPT),
        ];
        for (name, script) in scripts {
            for word in NEWER {
                assert!(!script.contains(word), "the {name} script uses {word}");
            }
        }
    }

    #[test]
    fn redis_versions_are_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(redis_version(info), Some((7, 0)));
        assert_eq!(redis_version("redis_version:4.0.9\n"), Some((4, 0)));
        assert!(redis_version("redis_version:4.0.9\n") < Some(OLDEST_REDIS));
        assert!(redis_version("redis_version:6.2.0\n") > Some(OLDEST_REDIS));
        assert_eq!(redis_version("# Server\r\n"), None);
        assert_eq!(redis_version("redis_version:x\r\n"), None);
    }
}
