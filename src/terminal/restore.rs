//! Coming back as the same person: what the client knows of itself (nick,
//! room, the secret from `/token`), and, on a new connection, the steps that
//! take the nick and the room back. A plain value: server lines in, lines to
//! send and what to show out; the connection loop does the sending.

use crate::protocol::{Notice, Refusal, ServerLine, Wording, LOBBY};

/// What the client knows of itself, to come back as the same person.
#[derive(Debug, Default)]
struct Me {
    /// The nick and room to come back to: the last ones known while not
    /// restoring (a reconnect's guest name of a moment is not one).
    nick: Option<String>,
    room: Option<String>,
    /// The nick and room the server last said this connection has.
    nick_now: Option<String>,
    room_now: Option<String>,
    /// The secret from `token NICK SECRET`, for that nick; memory only.
    secret: Option<(String, String)>,
}

/// Where a new connection is in getting back its nick and room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Back (or never away): typed lines go straight out.
    Done,
    /// `/reclaim` sent: waiting for [`Notice::YouAreBack`] or the refusal.
    Reclaim,
    /// Reclaimed: the next [`Notice::YouAreIn`] says where we are.
    RoomAfterReclaim,
    /// `/nick NICK` sent after a refused reclaim: waiting for its answer.
    Nick,
    /// With a certificate: the greeting's [`Notice::YouAreIn`] says where.
    Greeting,
    /// `/join #ROOM` sent: waiting for its answer.
    Join,
}

/// What the connection loop does after one server line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Step {
    /// Show the line (not what the client handles itself: the secret, a
    /// refused reclaim it asks again for).
    pub(super) show: bool,
    /// A line of the client's own to show first.
    pub(super) note: Option<String>,
    /// Lines to send, in order.
    pub(super) send: Vec<String>,
    /// Back in the nick and room (or as near as the server let us): every
    /// line typed from now on goes straight out.
    pub(super) ready: bool,
    /// Set with `ready` when the connection is not the nick, or not in the
    /// room, that the lines typed while away were typed as and in (the
    /// nick was taken meanwhile, the room refused): why those lines are
    /// not sent. They were meant for other eyes, under another name.
    pub(super) not_as_typed: Option<String>,
}

impl Step {
    fn show() -> Step {
        Step {
            show: true,
            note: None,
            send: Vec::new(),
            ready: false,
            not_as_typed: None,
        }
    }
}

/// The restoring of one connection after another.
#[derive(Debug)]
pub(super) struct Restorer {
    /// The wording the server's notices are read in.
    wording: &'static Wording,
    me: Me,
    stage: Stage,
}

impl Restorer {
    /// Knows nothing yet; reads notices in `wording`.
    pub(super) fn new(wording: &'static Wording) -> Restorer {
        Restorer {
            wording,
            me: Me::default(),
            stage: Stage::Done,
        }
    }

    /// True when typed lines may go straight out.
    pub(super) fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// A new connection: the client's first lines on it. On the first
    /// (`returning` false), `/nick` if one was `asked` and `/token`; on a
    /// later one, whatever takes back the nick and the room. With a
    /// `certificate`, the server knows who we are: no secret is asked for.
    pub(super) fn begin(
        &mut self,
        returning: bool,
        certificate: bool,
        asked: Option<&str>,
    ) -> Vec<String> {
        self.me.nick_now = None;
        self.me.room_now = None;
        let mut send = Vec::new();
        self.stage = Stage::Done;
        if !returning {
            if let Some(nick) = asked {
                send.push(format!("/nick {nick}"));
            }
            if !certificate {
                send.push("/token".to_string());
            }
            return send;
        }
        if certificate {
            // The certificate is the nick; the server puts the new session
            // where the person is, or in the lobby if nobody held it.
            self.stage = Stage::Greeting;
            return send;
        }
        match (&self.me.secret, &self.me.nick) {
            (Some((for_nick, secret)), Some(nick)) if for_nick.eq_ignore_ascii_case(nick) => {
                send.push(format!("/reclaim {nick} {secret}"));
                self.stage = Stage::Reclaim;
            }
            (_, Some(nick)) => {
                send.push(format!("/nick {nick}"));
                send.push("/token".to_string());
                self.stage = Stage::Nick;
            }
            _ => send.push("/token".to_string()),
        }
        send
    }

    /// Reads a notice's text: the reading this connection waits for if
    /// there are several, else the likeliest.
    pub(super) fn notice<'a>(&self, text: &'a str) -> Option<Notice<'a>> {
        let mut readings = Notice::readings_in(self.wording, text);
        let wanted = readings
            .iter()
            .position(|notice| self.awaits(notice))
            .unwrap_or(0);
        (wanted < readings.len()).then(|| readings.swap_remove(wanted))
    }

    /// Reads an error's text as a refusal, if it is one.
    fn refusal<'a>(&self, text: &'a str) -> Option<Refusal<'a>> {
        Refusal::parse_in(self.wording, text)
    }

    /// True if an error the server sent before closing says the refusal
    /// may pass (a full server; too many connections, often our own
    /// ghosts, which it drops within two minutes): worth coming back.
    pub(super) fn passes(&self, error: &str) -> bool {
        self.refusal(error).is_some_and(|refusal| refusal.passes())
    }

    /// Whether `notice` is the answer the restoring waits for.
    fn awaits(&self, notice: &Notice<'_>) -> bool {
        match (self.stage, notice) {
            (Stage::Reclaim, Notice::YouAreBack { nick } | Notice::YouAreAlready { nick }) => {
                self.is_me(nick)
            }
            (Stage::Nick, Notice::YouAreNow { .. } | Notice::YouAreAlready { .. }) => true,
            (Stage::RoomAfterReclaim | Stage::Greeting, Notice::YouAreIn { .. }) => true,
            (Stage::Join, Notice::YouAreIn { .. } | Notice::AlreadyIn { .. }) => true,
            _ => false,
        }
    }

    /// One server line, with its notice as read by [`Restorer::notice`]:
    /// learn from it, and move the restoring on.
    pub(super) fn take(
        &mut self,
        line: Option<&ServerLine<'_>>,
        notice: Option<&Notice<'_>>,
    ) -> Step {
        let mut step = Step::show();
        match line {
            Some(ServerLine::Token { nick, secret }) => {
                self.me.secret = Some((nick.to_string(), secret.to_string()));
                step.show = false;
            }
            Some(ServerLine::Notice(_)) => {
                if let Some(notice) = notice {
                    self.learn(notice);
                }
                if self.stage == Stage::Done {
                    self.me.nick.clone_from(&self.me.nick_now);
                    self.me.room.clone_from(&self.me.room_now);
                }
                if let Some(notice) = notice {
                    self.restoring(notice, &mut step);
                }
            }
            Some(ServerLine::Error(text)) => {
                let refused_reclaim =
                    matches!(self.refusal(text), Some(Refusal::CannotReclaim { .. }));
                if self.stage == Stage::Reclaim && refused_reclaim {
                    step.show = false;
                    let nick = self.me.nick.clone().unwrap_or_default();
                    step.note = Some(format!(
                        "{nick} could not be taken back (the server forgot it): asking for it again"
                    ));
                    step.send.push(format!("/nick {nick}"));
                    step.send.push("/token".to_string());
                    self.stage = Stage::Nick;
                } else if self.stage != Stage::Done {
                    // The nick is taken, the room refused, or anything else
                    // unexpected: the user sees why, and goes on from where
                    // the server put us, rather than wait for an answer
                    // that will not come.
                    self.finish(&mut step);
                }
            }
            _ => {}
        }
        step
    }

    /// What a notice says of this connection: its nick, its room.
    fn learn(&mut self, notice: &Notice<'_>) {
        match notice {
            Notice::YouAre { nick, .. }
            | Notice::YouAreNow { nick }
            | Notice::YouAreBack { nick } => self.me.nick_now = Some(nick.to_string()),
            Notice::YouAreIn { room, .. } => self.me.room_now = Some(room.to_string()),
            _ => {}
        }
    }

    /// Moves the restoring on after a notice.
    fn restoring(&mut self, notice: &Notice<'_>, step: &mut Step) {
        if !self.awaits(notice) {
            return;
        }
        match (self.stage, notice) {
            (Stage::Reclaim, Notice::YouAreBack { .. }) => self.stage = Stage::RoomAfterReclaim,
            // The nick was ours already (a restarted server gave this
            // connection the same guest number): nothing to take back.
            (Stage::Reclaim | Stage::Nick, _) => self.back_to_room(None, step),
            (Stage::RoomAfterReclaim | Stage::Greeting, Notice::YouAreIn { room, .. }) => {
                self.back_to_room(Some(room), step)
            }
            _ => self.finish(step),
        }
    }

    /// Joins the room we were in, unless `here` (by default, where the
    /// server last said we are) is that room.
    fn back_to_room(&mut self, here: Option<&str>, step: &mut Step) {
        let here = here
            .or(self.me.room_now.as_deref())
            .unwrap_or(LOBBY)
            .to_string();
        match &self.me.room {
            Some(room) if !room.eq_ignore_ascii_case(&here) => {
                step.send.push(format!("/join {room}"));
                self.stage = Stage::Join;
            }
            _ => self.finish(step),
        }
    }

    /// Back where we were (or as near as the server let us): this is who
    /// we come back as next time.
    fn finish(&mut self, step: &mut Step) {
        self.stage = Stage::Done;
        step.ready = true;
        step.not_as_typed = self.not_as_before();
        self.me.nick.clone_from(&self.me.nick_now);
        self.me.room.clone_from(&self.me.room_now);
    }

    /// How this connection differs from the nick and room the client was
    /// before it was away, if it does (compared as the server compares).
    fn not_as_before(&self) -> Option<String> {
        let me = &self.me;
        let differs = |before: &Option<String>, now: &Option<String>| match (before, now) {
            (Some(before), Some(now)) => !before.eq_ignore_ascii_case(now),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !differs(&me.nick, &me.nick_now) && !differs(&me.room, &me.room_now) {
            return None;
        }
        let name = |value: &Option<String>| value.clone().unwrap_or_else(|| "?".into());
        Some(format!(
            "typed as {} in {}, and this connection is {} in {}",
            name(&me.nick),
            name(&me.room),
            name(&me.nick_now),
            name(&me.room_now)
        ))
    }

    /// True if `nick` is ours, compared as the server does (ignoring case).
    fn is_me(&self, nick: &str) -> bool {
        self.me
            .nick
            .as_deref()
            .is_some_and(|me| me.eq_ignore_ascii_case(nick))
    }
}

#[cfg(test)]
mod tests;
