//! The two binaries as a user runs them: flags, messages, exit codes.

use secure_chat_test_support as support;

use crossbeam_channel::RecvTimeoutError;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use support::{
    cert_args, finish, Binary, Flaw, Incoming, Pki, ServerProcess, TestClient, TestServer, CLIENT,
    SERVER, TIMEOUT,
};

/// Runs one of our binaries with these arguments and `stdin` as its input.
fn run(binary: &Binary, args: &[&str], stdin: &str) -> Output {
    support::run(Command::new(binary).args(args), stdin)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn help_documents_every_flag() {
    let server = run(&SERVER, &["--help"], "");
    assert!(server.status.success());
    for flag in [
        "--addr",
        "--cert",
        "--key",
        "--handshake-timeout",
        "--max-line",
        "--max-clients",
        "--stall-timeout",
        "--max-lag",
        "--max-pending",
        "--memory-budget",
        "--writers",
        "--classic",
        "--redis",
        "--redis-url-file",
        "--rooms-per-minute",
        "CHAT_REDIS_URL",
        "--node-name",
        "--redis-ca",
        "--name-expiry",
    ] {
        assert!(
            stdout(&server).contains(flag),
            "chat-server --help lacks {flag}"
        );
    }
    let client = run(&CLIENT, &["--help"], "");
    assert!(client.status.success());
    for flag in [
        "--addr",
        "--ca",
        "--server-name",
        "--timestamps",
        "--no-timestamps",
        "--no-reconnect",
    ] {
        assert!(
            stdout(&client).contains(flag),
            "chat-client --help lacks {flag}"
        );
    }
    assert!(!stdout(&client).contains("insecure"));
}

/// An IPv4 address in a short form (`127.1`) reaches a server the
/// known-servers file would file under another name: it is refused.
#[test]
fn the_client_asks_for_an_ipv4_address_in_full() {
    let output = run(&CLIENT, &["--addr", "0x7f.1:8080"], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("write the IPv4 address in full"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unknown_flags_fail_with_exit_code_1() {
    for binary in [&SERVER, &CLIENT] {
        let output = run(binary, &["--frobnicate"], "");
        assert_eq!(output.status.code(), Some(1));
        assert!(
            stderr(&output).contains("--frobnicate"),
            "{}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("--help"));
    }
    let output = run(&SERVER, &["--max-line", "lots"], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("lots"), "{}", stderr(&output));
}

/// Built without linked servers (`--no-default-features`), the server
/// refuses `--redis` at once and says how to get it.
#[cfg(not(feature = "redis"))]
#[test]
fn without_the_redis_feature_redis_is_refused_with_how_to_build_it() {
    let output = run(&SERVER, &["--redis", "redis://127.0.0.1:1"], "");
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(said.contains("without linked servers"), "{said}");
    assert!(said.contains("`redis` feature"), "{said}");
}

/// The Redis URL may hold a password: it can come from a file or the
/// environment instead of the command line (where `ps` shows it to every
/// local user), and is never printed back.
#[cfg(feature = "redis")]
#[test]
fn the_redis_url_comes_from_a_file_or_the_environment_and_is_never_shown() {
    use std::ffi::OsStr;
    use support::TempDir;

    let pki = Pki::new();
    // A port nobody listens on: the server reads the URL, tries it, stops.
    let port = {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        closed.local_addr().unwrap().port()
    };
    let url = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let dir = TempDir::new();
    let file = dir.path().join("redis-url");
    std::fs::write(&file, format!("{url}\n# the first line counts\n")).unwrap();
    let server = |extra: &[&OsStr], env: Option<&str>| {
        let mut command = Command::new(&SERVER);
        command
            .args(cert_args(&pki.cert, &pki.key))
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .env_remove("CHAT_REDIS_URL");
        if let Some(url) = env {
            command.env("CHAT_REDIS_URL", url);
        }
        stderr(&support::run(&mut command, ""))
    };
    let from_file = server(&["--redis-url-file".as_ref(), file.as_os_str()], None);
    let from_env = server(&[], Some(&url));
    let from_flag = server(&["--redis".as_ref(), url.as_ref()], None);
    for said in [&from_file, &from_env, &from_flag] {
        assert!(
            said.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
            "{said}"
        );
        assert!(!said.contains("s3cret"), "{said}");
    }
    assert!(
        from_flag.contains("given on the command line"),
        "{from_flag}"
    );
    assert!(!from_file.contains("command line"), "{from_file}");
    assert!(!from_env.contains("command line"), "{from_env}");

    let both = server(
        &[
            "--redis".as_ref(),
            url.as_ref(),
            "--redis-url-file".as_ref(),
            file.as_os_str(),
        ],
        None,
    );
    assert!(both.contains("give one of the two"), "{both}");
    assert!(!both.contains("s3cret"), "{both}");
    std::fs::write(&file, "\n").unwrap();
    let empty = server(&["--redis-url-file".as_ref(), file.as_os_str()], None);
    assert!(empty.contains("is empty"), "{empty}");
}

#[test]
fn redis_flags_that_make_no_sense_are_refused_with_the_reason() {
    for (args, says) in [
        (&["--name-expiry", "2"][..], "at least 5 seconds"),
        (&["--room-expiry", "0.001"][..], "at least 60 seconds"),
        (&["--room-expiry", "59"][..], "at least 60 seconds"),
        (&["--node-name", "a"][..], "are for --redis"),
        (&["--name-expiry", "10"][..], "are for --redis"),
        (
            &["--classic", "--redis", "redis://127.0.0.1:1"][..],
            "--classic and --redis",
        ),
    ] {
        let output = run(&SERVER, args, "");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn server_names_a_missing_certificate_file() {
    let output = run(
        &SERVER,
        &["--addr", "127.0.0.1:0", "--cert", "/nonexistent/server.crt"],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "chat-server: cannot read /nonexistent/server.crt: No such file or directory (os error 2)"
    );
}

#[test]
fn server_names_a_key_that_does_not_match() {
    let one = Pki::new();
    let other = Pki::new();
    let cert = one.cert.to_str().unwrap();
    let key = other.key.to_str().unwrap();
    let output = run(
        &SERVER,
        &["--addr", "127.0.0.1:0", "--cert", cert, "--key", key],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("does not belong to the certificate"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn server_names_an_address_in_use() {
    let pki = Pki::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = [
        "--addr",
        &addr,
        "--cert",
        pki.cert.to_str().unwrap(),
        "--key",
        pki.key.to_str().unwrap(),
    ];
    let output = run(&SERVER, &args, "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot listen on {addr}: Address already in use")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn client_names_a_missing_ca_file() {
    let output = run(
        &CLIENT,
        &["--addr", "127.0.0.1:1", "--ca", "/nonexistent/ca.crt"],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read /nonexistent/ca.crt"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn client_names_a_server_that_is_not_there() {
    let pki = Pki::new();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = free.to_string();
    let output = run(
        &CLIENT,
        &["--addr", &addr, "--ca", pki.ca.to_str().unwrap()],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot connect to {addr}")),
        "{}",
        stderr(&output)
    );
}

fn client_args(server: &TestServer, pki: &Pki) -> Vec<String> {
    vec![
        "--addr".into(),
        format!("localhost:{}", server.addr.port()),
        "--ca".into(),
        pki.ca.to_str().unwrap().into(),
    ]
}

#[test]
fn piped_hi_and_bye_print_the_replies_and_exit_0() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let args = client_args(&server, &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&CLIENT, &args, "hi\nbye\n");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(
        printed.contains("Welcome to the secure chat server!"),
        "{printed}"
    );
    assert!(
        printed.contains("Hola, cómo puedo ayudarte hoy?"),
        "{printed}"
    );
    assert!(printed.contains("Ciao, Buonanotte!"), "{printed}");
    assert!(stderr(&output).contains("TLSv1.3"), "{}", stderr(&output));
    server.stop();
}

#[test]
fn end_of_input_waits_for_the_servers_last_lines() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let watcher = TestClient::connect(server.addr, &pki.ca);
    let args = client_args(&server, &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&CLIENT, &args, "one\ntwo\n");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = stdout(&output);
    // Its own lines come back as acknowledgements even though its input
    // ended right after sending them.
    assert!(
        printed.contains("> one\n") && printed.contains("> two\n"),
        "{printed}"
    );
    watcher.recv_until(|line| line.ends_with(" two"));
    server.stop();
}

#[test]
fn client_refuses_an_untrusted_server_and_says_why() {
    let pki = Pki::with_flaw(Flaw::UntrustedCa);
    let server = TestServer::start(&pki);
    let watcher = TestClient::connect(server.addr, &pki.signer);
    let args = client_args(&server, &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&CLIENT, &args, "secret\n");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("certificate not trusted (UnknownIssuer)"),
        "{message}"
    );
    assert!(message.contains("does --ca point at"), "{message}");
    assert!(stdout(&output).is_empty());
    // Nothing of what was typed reached the chat; the next line the
    // watcher sees is its own.
    let mut watcher = watcher;
    watcher.send("marker");
    assert_eq!(
        watcher.recv_until(|line| line.starts_with("chat ")),
        format!("chat {} marker", watcher.nick)
    );
    server.stop();
}

#[test]
fn client_exits_0_when_the_server_stops() {
    let pki = Pki::new();
    let server = TestServer::start(&pki);
    let args = client_args(&server, &pki);
    let mut child = Command::new(&CLIENT)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::lines_of(child.stdout.take().unwrap());
    // Connected once the greeting is printed; stdin stays open.
    let first = lines.recv_timeout(TIMEOUT).expect("a greeting in time");
    assert!(first.contains("Welcome"), "{first}");
    server.stop();
    // Until the client closes its output, each line in time.
    let mut rest = Vec::new();
    loop {
        match lines.recv_timeout(TIMEOUT) {
            Ok(line) => rest.push(line),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the client kept running: {rest:?}"),
        }
    }
    assert!(
        rest.iter().any(|l| l.contains("server shutting down")),
        "{rest:?}"
    );
    let output = finish(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn server_binary_serves_and_stops_on_sigterm() {
    let pki = Pki::new();
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));

    let mut client = TestClient::connect(server.addr, &pki.ca);
    client.send("héllo 世界 🙂");
    assert_eq!(client.recv(), format!("chat {} héllo 世界 🙂", client.nick));

    server.signal("-TERM");
    assert_eq!(client.recv(), "notice server shutting down, goodbye");
    assert_eq!(client.next(), Incoming::Closed);
    let (status, _) = server.wait_for_exit();
    let log = &server.seen;
    assert_eq!(status.code(), Some(0), "{log:?}");
    // The log records connections but never what was said.
    assert!(!log.iter().any(|l| l.contains("héllo")), "{log:?}");
}

#[test]
fn server_refuses_more_clients_than_the_machine_allows_and_says_how_to_raise_it() {
    let pki = Pki::new();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    // More threads than any kernel.pid_max allows (at most 4,194,304).
    let args = ["--addr", "127.0.0.1:0", "--cert", cert, "--key", key];
    let output = run(
        &SERVER,
        &[&args[..], &["--max-clients", "10000000"]].concat(),
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.starts_with(
            "chat-server: --max-clients 10000000 is more than this machine allows: room for "
        ),
        "{text}"
    );
    assert!(text.contains("raise it with "), "{text}");
}

#[test]
fn server_logs_what_its_limits_allow_at_start() {
    let pki = Pki::new();
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    let line = server.wait_for_log(|line| line.contains("room for "));
    assert!(
        line.contains("connections (each takes a thread, a file and 4 memory maps): "),
        "{line}"
    );
    assert!(line.contains("vm.max_map_count"), "{line}");
    assert!(line.contains("open files"), "{line}");
    server.stop();
}

#[test]
fn the_old_queue_flags_say_what_replaced_them() {
    for flag in ["--queue-lines", "--queue-bytes", "--write-timeout"] {
        let output = run(&SERVER, &[flag, "100"], "");
        assert_eq!(output.status.code(), Some(1));
        let text = stderr(&output);
        assert!(text.contains(&format!("{flag} is gone")), "{text}");
        assert!(text.contains("--stall-timeout"), "{text}");
        assert!(text.contains("--memory-budget"), "{text}");
    }
    for (flag, bad) in [("--memory-budget", "12MB"), ("--stall-timeout", "soon")] {
        let output = run(&SERVER, &[flag, bad], "");
        assert_eq!(output.status.code(), Some(1));
        assert!(stderr(&output).contains(bad), "{}", stderr(&output));
    }
}

/// `chat-client | head -1`: once the reader of its output has gone, the
/// client ends as if the user had: close_notify, then exit 0, with no
/// error about the pipe.
#[test]
fn a_closed_output_ends_the_client_cleanly_with_close_notify() {
    use std::io::{BufRead, BufReader};
    let pki = Pki::new();
    let mut server = ServerProcess::start(&cert_args(&pki.cert, &pki.key));
    let addr = format!("localhost:{}", server.addr.port());
    let mut child = Command::new(&CLIENT)
        .args(["--addr", &addr, "--ca", pki.ca.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `head -1`: read one line, then close the pipe.
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = first_tx.send(line);
    });
    let line = first.recv_timeout(TIMEOUT).expect("a first line in time");
    assert!(line.contains("Welcome"), "{line}");
    // Someone arrives and talks: the client has lines to print, and no
    // one to print them to.
    let mut other = TestClient::connect(server.addr, &pki.ca);
    other.send("anyone there?");
    let output = finish(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        !stderr(&output).contains("cannot write"),
        "{}",
        stderr(&output)
    );
    let left = server.wait_for_log(|line| line.contains("guest1 left: "));
    assert!(
        left.ends_with("guest1 left: client closed the connection"),
        "the server did not get close_notify: {left}"
    );
    drop(other);
    server.stop();
}
