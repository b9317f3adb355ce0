//! Every mode of the built `chat-bench`, at tiny sizes, against a server
//! in this process; then `chat-bench suite --quick` against the built
//! `chat-server`. Nothing is timed: each run must pass its own checks and
//! end with a `RESULT` line that has the keys the suite reads.
//!
//! Every wait has a deadline, and every server started here is stopped.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use secure_chat::server::{Limits, Server, Stopper};
use secure_chat::tls;

/// The bench binary Cargo built for this test.
const BENCH: &str = env!("CARGO_BIN_EXE_chat-bench");
/// The longest one bench run may take here before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(40);
/// The longest the server may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A directory of throwaway certificates, removed when dropped.
struct Certs(PathBuf);

impl Certs {
    /// A CA and a server certificate for localhost and 127.0.0.1, written
    /// as `ca.crt`, `server.crt` and `server.key`, as `make certs` does.
    fn new() -> Certs {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-bench-smoke-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, &ca_key);
        let mut leaf =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        fs::write(dir.join("server.crt"), leaf_cert.pem()).unwrap();
        fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
        Certs(dir)
    }

    /// A file in the directory.
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        // A leftover temp dir is untidy, not a failure.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A chat server running in a thread of this process; stopped when dropped.
struct InProcess {
    /// Where it listens.
    addr: SocketAddr,
    /// Stops it.
    stopper: Stopper,
    /// Disconnects, or gets a message, when `run` has returned.
    finished: crossbeam_channel::Receiver<()>,
}

impl InProcess {
    /// Binds 127.0.0.1:0 before the thread starts, so clients can
    /// connect at once.
    fn start(certs: &Certs) -> InProcess {
        let config =
            tls::server_config(&certs.path("server.crt"), &certs.path("server.key"), None).unwrap();
        // Flood control off: the bench sends as fast as it can.
        let limits = Limits {
            rate: None,
            ..Limits::default()
        };
        let server = Server::bind("127.0.0.1:0", config, limits).unwrap();
        let addr = server.local_addr();
        let stopper = server.stopper();
        let (done, finished) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            // How it ended is checked by `finished` disconnecting or not.
            let _ = server.run();
            let _ = done.send(());
        });
        InProcess {
            addr,
            stopper,
            finished,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stopper.stop();
        let stopped = self.finished.recv_timeout(STOP_LIMIT);
        if !thread::panicking() {
            assert!(
                stopped.is_ok(),
                "the server did not stop within {STOP_LIMIT:?}"
            );
        }
    }
}

/// Runs `command`, killing it after `limit`; returns what it printed.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs the bench with `args` against `server`; checks exit status 0,
/// `status=ok`, and that each of `numeric` is a number. Returns the
/// `RESULT` line's fields.
fn bench(
    server: &InProcess,
    certs: &Certs,
    args: &[&str],
    numeric: &[&str],
) -> BTreeMap<String, String> {
    let output = run_bounded(
        Command::new(BENCH)
            .args(args)
            .arg("--addr")
            .arg(server.addr.to_string())
            .arg("--ca")
            .arg(certs.path("ca.crt"))
            .arg("--server-pid")
            .arg(std::process::id().to_string())
            .args(["--timeout", "30", "--close-wait", "10"]),
        RUN_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(output.status.success(), "{}: {context}", output.status);
    let fields = result_fields(&stdout).unwrap_or_else(|| panic!("no RESULT line: {context}"));
    assert_eq!(
        fields.get("status").map(String::as_str),
        Some("ok"),
        "{context}"
    );
    for key in numeric {
        let value = fields
            .get(*key)
            .unwrap_or_else(|| panic!("no {key}: {context}"));
        assert!(
            value.parse::<f64>().is_ok(),
            "{key}={value} is not a number: {context}"
        );
    }
    fields
}

/// The fields of the last `RESULT` line in `stdout`.
fn result_fields(stdout: &str) -> Option<BTreeMap<String, String>> {
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with("RESULT "))?;
    Some(
        line["RESULT ".len()..]
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn fanout_delivers_every_line() {
    let certs = Certs::new();
    let server = InProcess::start(&certs);
    let fields = bench(
        &server,
        &certs,
        &[
            "fanout",
            "--clients",
            "6",
            "--senders",
            "2",
            "--messages",
            "50",
        ],
        &[
            "deliveries_per_s",
            "server_cpu_us_per_delivery",
            "lost",
            "extra",
            "out_of_order",
            "seconds",
        ],
    );
    assert_eq!(fields["delivered"], "600");
    assert_eq!(fields["lost"], "0");
}

#[test]
fn latency_reports_percentiles() {
    let certs = Certs::new();
    let server = InProcess::start(&certs);
    bench(
        &server,
        &certs,
        &[
            "latency",
            "--clients",
            "4",
            "--rate",
            "50",
            "--seconds",
            "1",
        ],
        &[
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "server_cpu_pct",
        ],
    );
}

#[test]
fn idle_measures_memory_threads_and_a_broadcast() {
    let certs = Certs::new();
    let server = InProcess::start(&certs);
    let fields = bench(
        &server,
        &certs,
        &["idle", "--clients", "8", "--hold", "1", "--readers", "3"],
        &[
            "kib_per_conn",
            "threads_before",
            "threads_after",
            "threads_per_conn",
            "broadcast_ms",
        ],
    );
    // Every idle client and the broadcaster closed cleanly.
    assert_eq!(fields["closed_clean"], "9");
}

#[test]
fn handshakes_full_and_resumed() {
    let certs = Certs::new();
    let server = InProcess::start(&certs);
    let keys = [
        "handshakes",
        "handshakes_per_s",
        "resumed",
        "p50_ms",
        "p99_ms",
        "server_cpu_us_per_handshake",
    ];
    let full = bench(
        &server,
        &certs,
        &["handshake", "--workers", "2", "--seconds", "1"],
        &keys,
    );
    assert_eq!(full["resumed"], "0");
    let resumed = bench(
        &server,
        &certs,
        &[
            "handshake",
            "--workers",
            "2",
            "--seconds",
            "1",
            "--resume",
            "--kx",
            "x25519",
        ],
        &keys,
    );
    assert_ne!(resumed["resumed"], "0");
    assert_eq!(resumed["kx_negotiated"], "X25519");
}

#[test]
fn slow_readers_leave_the_others_complete() {
    let certs = Certs::new();
    let server = InProcess::start(&certs);
    let fields = bench(
        &server,
        &certs,
        &[
            "slow",
            "--clients",
            "5",
            "--senders",
            "2",
            "--messages",
            "100",
            "--stalled",
            "2",
            "--run-wait",
            "10",
            "--stall-wait",
            "1",
        ],
        &["seconds_without", "seconds_with", "slowdown", "stalled_cut"],
    );
    assert_eq!(fields["others_complete"], "yes");
}

#[test]
fn usage_errors_are_refused() {
    let refused = |args: &[&str]| {
        let output = run_bounded(Command::new(BENCH).args(args), RUN_LIMIT);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(refused(&["idle", "--peer", "ncat", "--clients", "5000"]).contains("at most about"));
    assert!(refused(&["sprint"]).contains("unknown mode"));
    assert!(refused(&["fanout", "--senders", "0"]).contains("--senders"));
    // Loopback only: a load generator must not load anyone else.
    let output = run_bounded(
        Command::new(BENCH).args(["fanout", "--addr", "192.0.2.1:8080"]),
        RUN_LIMIT,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopback address"));
}

/// chat-server as Cargo builds it for the workspace: next to the bench.
///
/// `cargo test --workspace` (what `make test` runs) builds it; a test of
/// this crate alone may not have, and then the suite test says so and
/// passes, as it cannot run.
fn built_server() -> Option<PathBuf> {
    let server = Path::new(BENCH).with_file_name("chat-server");
    server.is_file().then_some(server)
}

#[test]
fn the_quick_suite_runs_against_chat_server() {
    let Some(server) = built_server() else {
        eprintln!("skipped: no chat-server next to {BENCH}; `cargo test --workspace` builds it");
        return;
    };
    let certs = Certs::new();
    let out = certs.path("suite.md");
    let output = run_bounded(
        Command::new(BENCH)
            .args(["suite", "--quick", "--certs"])
            .arg(&certs.0)
            .arg("--server")
            .arg(&server)
            .arg("--out")
            .arg(&out),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let context = format!(
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{}: {context}", output.status);
    let results: Vec<_> = stdout
        .lines()
        .filter(|line| line.starts_with("RESULT "))
        .collect();
    assert_eq!(results.len(), 9, "{context}");
    assert!(
        results.iter().all(|line| line.ends_with(" status=ok")),
        "{context}"
    );
    let table = fs::read_to_string(&out).unwrap();
    assert!(table.contains("| figure | secure-chat |"), "{table}");
    assert!(
        table.contains("idle 5000: threads per connection"),
        "{table}"
    );
    assert!(table.contains("## Every round"), "{table}");
    // Pinned by default wherever there are two cores to split.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let said = if cores > 1 {
        "Pinned: the server on CPU"
    } else {
        "Not pinned"
    };
    assert!(table.contains(said), "{table}");
}

#[test]
fn the_suite_runs_some_modes_unpinned_and_shows_each_round() {
    let Some(server) = built_server() else {
        eprintln!("skipped: no chat-server next to {BENCH}; `cargo test --workspace` builds it");
        return;
    };
    let certs = Certs::new();
    let out = certs.path("suite.md");
    let output = run_bounded(
        Command::new(BENCH)
            .args(["suite", "--quick", "--no-pin", "--only", "latency"])
            .args(["--rounds", "2", "--certs"])
            .arg(&certs.0)
            .arg("--server")
            .arg(&server)
            .arg("--out")
            .arg(&out),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}: {stdout}", output.status);
    let results = stdout.lines().filter(|l| l.starts_with("RESULT ")).count();
    assert_eq!(results, 2, "{stdout}");
    let table = fs::read_to_string(&out).unwrap();
    assert!(table.contains("Not pinned"), "{table}");
    assert!(!table.contains("fanout"), "{table}");
    assert!(
        table.contains("| figure | server | round 1 | round 2 | median | min–max |"),
        "{table}"
    );
    assert!(
        table.contains("secure-chat, round 2: RESULT mode=latency"),
        "{table}"
    );
}

#[test]
fn pin_moves_the_bench_and_the_servers_threads_apart() {
    let certs = Certs::new();
    let server = InProcess::start(&certs);
    // Pinning this test's own process would move every test's threads, so
    // the pid pinned as "the server" is a process of its own.
    let mut stand_in = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = stand_in.id().to_string();
    let output = run_bounded(
        Command::new(BENCH)
            .args([
                "fanout",
                "--clients",
                "4",
                "--senders",
                "1",
                "--messages",
                "10",
            ])
            .arg("--addr")
            .arg(server.addr.to_string())
            .arg("--ca")
            .arg(certs.path("ca.crt"))
            .args(["--server-pid", &pid, "--pin", "--timeout", "30"]),
        RUN_LIMIT,
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    stand_in.kill().unwrap();
    assert!(!stand_in.wait().unwrap().success(), "sleep was stopped");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        assert_eq!(output.status.code(), Some(1), "{context}");
        assert!(stderr.contains("at least two CPUs"), "{context}");
        return;
    }
    assert!(output.status.success(), "{context}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pinned: the server on CPU "))
        .unwrap_or_else(|| panic!("no pinned line: {context}"));
    let (server_cpus, _) = line.split_once(',').unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim);
    assert_eq!(allowed, Some(server_cpus), "{status}");
}
