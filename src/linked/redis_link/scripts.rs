//! The Lua scripts the link runs in Redis for rooms, and the oldest Redis
//! they run on. Names' scripts live with the directory (`names.rs`); what
//! calls these and when lives in `publisher/` and `subscriber.rs`.

// The link's types, constants and helpers, which this part shares.
use super::*;

/// The script that numbers, keeps and publishes lines of one room, as one
/// atomic step (see the module documentation): the publisher's lines of
/// that room in one batch, up to one that sets the topic.
///
/// KEYS: the room's sequence counter, its history stream, its hash of
/// senders (per node and run, the last count it published here), its
/// topic, and the bytes of the lines its history holds. ARGV: the room's
/// channel, the most lines and the most bytes the history keeps, how long
/// (ms) the room's keys live once quiet, the sender, the node's name, `1`
/// and a topic when the last line sets one (else `0` and an empty
/// string), the command that publishes (`PUBLISH` on one Redis,
/// `SPUBLISH` on a cluster: a room's channel is then served by the
/// master of its slot alone), then each line's count and the line, in
/// count order. Returns
/// the last line's seq, or 0 when every count was published before.
///
/// A retry after a reply that never arrived sends the same lines again:
/// those whose count is at most the sender's last here were published
/// before, and they are always the first ones (a sender's counts in a
/// room only grow), so they are skipped and the rest numbered, once. The
/// sender's last count is read once per call, and written once, right
/// after the numbers are taken and before anything is published: Redis
/// does not undo what a script did before an error, so a call that fails
/// half way (a command the Redis lacks, a refused key) has its lines
/// marked as done and is not published again by the retry; the lines it
/// did not reach are lost, not doubled. The numbers come from one
/// `INCRBY`, so the call's lines have consecutive seqs, in their order.
///
/// A room's rules are not this script's: they have their own
/// (`rules.rs`), their own expiry, and are not cleared when a room's
/// numbering starts over, as its topic is.
///
/// The history is trimmed here, oldest first, never past either cap: once
/// the lines take it over one, down to 15/16 of both at once, so that the
/// cost of a trim (reading the lines that go, to count their bytes) is
/// paid once per many lines, not per line (a call's own first lines may
/// go, if it holds more than that). The byte count kept alongside
/// stays true only if nothing else trims.
/// The room's keys get their expiry again, all at once, when the
/// numbering's has less than half left (not on every call: that would
/// be five more commands each); a topic set gets the full expiry. So a
/// topic may outlive the rest by up to half the expiry: the line that
/// starts a room's numbering over clears what an earlier one left.
///
/// `string.format('%d')`, because Lua 5.1 would write a big number as
/// `1e+14`, which is no stream id.
pub(super) const PUBLISH_SCRIPT: &str = r"
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[5]) or '0')
local first = 10
while first < #ARGV and tonumber(ARGV[first]) <= last do
  first = first + 2
end
if first >= #ARGV then
  return 0
end
local n = (#ARGV - first + 1) / 2
local seq = redis.call('INCRBY', KEYS[1], string.format('%d', n)) - n
if seq == 0 then
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
end
redis.call('HSET', KEYS[3], ARGV[5], ARGV[#ARGV - 1])
local node = ARGV[6]
local added = 0
for i = first, #ARGV - 1, 2 do
  seq = seq + 1
  local id = string.format('%d', seq)
  local line = ARGV[i + 1]
  redis.call('XADD', KEYS[2], id .. '-0', 'node', node, 'line', line)
  redis.call(ARGV[9], ARGV[1], id .. ' ' .. node .. ' ' .. line)
  added = added + #line
end
local size = redis.call('INCRBY', KEYS[5], string.format('%d', added))
local length = redis.call('XLEN', KEYS[2])
local max_lines = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
if length > max_lines or size > max_bytes then
  local keep_lines = max_lines - math.floor(max_lines / 16)
  local keep_bytes = max_bytes - math.floor(max_bytes / 16)
  local start = '-'
  local removed = 0
  local total = size
  while length > 1 and (length > keep_lines or size > keep_bytes) do
    local want = math.max(length - keep_lines,
      math.ceil((size - keep_bytes) * length / math.max(size, 1)))
    want = math.min(math.max(want, 1), 1000)
    local oldest = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', want)
    if #oldest == 0 then
      break
    end
    local newest = nil
    for _, entry in ipairs(oldest) do
      if length <= 1 or (length <= keep_lines and size <= keep_bytes) then
        break
      end
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'line' then
          size = size - #fields[i + 1]
        end
      end
      length = length - 1
      removed = removed + 1
      newest = entry[1]
    end
    if newest == nil then
      break
    end
    start = string.format('%d-1', tonumber(string.match(newest, '^(%d+)')))
  end
  if removed > 0 then
    redis.call('XTRIM', KEYS[2], 'MAXLEN', string.format('%d', length))
    redis.call('INCRBY', KEYS[5], string.format('%d', size - total))
  end
end
local ttl = tonumber(ARGV[4])
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], ARGV[8], 'PX', ttl)
end
if redis.call('PTTL', KEYS[1]) < ttl / 2 then
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
