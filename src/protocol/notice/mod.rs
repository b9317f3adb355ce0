//! The notices and refusals a client acts on, as typed values: who it is,
//! where, who came and went, who and which rooms are there, why it was
//! refused. Written and read with one table, [`WORDING`], so no client
//! matches English; other notices (help, topics) stay free text, only shown.

use std::fmt::{self, Display, Write};

use super::{Nick, Room};

mod template;

use template::{capture, fill, suffixes, Caught};

/// The wording of every notice and refusal a client acts on: one template
/// each, with slots in braces (`{nick}`). Writing fills the slots; reading
/// matches the text against the same template, so that a change here
/// changes both at once.
///
/// What a slot may hold is set by its name: `nick`, `old` and `new` are
/// nicks (and `by`, who did it), `room` a room, `names` nicks joined by `separator`, `rooms`
/// rooms each written as `room_count` and joined likewise, `count`,
/// `here`, `sessions`, `max`, `first`, `last` and `next` numbers, `ip` a
/// word, `reason` and `remark` any text. Two slots never touch: the text
/// between them is what tells where one ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wording {
    /// [`Notice::YouAre`] without sessions: the name given on arrival.
    pub you_are: &'static str,
    /// [`Notice::YouAre`] with sessions (client certificates).
    pub you_are_sessions: &'static str,
    /// [`Notice::YouAreNow`].
    pub you_are_now: &'static str,
    /// [`Notice::YouAreBack`].
    pub you_are_back: &'static str,
    /// [`Notice::YouAreAlready`].
    pub you_are_already: &'static str,
    /// [`Notice::YouAreIn`] with more than one person here (or none).
    pub you_are_in: &'static str,
    /// [`Notice::YouAreIn`] alone in the room.
    pub you_are_in_alone: &'static str,
    /// [`Notice::AlreadyIn`].
    pub already_in: &'static str,
    /// [`Notice::Joined`].
    pub joined: &'static str,
    /// [`Notice::Left`].
    pub left: &'static str,
    /// [`Notice::Renamed`].
    pub renamed: &'static str,
    /// [`Notice::Quit`] without a reason.
    pub quit: &'static str,
    /// [`Notice::Quit`] with a reason.
    pub quit_because: &'static str,
    /// [`Notice::Kicked`] without a reason.
    pub kicked: &'static str,
    /// [`Notice::Kicked`] with a reason.
    pub kicked_because: &'static str,
    /// [`Notice::Who`] when every name fits on one page.
    pub who: &'static str,
    /// [`Notice::Who`], one page of several.
    pub who_page: &'static str,
    /// After a [`Notice::Who`] page that is not the last.
    pub who_more: &'static str,
    /// [`Notice::Rooms`] when every room fits on one page.
    pub rooms: &'static str,
    /// [`Notice::Rooms`], one page of several.
    pub rooms_page: &'static str,
    /// After a [`Notice::Rooms`] page that is not the last.
    pub rooms_more: &'static str,
    /// One room of a [`Notice::Rooms`] list, and how many are in it.
    pub room_count: &'static str,
    /// After an answer, a remark on it (see [`WhoList::remark`]).
    pub remark: &'static str,
    /// Between two names of a list.
    pub separator: &'static str,
    /// [`Refusal::ServerFull`].
    pub server_full: &'static str,
    /// [`Refusal::TooManyFromAddress`].
    pub too_many_from_address: &'static str,
    /// [`Refusal::TooManySessions`].
    pub too_many_sessions: &'static str,
    /// [`Refusal::CannotReclaim`].
    pub cannot_reclaim: &'static str,
}

/// The wording the server speaks (PROTOCOL.md shows each).
pub const WORDING: Wording = Wording {
    you_are: "you are {nick}",
    you_are_sessions: "you are {nick} ({sessions} sessions)",
    you_are_now: "you are now {nick}",
    you_are_back: "you are {nick} again",
    you_are_already: "you are already {nick}",
    you_are_in: "you are in {room} ({here} people here)",
    you_are_in_alone: "you are in {room} ({here} person here)",
    already_in: "you are already in {room}",
    joined: "{nick} joined {room}",
    left: "{nick} left {room}",
    renamed: "{old} is now {new}",
    quit: "{nick} quit",
    quit_because: "{nick} quit: {reason}",
    kicked: "{nick} was sent from {room} to the lobby by {by}",
    kicked_because: "{nick} was sent from {room} to the lobby by {by}: {reason}",
    who: "in {room} ({count}): {names}",
    who_page: "in {room} ({count}), {first} to {last}: {names}",
    who_more: "; /who {next} for more",
    rooms: "rooms: {rooms}",
    rooms_page: "rooms, {first} to {last}: {rooms}",
    rooms_more: "; /rooms {next} for more",
    room_count: "{room} ({count})",
    remark: " ({remark})",
    separator: ", ",
    server_full: "server full ({max} clients); try again later",
    too_many_from_address: "too many connections from {ip} ({here}); close one and try again",
    too_many_sessions: "{nick} has {max} sessions already, the most one person may have; \
                        close one and try again",
    cannot_reclaim: "cannot reclaim {nick}: no connection of yours holds it with that secret \
                     (if it is free, take it with /nick {nick})",
};

/// A `notice` a client acts on. Read with [`Notice::parse`], written with
/// `to_string` (or [`Notice::write_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<'a> {
    /// `you are NICK`: this connection's name, on arrival; with
    /// `sessions`, it is one more session of a person with a certificate.
    YouAre {
        /// The name.
        nick: &'a str,
        /// How many sessions the person has now, this one included.
        sessions: Option<usize>,
    },
    /// `you are now NICK`: a `/nick` took effect.
    YouAreNow {
        /// The new name.
        nick: &'a str,
    },
    /// `you are NICK again`: a `/reclaim` took effect; where the nick
    /// was ([`Notice::YouAreIn`]) follows.
    YouAreBack {
        /// The name taken back.
        nick: &'a str,
    },
    /// `you are already NICK`: a `/nick` or `/reclaim` of the name this
    /// connection has.
    YouAreAlready {
        /// The name.
        nick: &'a str,
    },
    /// `you are in #ROOM (N people here)`: this connection entered a room.
    YouAreIn {
        /// The room.
        room: &'a str,
        /// How many people are in it, this one included.
        here: usize,
    },
    /// `you are already in #ROOM`: a `/join` of the room this connection
    /// is in.
    AlreadyIn {
        /// The room.
        room: &'a str,
    },
    /// `NICK joined #ROOM`: someone came into the room.
    Joined {
        /// Who came.
        nick: &'a str,
        /// The room (this connection's).
        room: &'a str,
    },
    /// `NICK left #ROOM`: someone went to another room.
    Left {
        /// Who went.
        nick: &'a str,
        /// The room (this connection's).
        room: &'a str,
    },
    /// `OLD is now NEW`: someone in the room changed nick.
    Renamed {
        /// The name before.
        old: &'a str,
        /// The name after.
        new: &'a str,
    },
    /// `NICK quit` or `NICK quit: REASON`: someone in the room left the chat.
    Quit {
        /// Who left.
        nick: &'a str,
        /// Their words on leaving, if any.
        reason: Option<&'a str>,
    },
    /// `NICK was sent from #ROOM to the lobby by OP`, perhaps with `:
    /// REASON`: an operator kicked or banned someone (perhaps this
    /// connection) out of the room.
    Kicked {
        /// Who was sent away.
        nick: &'a str,
        /// The room they left.
        room: &'a str,
        /// The operator who did it.
        by: &'a str,
        /// Why, if the operator said.
        reason: Option<&'a str>,
    },
    /// `in #ROOM (N): a, b`: the answer to `/who`.
    Who(WhoList<'a>),
    /// `rooms: #a (N), #b (M)`: the answer to `/rooms`.
    Rooms(RoomList<'a>),
}

/// One page of the answer to `/who`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoList<'a> {
    /// The room.
    pub room: &'a str,
    /// How many people are in it, on every page together.
    pub count: usize,
    /// Which page this is, when the names take more than one.
    pub page: Option<Page>,
    /// The nicks on this page, in order.
    pub names: Vec<&'a str>,
    /// A remark on the answer as a whole (`this server only: ...`), shown
    /// to people; nothing a client acts on.
    pub remark: Option<&'a str>,
}

/// One page of the answer to `/rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomList<'a> {
    /// Which page this is, when the rooms take more than one.
    pub page: Option<Page>,
    /// The rooms on this page, in order, each with how many are in it.
    pub rooms: Vec<(&'a str, usize)>,
    /// A remark on the answer as a whole, as for [`WhoList::remark`].
    pub remark: Option<&'a str>,
}

/// Where one page of a list is among all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The place of its first item, from 1.
    pub first: usize,
    /// The place of its last item.
    pub last: usize,
    /// The number of the page after it, unless it is the last.
    pub next: Option<usize>,
}

/// An `error` a client acts on: it says whether coming back later may be
/// let in, or which reclaim failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<'a> {
    /// The server has as many clients as it takes; then it closes.
    ServerFull {
        /// `--max-clients`.
        max: usize,
    },
    /// Too many connections from this address; then the server closes.
    TooManyFromAddress {
        /// The address, as the server saw it.
        ip: &'a str,
        /// How many it has.
        here: usize,
    },
    /// A certificate's person has as many sessions as one may; then the
    /// server closes.
    TooManySessions {
        /// The person.
        nick: &'a str,
        /// The most one may have.
        max: usize,
    },
    /// `/reclaim NICK SECRET` refused: nobody holds NICK with that secret.
    CannotReclaim {
        /// The nick asked for.
        nick: &'a str,
    },
}

impl<'a> Notice<'a> {
    /// Reads a notice's text (after `notice `) in the server's wording;
    /// `None` for a notice no client acts on.
    pub fn parse(text: &'a str) -> Option<Notice<'a>> {
        Notice::parse_in(&WORDING, text)
    }

    /// Reads a notice's text in `wording`.
    pub fn parse_in(wording: &Wording, text: &'a str) -> Option<Notice<'a>> {
        Notice::readings_in(wording, text).into_iter().next()
    }

    /// Every way `text` reads in `wording`, the likeliest first. Almost
    /// always one or none; a nick that is a word of the wording can make
    /// two (`you are now again`: `now` reclaimed, or a rename to `again`),
    /// and only the reader knows which it was waiting for.
    pub fn readings_in(wording: &Wording, text: &'a str) -> Vec<Notice<'a>> {
        type Make<'a> = fn(&Caught<'a>) -> Option<Notice<'a>>;
        // Two wordings (one person here, or several), one notice.
        let you_are_in: Make<'a> = |c| {
            Some(Notice::YouAreIn {
                room: c.text("room")?,
                here: c.number("here")?,
            })
        };
        let kinds: [(&str, Make<'a>); 15] = [
            (wording.you_are_sessions, |c| {
                Some(Notice::YouAre {
                    nick: c.text("nick")?,
                    sessions: Some(c.number("sessions")?),
                })
            }),
            (wording.you_are_now, |c| {
                Some(Notice::YouAreNow {
                    nick: c.text("nick")?,
                })
            }),
            (wording.you_are_back, |c| {
                Some(Notice::YouAreBack {
                    nick: c.text("nick")?,
                })
            }),
            (wording.already_in, |c| {
                Some(Notice::AlreadyIn {
                    room: c.text("room")?,
                })
            }),
            (wording.you_are_already, |c| {
                Some(Notice::YouAreAlready {
                    nick: c.text("nick")?,
                })
            }),
            (wording.you_are_in, you_are_in),
            (wording.you_are_in_alone, you_are_in),
            (wording.you_are, |c| {
                Some(Notice::YouAre {
                    nick: c.text("nick")?,
                    sessions: None,
                })
            }),
            (wording.joined, |c| {
                Some(Notice::Joined {
                    nick: c.text("nick")?,
                    room: c.text("room")?,
                })
            }),
            (wording.left, |c| {
                Some(Notice::Left {
                    nick: c.text("nick")?,
                    room: c.text("room")?,
                })
            }),
            (wording.renamed, |c| {
                Some(Notice::Renamed {
                    old: c.text("old")?,
                    new: c.text("new")?,
                })
            }),
            (wording.quit_because, |c| {
                Some(Notice::Quit {
                    nick: c.text("nick")?,
                    reason: Some(c.text("reason")?),
                })
            }),
            (wording.quit, |c| {
                Some(Notice::Quit {
                    nick: c.text("nick")?,
                    reason: None,
                })
            }),
            (wording.kicked_because, |c| {
                Some(Notice::Kicked {
                    nick: c.text("nick")?,
                    room: c.text("room")?,
                    by: c.text("by")?,
                    reason: Some(c.text("reason")?),
                })
            }),
            (wording.kicked, |c| {
                Some(Notice::Kicked {
                    nick: c.text("nick")?,
                    room: c.text("room")?,
                    by: c.text("by")?,
                    reason: None,
                })
            }),
        ];
        let mut readings: Vec<Notice<'a>> = kinds
            .iter()
            .filter_map(|(template, make)| make(&capture_in(wording, template, text)?))
            .collect();
        readings.extend(who_list(wording, text).map(Notice::Who));
        readings.extend(room_list(wording, text).map(Notice::Rooms));
        readings
    }

    /// The notice's text (without `notice `) in `wording`.
    pub fn write_in(&self, wording: &Wording) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_to(&mut text, wording);
        text
    }

    fn write_to(&self, out: &mut impl Write, w: &Wording) -> fmt::Result {
        match *self {
            Notice::YouAre {
                nick,
                sessions: None,
            } => fill(out, w.you_are, &[("nick", &nick)]),
            Notice::YouAre {
                nick,
                sessions: Some(sessions),
            } => fill(
                out,
                w.you_are_sessions,
                &[("nick", &nick), ("sessions", &sessions)],
            ),
            Notice::YouAreNow { nick } => fill(out, w.you_are_now, &[("nick", &nick)]),
            Notice::YouAreBack { nick } => fill(out, w.you_are_back, &[("nick", &nick)]),
            Notice::YouAreAlready { nick } => fill(out, w.you_are_already, &[("nick", &nick)]),
            Notice::YouAreIn { room, here } => {
                let template = if here == 1 {
                    w.you_are_in_alone
                } else {
                    w.you_are_in
                };
                fill(out, template, &[("room", &room), ("here", &here)])
            }
            Notice::AlreadyIn { room } => fill(out, w.already_in, &[("room", &room)]),
            Notice::Joined { nick, room } => {
                fill(out, w.joined, &[("nick", &nick), ("room", &room)])
            }
            Notice::Left { nick, room } => fill(out, w.left, &[("nick", &nick), ("room", &room)]),
            Notice::Renamed { old, new } => fill(out, w.renamed, &[("old", &old), ("new", &new)]),
            Notice::Quit { nick, reason: None } => fill(out, w.quit, &[("nick", &nick)]),
            Notice::Quit {
                nick,
                reason: Some(reason),
            } => fill(out, w.quit_because, &[("nick", &nick), ("reason", &reason)]),
            Notice::Kicked {
                nick,
                room,
                by,
                reason,
            } => {
                let slots: [(&str, &dyn Display); 4] = [
                    ("nick", &nick),
                    ("room", &room),
                    ("by", &by),
                    ("reason", &reason.unwrap_or_default()),
                ];
                let template = match reason {
                    Some(_) => w.kicked_because,
                    None => w.kicked,
                };
                fill(out, template, &slots)
            }
            Notice::Who(ref list) => list.write_to(out, w),
            Notice::Rooms(ref list) => list.write_to(out, w),
        }
    }
}

impl Display for Notice<'_> {
    /// The text in the server's wording, [`WORDING`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f, &WORDING)
    }
}

impl WhoList<'_> {
    fn write_to(&self, out: &mut impl Write, w: &Wording) -> fmt::Result {
        let names = Listed(&self.names, w.separator);
        let (room, count) = (&self.room, &self.count);
        match self.page {
            None => fill(
                out,
                w.who,
                &[("room", room), ("count", count), ("names", &names)],
            )?,
            Some(page) => {
                let slots: [(&str, &dyn Display); 5] = [
                    ("room", room),
                    ("count", count),
                    ("first", &page.first),
                    ("last", &page.last),
                    ("names", &names),
                ];
                fill(out, w.who_page, &slots)?;
                if let Some(next) = page.next {
                    fill(out, w.who_more, &[("next", &next)])?;
                }
            }
        }
        match self.remark {
            Some(remark) => fill(out, w.remark, &[("remark", &remark)]),
            None => Ok(()),
        }
    }
}

impl RoomList<'_> {
    fn write_to(&self, out: &mut impl Write, w: &Wording) -> fmt::Result {
        let rooms = RoomsListed(&self.rooms, w);
        match self.page {
            None => fill(out, w.rooms, &[("rooms", &rooms)])?,
            Some(page) => {
                let slots: [(&str, &dyn Display); 3] = [
                    ("first", &page.first),
                    ("last", &page.last),
                    ("rooms", &rooms),
                ];
                fill(out, w.rooms_page, &slots)?;
                if let Some(next) = page.next {
                    fill(out, w.rooms_more, &[("next", &next)])?;
                }
            }
        }
        match self.remark {
            Some(remark) => fill(out, w.remark, &[("remark", &remark)]),
            None => Ok(()),
        }
    }
}

/// Reads `text` as an answer to `/rooms`, as [`who_list`] does for `/who`.
fn room_list<'a>(w: &Wording, text: &'a str) -> Option<RoomList<'a>> {
    let templates = (w.rooms, w.rooms_page, w.rooms_more);
    paged_answer(w, text, templates, |caught, page, remark| {
        let rooms = split_names(w, caught.text("rooms")?)
            .map(|item| {
                let room = capture_in(w, w.room_count, item)?;
                Some((room.text("room")?, room.number("count")?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RoomList {
            page,
            rooms,
            remark,
        })
    })
}

/// Reads `text` as an answer to `/who`: the list, then perhaps which page
/// comes next, then perhaps a remark.
fn who_list<'a>(w: &Wording, text: &'a str) -> Option<WhoList<'a>> {
    let templates = (w.who, w.who_page, w.who_more);
    paged_answer(w, text, templates, |caught, page, remark| {
        Some(WhoList {
            room: caught.text("room")?,
            count: caught.number("count")?,
            page,
            names: split_names(w, caught.text("names")?).collect(),
            remark,
        })
    })
}

/// The shape the answers to `/who` and `/rooms` share: the list, whole
/// (`whole`) or one page of it (`one_page`, then `more` naming the next
/// page if there is one), then perhaps a remark. Every way of cutting the
/// text into those parts is tried, and `read` makes the answer from the
/// first that fits.
fn paged_answer<'a, T>(
    w: &Wording,
    text: &'a str,
    (whole, one_page, more): (&str, &str, &str),
    read: impl Fn(Caught<'a>, Option<Page>, Option<&'a str>) -> Option<T>,
) -> Option<T> {
    let holds = |slot: &str, value: &str| holds(w, slot, value);
    for (text, remark) in suffixes(w.remark, "remark", text, &holds) {
        for (body, next) in suffixes(more, "next", text, &holds) {
            let next = match next {
                Some(next) => Some(next.parse().ok()?),
                None => None,
            };
            let all = capture_in(w, whole, body).filter(|_| next.is_none());
            let (caught, page) = match all {
                Some(caught) => (caught, None),
                None => {
                    let Some(caught) = capture_in(w, one_page, body) else {
                        continue;
                    };
                    let page = Page {
                        first: caught.number("first")?,
                        last: caught.number("last")?,
                        next,
                    };
                    (caught, Some(page))
                }
            };
            return read(caught, page, remark);
        }
    }
    None
}

impl Page {
    /// Page `number` (from 1) of `count` items, `per_page` a page; `None`
    /// when they all fit on one page, which then needs no numbers.
    pub fn of(number: usize, count: usize, per_page: usize) -> Option<Page> {
        if count <= per_page {
            return None;
        }
        let first = number.saturating_sub(1) * per_page + 1;
        let last = (first - 1 + per_page).min(count);
        Some(Page {
            first,
            last,
            next: (last < count).then_some(number + 1),
        })
    }
}

/// Rooms and their counts, each as `room_count`, joined by the separator.
struct RoomsListed<'b>(&'b [(&'b str, usize)], &'b Wording);

impl Display for RoomsListed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (room, count)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1.separator)?;
            }
            fill(f, self.1.room_count, &[("room", room), ("count", count)])?;
        }
        Ok(())
    }
}

impl<'a> Refusal<'a> {
    /// Reads an error's text (after `error `) in the server's wording;
    /// `None` for an error no client acts on.
    pub fn parse(text: &'a str) -> Option<Refusal<'a>> {
        Refusal::parse_in(&WORDING, text)
    }

    /// Reads an error's text in `wording`.
    pub fn parse_in(w: &Wording, text: &'a str) -> Option<Refusal<'a>> {
        if let Some(c) = capture_in(w, w.server_full, text) {
            return Some(Refusal::ServerFull {
                max: c.number("max")?,
            });
        }
        if let Some(c) = capture_in(w, w.too_many_from_address, text) {
            return Some(Refusal::TooManyFromAddress {
                ip: c.text("ip")?,
                here: c.number("here")?,
            });
        }
        if let Some(c) = capture_in(w, w.too_many_sessions, text) {
            return Some(Refusal::TooManySessions {
                nick: c.text("nick")?,
                max: c.number("max")?,
            });
        }
        let c = capture_in(w, w.cannot_reclaim, text)?;
        Some(Refusal::CannotReclaim {
            nick: c.text("nick")?,
        })
    }

    /// True for a refusal that may pass if the client comes back later:
    /// a full server, or too many connections (often the client's own,
    /// which the server drops when it notices they are gone).
    pub fn passes(&self) -> bool {
        !matches!(self, Refusal::CannotReclaim { .. })
    }

    /// The error's text (without `error `) in `wording`.
    pub fn write_in(&self, wording: &Wording) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_to(&mut text, wording);
        text
    }

    fn write_to(&self, out: &mut impl Write, w: &Wording) -> fmt::Result {
        match *self {
            Refusal::ServerFull { max } => fill(out, w.server_full, &[("max", &max)]),
            Refusal::TooManyFromAddress { ip, here } => fill(
                out,
                w.too_many_from_address,
                &[("ip", &ip), ("here", &here)],
            ),
            Refusal::TooManySessions { nick, max } => {
                fill(out, w.too_many_sessions, &[("nick", &nick), ("max", &max)])
            }
            Refusal::CannotReclaim { nick } => fill(out, w.cannot_reclaim, &[("nick", &nick)]),
        }
    }
}

impl Display for Refusal<'_> {
    /// The text in the server's wording, [`WORDING`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f, &WORDING)
    }
}

/// Names joined by a separator, written without a `String` of their own.
struct Listed<'b>(&'b [&'b str], &'static str);

impl Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// [`capture`] with what `w`'s slots may hold.
fn capture_in<'a>(w: &Wording, template: &str, text: &'a str) -> Option<Caught<'a>> {
    capture(template, text, &|slot, value| holds(w, slot, value))
}

/// Whether a slot named `slot` may hold `value` (see [`Wording`]).
fn holds(w: &Wording, slot: &str, value: &str) -> bool {
    match slot {
        "nick" | "old" | "new" | "by" => Nick::parse(value).is_ok(),
        "room" => Room::parse(value).is_ok(),
        "names" => value.is_empty() || split_names(w, value).all(|name| Nick::parse(name).is_ok()),
        "rooms" => split_names(w, value).all(|item| capture_in(w, w.room_count, item).is_some()),
        "count" | "here" | "sessions" | "max" | "first" | "last" | "next" => {
            !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_digit())
                && value.parse::<usize>().is_ok()
        }
        "ip" => !value.is_empty() && !value.contains(char::is_whitespace),
        "reason" | "remark" => true,
        _ => false,
    }
}

fn split_names<'a>(w: &Wording, names: &'a str) -> impl Iterator<Item = &'a str> + use<'a> {
    let separator = w.separator;
    (!names.is_empty())
        .then(|| names.split(separator))
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests;
