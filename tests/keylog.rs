//! `SSLKEYLOGFILE`: with it, chat-server and chat-client write each
//! session's secrets in the key log format Wireshark reads, and warn that
//! they do; without it, they write nothing and say nothing about it.

use secure_chat_test_support as support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use secure_chat::tls::KEY_LOG_VARIABLE;
use support::{cert_args, run, Pki, ServerProcess, TempDir, CLIENT, SERVER};

/// The secrets of a TLS 1.3 session that decrypt its traffic both ways,
/// the handshake's and the data's.
const TRAFFIC_LABELS: [&str; 4] = [
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
];

/// What the warning says, whichever side logs it.
const WARNING: &str = "SSLKEYLOGFILE is set: writing the TLS secrets";

/// A key log: for each client random (in hex), its secrets by label.
type Sessions = BTreeMap<String, BTreeMap<String, String>>;

/// Reads a key log file, checking that every line has the format's three
/// fields: a label, a 32-byte client random and a secret, both in hex.
fn read_key_log(path: &Path) -> Sessions {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("no key log at {}: {err}", path.display()));
    let mut sessions = Sessions::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [label, random, secret] = fields[..] else {
            panic!("not a key log line: {line:?}");
        };
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(
            random.len() == 64 && hex(random),
            "bad client random: {line:?}"
        );
        assert!(secret.len() >= 64 && hex(secret), "bad secret: {line:?}");
        let earlier = sessions
            .entry(random.to_string())
            .or_default()
            .insert(label.to_string(), secret.to_string());
        assert_eq!(earlier, None, "{label} twice for one session");
    }
    sessions
}

/// The chat-server binary with `pki`'s certificate, run from `dir`, with
/// `SSLKEYLOGFILE` as `key_log` says (removed if `None`).
fn server_command(pki: &Pki, dir: &Path, key_log: Option<&Path>) -> Command {
    let mut command = Command::new(&SERVER);
    command
        .current_dir(dir)
        .args(["--addr", "127.0.0.1:0"])
        .args(cert_args(&pki.cert, &pki.key));
    with_key_log(&mut command, key_log);
    command
}

/// Runs chat-client against `addr`, trusting `pki`'s CA, from `dir` (its
/// home too, so that no file of the user's is read or written), saying
/// one line; checks that the line came back.
fn chat_once(pki: &Pki, addr: &str, dir: &Path, key_log: Option<&Path>) -> Output {
    let mut command = Command::new(&CLIENT);
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("RUST_LOG")
        .args(["--addr", addr, "--ca"])
        .arg(&pki.ca);
    with_key_log(&mut command, key_log);
    let output = run(&mut command, "hello over the wire\n");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("hello over the wire"),
        "the client did not chat: {output:?}"
    );
    output
}

fn with_key_log(command: &mut Command, key_log: Option<&Path>) {
    match key_log {
        Some(path) => command.env(KEY_LOG_VARIABLE, path),
        // The tests decide, not the environment they run in.
        None => command.env_remove(KEY_LOG_VARIABLE),
    };
}

/// Every file in `dir`, by name.
fn files_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn with_sslkeylogfile_both_sides_write_the_same_session_secrets_and_warn() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let server_keys = dir.path().join("server.keys");
    let client_keys = dir.path().join("client.keys");
    let mut server =
        ServerProcess::spawn_command(&mut server_command(&pki, dir.path(), Some(&server_keys)));
    server.wait_until_listening();
    let output = chat_once(
        &pki,
        &server.addr.to_string(),
        dir.path(),
        Some(&client_keys),
    );
    let server_log = server.stop();

    let warned =
        |line: &str, file: &Path| line.contains(WARNING) && line.contains(&*file.to_string_lossy());
    assert!(
        server_log.iter().any(|line| warned(line, &server_keys)),
        "the server did not warn: {server_log:#?}"
    );
    let client_stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        client_stderr.lines().any(|line| warned(line, &client_keys)),
        "the client did not warn: {client_stderr}"
    );

    // One connection, so one session on each side, with every secret that
    // decrypts it; and the same secrets on both sides, which is what makes
    // the keys a capture can be decrypted with.
    let client_sessions = read_key_log(&client_keys);
    let server_sessions = read_key_log(&server_keys);
    assert_eq!(client_sessions.len(), 1, "{client_sessions:#?}");
    let (random, client_secrets) = client_sessions.iter().next().unwrap();
    for label in TRAFFIC_LABELS {
        assert!(
            client_secrets.contains_key(label),
            "the client logged no {label}: {client_secrets:#?}"
        );
    }
    let server_secrets = server_sessions
        .get(random)
        .unwrap_or_else(|| panic!("the server logged another session: {server_sessions:#?}"));
    for label in TRAFFIC_LABELS {
        assert_eq!(
            client_secrets.get(label),
            server_secrets.get(label),
            "{label} differs between the two sides"
        );
    }
    // Four distinct secrets, not one written four times.
    let distinct: BTreeSet<_> = TRAFFIC_LABELS.map(|label| &client_secrets[label]).into();
    assert_eq!(distinct.len(), TRAFFIC_LABELS.len());
}

#[test]
fn without_sslkeylogfile_nothing_is_written_and_nothing_is_said() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let before = files_in(dir.path());
    let mut server = ServerProcess::spawn_command(&mut server_command(&pki, dir.path(), None));
    server.wait_until_listening();
    let output = chat_once(&pki, &server.addr.to_string(), dir.path(), None);
    let server_log = server.stop();

    assert!(
        !server_log
            .iter()
            .any(|line| line.contains(KEY_LOG_VARIABLE)),
        "{server_log:#?}"
    );
    let client_stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!client_stderr.contains(KEY_LOG_VARIABLE), "{client_stderr}");
    // Both ran from this directory, the client with it as its home too:
    // a key log written to a default place would most likely land here.
    assert_eq!(files_in(dir.path()), before);
}
