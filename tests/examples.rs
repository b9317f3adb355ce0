//! The runnable examples in examples/, run as a learner runs them: from a
//! directory holding `certs/`, against each other and against the
//! project's own client and server.
//!
//! The examples are built here first, as a learner builds them.

use secure_chat_test_support as support;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crossbeam_channel::Receiver;
use secure_chat::classic::ECHO_PREFIX;
use secure_chat::protocol::{BYE_REPLY, HI_REPLY, WELCOME};
use support::{
    cert_args, finish, kill, lines_of, Flaw, Incoming, Pki, ServerProcess, TempDir, TestClient,
    CLIENT, TIMEOUT,
};

/// Example `name`, built (once per run of this file) by `cargo build
/// --examples`: `cargo test --all-targets` compiles the examples only as
/// tests, which run no `main`, and `cargo test --test examples` not at all.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let test = std::env::current_exe().unwrap();
    let profile = test.parent().and_then(Path::parent).unwrap();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or("cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "--examples", "--package", "secure-chat"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile.ends_with("release") {
            build.arg("--release");
        }
        let output = build.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    });
    let path = profile.join("examples").join(name);
    assert!(path.is_file(), "{path:?} was not built");
    path
}

/// A directory holding `certs/` with ca.crt, server.crt and server.key
/// from `pki`, as `make certs` lays them out: the examples' working
/// directory.
struct Workdir {
    dir: TempDir,
}

impl Workdir {
    fn new(pki: &Pki) -> Workdir {
        let dir = TempDir::new();
        let certs = dir.path().join("certs");
        fs::create_dir(&certs).unwrap();
        fs::copy(&pki.ca, certs.join("ca.crt")).unwrap();
        fs::copy(&pki.cert, certs.join("server.crt")).unwrap();
        fs::copy(&pki.key, certs.join("server.key")).unwrap();
        Workdir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs example `name` to its end with `args` and `input` on its stdin.
    fn run(&self, name: &str, args: &[&str], input: &str) -> Output {
        let mut command = Command::new(example(name));
        support::run(command.args(args).current_dir(self.path()), input)
    }
}

/// An example server as a child process, on a port of its own choosing.
struct ExampleServer {
    child: Option<Child>,
    addr: SocketAddr,
    /// What it printed after `listening on`: one line per client's end.
    said: Receiver<String>,
}

impl ExampleServer {
    /// Starts example `name` on `127.0.0.1:0` in `workdir` and reads where
    /// it listens.
    fn start(name: &str, workdir: &Workdir) -> ExampleServer {
        let mut child = Command::new(example(name))
            .arg("127.0.0.1:0")
            .current_dir(workdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let said = lines_of(child.stdout.take().unwrap());
        let mut server = ExampleServer {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            said,
        };
        let first = server.next_said();
        server.addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name} began with {first:?}"))
            .parse()
            .unwrap();
        server
    }

    /// The next line the server printed, within [`TIMEOUT`].
    fn next_said(&self) -> String {
        self.said
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|err| panic!("the server said nothing: {err}"))
    }

    /// Checks that the next client's thread ended without an error.
    fn said_done(&self) {
        let said = self.next_said();
        assert!(said.ends_with(": done"), "{said}");
    }

    /// Stops it with SIGTERM (the examples have no other way to stop) and
    /// checks that the signal is what ended it.
    fn stop(mut self) {
        use std::os::unix::process::ExitStatusExt;
        let child = self.child.take().unwrap();
        assert!(kill(child.id(), "-TERM"), "the server had already exited");
        let status = finish(child).status;
        assert_eq!(status.signal(), Some(15), "{status}");
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        // A test that failed before `stop` still ends its server.
        if let Some(child) = self.child.take() {
            kill(child.id(), "-KILL");
            let _ = finish(child);
        }
    }
}

fn stdout(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What the original app's client prints for `hi`, `hello there`, `bye`.
fn original_replies() -> Vec<String> {
    vec![
        WELCOME.to_string(),
        HI_REPLY.to_string(),
        format!("{ECHO_PREFIX}hello there"),
        BYE_REPLY.to_string(),
    ]
}

#[test]
fn echo_client_and_server_talk_as_the_original_did() {
    let workdir = Workdir::new(&Pki::new());
    let server = ExampleServer::start("echo-server", &workdir);
    let addr = server.addr.to_string();
    let output = workdir.run(
        "echo-client",
        &[&addr],
        "hi\nhello there\n BYE \nnot sent\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), original_replies());
    assert!(
        stderr(&output).contains("certificate verified against certs/ca.crt"),
        "{}",
        stderr(&output)
    );
    // The server's thread for that client ended cleanly, after its bye.
    server.said_done();

    // The end of input ends a session too, with close_notify.
    let output = workdir.run("echo-client", &[&addr], " hi \n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), [WELCOME, HI_REPLY]);
    server.said_done();
    server.stop();
}

#[test]
fn echo_client_refuses_a_server_its_ca_did_not_sign_and_says_what_to_do() {
    let pki = Pki::with_flaw(Flaw::UntrustedCa);
    let workdir = Workdir::new(&pki);
    let server = ExampleServer::start("echo-server", &workdir);
    let output = workdir.run("echo-client", &[&server.addr.to_string()], "hi\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty(), "{:?}", stdout(&output));
    let said = stderr(&output);
    assert!(said.contains("UnknownIssuer"), "{said}");
    assert!(said.contains("run make certs"), "{said}");
    server.stop();
}

#[test]
fn examples_without_certificates_say_how_to_make_them() {
    let empty = TempDir::new();
    for name in ["echo-server", "echo-client", "card-chat"] {
        let mut command = Command::new(example(name));
        let output = support::run(command.arg("127.0.0.1:0").current_dir(empty.path()), "");
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(
            stderr(&output).contains("make certs"),
            "{name}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn the_projects_client_talks_to_echo_server() {
    let pki = Pki::new();
    let workdir = Workdir::new(&pki);
    let server = ExampleServer::start("echo-server", &workdir);
    let mut command = Command::new(&CLIENT);
    command
        .args(["--addr", &format!("localhost:{}", server.addr.port())])
        .arg("--ca")
        .arg(&pki.ca);
    let output = support::run(&mut command, "hi\nhello there\nbye\n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), original_replies());
    server.said_done();
    server.stop();
}

#[test]
fn echo_client_talks_to_chat_server_classic() {
    let pki = Pki::new();
    let workdir = Workdir::new(&pki);
    let mut args = cert_args(&pki.cert, &pki.key);
    args.push(std::ffi::OsStr::new("--classic"));
    let server = ServerProcess::start(&args);
    let output = workdir.run(
        "echo-client",
        &[&server.addr.to_string()],
        "hi\nhello there\nbye\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), original_replies());
    server.stop();
}

#[test]
fn card_chat_relays_every_line_to_everyone_in_one_order() {
    let pki = Pki::new();
    let workdir = Workdir::new(&pki);
    let server = ExampleServer::start("card-chat", &workdir);
    // Each reads its greeting, which the hub sends once the client is in.
    let mut clients: Vec<TestClient> = (0..3)
        .map(|_| TestClient::connect(server.addr, &pki.ca))
        .collect();
    let nicks: Vec<String> = clients.iter().map(|c| c.nick.clone()).collect();
    assert_eq!(nicks, ["guest1", "guest2", "guest3"]);

    // Everyone, the sender too, gets every line, in the hub's one order:
    // each sender's lines in the order sent, and all three see the same.
    for round in 0..5 {
        for client in clients.iter_mut() {
            client.send(&format!("line {round}"));
        }
    }
    let heard: Vec<Vec<String>> = clients
        .iter()
        .map(|client| (0..15).map(|_| client.recv()).collect())
        .collect();
    assert_eq!(heard[0], heard[1]);
    assert_eq!(heard[0], heard[2]);
    for nick in &nicks {
        let from: Vec<&String> = heard[0]
            .iter()
            .filter(|line| line.starts_with(&format!("chat {nick} ")))
            .collect();
        let sent: Vec<String> = (0..5).map(|n| format!("chat {nick} line {n}")).collect();
        assert_eq!(from, sent.iter().collect::<Vec<_>>());
    }

    // One leaves with close_notify and gets one back; the others go on.
    let mut gone = clients.remove(0);
    gone.close();
    assert_eq!(gone.expect_end(), Incoming::Closed);
    clients[0].send("still here");
    for client in &clients {
        assert_eq!(client.recv(), "chat guest2 still here");
    }
    for client in clients.iter_mut() {
        client.close();
        assert_eq!(client.expect_end(), Incoming::Closed);
    }
    server.stop();
}
