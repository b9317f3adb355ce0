//! Moderation over real TLS connections, on one server: a room operator
//! bans, mutes and kicks; a server operator named in `--operators`
//! disconnects someone; the file is reloaded on SIGHUP; and with
//! `--guests` a client without a certificate is a guest beside those who
//! present one, and gives up a certificate's name when its holder comes.

use secure_chat_test_support as support;

use std::ffi::OsStr;
use std::fs;

use secure_chat::tls::{Fingerprint, Identity};
use support::{cert_args, ClientFlaw, Incoming, Pki, ServerProcess, TestClient, TestServer};

/// Sends `/join ROOM` and reads up to where the client is in it.
fn enter(client: &mut TestClient, room: &str) {
    client.send(&format!("/join {room}"));
    let here = format!("notice you are in {room} (");
    client.recv_until(|line| line.starts_with(&here));
}

/// A room made by `op` (so, its operator) with `others` in it, everyone
/// having seen everyone come in.
fn room_of(op: &mut TestClient, others: &mut [&mut TestClient], room: &str) {
    enter(op, room);
    op.send("/bans");
    assert_eq!(
        op.recv(),
        format!("notice operators of {room}: {} (while connected)", op.nick)
    );
    op.recv_until(|line| line.starts_with("notice modes of ") || line.contains(" has no modes"));
    for other in others.iter_mut() {
        enter(other, room);
        let joined = format!("notice {} joined {room}", other.nick);
        op.recv_until(|line| line == joined);
    }
}

#[test]
fn a_room_operator_bans_a_troll_who_is_told_why_and_refused_on_return() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut op = TestClient::connect(server.addr, &pki.ca);
    let mut troll = TestClient::connect(server.addr, &pki.ca);
    op.recv_until(|line| line.ends_with(" joined #lobby"));
    room_of(&mut op, &mut [&mut troll], "#den");

    op.send(&format!("/ban {} 1h spamming links", troll.nick));
    // Both share loopback: the ban is by nick alone.
    let banned = format!("notice {} banned {} from #den (", op.nick, troll.nick);
    let line = troll.recv();
    assert!(line.starts_with(&banned), "{line}");
    assert!(line.ends_with(" left): spamming links"), "{line}");
    assert_eq!(
        troll.recv(),
        format!(
            "notice {} was sent from #den to the lobby by {}: banned: spamming links",
            troll.nick, op.nick
        )
    );
    assert!(troll.recv().starts_with("notice you are in #lobby ("));

    troll.send("/join #den");
    let refused = troll.recv();
    let told = format!("error you are banned from #den by {} (", op.nick);
    assert!(refused.starts_with(&told), "{refused}");
    assert!(refused.ends_with(" left): spamming links"), "{refused}");
    // Still in the lobby, still chatting there.
    troll.send("fine");
    assert_eq!(troll.recv(), format!("chat {} fine", troll.nick));

    op.send(&format!("/unban {}", troll.nick));
    op.recv_until(|line| line.contains(" lifted the ban on "));
    enter(&mut troll, "#den");
    server.stop();
}

#[test]
fn a_muted_person_reads_but_is_refused_and_a_kicked_one_lands_in_the_lobby() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut op = TestClient::connect(server.addr, &pki.ca);
    let mut loud = TestClient::connect(server.addr, &pki.ca);
    op.recv_until(|line| line.ends_with(" joined #lobby"));
    room_of(&mut op, &mut [&mut loud], "#quiet");

    op.send(&format!("/mute {} 10m shouting", loud.nick));
    loud.recv_until(|line| line.contains(" muted "));
    loud.send("HELLO");
    let refused = loud.recv();
    let told = format!("error you are muted in #quiet by {} (", op.nick);
    assert!(refused.starts_with(&told), "{refused}");
    assert!(refused.ends_with(" left): shouting"), "{refused}");
    loud.send("/me stomps");
    assert!(loud.recv().starts_with(&told));
    // Reading goes on: the operator's line reaches them.
    op.send("calm now");
    assert_eq!(loud.recv(), format!("chat {} calm now", op.nick));

    op.send(&format!("/unmute {}", loud.nick));
    loud.recv_until(|line| line.contains(" unmuted "));
    loud.send("sorry");
    assert_eq!(loud.recv(), format!("chat {} sorry", loud.nick));

    op.send(&format!("/kick {} enough", loud.nick));
    assert_eq!(
        loud.recv_until(|line| line.contains(" was sent from ")),
        format!(
            "notice {} was sent from #quiet to the lobby by {}: enough",
            loud.nick, op.nick
        )
    );
    assert!(loud.recv().starts_with("notice you are in #lobby ("));
    // Nobody else may.
    loud.send(&format!("/kick {}", op.nick));
    assert_eq!(
        loud.recv(),
        "error you are not an operator of #lobby: /bans lists who is"
    );
    server.stop();
}

/// A client that presents `identity` and has read its greeting.
fn join_as(server: &ServerProcess, pki: &Pki, identity: &Identity) -> TestClient {
    let mut client = TestClient::connect_as(server.addr, &pki.ca, identity);
    client.read_greeting();
    client
}

fn fingerprint(identity: &Identity) -> Fingerprint {
    Fingerprint::of_certificate_file(&identity.cert).unwrap()
}

/// `chat-server --client-ca CA --guests --operators FILE`.
fn moderated_server(pki: &Pki, operators: &std::path::Path) -> ServerProcess {
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend([
        OsStr::new("--client-ca"),
        pki.signer.as_os_str(),
        OsStr::new("--guests"),
        OsStr::new("--operators"),
        operators.as_os_str(),
    ]);
    ServerProcess::start(&args)
}

#[test]
fn guests_beside_certificate_holders_and_an_operator_from_the_file_disconnects() {
    let pki = Pki::new();
    let root = pki.client_identity("root", ClientFlaw::None);
    let alice = pki.client_identity("alice", ClientFlaw::None);
    let file = pki.path("operators");
    fs::write(
        &file,
        format!("# who runs this server\n{}\n", fingerprint(&root)),
    )
    .unwrap();
    let mut server = moderated_server(&pki, &file);
    server.wait_for_log(|line| line.ends_with("1 server operators"));

    // No certificate: a guest, who may take another name.
    let mut guest = TestClient::connect(server.addr, &pki.ca);
    assert!(guest.nick.starts_with("guest"), "{}", guest.nick);
    guest.send("/nick visitor");
    assert_eq!(guest.recv(), "notice you are now visitor");
    // A certificate: its name, which stays.
    let mut alice = join_as(&server, &pki, &alice);
    assert_eq!(alice.nick, "alice");
    alice.send("/nick mallory");
    assert!(alice.recv().starts_with("error your nick is alice"));
    // One the CA did not sign is still refused.
    let stranger = pki.client_identity("eve", ClientFlaw::OtherCa);
    let eve = TestClient::connect_as(server.addr, &pki.ca, &stranger);
    match eve.next() {
        Incoming::Failed(why) => assert!(why.contains("UnknownCA"), "{why}"),
        other => panic!("{other:?}"),
    }

    // Alice is no operator; root, in the file, is.
    alice.send("/kill visitor");
    assert!(alice
        .recv()
        .starts_with("error only server operators may do that"));
    let mut root = join_as(&server, &pki, &root);
    root.send("/kill visitor flooding");
    assert_eq!(
        guest.recv_until(|line| line.starts_with("error ")),
        "error you were disconnected by root: flooding"
    );
    assert!(matches!(guest.expect_end(), Incoming::Closed));
    assert_eq!(
        alice.recv_until(|line| line.contains("visitor quit")),
        "notice visitor quit: disconnected by root: flooding"
    );
    let log = server.stop();
    assert!(
        log.iter()
            .any(|line| line.ends_with("root disconnected visitor: flooding")),
        "{log:#?}"
    );
}

#[test]
fn the_operators_file_is_reloaded_on_sighup_and_a_bad_one_keeps_the_old() {
    let pki = Pki::new();
    let root = pki.client_identity("root", ClientFlaw::None);
    let alice = pki.client_identity("alice", ClientFlaw::None);
    let bob = pki.client_identity("bob", ClientFlaw::None);
    let file = pki.path("operators");
    fs::write(&file, format!("{}\n", fingerprint(&root))).unwrap();
    let mut server = moderated_server(&pki, &file);
    let mut alice_client = join_as(&server, &pki, &alice);
    let bob_client = join_as(&server, &pki, &bob);
    alice_client.recv_until(|line| line == "notice bob joined #lobby");
    let ban = "/serverban bob 1h";
    alice_client.send(ban);
    assert!(alice_client
        .recv()
        .starts_with("error only server operators may do that"));

    // Named in the file, and the server told: the right, with no restart.
    fs::write(
        &file,
        format!("{}\n{}  # alice\n", fingerprint(&root), fingerprint(&alice)),
    )
    .unwrap();
    server.signal("-HUP");
    server.wait_for_log(|line| line.ends_with("reloaded the operators file: 2 keys"));
    alice_client.send("/mute bob 1m");
    alice_client.recv_until(|line| line.starts_with("notice alice muted bob"));

    // A file that does not read keeps the list as it was.
    fs::write(&file, "sha256:not-a-key\n").unwrap();
    server.signal("-HUP");
    let warning = server.wait_for_log(|line| line.contains("still using the previous operators"));
    assert!(warning.contains("line 1: "), "{warning}");
    alice_client.send(ban);
    let told = "error you are banned from this server by alice (";
    let line = bob_client.recv_until(|line| line.starts_with("error "));
    assert!(line.starts_with(told) && line.ends_with(" left)"), "{line}");
    assert!(matches!(bob_client.expect_end(), Incoming::Closed));
    // Refused when connecting again (by the certificate's key), with the
    // time left.
    let again = TestClient::connect_as(server.addr, &pki.ca, &bob);
    let line = again.recv();
    assert!(line.starts_with(told) && line.ends_with(" left)"), "{line}");
    assert!(matches!(again.expect_end(), Incoming::Closed));
    server.stop();
}

#[test]
fn a_bad_operators_file_or_guests_without_a_ca_stops_the_server_at_start() {
    let pki = Pki::new();
    let file = pki.path("operators");
    fs::write(&file, "# fine so far\n\nsha256:short\n").unwrap();
    let mut args = cert_args(&pki.cert, &pki.key);
    args.extend([OsStr::new("--operators"), file.as_os_str()]);
    let mut server = ServerProcess::spawn(&args);
    let (status, _) = server.wait_for_exit();
    assert!(!status.success());
    let said = server.seen.join("\n");
    assert!(
        said.contains(&format!("the operators file {}: line 3: ", file.display())),
        "{said}"
    );

    let mut args = cert_args(&pki.cert, &pki.key);
    args.push(OsStr::new("--guests"));
    let mut server = ServerProcess::spawn(&args);
    let (status, _) = server.wait_for_exit();
    assert!(!status.success());
    assert!(
        server
            .seen
            .join("\n")
            .contains("--guests needs --client-ca"),
        "{:?}",
        server.seen
    );
}

#[test]
fn a_guest_who_took_a_certificates_name_gives_it_up_when_its_holder_comes() {
    let pki = Pki::new();
    let root = pki.client_identity("root", ClientFlaw::None);
    let file = pki.path("operators");
    fs::write(&file, format!("{}\n", fingerprint(&root))).unwrap();
    let server = moderated_server(&pki, &file);
    let mut guest = TestClient::connect(server.addr, &pki.ca);
    let guest_name = guest.nick.clone();
    guest.send("/nick root");
    assert_eq!(guest.recv(), "notice you are now root");

    let mut root = join_as(&server, &pki, &root);
    assert_eq!(root.nick, "root");
    assert_eq!(
        guest.recv(),
        format!(
            "error root is the name in the certificate of someone who just connected, and a \
             certificate's name is its holder's: you are {guest_name} now"
        )
    );
    assert_eq!(guest.recv(), format!("notice you are now {guest_name}"));
    root.send(&format!("/kill {guest_name} squatting"));
    assert_eq!(
        guest.recv_until(|line| line.starts_with("error ")),
        "error you were disconnected by root: squatting"
    );
    assert!(matches!(guest.expect_end(), Incoming::Closed));
    server.stop();
}
