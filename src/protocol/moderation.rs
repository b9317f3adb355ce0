//! The moderation commands as typed: `/kick`, `/ban`, `/mute`, `/op` and
//! the rest, their help, and how a duration is written (`30s 10m 2h 7d`).
//! Not who may use them or what they do (the chat's `moderation`).

use std::time::Duration;

use super::{first_word, CommandError, CommandInfo};

/// A moderation command: what an operator asked for, not yet checked
/// against who they are or what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation<'a> {
    /// `/op NICK`: make someone an operator of this room.
    Op(&'a str),
    /// `/deop NICK` or `/deop KEY`: take it back (by key, from one who
    /// is away).
    Deop(&'a str),
    /// `/kick NICK [REASON]`: send someone in this room to the lobby.
    Kick {
        /// Who.
        nick: &'a str,
        /// Why, if said.
        reason: Option<&'a str>,
    },
    /// `/ban TARGET [DURATION] [REASON]`: keep someone out of this room.
    Ban(Sentence<'a>),
    /// `/unban TARGET`.
    Unban(&'a str),
    /// `/mute NICK [DURATION] [REASON]`: someone stays and reads, but
    /// says nothing in this room.
    Mute(Sentence<'a>),
    /// `/unmute NICK`.
    Unmute(&'a str),
    /// `/invite NICK`: let someone into this room while it is invite-only.
    Invite(&'a str),
    /// `/mode` shows this room's modes; `/mode +i` and the rest change one.
    Mode(Option<Mode>),
    /// `/bans`: this room's operators, bans, mutes, invitations and modes.
    Bans,
    /// `/serverban TARGET [DURATION] [REASON]`: keep someone off the
    /// server (server operators).
    ServerBan(Sentence<'a>),
    /// `/serverunban TARGET`.
    ServerUnban(&'a str),
    /// `/kill NICK [REASON]`: disconnect every session of someone (server
    /// operators).
    Kill {
        /// Who.
        nick: &'a str,
        /// Why, if said.
        reason: Option<&'a str>,
    },
}

/// Who is banned or muted, for how long, and why, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sentence<'a> {
    /// A nick, a `sha256:` key fingerprint, or an address (not yet read).
    pub target: &'a str,
    /// How long; `None` until lifted.
    pub duration: Option<Duration>,
    /// Why, if said.
    pub reason: Option<&'a str>,
}

/// One of a room's modes, switched on (`+`) or off (`-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `+i`/`-i`: only operators and those invited may enter.
    InviteOnly(bool),
    /// `+t`/`-t`: only operators may set the topic.
    TopicLock(bool),
}

/// The moderation commands, in the order `/help` lists them after the
/// others.
pub const MODERATION_COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "/op",
        usage: "/op NICK",
        needs: "a name",
        help: "(room operators) make NICK an operator of this room: by certificate key if \
               NICK has one (it lasts), else only while NICK stays connected under that name",
    },
    CommandInfo {
        name: "/deop",
        usage: "/deop NICK|KEY",
        needs: "a name or key",
        help: "(room operators) NICK is no longer an operator of this room; a sha256: key \
               takes it from an operator by key who is not connected",
    },
    CommandInfo {
        name: "/kick",
        usage: "/kick NICK [REASON]",
        needs: "a name",
        help: "(room operators) send NICK from this room to #lobby",
    },
    CommandInfo {
        name: "/ban",
        usage: "/ban TARGET [DURATION] [REASON]",
        needs: "a name, key or address",
        help: "(room operators) keep TARGET (a nick, a sha256: key, or an address; IPv6 \
               covers its /64) out of this room for DURATION (30s 10m 2h 7d; none: until \
               /unban); a nick who is here is also banned by key and by address (not one you \
               share), and sent to #lobby; at most 100 bans a room",
    },
    CommandInfo {
        name: "/unban",
        usage: "/unban TARGET",
        needs: "a name, key or address",
        help: "(room operators) lift the bans of this room that name TARGET",
    },
    CommandInfo {
        name: "/mute",
        usage: "/mute NICK [DURATION] [REASON]",
        needs: "a name",
        help: "(room operators) NICK stays in this room and reads, but cannot speak in it \
               for DURATION (none: until /unmute); at most 100 mutes a room",
    },
    CommandInfo {
        name: "/unmute",
        usage: "/unmute NICK",
        needs: "a name",
        help: "(room operators) let NICK speak in this room again",
    },
    CommandInfo {
        name: "/invite",
        usage: "/invite NICK",
        needs: "a name",
        help: "(room operators) let NICK enter this room once while it is invite-only (a \
               guest's invitation ends when they leave or change nick)",
    },
    CommandInfo {
        name: "/mode",
        usage: "/mode [+i|-i|+t|-t]",
        needs: "",
        help: "show this room's modes; (room operators) +i makes it invite-only, +t lets \
               only operators set the topic, - undoes either",
    },
    CommandInfo {
        name: "/bans",
        usage: "/bans",
        needs: "",
        help: "list this room's operators, bans, mutes, invitations and modes; keys and \
               addresses only to its operators (server operators also see the server's \
               bans)",
    },
    CommandInfo {
        name: "/serverban",
        usage: "/serverban TARGET [DURATION] [REASON]",
        needs: "a name, key or address",
        help: "(server operators) refuse TARGET when connecting, and disconnect whoever it \
               names now",
    },
    CommandInfo {
        name: "/serverunban",
        usage: "/serverunban TARGET",
        needs: "a name, key or address",
        help: "(server operators) lift the server's bans that name TARGET",
    },
    CommandInfo {
        name: "/kill",
        usage: "/kill NICK [REASON]",
        needs: "a name",
        help: "(server operators) disconnect every session of NICK",
    },
];

/// Reads a moderation command, its name without `/` and its arguments
/// (trimmed, `None` if there are none); `Ok(None)` if `name` is not one.
pub(super) fn parse_moderation<'a>(
    name: &'a str,
    arg: Option<&'a str>,
) -> Result<Option<Moderation<'a>>, CommandError<'a>> {
    let info = |name: &str| {
        MODERATION_COMMANDS
            .iter()
            .find(|info| &info.name[1..] == name)
            .expect("every moderation command has help")
    };
    let required = |command: &str| arg.ok_or(CommandError::MissingArgument(info(command)));
    let moderation = match name {
        "op" => Moderation::Op(first_word(required(name)?)),
        "deop" => Moderation::Deop(first_word(required(name)?)),
        "kick" => {
            let (nick, reason) = word_and_rest(required(name)?);
            Moderation::Kick { nick, reason }
        }
        "ban" => Moderation::Ban(sentence(required(name)?)?),
        "unban" => Moderation::Unban(first_word(required(name)?)),
        "mute" => Moderation::Mute(sentence(required(name)?)?),
        "unmute" => Moderation::Unmute(first_word(required(name)?)),
        "invite" => Moderation::Invite(first_word(required(name)?)),
        "mode" => Moderation::Mode(match arg.map(first_word) {
            None => None,
            Some("+i") => Some(Mode::InviteOnly(true)),
            Some("-i") => Some(Mode::InviteOnly(false)),
            Some("+t") => Some(Mode::TopicLock(true)),
            Some("-t") => Some(Mode::TopicLock(false)),
            Some(other) => return Err(CommandError::BadMode(other)),
        }),
        "bans" => Moderation::Bans,
        "serverban" => Moderation::ServerBan(sentence(required(name)?)?),
        "serverunban" => Moderation::ServerUnban(first_word(required(name)?)),
        "kill" => {
            let (nick, reason) = word_and_rest(required(name)?);
            Moderation::Kill { nick, reason }
        }
        _ => return Ok(None),
    };
    Ok(Some(moderation))
}

/// The first word, and the rest if there is any.
fn word_and_rest(args: &str) -> (&str, Option<&str>) {
    match args.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, Some(rest.trim()).filter(|rest| !rest.is_empty())),
        None => (args, None),
    }
}

/// `TARGET [DURATION] [REASON]`: the second word is a duration if it
/// starts with a digit (and must then be a good one), else the reason's
/// first word.
fn sentence(args: &str) -> Result<Sentence<'_>, CommandError<'_>> {
    let (target, rest) = word_and_rest(args);
    let (duration, reason) = match rest {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            let (word, reason) = word_and_rest(rest);
            let duration = parse_duration(word).ok_or(CommandError::BadDuration(word))?;
            (Some(duration), reason)
        }
        rest => (None, rest),
    };
    Ok(Sentence {
        target,
        duration,
        reason,
    })
}

/// The longest duration a ban or mute may be given: ten years, so that
/// an expiry always fits in the wall-clock seconds it is kept as.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Reads `30s`, `10m`, `2h` or `7d` (a whole number and one unit); `None`
/// for anything else, zero, or more than [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return None,
    };
    let seconds = number.parse::<u64>().ok()?.checked_mul(seconds_per)?;
    let duration = Duration::from_secs(seconds);
    (seconds > 0 && duration <= MAX_DURATION).then_some(duration)
}

/// A time left, as people read it: its two largest units (`2d 3h`,
/// `5m 10s`, `42s`).
pub fn format_left(seconds: u64) -> String {
    let units = [(24 * 3600, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (size, unit) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 || (rest == 0 && !parts.is_empty()) {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::super::parse_command;
    use super::*;
    use crate::protocol::Command;

    fn parsed(line: &str) -> Moderation<'_> {
        match parse_command(line) {
            Ok(Some(Command::Moderate(moderation))) => moderation,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn every_moderation_command_parses() {
        assert_eq!(parsed("/op bob"), Moderation::Op("bob"));
        assert_eq!(parsed("/deop bob x"), Moderation::Deop("bob"));
        let key = "sha256:ajLVBMHoeJl1ZfURFeIlcW7wgQWrRDXMVMaIv6tvj6g";
        assert_eq!(parsed(&format!("/deop {key}")), Moderation::Deop(key));
        assert_eq!(
            parsed("/kick bob  go away "),
            Moderation::Kick {
                nick: "bob",
                reason: Some("go away")
            }
        );
        assert_eq!(
            parsed("/kick bob"),
            Moderation::Kick {
                nick: "bob",
                reason: None
            }
        );
        assert_eq!(
            parsed("/ban troll 2h spamming links"),
            Moderation::Ban(Sentence {
                target: "troll",
                duration: Some(Duration::from_secs(7200)),
                reason: Some("spamming links"),
            })
        );
        assert_eq!(
            parsed("/ban 10.0.0.1 being rude"),
            Moderation::Ban(Sentence {
                target: "10.0.0.1",
                duration: None,
                reason: Some("being rude"),
            })
        );
        assert_eq!(
            parsed("/mute bob 30s"),
            Moderation::Mute(Sentence {
                target: "bob",
                duration: Some(Duration::from_secs(30)),
                reason: None,
            })
        );
        assert_eq!(parsed("/unban sha256:abc"), Moderation::Unban("sha256:abc"));
        assert_eq!(parsed("/unmute bob"), Moderation::Unmute("bob"));
        assert_eq!(parsed("/invite bob"), Moderation::Invite("bob"));
        assert_eq!(parsed("/mode"), Moderation::Mode(None));
        assert_eq!(
            parsed("/mode +i"),
            Moderation::Mode(Some(Mode::InviteOnly(true)))
        );
        assert_eq!(
            parsed("/mode -t"),
            Moderation::Mode(Some(Mode::TopicLock(false)))
        );
        assert_eq!(parsed("/bans"), Moderation::Bans);
        assert_eq!(
            parsed("/serverban 2001:db8::1 7d"),
            Moderation::ServerBan(Sentence {
                target: "2001:db8::1",
                duration: Some(Duration::from_secs(7 * 24 * 3600)),
                reason: None,
            })
        );
        assert_eq!(parsed("/serverunban bob"), Moderation::ServerUnban("bob"));
        assert_eq!(
            parsed("/kill bob bye"),
            Moderation::Kill {
                nick: "bob",
                reason: Some("bye")
            }
        );
    }

    #[test]
    fn bad_moderation_arguments_say_what_is_wrong() {
        let err = parse_command("/ban bob 10x spam").unwrap_err();
        assert_eq!(err, CommandError::BadDuration("10x"));
        assert!(err.to_string().contains("30s 10m 2h 7d"), "{err}");
        let err = parse_command("/mode +q").unwrap_err();
        assert_eq!(err, CommandError::BadMode("+q"));
        for (line, usage) in [
            ("/kick", "/kick NICK [REASON]"),
            ("/ban", "/ban TARGET [DURATION] [REASON]"),
            ("/mute ", "/mute NICK [DURATION] [REASON]"),
            ("/kill", "/kill NICK [REASON]"),
        ] {
            let err = parse_command(line).unwrap_err();
            assert!(matches!(err, CommandError::MissingArgument(_)), "{line}");
            assert!(err.to_string().ends_with(usage), "{line}: {err}");
        }
    }

    #[test]
    fn durations_read_and_read_out() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        for bad in [
            "",
            "s",
            "0s",
            "10",
            "1.5h",
            "-3m",
            "3w",
            "1 h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration("3651d"), None);
        assert_eq!(format_left(0), "0s");
        assert_eq!(format_left(42), "42s");
        assert_eq!(format_left(310), "5m 10s");
        assert_eq!(format_left(3600), "1h");
        assert_eq!(format_left(2 * 86_400 + 3 * 3600 + 59), "2d 3h");
    }
}
