//! Other TLS software against our server: `openssl s_client` chats with it,
//! and a client that does not speak TLS is turned away without harm.

use secure_chat_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crossbeam_channel::Receiver;
use support::{finish, lines_of, Pki, TestClient, TestServer, TIMEOUT};

fn next_line(lines: &Receiver<String>) -> String {
    lines
        .recv_timeout(TIMEOUT)
        .expect("openssl s_client printed nothing in time")
}

#[test]
fn openssl_s_client_can_join_and_chat() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let bob = TestClient::connect(server.addr, &pki.ca);

    let mut openssl = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(server.addr.to_string())
        .args(["-servername", "localhost", "-verify_return_error", "-quiet"])
        .arg("-CAfile")
        .arg(&pki.ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed");
    let lines = lines_of(openssl.stdout.take().unwrap());
    let mut stdin = openssl.stdin.take().unwrap();

    assert_eq!(
        next_line(&lines),
        "notice Welcome to the secure chat server!"
    );
    let you_are = next_line(&lines);
    let nick = you_are.strip_prefix("notice you are ").unwrap().to_string();
    assert_eq!(
        next_line(&lines),
        "notice you are in #lobby (2 people here)"
    );
    assert_eq!(bob.recv(), format!("notice {nick} joined #lobby"));

    writeln!(stdin, "hola desde openssl").unwrap();
    assert_eq!(next_line(&lines), format!("chat {nick} hola desde openssl"));
    assert_eq!(bob.recv(), format!("chat {nick} hola desde openssl"));

    writeln!(stdin, "bye").unwrap();
    assert_eq!(next_line(&lines), "notice Ciao, Buonanotte!");
    assert_eq!(bob.recv(), format!("notice {nick} quit"));
    // s_client ends when the server closes the connection.
    finish(openssl);
    server.stop();
}

#[test]
fn plaintext_garbage_is_closed_and_the_server_keeps_serving() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);

    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.set_read_timeout(Some(TIMEOUT)).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // The server answers with a TLS alert at most, then closes. A timeout
    // here would mean the connection was left hanging.
    let mut answer = Vec::new();
    match garbage.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    assert!(
        answer.len() < 64,
        "more than an alert came back: {answer:?}"
    );

    let mut client = TestClient::connect(server.addr, &pki.ca);
    client.send("still here");
    assert_eq!(client.recv(), format!("chat {} still here", client.nick));
    server.stop();
}
