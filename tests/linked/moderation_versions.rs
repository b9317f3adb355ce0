//! A room's rules across linked servers, at the seam (`Linked`, no chat):
//! a change made on a stale copy is added to what it missed, unless both
//! pass the bounds; rules are read again after an outage, and written back
//! if Redis lost them; the rules' key outlives the room while a ban runs;
//! the order holds markers, which do not cut a newcomer's past.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use secure_chat::chat::{Keep, RoomId, Save};
use secure_chat::elsewhere::{Ask, Elsewhere, RoomLine, Told, Waiting};
use secure_chat::linked::redis_link::{Delivery, LinkSettings, RedisLink, RULES_KEPT_MOST};
use secure_chat::linked::Linked;
use secure_chat_test_support::{quick_link, unframe, Redis};

/// The longest any one wait here takes.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A server's end of the link, and what its link delivers.
struct Server {
    linked: Linked,
    deliveries: Receiver<Delivery>,
}

impl Server {
    fn start(url: &str, node: &str, settings: LinkSettings) -> Server {
        let (link, deliveries) = RedisLink::start(url, node, settings).expect("link");
        Server {
            linked: Linked::new(link),
            deliveries,
        }
    }

    /// Hands the seam what the link delivers, as the hub would, until
    /// it tells something `want` takes; what came before it, in order.
    fn until(&mut self, mut want: impl FnMut(&Told) -> bool) -> (Told, Vec<Told>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let delivery = self
                .deliveries
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("nothing wanted within {TIMEOUT:?}: {before:?}"));
            let told = self.linked.delivered(delivery);
            self.linked.event_done();
            if want(&told) {
                return (told, before);
            }
            before.push(told);
        }
    }

    /// Enters `room` (number `id`) and takes its past.
    fn enter(&mut self, id: u64, room: &str) {
        let key = room.to_owned();
        self.linked.entered(RoomId(id), &|| Some(key.clone()));
        self.until(|told| matches!(told, Told::Recent { .. }));
    }

    /// Changes the rules of `room` to `rules`, whole, as the chat does.
    fn save(&mut self, room: &str, rules: &str) {
        self.linked.save(Save::Rules {
            room: room.to_owned(),
            rules: Some(rules.to_owned()),
        });
        self.linked.event_done();
    }

    /// Says `text` in room `id`, and waits until it is back from Redis.
    fn say(&mut self, id: u64, text: &str) {
        let line = RoomLine {
            room: RoomId(id),
            line: format!("chat a {text}\n").into(),
            except: None,
            keep: Keep::History,
        };
        assert!(self.linked.say(line.clone(), &|| None).is_none(), "sent");
        self.linked.event_done();
        self.until(|told| shows(told, &line.line));
    }
}

/// Whether `told` shows `line` here.
fn shows(told: &Told, line: &str) -> bool {
    matches!(told, Told::Lines(lines) if lines.iter().any(|back| &*back.line == line))
}

/// The lines a field of a history entry keeps: a batch (`lines`,
/// framed), or one (`line`, a marker of the rules); none for another
/// field.
fn kept(name: &str, text: &str) -> Vec<String> {
    match name {
        "line" => vec![text.to_owned()],
        "lines" => unframe(text),
        _ => Vec::new(),
    }
}

/// Changes the Redis user `bee`, whom server b logs in as, so that a test
/// can shut b out (`off`) and let it back (`on`).
fn bee(raw: &mut redis::Connection, rules: &[&str]) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("bee")
        .arg(rules)
        .exec(raw)
        .expect("ACL SETUSER");
}

/// Cuts server b off: its user may not log in again, and its
/// connections are closed.
fn shut_out_bee(raw: &mut redis::Connection) {
    bee(raw, &["off"]);
    redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "bee"][..])
        .exec(raw)
        .expect("CLIENT KILL");
}

/// The rules `told` gives, if it gives `room`'s.
fn rules_of<'t>(told: &'t Told, room: &str) -> Option<Option<&'t str>> {
    match told {
        Told::Rules { room: r, rules } if r == room => Some(rules.as_deref()),
        _ => None,
    }
}

/// A time in Unix seconds, `ahead` from now.
fn unix_in(ahead: Duration) -> u64 {
    (SystemTime::now() + ahead)
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn a_change_made_on_a_stale_copy_is_added_to_what_it_missed() {
    let redis = Redis::start(&[]);
    let url = redis.url();
    let mut a = Server::start(&url, "a", quick_link());
    let mut b = Server::start(&url, "b", quick_link());
    a.enter(1, "#den");
    b.enter(1, "#den");
    let ban = "ban - op troll spam";
    a.save("#den", ban);
    a.until(|told| rules_of(told, "#den") == Some(Some(ban)));
    // b has not looked at what its link delivered: its copy is the one
    // from before the ban, and its change (an invitation) is made on it.
    b.save("#den", "invited alice");
    let (told, _) = a.until(|told| rules_of(told, "#den").is_some_and(|r| r != Some(ban)));
    let rules = rules_of(&told, "#den").flatten().expect("rules");
    let lines: Vec<&str> = rules.lines().collect();
    assert_eq!(lines, [ban, "invited alice"], "the ban survives");
    // b adopts them too, once it hears them, in the room's order.
    let (told, _) = b.until(|told| rules_of(told, "#den").is_some_and(|r| r == Some(rules)));
    assert_eq!(rules_of(&told, "#den"), Some(Some(rules)));
    // A change on the copy both now share takes away what it leaves out.
    b.save("#den", ban);
    a.until(|told| rules_of(told, "#den") == Some(Some(ban)));
    drop((a, b));
}

#[test]
fn rules_changed_while_a_server_was_away_are_read_again_when_it_is_back() {
    let redis = Redis::start(&[]);
    let mut raw = redis.connection(&redis.url());
    // b logs in as a user of its own, whom the test can shut out.
    bee(&mut raw, &["on", ">pw", "~*", "&*", "+@all"]);
    let settings = LinkSettings {
        // The ban's entry in the room's order is trimmed before b is
        // back: only reading the rules themselves tells it of the ban.
        history: 4,
        ..quick_link()
    };
    let mut a = Server::start(&redis.url(), "a", settings.clone());
    let b_url = format!("redis://bee:pw@127.0.0.1:{}", redis.port);
    let mut b = Server::start(&b_url, "b", settings);
    a.enter(1, "#den");
    b.enter(1, "#den");

    shut_out_bee(&mut raw);
    b.until(|told| matches!(told, Told::Unreachable { .. }));
    let ban = "ban - op troll spam";
    a.save("#den", ban);
    a.until(|told| rules_of(told, "#den") == Some(Some(ban)));
    for n in 0..10 {
        a.say(1, &format!("line {n}"));
    }
    bee(&mut raw, &["on"]);
    let (_, before) = b.until(|told| matches!(told, Told::Reachable { .. }));
    assert!(
        before
            .iter()
            .any(|told| rules_of(told, "#den") == Some(Some(ban))),
        "the rules were not read again: {before:?}"
    );
    drop((a, b));
}

#[test]
fn the_rules_outlive_the_room_while_a_ban_runs_and_the_order_holds_a_marker() {
    let redis = Redis::start(&[]);
    let room_ttl = Duration::from_secs(60);
    let settings = LinkSettings {
        room_ttl,
        ..quick_link()
    };
    let mut a = Server::start(&redis.url(), "a", settings);
    let mut raw = redis.connection(&redis.url());
    let pttl = |raw: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL")
            .arg("room:{#den}:rules")
            .query(raw)
            .expect("PTTL")
    };
    a.enter(1, "#den");
    a.say(1, "hello");
    let day = Duration::from_secs(86_400);
    let ban = format!("ban {} op troll spam", unix_in(day));
    a.save("#den", &ban);
    a.until(|told| rules_of(told, "#den") == Some(Some(&ban)));
    let left = pttl(&mut raw);
    assert!(
        left > (day - Duration::from_secs(600)).as_millis() as i64,
        "the rules lapse in {left} ms, before the ban ends"
    );
    // The room's order holds no rules, only word that they changed.
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&["room:{#den}:history", "-", "+"][..])
        .query(&mut raw)
        .expect("XRANGE");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        !format!("{entries:?}").contains("troll"),
        "the rules are in the room's order: {entries:?}"
    );

    // A ban without an end keeps them as long as rules are kept at most,
    // not for good; rules without a ban, as long as the room.
    let forever = "ban - op troll spam";
    a.save("#den", forever);
    a.until(|told| rules_of(told, "#den") == Some(Some(forever)));
    let left = pttl(&mut raw);
    let most = RULES_KEPT_MOST.as_millis() as i64;
    assert!(left > most - 600_000 && left <= most, "kept {left} ms");
    a.save("#den", "invite-only");
    a.until(|told| rules_of(told, "#den") == Some(Some("invite-only")));
    let left = pttl(&mut raw);
    assert!(left > 0 && left <= room_ttl.as_millis() as i64, "{left} ms");
    drop(a);
}

#[test]
fn a_change_made_while_the_past_is_awaited_keeps_its_place() {
    let redis = Redis::start(&[]);
    let mut a = Server::start(&redis.url(), "a", quick_link());
    let mut raw = redis.connection(&redis.url());
    a.linked.entered(RoomId(1), &|| Some("#den".to_owned()));
    // Said and changed before the room's past came: they wait for it.
    let line = |text: &str| RoomLine {
        room: RoomId(1),
        line: format!("chat a {text}\n").into(),
        except: None,
        keep: Keep::History,
    };
    assert!(a.linked.say(line("before"), &|| None).is_none());
    a.save("#den", "invite-only");
    assert!(a.linked.say(line("after"), &|| None).is_none());
    a.linked.event_done();
    let (told, _) = a.until(|told| matches!(told, Told::Recent { .. }));
    let Told::Recent { waiting, .. } = told else {
        unreachable!()
    };
    let change = Waiting::Rules {
        room: "#den".to_owned(),
        rules: Some("invite-only".to_owned()),
    };
    let expected = [
        Waiting::Line(line("before")),
        change,
        Waiting::Line(line("after")),
    ];
    assert_eq!(waiting, expected);
    // As the chat lets them through, and the hub hands them on.
    for waited in waiting {
        match waited {
            Waiting::Line(line) => assert!(a.linked.say(line, &|| None).is_none()),
            Waiting::Rules { room, rules } => {
                assert!(a.linked.ask(Ask::Rules { room, rules }).is_ok());
            }
        }
    }
    a.linked.event_done();
    a.until(|told| shows(told, &line("after").line));
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&["room:{#den}:history", "-", "+"][..])
        .query(&mut raw)
        .expect("XRANGE");
    let order: Vec<String> = entries
        .iter()
        .flat_map(|(_, fields)| fields.iter().flat_map(|(name, text)| kept(name, text)))
        .collect();
    assert_eq!(
        order,
        ["h - chat a before\n", "v 1", "h - chat a after\n"],
        "the change went ahead of a line said before it"
    );
    drop(a);
}

#[test]
fn redis_losing_its_data_lifts_no_ban_nor_server_ban() {
    let redis = Redis::start(&[]);
    let url = redis.url();
    let mut a = Server::start(&url, "a", quick_link());
    let mut raw = redis.connection(&url);
    a.enter(1, "#den");
    let ban = "ban - op troll spam";
    a.save("#den", ban);
    a.until(|told| rules_of(told, "#den") == Some(Some(ban)));
    let server_ban = "ban - root troll trolling";
    a.linked.save(Save::ServerBans(Some(server_ban.to_owned())));
    a.until(|told| matches!(told, Told::ServerBans(Some(bans)) if bans == server_ban));

    redis::cmd("FLUSHALL").exec(&mut raw).expect("FLUSHALL");
    redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"][..])
        .exec(&mut raw)
        .expect("CLIENT KILL");
    let (_, before) = a.until(|told| matches!(told, Told::Reachable { .. }));
    assert!(
        !before.iter().any(|told| rules_of(told, "#den").is_some()),
        "the rules Redis lost were adopted: {before:?}"
    );
    assert!(
        !before.iter().any(
            |told| matches!(told, Told::ServerBans(bans) if bans.as_deref() != Some(server_ban))
        ),
        "the server bans Redis lost were adopted: {before:?}"
    );
    let bans: Option<String> = redis::cmd("GET")
        .arg("chat:server-bans")
        .query(&mut raw)
        .expect("GET");
    assert_eq!(bans.as_deref(), Some(server_ban), "not written back");
    // This server's copy is written back, and read in the room's order.
    a.linked.event_done();
    a.until(|told| rules_of(told, "#den") == Some(Some(ban)));
    let text: Option<String> = redis::cmd("HGET")
        .arg(&["room:{#den}:rules", "text"][..])
        .query(&mut raw)
        .expect("HGET");
    assert_eq!(text.as_deref(), Some(ban));
    // A server entering now finds the ban, not a fresh room.
    let mut b = Server::start(&url, "b", quick_link());
    b.linked.entered(RoomId(1), &|| Some("#den".to_owned()));
    let (told, _) = b.until(|told| matches!(told, Told::Recent { .. }));
    let Told::Recent { rules, fresh, .. } = told else {
        unreachable!()
    };
    assert_eq!(rules, Some(Some(ban.to_owned())));
    assert!(!fresh, "the room counts as new");
    drop((a, b));
}

#[test]
fn a_change_merged_past_the_shared_bounds_is_dropped() {
    let redis = Redis::start(&[]);
    let url = redis.url();
    let mut a = Server::start(&url, "a", quick_link());
    let mut b = Server::start(&url, "b", quick_link());
    let mut raw = redis.connection(&url);
    a.enter(1, "#den");
    b.enter(1, "#den");
    let bans = |who: &str| -> String {
        let lines: Vec<String> = (0..100).map(|n| format!("ban - op {who}{n}")).collect();
        lines.join("\n")
    };
    // Each within the bounds (a hundred bans), both together over them.
    let theirs = bans("troll");
    a.save("#den", &theirs);
    a.until(|told| rules_of(told, "#den") == Some(Some(&theirs)));
    // b has not heard of a's: its change is made again on them.
    b.save("#den", &bans("pest"));
    // The change is handled before the line that follows it.
    b.say(1, "after");
    let (version, text): (u64, String) = redis::cmd("HMGET")
        .arg(&["room:{#den}:rules", "version", "text"][..])
        .query(&mut raw)
        .expect("HMGET");
    assert_eq!(version, 1, "a merge past the bounds was written");
    assert_eq!(text, theirs);
    drop((a, b));
}

#[test]
fn a_newcomer_is_shown_as_many_lines_however_often_the_rules_changed() {
    let redis = Redis::start(&[]);
    let url = redis.url();
    let settings = LinkSettings {
        recent: 3,
        ..quick_link()
    };
    let mut a = Server::start(&url, "a", settings.clone());
    a.enter(1, "#den");
    for n in 0..3 {
        a.say(1, &format!("line {n}"));
    }
    // More changes of rules since than lines a newcomer is shown.
    for n in 0..5 {
        let rules = format!("ban - op troll{n}");
        a.save("#den", &rules);
        a.until(|told| rules_of(told, "#den") == Some(Some(&rules)));
    }
    let mut b = Server::start(&url, "b", settings);
    b.linked.entered(RoomId(1), &|| Some("#den".to_owned()));
    let (told, _) = b.until(|told| matches!(told, Told::Recent { .. }));
    let Told::Recent { lines, .. } = told else {
        unreachable!()
    };
    let lines: Vec<&str> = lines.iter().map(|line| &**line).collect();
    assert_eq!(
        lines,
        ["chat a line 0\n", "chat a line 1\n", "chat a line 2\n"]
    );
    drop((a, b));
}

#[test]
fn a_change_made_while_the_link_is_down_goes_when_it_is_back_on_what_moved() {
    let redis = Redis::start(&[]);
    let mut raw = redis.connection(&redis.url());
    bee(&mut raw, &["on", ">pw", "~*", "&*", "+@all"]);
    let mut a = Server::start(&redis.url(), "a", quick_link());
    let b_url = format!("redis://bee:pw@127.0.0.1:{}", redis.port);
    let mut b = Server::start(&b_url, "b", quick_link());
    a.enter(1, "#den");
    b.enter(1, "#den");
    shut_out_bee(&mut raw);
    b.until(|told| matches!(told, Told::Unreachable { .. }));
    // Made on both sides of the outage.
    let ban = "ban - op troll spam";
    a.save("#den", ban);
    a.until(|told| rules_of(told, "#den") == Some(Some(ban)));
    b.save("#den", "invited alice");
    bee(&mut raw, &["on"]);
    // Back, b reads a's ban and keeps its own change on it meanwhile...
    let both = format!("{ban}\ninvited alice");
    let (_, before) = b.until(|told| matches!(told, Told::Reachable { .. }));
    assert!(
        before
            .iter()
            .any(|told| rules_of(told, "#den") == Some(Some(&both))),
        "{before:?}"
    );
    // ... then sends it, made on them: every server has both.
    a.until(|told| rules_of(told, "#den") == Some(Some(&both)));
    drop((a, b));
}
