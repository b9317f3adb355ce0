//! Tab in the line editor: commands (moderation's too) at the start of a
//! line, rooms for a word that starts with `#`, elsewhere the nicks of the
//! room, learnt from the typed notices and lines that arrive. It reads no
//! text of the server's: what it learns comes parsed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::Helper;

use super::keyboard::lock;
use crate::protocol::{self, Notice, ServerLine};

/// Tab: commands at the start of a line, rooms after `#`, nicks elsewhere.
pub(super) struct Completion {
    roster: Arc<Mutex<Roster>>,
}

impl Completion {
    /// Completes nicks from `roster`, which the connection loop keeps.
    pub(super) fn new(roster: Arc<Mutex<Roster>>) -> Completion {
        Completion { roster }
    }

    /// What Tab offers for the word that ends at `pos` in `line`: where
    /// that word starts, and the words it may become.
    pub(super) fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let start = line[..pos].rfind(' ').map_or(0, |space| space + 1);
        let word = &line[start..pos];
        let candidates = if start == 0 && word.starts_with('/') {
            command_candidates(word)
        } else if word.starts_with('#') {
            lock(&self.roster).rooms_starting_with(word)
        } else {
            lock(&self.roster).starting_with(word)
        };
        (start, candidates)
    }
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, candidates) = self.candidates(line, pos);
        let pairs = candidates
            .into_iter()
            .map(|name| Pair {
                display: name.clone(),
                replacement: format!("{name} "),
            })
            .collect();
        Ok((start, pairs))
    }
}

/// The commands whose names start with `prefix`.
fn command_candidates(prefix: &str) -> Vec<String> {
    protocol::all_commands()
        .map(|info| info.name)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

/// The nicks of the room, as learnt from what arrives: senders, arrivals,
/// departures, renames and `/who` answers; and the rooms heard of: those
/// we were in, and `/rooms` answers. No request of its own: it may miss
/// someone who has said nothing since we came, until the next `/who`, and
/// keeps a room that has since emptied, until the next `/rooms`.
#[derive(Debug, Default)]
pub(super) struct Roster {
    /// By lower case, as the server compares them; the value as spelled.
    nicks: BTreeMap<String, String>,
    /// Rooms, likewise.
    rooms: BTreeMap<String, String>,
}

impl Roster {
    fn add(&mut self, nick: &str) {
        if !nick.is_empty() && !nick.contains(' ') {
            self.nicks
                .insert(nick.to_ascii_lowercase(), nick.to_string());
        }
    }

    fn remove(&mut self, nick: &str) {
        self.nicks.remove(&nick.to_ascii_lowercase());
    }

    fn add_room(&mut self, room: &str) {
        self.rooms
            .insert(room.to_ascii_lowercase(), room.to_string());
    }

    /// The nicks that start with `prefix`, in any case.
    pub(super) fn starting_with(&self, prefix: &str) -> Vec<String> {
        starting_with(&self.nicks, prefix)
    }

    /// The rooms that start with `prefix` (`#` included), in any case.
    pub(super) fn rooms_starting_with(&self, prefix: &str) -> Vec<String> {
        starting_with(&self.rooms, prefix)
    }

    /// Learns from one server line, and from its notice as read (the
    /// reader chooses the reading: see [`Notice::readings_in`]).
    pub(super) fn learn(&mut self, line: Option<&ServerLine<'_>>, notice: Option<&Notice<'_>>) {
        match line {
            Some(ServerLine::Chat { from, .. } | ServerLine::Action { from, .. }) => self.add(from),
            Some(ServerLine::Private { from, to, .. }) => {
                self.add(from);
                self.add(to);
            }
            _ => {}
        }
        match notice {
            // Another room: other people.
            Some(Notice::YouAreIn { room, .. }) => {
                self.nicks.clear();
                self.add_room(room);
            }
            Some(Notice::AlreadyIn { room }) => self.add_room(room),
            Some(Notice::Rooms(list)) => {
                if list.page.is_none() {
                    // The whole list: rooms since emptied are gone.
                    self.rooms.clear();
                }
                for (room, _) in &list.rooms {
                    self.add_room(room);
                }
            }
            Some(Notice::Who(list)) => {
                for name in &list.names {
                    self.add(name);
                }
            }
            Some(Notice::Renamed { old, new }) => {
                self.remove(old);
                self.add(new);
            }
            Some(Notice::Joined { nick, .. }) => self.add(nick),
            Some(
                Notice::Left { nick, .. } | Notice::Quit { nick, .. } | Notice::Kicked { nick, .. },
            ) => self.remove(nick),
            _ => {}
        }
    }
}

/// The values of `names` whose keys start with `prefix` in lower case.
fn starting_with(names: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    let prefix = prefix.to_ascii_lowercase();
    names
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, name)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_complete_by_prefix() {
        assert_eq!(command_candidates("/jo"), ["/join"]);
        assert_eq!(command_candidates("/who"), ["/who", "/whois"]);
        assert!(command_candidates("/x").is_empty());
        assert_eq!(command_candidates("/ki"), ["/kick", "/kill"]);
        assert_eq!(command_candidates("/ba"), ["/ban", "/bans"]);
        assert_eq!(command_candidates("/unm"), ["/unmute"]);
        assert_eq!(
            command_candidates("/server"),
            ["/serverban", "/serverunban"]
        );
    }

    fn learn(roster: &mut Roster, line: &str) {
        let parsed = ServerLine::parse(line);
        let notice = match parsed {
            Some(ServerLine::Notice(text)) => Notice::parse(text),
            _ => None,
        };
        roster.learn(parsed.as_ref(), notice.as_ref());
    }

    #[test]
    fn the_roster_follows_the_room() {
        let mut roster = Roster::default();
        for line in [
            "notice in #lobby (3): alice, bob, Carol",
            "chat dave hi",
            "notice erin joined #lobby",
            "notice bob is now robert",
            "notice alice quit: lunch",
            "notice dave quit",
            "notice erin left #lobby",
            "notice troll joined #lobby",
            "chat troll spam",
            "notice troll was sent from #lobby to the lobby by Carol: spam",
        ] {
            learn(&mut roster, line);
        }
        assert_eq!(roster.starting_with(""), ["Carol", "robert"]);
        assert_eq!(roster.starting_with("c"), ["Carol"]);
        learn(
            &mut roster,
            "notice in #big (2500), 1 to 100: x, y; /who 2 for more",
        );
        assert_eq!(roster.starting_with("x"), ["x"]);
        assert_eq!(roster.starting_with("y"), ["y"]);
        // A remark after the list is not a name.
        learn(
            &mut roster,
            "notice in #big (1): zed (this server only: the link to the others is down)",
        );
        assert_eq!(roster.starting_with("z"), ["zed"]);
        learn(&mut roster, "notice you are in #rust (1 person here)");
        assert!(roster.starting_with("").is_empty());
    }

    #[test]
    fn rooms_are_learnt_from_where_we_go_and_from_rooms_answers() {
        let mut roster = Roster::default();
        learn(&mut roster, "notice you are in #lobby (2 people here)");
        learn(&mut roster, "notice you are in #Rust (1 person here)");
        assert_eq!(roster.rooms_starting_with("#"), ["#lobby", "#Rust"]);
        learn(
            &mut roster,
            "notice rooms, 1 to 50: #lobby (3), #rustls (1); /rooms 2 for more",
        );
        assert_eq!(roster.rooms_starting_with("#r"), ["#Rust", "#rustls"]);
        // A whole list replaces what was known: #Rust has emptied.
        learn(&mut roster, "notice rooms: #lobby (3), #tea (2)");
        assert_eq!(roster.rooms_starting_with("#"), ["#lobby", "#tea"]);
    }

    #[test]
    fn tab_offers_commands_first_and_nicks_after() {
        let roster = Arc::new(Mutex::new(Roster::default()));
        learn(&mut lock(&roster), "notice in #lobby (2): alice, Albert");
        let completion = Completion::new(roster);
        assert_eq!(
            completion.candidates("/wh", 3),
            (0, vec!["/who".into(), "/whois".into()])
        );
        assert_eq!(
            completion.candidates("hi al", 5),
            (3, vec!["Albert".into(), "alice".into()])
        );
        assert_eq!(
            completion.candidates("/msg ali", 8),
            (5, vec!["alice".into()])
        );
        learn(
            &mut lock(&completion.roster),
            "notice you are already in #rust",
        );
        assert_eq!(
            completion.candidates("/join #r", 8),
            (6, vec!["#rust".into()])
        );
        assert!(completion.candidates("/join r", 7).1.is_empty());
    }
}
