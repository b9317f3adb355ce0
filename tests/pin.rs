//! Trusting a server without its CA, as SSH does: `--pin` with the key's
//! fingerprint, the server logging that fingerprint, and trust on first
//! use (the terminal prompt and the known-servers file). Also `make certs
//! SAN=...`, for the other way: a certificate that names the machine.

use secure_chat_test_support as support;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use secure_chat::client::{self, ClientOptions, Unknown};
use secure_chat::error::report;
use secure_chat::known_servers::{server_key, KnownServers};
use secure_chat::tls::{CertProblem, Fingerprint, Trust};
use support::{cert_args, finish, run, Flaw, Pki, ServerProcess, TempDir, TestServer, CLIENT};

/// What the tests type: a line to see echoed, then the end of input.
const SAY_HELLO: &str = "hello\n";

fn fingerprint_of(pki: &Pki) -> Fingerprint {
    Fingerprint::of_certificate_file(&pki.cert).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `chat-client --addr ADDR` run from an empty directory (so no
/// certs/ca.crt is trusted by default), with a home of its own (so the
/// user's own known-servers file is never read or written) and these
/// arguments.
fn client(home: &TempDir, addr: &str, args: &[&OsStr]) -> Command {
    let mut command = Command::new(&CLIENT);
    command
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env_remove("RUST_LOG")
        .args(["--addr", addr])
        .args(args);
    command
}

/// `--ca` with a CA that signed nothing the tests' servers present, and
/// `--known-servers FILE`: what an unknown server meets.
fn stranger_args<'a>(stranger: &'a Pki, file: &'a Path) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("--ca"),
        stranger.ca.as_os_str(),
        OsStr::new("--known-servers"),
        file.as_os_str(),
    ]
}

/// True if the client got into the chat: the server's welcome arrived
/// and the line sent came back.
fn chatted(output: &Output) -> bool {
    let text = stdout(output);
    text.contains("Welcome") && text.contains("hello")
}

#[test]
fn the_right_pin_connects_with_no_ca_and_a_certificate_for_another_name() {
    // The certificate names example.org only, and the client trusts no CA.
    let pki = Pki::with_flaw(Flaw::OtherHost);
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let pin = fingerprint_of(&pki).to_string();
    let addr = format!("localhost:{}", server.addr.port());
    let output = run(
        &mut client(&home, &addr, &[OsStr::new("--pin"), OsStr::new(&pin)]),
        SAY_HELLO,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(chatted(&output), "{}", stdout(&output));
    // A pin on the command line writes no file.
    assert!(!home.path().join("config").exists());

    // The library's way, as the binary does it.
    let options = ClientOptions {
        addr: server.addr.to_string(),
        server_name: None,
        trust: Trust::Pin(fingerprint_of(&pki)),
        identity: None,
        timeout: support::TIMEOUT,
    };
    let connected = client::connect(&options).unwrap();
    assert!(
        connected.summary.ends_with(&format!(", pinned key {pin}")),
        "{}",
        connected.summary
    );
    drop(connected);
    server.stop();
}

#[test]
fn a_wrong_pin_is_refused_naming_both_fingerprints() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let wrong = fingerprint_of(&other).to_string();
    let addr = format!("localhost:{}", server.addr.port());
    let output = run(
        &mut client(&home, &addr, &[OsStr::new("--pin"), OsStr::new(&wrong)]),
        SAY_HELLO,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(!chatted(&output), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "the server's key is not the pinned one (pinned {wrong}, presented {})",
            fingerprint_of(&pki)
        )),
        "{message}"
    );
    assert!(
        message.contains("check the fingerprint with the server's operator"),
        "{message}"
    );
    server.stop();
}

#[test]
fn a_malformed_pin_or_one_beside_ca_is_a_usage_error() {
    let home = TempDir::new();
    let output = run(
        &mut client(
            &home,
            "localhost:1",
            &[OsStr::new("--pin"), OsStr::new("sha256:nope")],
        ),
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is not a fingerprint"),
        "{}",
        stderr(&output)
    );
    let pki = Pki::new();
    let pin = fingerprint_of(&pki).to_string();
    let output = run(
        &mut client(
            &home,
            "localhost:1",
            &[
                OsStr::new("--pin"),
                OsStr::new(&pin),
                OsStr::new("--ca"),
                pki.ca.as_os_str(),
            ],
        ),
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--pin and --ca exclude each other"),
        "{}",
        stderr(&output)
    );
}

/// The fingerprint as openssl computes it: SHA-256 over the DER of the
/// certificate's public key (its SubjectPublicKeyInfo), in base64.
fn openssl_fingerprint(cert: &Path) -> String {
    let pipeline = "openssl x509 -in \"$1\" -pubkey -noout \
                    | openssl pkey -pubin -outform der \
                    | openssl dgst -sha256 -binary | base64";
    let child = Command::new("sh")
        .args(["-c", pipeline, "sh"])
        .arg(cert)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish(child);
    assert!(output.status.success(), "{}", stderr(&output));
    format!("sha256:{}", stdout(&output).trim().trim_end_matches('='))
}

/// The fingerprint in a `certificate fingerprint sha256:...` log line.
fn logged_fingerprint(line: &str) -> String {
    line.split_once("certificate fingerprint ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint in {line:?}"))
        .to_string()
}

#[test]
fn the_server_logs_the_fingerprint_clients_compute_and_again_after_a_reload() {
    let pki = Pki::new();
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    let line = server
        .seen
        .iter()
        .find(|line| line.contains("certificate fingerprint "))
        .cloned()
        .unwrap_or_else(|| panic!("no fingerprint before listening: {:#?}", server.seen));
    let logged = logged_fingerprint(&line);
    assert_eq!(logged, fingerprint_of(&pki).to_string());
    assert_eq!(logged, openssl_fingerprint(&pki.cert));
    assert!(line.ends_with(" (for chat-client --pin)"), "{line}");

    // What the server logs is what a pinned client accepts.
    let home = TempDir::new();
    let addr = format!("localhost:{}", server.addr.port());
    let output = run(
        &mut client(&home, &addr, &[OsStr::new("--pin"), OsStr::new(&logged)]),
        SAY_HELLO,
    );
    assert!(output.status.success(), "{}", stderr(&output));

    // A new key, reloaded: the log says its fingerprint.
    let renewed = Pki::new();
    fs::copy(&renewed.cert, &pki.cert).unwrap();
    fs::copy(&renewed.key, &pki.key).unwrap();
    server.signal("-HUP");
    let line = server.wait_for_log(|line| line.contains("certificate fingerprint "));
    assert_eq!(
        logged_fingerprint(&line),
        fingerprint_of(&renewed).to_string()
    );
    server.wait_for_log(|line| line.contains("reloaded the certificate"));
    server.stop();
}

#[test]
fn a_known_server_is_trusted_by_its_stored_key() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let file = home.path().join("known_servers");
    let addr = server.addr.to_string();
    fs::write(
        &file,
        format!(
            "# mine\n\nsomewhere:1 {}\n{addr} {}\n",
            fingerprint_of(&stranger),
            fingerprint_of(&pki)
        ),
    )
    .unwrap();
    let before = fs::read_to_string(&file).unwrap();
    // Its CA is not trusted, and there is no terminal: the file decides.
    let output = run(
        &mut client(&home, &addr, &stranger_args(&stranger, &file)),
        SAY_HELLO,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(chatted(&output), "{}", stdout(&output));
    assert_eq!(fs::read_to_string(&file).unwrap(), before);
    server.stop();
}

#[test]
fn a_changed_key_of_a_known_server_is_refused_loudly() {
    let pki = Pki::new();
    let old = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let file = home.path().join("known_servers");
    let addr = server.addr.to_string();
    fs::write(&file, format!("# mine\n{addr} {}\n", fingerprint_of(&old))).unwrap();
    let before = fs::read_to_string(&file).unwrap();
    // Even with the CA that signed the new certificate: the stored key
    // is what this client trusts that server by.
    let args = [
        OsStr::new("--ca"),
        pki.ca.as_os_str(),
        OsStr::new("--known-servers"),
        file.as_os_str(),
    ];
    let output = run(&mut client(&home, &addr, &args), SAY_HELLO);
    assert_eq!(output.status.code(), Some(1));
    assert!(!chatted(&output), "{}", stdout(&output));
    let message = stderr(&output);
    for part in [
        format!("pinned {}", fingerprint_of(&old)),
        format!("presented {}", fingerprint_of(&pki)),
        // Filed, and named, as the file writes it: 127.0.0.1 is localhost.
        format!("WARNING: the key of {} has CHANGED", server_key(&addr)),
        format!(
            "delete line 2 ({}) of {}",
            server_key(&addr),
            file.display()
        ),
        "Ask the operator which fingerprint is right".to_string(),
    ] {
        assert!(message.contains(&part), "{part:?} missing: {message}");
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), before);
    server.stop();
}

#[test]
fn in_a_pipe_an_unknown_server_is_refused_with_a_hint_about_pin() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let file = home.path().join("known_servers");
    let addr = server.addr.to_string();
    let output = run(
        &mut client(&home, &addr, &stranger_args(&stranger, &file)),
        SAY_HELLO,
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("certificate not trusted (BadSignature)"),
        "{message}"
    );
    assert!(message.contains("does --ca point at"), "{message}");
    assert!(
        message.contains(&format!("pass --pin {}", fingerprint_of(&pki))),
        "{message}"
    );
    assert!(!message.contains("Trust this server?"), "{message}");
    assert!(!file.exists(), "a refusal wrote the file");
    server.stop();
}

#[test]
fn the_prompt_is_shown_the_fingerprint_and_a_yes_is_stored() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let file = home.path().join("sub").join("known_servers");
    let options = ClientOptions {
        addr: server.addr.to_string(),
        server_name: Some("localhost".to_string()),
        trust: Trust::CaFile(stranger.ca.clone()),
        identity: None,
        timeout: support::TIMEOUT,
    };
    let mut known = KnownServers::load(&file).unwrap();
    let mut asked = Vec::new();
    let mut yes = |unknown: &Unknown| {
        asked.push(unknown.clone());
        true
    };
    let connected = client::connect_or_ask(&options, &mut known, Some(&mut yes))
        .unwrap_or_else(|err| panic!("{}", report(&err)));
    drop(connected);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].fingerprint, fingerprint_of(&pki));
    // Both test CAs are called "test CA": the other one's key did not sign.
    assert_eq!(asked[0].problem, CertProblem::NotTrusted("BadSignature"));
    assert_eq!(asked[0].subject.as_deref(), Some("CN=localhost"));
    let stored = fs::read_to_string(&file).unwrap();
    assert!(
        stored.ends_with(&format!(
            "\n{} {}\n",
            server_key(&server.addr.to_string()),
            fingerprint_of(&pki)
        )),
        "{stored}"
    );

    // Known now: no question, and the stored key is used.
    let mut never = |_: &Unknown| -> bool { panic!("asked about a known server") };
    let mut known = KnownServers::load(&file).unwrap();
    client::connect_or_ask(&options, &mut known, Some(&mut never))
        .unwrap_or_else(|err| panic!("{}", report(&err)));
    // A server the CA vouches for is not asked about, nor stored.
    let trusted = TestServer::start(&stranger);
    let options = ClientOptions {
        addr: trusted.addr.to_string(),
        ..options
    };
    client::connect_or_ask(&options, &mut known, Some(&mut never))
        .unwrap_or_else(|err| panic!("{}", report(&err)));
    assert_eq!(fs::read_to_string(&file).unwrap(), stored);
    trusted.stop();
    server.stop();
}

/// Runs `command` on a pseudo-terminal (`script` from util-linux), so that
/// its stdin and stderr are a terminal, with `input` typed into it.
fn on_terminal(command: &Command, input: &str) -> Output {
    let mut line = String::new();
    for part in std::iter::once(command.get_program()).chain(command.get_args()) {
        line.push_str(&format!("'{}' ", part.to_str().unwrap()));
    }
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => script.env(name, value),
            None => script.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        script.current_dir(dir);
    }
    run(&mut script, input)
}

#[test]
fn on_a_terminal_yes_connects_and_stores_the_key() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let file = home.path().join("known_servers");
    let addr = server.addr.to_string();
    let command = client(&home, &addr, &stranger_args(&stranger, &file));
    let output = on_terminal(&command, &format!("y\n{SAY_HELLO}"));
    // On a terminal, everything the client writes is in stdout.
    let shown = stdout(&output);
    assert!(output.status.success(), "{shown}");
    for part in [
        format!("The certificate of {addr} does not verify"),
        format!("Its key's fingerprint is {}", fingerprint_of(&pki)),
        "It says it is: CN=localhost".to_string(),
        "Trust this server? [y/N]".to_string(),
        "Welcome".to_string(),
    ] {
        assert!(shown.contains(&part), "{part:?} missing: {shown}");
    }
    let stored = fs::read_to_string(&file).unwrap();
    assert!(
        stored.ends_with(&format!(
            "\n{} {}\n",
            server_key(&addr),
            fingerprint_of(&pki)
        )),
        "{stored}"
    );

    // From now on the stored key is used, in a pipe too.
    let output = run(
        &mut client(&home, &addr, &stranger_args(&stranger, &file)),
        SAY_HELLO,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(chatted(&output), "{}", stdout(&output));
    server.stop();
}

#[test]
fn on_a_terminal_no_refuses_and_leaves_the_file_alone() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let server = TestServer::start(&pki);
    let home = TempDir::new();
    let file = home.path().join("known_servers");
    let mine = format!("# mine\nsomewhere:1 {}\n", fingerprint_of(&stranger));
    fs::write(&file, &mine).unwrap();
    let addr = server.addr.to_string();
    let command = client(&home, &addr, &stranger_args(&stranger, &file));
    let output = on_terminal(&command, &format!("n\n{SAY_HELLO}"));
    let shown = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("Trust this server? [y/N]"), "{shown}");
    assert!(shown.contains("you chose not to trust it"), "{shown}");
    assert!(!shown.contains("Welcome"), "{shown}");
    assert_eq!(fs::read_to_string(&file).unwrap(), mine);
    server.stop();
}

#[test]
fn make_certs_adds_the_names_in_san() {
    let dir = TempDir::new();
    let certs_dir = dir.path().join("certs");
    let make = |san: &str| {
        let child = Command::new("make")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["-s", "certs"])
            .arg(format!("CERTS_DIR={}", certs_dir.display()))
            .arg(format!("SAN={san}"))
            // Not the jobserver of a `make test` this may run under.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child)
    };
    // A name that is neither is refused before any key is made.
    let made = make("bad,name");
    assert!(!made.status.success());
    assert!(
        stderr(&made).contains("'bad,name' is not a DNS name or an IP address"),
        "{}",
        stderr(&made)
    );
    assert!(!certs_dir.join("server.key").exists());

    let made = make("chat.example.org 192.0.2.10 2001:db8::7");
    assert!(made.status.success(), "{}", stderr(&made));
    let cert = certs_dir.join("server.crt");
    let child = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let shown = finish(child);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let names: Vec<String> = stdout(&shown)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split(", ")
        .map(|name| name.trim().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "DNS:localhost",
            "IP Address:127.0.0.1",
            "IP Address:0:0:0:0:0:0:0:1",
            "DNS:chat.example.org",
            "IP Address:192.0.2.10",
            "IP Address:2001:DB8:0:0:0:0:0:7",
        ],
        "{}",
        stdout(&shown)
    );
}
