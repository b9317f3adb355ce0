//! The chat-server and chat-client binaries as child processes: run to
//! the end with some input, or a server whose log is read as it comes.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::TIMEOUT;

/// The chat-server binary Cargo built for the tests.
pub static SERVER: Binary = Binary::new("chat-server");

/// The chat-client binary Cargo built for the tests.
pub static CLIENT: Binary = Binary::new("chat-client");

/// One of the package's binaries, found when first used; anything that
/// takes a program or an argument takes `&SERVER` or `&CLIENT`.
///
/// Cargo gives an integration test the paths of its package's binaries
/// as `CARGO_BIN_EXE_<name>` while compiling it, but this crate is not an
/// integration test: it is compiled once, for every test file. It reads
/// the same variable at run time instead, which recent Cargo versions set
/// when they run a test, and otherwise looks where Cargo puts binaries:
/// next to the `deps` directory the test executable runs from.
pub struct Binary {
    name: &'static str,
    path: OnceLock<PathBuf>,
}

impl Binary {
    const fn new(name: &'static str) -> Binary {
        Binary {
            name,
            path: OnceLock::new(),
        }
    }

    /// Where the binary is; fails the test if it was not built.
    pub fn path(&self) -> &Path {
        self.path.get_or_init(|| {
            let path = match std::env::var_os(format!("CARGO_BIN_EXE_{}", self.name)) {
                Some(path) => PathBuf::from(path),
                None => {
                    let test = std::env::current_exe().unwrap();
                    // target/<profile>/deps/<test> -> target/<profile>/<name>
                    let profile = test.parent().and_then(Path::parent).unwrap();
                    profile.join(self.name)
                }
            };
            assert!(path.is_file(), "{} was not built: {path:?}", self.name);
            path
        })
    }
}

impl AsRef<OsStr> for Binary {
    fn as_ref(&self) -> &OsStr {
        self.path().as_os_str()
    }
}

/// Runs `command` with `input` on its stdin and waits for it as [`finish`]
/// does; its stdout and stderr are captured.
pub fn run(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The child may exit without reading all of it; that is its business.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    finish(child)
}

/// Waits for `child` to exit and collects what it printed; kills it and
/// fails the test if that takes longer than [`TIMEOUT`].
pub fn finish(child: Child) -> Output {
    let pid = child.id();
    let (done, finished) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // The test fails either way; a kill that fails changes nothing.
            kill(pid, "-KILL");
            panic!("process {pid} did not exit within {TIMEOUT:?}");
        }
    }
}

/// Sends `signal` (`-TERM`, `-HUP`, `-KILL`...) to process `pid` with
/// kill(1); true if it was delivered.
pub fn kill(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

/// The lines of `pipe` (a child's stdout or stderr), read by a thread of
/// their own so the child never blocks on a full pipe. The channel
/// disconnects when the pipe closes.
pub fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// `--cert CERT --key KEY`, the arguments of a [`ServerProcess`].
pub fn cert_args<'a>(cert: &'a Path, key: &'a Path) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("--cert"),
        cert.as_os_str(),
        OsStr::new("--key"),
        key.as_os_str(),
    ]
}

/// The chat-server binary as a child process, its log (stderr) read line
/// by line as it comes. Killed when dropped if the test did not stop it.
pub struct ServerProcess {
    /// Its process id.
    pub pid: u32,
    /// Where it listens, once [`ServerProcess::wait_until_listening`] has
    /// read it from the log.
    pub addr: SocketAddr,
    log: Receiver<String>,
    /// Every log line read so far.
    pub seen: Vec<String>,
    /// The exit status, and when the wait for it returned.
    exited: Receiver<(ExitStatus, Instant)>,
    exit: Option<(ExitStatus, Instant)>,
}

impl ServerProcess {
    /// Starts `chat-server --addr 127.0.0.1:0 ARGS` and waits for it to say
    /// where it listens.
    pub fn start(args: &[&OsStr]) -> ServerProcess {
        let mut server = ServerProcess::spawn(args);
        server.wait_until_listening();
        server
    }

    /// Starts `chat-server --addr 127.0.0.1:0 ARGS` without waiting for it.
    pub fn spawn(args: &[&OsStr]) -> ServerProcess {
        ServerProcess::spawn_command(
            Command::new(&SERVER)
                .args(["--addr", "127.0.0.1:0"])
                .args(args),
        )
    }

    /// Runs `command`, which starts the server (perhaps through a wrapper
    /// that `exec`s it), without waiting for it.
    ///
    /// The server keeps nothing on disk unless the command says where
    /// (`--data-dir`): `--no-data-dir` is added otherwise, so that no test
    /// writes into, or waits for the lock of, a directory others share.
    pub fn spawn_command(command: &mut Command) -> ServerProcess {
        let runs_server = command.get_program() == SERVER.path().as_os_str()
            || command
                .get_args()
                .any(|arg| arg == SERVER.path().as_os_str());
        let chose = command
            .get_args()
            .any(|arg| arg == "--data-dir" || arg == "--no-data-dir");
        if runs_server && !chose {
            command.arg("--no-data-dir");
        }
        let mut child = command
            // The log the tests read is the default one, whatever the
            // environment asks for.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = lines_of(child.stderr.take().unwrap());
        let (exit_tx, exited) = crossbeam_channel::bounded(1);
        let pid = child.id();
        thread::spawn(move || {
            let status = child.wait().unwrap();
            let _ = exit_tx.send((status, Instant::now()));
        });
        ServerProcess {
            pid,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
            seen: Vec::new(),
            exited,
            exit: None,
        }
    }

    /// Waits for `listening on ADDR` and learns the address.
    pub fn wait_until_listening(&mut self) {
        let listening = self.wait_for_log(|line| line.contains("listening on "));
        self.addr = listening
            .rsplit_once("listening on ")
            .unwrap()
            .1
            .parse()
            .unwrap();
    }

    /// The next log line that satisfies `wanted`.
    pub fn wait_for_log(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        self.wait_for_log_or_end(wanted)
            .unwrap_or_else(|| panic!("the log ended before the line came: {:#?}", self.seen))
    }

    /// The next log line that satisfies `wanted`, or `None` if the log
    /// ends first (the process has exited). Fails after [`TIMEOUT`].
    pub fn wait_for_log_or_end(&mut self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.log.recv_deadline(deadline) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the log neither showed the line nor ended within {TIMEOUT:?}: {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Sends `signal` (`-TERM`, `-HUP`...) and returns when it was sent.
    pub fn signal(&self, signal: &str) -> Instant {
        let sent = Instant::now();
        assert!(kill(self.pid, signal), "kill {signal} {} failed", self.pid);
        sent
    }

    /// True if the process has exited (without waiting for it).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.exited.try_recv().ok();
        }
        self.exit.is_some()
    }

    /// Waits for the process to exit (at most [`TIMEOUT`]) and for the
    /// rest of its log; returns the status and when it exited.
    pub fn wait_for_exit(&mut self) -> (ExitStatus, Instant) {
        if self.exit.is_none() {
            match self.exited.recv_timeout(TIMEOUT) {
                Ok(exit) => self.exit = Some(exit),
                Err(_) => panic!("server did not exit within {TIMEOUT:?}: {:#?}", self.seen),
            }
        }
        // The pipe closes when the process exits; wanting no line reads
        // the log to its end.
        self.wait_for_log_or_end(|_| false);
        self.exit.unwrap()
    }

    /// SIGTERM, then checks that the server exited with status 0; returns
    /// every line it logged.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("-TERM");
        let (status, _) = self.wait_for_exit();
        assert!(status.success(), "{status}: {:#?}", self.seen);
        std::mem::take(&mut self.seen)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A test that failed before stopping its server still ends it.
        if !self.has_exited() {
            kill(self.pid, "-KILL");
            let _ = self.exited.recv_timeout(TIMEOUT);
        }
    }
}
