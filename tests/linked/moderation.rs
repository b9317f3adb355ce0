//! Moderation across two linked servers: a ban, a mute and a kick made on
//! one reach the person on the other; a kill and a server ban made on one
//! disconnect there, and the ban is refused on reconnecting; a server
//! that starts later knows the bans from Redis; a kick or kill forged in
//! Redis is not obeyed.

use std::ffi::OsStr;
use std::fs;

use secure_chat::tls::{Fingerprint, Identity};
use secure_chat_test_support::{
    cert_args, ClientFlaw, Incoming, Pki, Redis, ServerProcess, TestClient,
};

use super::{next_error, node, person, wait_name_free, Two};

/// Sends `/join ROOM` and reads up to where the client is in it.
fn enter(client: &mut TestClient, room: &str) {
    client.send(&format!("/join {room}"));
    let here = format!("notice you are in {room} (");
    client.recv_until(|line| line.starts_with(&here));
}

/// `op` makes `room` on its server (so, nobody having been in it on any
/// server, is its operator), says a line there (so that it exists in
/// Redis from then on), and sees each of `others` come in.
fn room_of(redis: &Redis, op: &mut TestClient, others: &mut [&mut TestClient], room: &str) {
    enter(op, room);
    redis.wait_subscribed(room, 1);
    op.send("first");
    op.recv_until(|line| line == format!("chat {} first", op.nick));
    op.send("/bans");
    op.recv_until(|line| {
        line == format!("notice operators of {room}: {} (while connected)", op.nick)
    });
    for other in others.iter_mut() {
        enter(other, room);
        let joined = format!("notice {} joined {room}", other.nick);
        op.recv_until(|line| line == joined);
    }
}

#[test]
fn a_ban_and_a_mute_made_on_one_server_hold_on_the_other() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let mut op = person(&two.a, pki, "op");
    let mut troll = person(&two.b, pki, "troll");
    let mut loud = person(&two.b, pki, "loud");
    room_of(redis, &mut op, &mut [&mut troll, &mut loud], "#den");
    // The room existed when they came: neither made it.
    troll.send("/kick op");
    assert_eq!(
        next_error(&troll),
        "error you are not an operator of #den: /bans lists who is"
    );

    op.send("/ban troll 1h spamming links");
    let banned = troll.recv_until(|line| line.starts_with("notice op banned troll from #den ("));
    assert!(banned.ends_with(" left): spamming links"), "{banned}");
    let sent = "notice troll was sent from #den to the lobby by op: banned: spamming links";
    assert_eq!(troll.recv(), sent);
    assert!(troll.recv().starts_with("notice you are in #lobby ("));
    // The room hears it once, from the troll's server.
    op.recv_until(|line| line == sent);
    loud.recv_until(|line| line == sent);
    troll.send("/join #den");
    let refused = next_error(&troll);
    assert!(
        refused.starts_with("error you are banned from #den by op (")
            && refused.ends_with(" left): spamming links"),
        "{refused}"
    );

    op.send("/mute loud 10m shouting");
    loud.recv_until(|line| line.starts_with("notice op muted loud in #den ("));
    // Said on a after the mute, it comes after it everywhere: b has the
    // mute by the time loud sees it.
    op.send("quiet now");
    loud.recv_until(|line| line == "chat op quiet now");
    loud.send("HELLO");
    let refused = next_error(&loud);
    assert!(
        refused.starts_with("error you are muted in #den by op ("),
        "{refused}"
    );
    op.send("/unmute loud");
    loud.recv_until(|line| line == "notice op unmuted loud in #den");
    op.send("speak");
    loud.recv_until(|line| line == "chat op speak");
    loud.send("thanks");
    op.recv_until(|line| line == "chat op speak");
    // The refused line never went anywhere.
    assert_eq!(op.recv_non_notice(), "chat loud thanks");

    // Redis keeps the rules, as long as their ban runs at least.
    let mut raw = redis.connection(&redis.url());
    let rules: String = redis::cmd("HGET")
        .arg("room:{#den}:rules")
        .arg("text")
        .query(&mut raw)
        .expect("HGET");
    assert!(rules.starts_with("ban "), "{rules}");
    assert!(!rules.contains("mute "), "{rules}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("room:{#den}:rules")
        .query(&mut raw)
        .expect("PTTL");
    assert!(ttl > 0, "{ttl}");

    // A server that starts now was told nothing, and one holds no rules
    // for a room nobody there is in: it has them from Redis with the
    // room's past, once someone there enters the room, each time.
    drop(troll);
    wait_name_free(redis, "troll");
    let c = node(pki, redis, "c");
    let mut troll = person(&c, pki, "troll");
    for _ in 0..2 {
        troll.send("/join #den");
        // Sent out before the room's past is shown: not a line of it.
        loop {
            let line = troll.recv();
            if line == sent {
                break;
            }
            assert!(
                !line.starts_with("history "),
                "shown the past of a room it is banned from: {line}"
            );
        }
        assert!(troll.recv().starts_with("notice you are in #lobby ("));
    }
    drop((op, loud, troll));
    c.stop();
    two.stop();
}

#[test]
fn a_kick_made_on_one_server_reaches_the_other() {
    let two = Two::start(&[]);
    let (redis, pki) = (&two.redis, &two.pki);
    let mut op = person(&two.a, pki, "op");
    let mut noisy = person(&two.b, pki, "noisy");
    room_of(redis, &mut op, &mut [&mut noisy], "#den");
    op.send("/kick noisy calm down");
    let sent = "notice noisy was sent from #den to the lobby by op: calm down";
    noisy.recv_until(|line| line == sent);
    assert!(noisy.recv().starts_with("notice you are in #lobby ("));
    // The room hears it once, from their server.
    op.recv_until(|line| line == sent);
    op.send("gone?");
    assert_eq!(op.recv_non_notice(), "chat op gone?");
    // Nobody by that name anywhere.
    op.send("/kick nobody");
    assert_eq!(next_error(&op), "error no user named nobody is connected");
    drop((op, noisy));
    two.stop();
}

#[test]
fn a_kick_or_kill_forged_in_redis_is_not_obeyed() {
    let redis = Redis::start(&[]);
    let pki = Pki::new();
    let url = redis.url();
    let root = pki.client_identity("root", ClientFlaw::None);
    let file = pki.path("operators");
    let key = Fingerprint::of_certificate_file(&root.cert).unwrap();
    fs::write(&file, format!("{key}\n")).unwrap();
    let a = moderated_node(&pki, &url, "a", file.as_os_str());
    let b = moderated_node(&pki, &url, "b", file.as_os_str());
    // The room's operator by key: a kick without one is not theirs.
    let mut op = join_as(&a, &pki, &root);
    redis.wait_subscribed("#lobby", 1);
    let mut noisy = TestClient::connect(b.addr, &pki.ca);
    noisy.send("/nick noisy");
    noisy.recv_until(|line| line == "notice you are now noisy");
    noisy.nick = "noisy".to_owned();
    op.recv_until(|line| line.ends_with(" is now noisy"));
    enter(&mut op, "#den");
    redis.wait_subscribed("#den", 1);
    op.send("first");
    op.recv_until(|line| line == "chat root first");
    enter(&mut noisy, "#den");
    op.recv_until(|line| line == "notice noisy joined #den");
    let mut raw = redis.connection(&redis.url());
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("node:b/*")
        .query(&mut raw)
        .expect("PUBSUB CHANNELS");
    assert_eq!(channels.len(), 1, "{channels:?}");
    // Whoever can write to Redis, saying they are a server operator, or
    // naming no key, or a key no operator of anything has.
    let nobody = Fingerprint::of_spki(b"nobody's key");
    for forged in [
        "m noisy kill mallory 1 - gone".to_owned(),
        "m noisy kick mallory 1 - #den out".to_owned(),
        "m noisy kick mallory 0 - #den out".to_owned(),
        format!("m noisy kill mallory 1 {nobody} gone"),
        format!("m noisy kick mallory 1 {nobody} #den out"),
    ] {
        redis::cmd("PUBLISH")
            .arg(&channels[0])
            .arg(forged)
            .exec(&mut raw)
            .expect("PUBLISH");
    }
    // The room's operator's kick comes the same way, after them: when it
    // is done, they were handled.
    op.send("/kick noisy calm down");
    let sent = "notice noisy was sent from #den to the lobby by root: calm down";
    let mut heard = Vec::new();
    loop {
        let line = noisy.recv();
        if line == sent {
            break;
        }
        heard.push(line);
    }
    assert!(
        !heard.iter().any(|line| line.contains("mallory")),
        "{heard:?}"
    );
    drop((op, noisy));
    a.stop();
    b.stop();
}

/// `chat-server --redis URL --node-name NODE --client-ca CA --guests
/// --operators FILE`.
fn moderated_node(pki: &Pki, redis_url: &str, node: &str, operators: &OsStr) -> ServerProcess {
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend([
        OsStr::new("--redis"),
        OsStr::new(redis_url),
        OsStr::new("--node-name"),
        OsStr::new(node),
        OsStr::new("--client-ca"),
        pki.signer.as_os_str(),
        OsStr::new("--guests"),
        OsStr::new("--operators"),
        operators,
    ]);
    ServerProcess::start(&args)
}

/// A client that presents `identity` and has read its greeting.
fn join_as(server: &ServerProcess, pki: &Pki, identity: &Identity) -> TestClient {
    let mut client = TestClient::connect_as(server.addr, &pki.ca, identity);
    client.read_greeting();
    client
}

#[test]
fn a_server_ban_made_on_one_server_disconnects_and_refuses_on_the_others() {
    let redis = Redis::start(&[]);
    let pki = Pki::new();
    let url = redis.url();
    let root = pki.client_identity("root", ClientFlaw::None);
    let troll = pki.client_identity("troll", ClientFlaw::None);
    let file = pki.path("operators");
    let key = Fingerprint::of_certificate_file(&root.cert).unwrap();
    // Each server reads its own file: linked servers are given the same.
    fs::write(&file, format!("{key}\n")).unwrap();
    let a = moderated_node(&pki, &url, "a", file.as_os_str());
    let mut b = moderated_node(&pki, &url, "b", file.as_os_str());
    let mut root_client = join_as(&a, &pki, &root);
    redis.wait_subscribed("#lobby", 1);
    let troll_client = join_as(&b, &pki, &troll);
    root_client.recv_until(|line| line == "notice troll joined #lobby");
    // A guest on b, disconnected from a.
    let mut pest = TestClient::connect(b.addr, &pki.ca);
    pest.send("/nick pest");
    pest.recv_until(|line| line == "notice you are now pest");
    // Renamed: root hears it, so a has heard the name is taken.
    root_client.recv_until(|line| line.ends_with(" is now pest"));
    root_client.send("/kill pest enough");
    assert_eq!(
        next_error(&pest),
        "error you were disconnected by root: enough"
    );
    assert!(matches!(pest.expect_end(), Incoming::Closed));
    // The answer to the act and the room's notice come by two ways (the
    // act's reply, the lobby's order): either may be first.
    let mut heard = [root_client.recv(), root_client.recv()];
    heard.sort();
    assert_eq!(
        heard,
        [
            "notice pest quit: disconnected by root: enough",
            "notice you disconnected pest"
        ]
    );

    root_client.send("/serverban troll 1d trolling");
    let told = "error you are banned from this server by root (";
    let line = troll_client.recv_until(|line| line.starts_with("error "));
    assert!(
        line.starts_with(told) && line.ends_with(" left): trolling"),
        "{line}"
    );
    assert!(matches!(troll_client.expect_end(), Incoming::Closed));
    root_client.recv_until(|line| line == "notice troll quit: banned from the server by root");
    // Refused when connecting to that server again...
    b.wait_for_log(|line| line.ends_with("1 server bans, as the other servers have them"));
    let again = TestClient::connect_as(b.addr, &pki.ca, &troll);
    let line = again.recv();
    assert!(line.starts_with(told), "{line}");
    assert!(matches!(again.expect_end(), Incoming::Closed));
    // ... and to one started after the ban, which reads it from Redis
    // before anyone can connect there: connected to at once.
    let mut c = moderated_node(&pki, &url, "c", file.as_os_str());
    let late = TestClient::connect_as(c.addr, &pki.ca, &troll);
    let line = late.recv();
    assert!(line.starts_with(told), "{line}");
    assert!(matches!(late.expect_end(), Incoming::Closed));

    // Lifted on a, it is lifted everywhere.
    root_client.send("/serverunban troll");
    root_client.recv_until(|line| line == "notice root lifted the server ban on troll");
    c.wait_for_log(|line| line.ends_with("0 server bans, as the other servers have them"));
    let back = join_as(&c, &pki, &troll);
    assert_eq!(back.nick, "troll");
    drop((root_client, back));
    for server in [a, b, c] {
        server.stop();
    }
}
