//! `contrib/chat-server.service`, checked offline by `systemd-analyze`:
//! `verify` parses it with the built server in place of the installed one
//! (a key it does not know, a value it cannot parse, a program that is not
//! there), and `security --offline=yes` rates its hardening; the server
//! is run with the unit's arguments (its files swapped for temporary ones)
//! until it listens. Whether it runs well inside the unit's sandbox (its
//! system calls, its paths) is not checked here: that needs systemd.

use secure_chat_test_support as support;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use secure_chat::server::MAX_CLIENTS;
use support::{run, Pki, ServerProcess, TempDir, SERVER};

/// Where the unit expects the server; the tests put the built one there.
const INSTALLED: &str = "/usr/local/bin/chat-server";

/// The unit as shipped.
fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/chat-server.service");
    fs::read_to_string(path).unwrap()
}

/// `text` written as `chat-server.service` in `dir`, the built server in
/// place of the installed one.
fn with_built_server(dir: &TempDir, text: &str) -> PathBuf {
    assert!(text.contains(&format!("ExecStart={INSTALLED} ")), "{text}");
    let path = dir.path().join("chat-server.service");
    let built = SERVER.path().to_str().unwrap();
    fs::write(&path, text.replace(INSTALLED, built)).unwrap();
    path
}

/// `systemd-analyze ARGS UNIT`, offline: no manual pages looked up, no
/// running systemd needed.
fn analyze(args: &[&str], unit: &Path) -> Output {
    run(Command::new("systemd-analyze").args(args).arg(unit), "")
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_unit_verifies_without_a_word() {
    let dir = TempDir::new();
    let path = with_built_server(&dir, &unit());
    let output = analyze(&["verify", "--man=no"], &path);
    assert!(output.status.success(), "{}", said(&output));
    // A key systemd does not know, or a value it cannot parse, is only a
    // warning: silence is the check.
    assert_eq!(said(&output), "");
}

#[test]
fn verify_catches_a_mistake_in_a_unit() {
    let dir = TempDir::new();
    let typo = unit().replace("ProtectSystem=strict", "ProtectSytem=strict");
    let output = analyze(&["verify", "--man=no"], &with_built_server(&dir, &typo));
    assert!(said(&output).contains("Unknown key"), "{}", said(&output));
    let elsewhere = unit().replace(INSTALLED, "/nonexistent/chat-server");
    let path = dir.path().join("chat-server.service");
    fs::write(&path, elsewhere).unwrap();
    let output = analyze(&["verify", "--man=no"], &path);
    assert!(!output.status.success(), "{}", said(&output));
    assert!(
        said(&output).contains("not executable"),
        "{}",
        said(&output)
    );
}

#[test]
fn the_unit_is_rated_well_hardened() {
    let dir = TempDir::new();
    let path = with_built_server(&dir, &unit());
    let output = analyze(&["security", "--offline=yes"], &path);
    let text = said(&output);
    let level: f64 = text
        .split("Overall exposure level for chat-server.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    // 0 is fully confined, 10 not at all; systemd calls up to 2 "OK".
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}

/// What the issue asks of the unit, and what the server needs of it.
#[test]
fn the_unit_has_its_own_user_a_read_only_system_and_room_for_every_client() {
    let unit = unit();
    let value = |key: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    assert_eq!(value("User"), "secure-chat");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("ProtectHome"), "yes");
    assert_eq!(value("PrivateTmp"), "yes");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("StateDirectory"), "secure-chat");
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    let exec = value("ExecStart");
    for wanted in [
        "--data-dir /var/lib/secure-chat",
        "--cert /etc/secure-chat/server.crt",
        "--key /etc/secure-chat/server.key",
        "--metrics 127.0.0.1:",
    ] {
        assert!(exec.contains(wanted), "{wanted} not in {exec}");
    }
    // A file per connection, and up to twice the clients while handshakes
    // are under way (see Limits::max_clients), with room to spare.
    let files: usize = value("LimitNOFILE").parse().unwrap();
    assert!(files >= 2 * MAX_CLIENTS + 1000, "LimitNOFILE={files}");
    let tasks: usize = value("TasksMax").parse().unwrap();
    assert!(tasks >= 2 * MAX_CLIENTS + 100, "TasksMax={tasks}");
}

/// The arguments `ExecStart=` gives the server, after its path.
fn exec_start_args() -> Vec<String> {
    let unit = unit();
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let mut words = exec.split_whitespace().map(str::to_string);
    assert_eq!(words.next().as_deref(), Some(INSTALLED));
    words.collect()
}

#[test]
fn the_help_names_every_flag_the_unit_uses() {
    let output = run(Command::new(SERVER.path()).arg("--help"), "");
    let help = String::from_utf8_lossy(&output.stdout);
    let flags: Vec<String> = exec_start_args()
        .into_iter()
        .filter(|word| word.starts_with("--"))
        .collect();
    assert!(flags.len() >= 5, "{flags:?}");
    for flag in flags {
        assert!(help.contains(&format!("{flag} ")), "{flag} not in\n{help}");
    }
}

/// The server runs with the unit's `ExecStart=`: every flag as written,
/// only what names this machine's files and ports swapped for temporary
/// ones. It listens, keeps its rooms in the data directory (the store's
/// figures show), serves its metrics, and stops on SIGTERM.
#[test]
fn the_server_runs_with_the_units_arguments() {
    let pki = Pki::new();
    let data = TempDir::new();
    let mut args = Vec::new();
    let mut words = exec_start_args().into_iter();
    while let Some(word) = words.next() {
        let swapped = match word.as_str() {
            "--addr" | "--metrics" => Some("127.0.0.1:0".to_string()),
            "--cert" => Some(pki.cert.to_str().unwrap().to_string()),
            "--key" => Some(pki.key.to_str().unwrap().to_string()),
            "--data-dir" => Some(data.path().to_str().unwrap().to_string()),
            _ => None,
        };
        args.push(word);
        if let Some(value) = swapped {
            words.next().expect("a value after the flag");
            args.push(value);
        }
    }
    let mut server = ServerProcess::spawn_command(Command::new(&SERVER).args(&args));
    server.wait_until_listening();
    // Logged before the listening line.
    let line = server
        .seen
        .iter()
        .find(|line| line.contains("metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics address in {:#?}", server.seen));
    let metrics: SocketAddr = line
        .rsplit_once("http://")
        .unwrap()
        .1
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    // The endpoint answers from the moment it is logged; the store's
    // figures join it when `Server::run` has opened the store, a moment
    // later.
    let mut reply = String::new();
    let joined = support::wait_until(|| {
        reply = support::metrics_text(metrics);
        reply.contains("\nchat_server_store_queued ")
    });
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        joined,
        "the store's figures never joined the endpoint:\n{reply}"
    );
    assert!(
        fs::read_dir(data.path()).unwrap().next().is_some(),
        "nothing in the data directory"
    );
    server.stop();
}
