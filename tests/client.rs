//! The client as a person sees it: colours only on a terminal, and nothing
//! a server sends can drive the terminal.

use secure_chat_test_support as support;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread;

use rustls::{Connection, ServerConnection};
use secure_chat::duplex;
use secure_chat::tls;
use support::{run, Pki, TestServer, CLIENT, TIMEOUT};

fn client(addr: &str, pki: &Pki) -> Command {
    let mut command = Command::new(&CLIENT);
    command.args(["--addr", addr]).arg("--ca").arg(&pki.ca);
    command.env_remove("NO_COLOR");
    command
}

/// Runs the client on a pseudo-terminal (`script` from util-linux), as a
/// person at a terminal would.
fn on_terminal(client: &Command, no_color: Option<&str>) -> Command {
    let mut line = String::new();
    for part in std::iter::once(client.get_program()).chain(client.get_args()) {
        line.push_str(&format!("'{}' ", part.to_str().unwrap()));
    }
    let mut command = Command::new("script");
    command.args(["-qec", &line, "/dev/null"]);
    command.env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    command
}

fn printed(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const SCRIPT: &str = "hello\n/me waves\n/frob\n";

#[test]
fn piped_output_has_no_colour_but_every_kind_is_marked() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let addr = format!("localhost:{}", server.addr.port());
    let output = run(&mut client(&addr, &pki), SCRIPT);
    assert!(output.status.success());
    let text = printed(&output);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(
        text.contains("*** Welcome to the secure chat server!"),
        "{text}"
    );
    assert!(text.contains("> hello\n"), "{text}");
    assert!(text.contains("* guest"), "{text}");
    assert!(text.contains("!!! unknown command /frob"), "{text}");
    server.stop();
}

#[test]
fn a_terminal_gets_colours_unless_no_color_is_set() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let addr = format!("localhost:{}", server.addr.port());

    let coloured = printed(&run(&mut on_terminal(&client(&addr, &pki), None), SCRIPT));
    // Own nick in bold green, notices dimmed, errors in bold red.
    assert!(coloured.contains("<\x1b[1m\x1b[32mguest"), "{coloured:?}");
    assert!(coloured.contains("\x1b[2m*** Welcome"), "{coloured:?}");
    assert!(
        coloured.contains("\x1b[1m\x1b[31m!!! unknown command"),
        "{coloured:?}"
    );

    let plain = printed(&run(
        &mut on_terminal(&client(&addr, &pki), Some("1")),
        SCRIPT,
    ));
    assert!(plain.contains("*** Welcome"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
    server.stop();
}

#[test]
fn nick_flag_sets_the_nick_and_a_taken_one_is_explained() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let mut holder = support::TestClient::connect(server.addr, &pki.ca);
    holder.send("/nick alice");
    assert_eq!(holder.recv(), "notice you are now alice");
    let addr = format!("localhost:{}", server.addr.port());

    let mut taken = client(&addr, &pki);
    taken.args(["--nick", "Alice"]);
    let text = printed(&run(&mut taken, "hello\n"));
    assert!(
        text.contains("!!! nick Alice is taken; choose another"),
        "{text}"
    );

    let mut free = client(&addr, &pki);
    free.args(["--nick", "bob"]);
    let text = printed(&run(&mut free, "hello\n"));
    assert!(text.contains("*** you are now bob"), "{text}");
    assert!(text.contains("<bob> hello"), "{text}");

    let mut invalid = client(&addr, &pki);
    invalid.args(["--nick", "9lives"]);
    let output = run(&mut invalid, "");
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("--nick \"9lives\" is not a valid nick"),
        "{message}"
    );
    server.stop();
}

#[test]
fn nothing_a_server_sends_can_drive_the_terminal() {
    let pki = Pki::new();
    let config = tls::server_config(&pki.cert, &pki.key, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("localhost:{}", listener.local_addr().unwrap().port());
    // A hostile server: escape sequences, a C1 control, a bell, a
    // carriage return that would overwrite the line.
    let server = thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut conn = Connection::Server(ServerConnection::new(config).unwrap());
        duplex::handshake(&mut conn, &socket, TIMEOUT).unwrap();
        let (_reader, mut writer) = duplex::split(conn, Arc::new(socket));
        let evil = "chat \x1b[31mmallory\x1b[0m hi\x07 \u{9b}2J there\rgotcha\n\
                    notice \x1b]0;new title\x07done\n\
                    \x1b[2Jraw line\n";
        writer.send(evil.as_bytes()).unwrap();
        writer.close().unwrap();
    });
    // On a terminal, where colours are on: the hardest case.
    let text = printed(&run(&mut on_terminal(&client(&addr, &pki), None), ""));
    assert!(text.contains("[31mmallory[0m"), "{text:?}");
    assert!(
        !text.contains("\x1b[31mmallory"),
        "the server's colour got through: {text:?}"
    );
    // Every escape left is one of the client's own colours: `ESC [ digits m`.
    for rest in text.split('\x1b').skip(1) {
        let code = rest.strip_prefix('[').and_then(|r| r.split_once('m'));
        assert!(
            code.is_some_and(|(digits, _)| digits.bytes().all(|b| b.is_ascii_digit())),
            "a foreign escape sequence: {rest:?}"
        );
    }
    assert!(
        !text.contains('\x07') && !text.contains('\u{9b}'),
        "{text:?}"
    );
    assert!(text.contains("hi 2J theregotcha"), "{text:?}");
    assert!(text.contains("]0;new titledone"), "{text:?}");
    assert!(text.contains("[2Jraw line"), "{text:?}");
    server.join().unwrap();
}
