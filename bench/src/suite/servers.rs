//! The servers the suite compares, started fresh for each measurement on a
//! free loopback port and stopped by PID afterwards: SIGTERM, then SIGKILL
//! after a deadline. A [`ServerProcess`] that is dropped kills its server,
//! so none is left behind, whatever went wrong.

use std::env;
use std::fmt;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::pin::{self, Split};

/// How long a server may take to start accepting connections.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long a server has to exit after SIGTERM before it is killed. Ours
/// promises two seconds; the others get the same and a little more.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often a starting or stopping server is looked at.
const POLL: Duration = Duration::from_millis(25);

/// A server the suite can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuitePeer {
    /// This project's chat-server.
    SecureChat,
    /// The Go peer, one goroutine pair per client writing directly.
    GoNaive,
    /// The Go peer with a hub goroutine and per-client queues.
    GoHub,
    /// `ncat --ssl --chat`.
    Ncat,
    /// examples/card-chat.rs: a thread per client, a crossbeam hub.
    CardChat,
}

impl SuitePeer {
    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            SuitePeer::SecureChat => "secure-chat",
            SuitePeer::GoNaive => "go-naive",
            SuitePeer::GoHub => "go-hub",
            SuitePeer::Ncat => "ncat",
            SuitePeer::CardChat => "card-chat",
        }
    }

    /// What the bench must expect of its lines.
    pub fn protocol(self) -> Peer {
        match self {
            SuitePeer::SecureChat => Peer::SecureChat,
            // It speaks the same subset as the Go peer.
            SuitePeer::GoNaive | SuitePeer::GoHub | SuitePeer::CardChat => Peer::Go,
            SuitePeer::Ncat => Peer::Ncat,
        }
    }
}

impl fmt::Display for SuitePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SuitePeer {
    type Err = String;

    fn from_str(text: &str) -> Result<SuitePeer, String> {
        match text {
            "secure-chat" => Ok(SuitePeer::SecureChat),
            "go-naive" => Ok(SuitePeer::GoNaive),
            "go-hub" => Ok(SuitePeer::GoHub),
            "ncat" => Ok(SuitePeer::Ncat),
            "card-chat" => Ok(SuitePeer::CardChat),
            other => Err(format!(
                "unknown peer '{other}': use secure-chat, go-naive, go-hub, ncat or card-chat"
            )),
        }
    }
}

/// Where the programs and certificates are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// chat-server.
    pub server: PathBuf,
    /// Extra flags for chat-server.
    pub server_args: Vec<String>,
    /// The Go peer.
    pub go_peer: PathBuf,
    /// The card-chat example.
    pub card_chat: PathBuf,
    /// The directory with ca.crt, server.crt and server.key.
    pub certs: PathBuf,
}

impl Programs {
    /// The program that runs `peer`, or why it cannot be run here.
    pub fn program(&self, peer: SuitePeer) -> Result<PathBuf, String> {
        match peer {
            SuitePeer::SecureChat => existing(&self.server).ok_or_else(|| {
                format!(
                    "chat-server not found at {} (build it: cargo build --release, or pass \
                     --server)",
                    self.server.display()
                )
            }),
            SuitePeer::GoNaive | SuitePeer::GoHub => existing(&self.go_peer).ok_or_else(|| {
                format!(
                    "the Go peer is not built at {} (pass --go-peer PATH)",
                    self.go_peer.display()
                )
            }),
            SuitePeer::Ncat => on_path("ncat")
                .ok_or_else(|| "ncat not installed: apt-get install ncat".to_string()),
            SuitePeer::CardChat => {
                self.card_chat_dir()?;
                existing(&self.card_chat).ok_or_else(|| {
                    format!(
                        "card-chat not found at {} (build it: cargo build --release --example \
                         card-chat)",
                        self.card_chat.display()
                    )
                })
            }
        }
    }

    /// The directory card-chat runs in: the one that holds the certificate
    /// directory, which must be named `certs`, as the example reads
    /// `certs/server.crt` and `certs/server.key` and takes no flags.
    fn card_chat_dir(&self) -> Result<PathBuf, String> {
        let certs = fs::canonicalize(&self.certs)
            .map_err(|err| format!("{}: {err}", self.certs.display()))?;
        match (certs.file_name(), certs.parent()) {
            (Some(name), Some(parent)) if name == "certs" => Ok(parent.to_owned()),
            _ => Err(format!(
                "card-chat reads certs/ in its working directory: --certs must name a \
                 directory called certs, not {}",
                self.certs.display()
            )),
        }
    }

    /// The command that starts `peer` on `addr`.
    fn command(&self, peer: SuitePeer, program: &Path, addr: SocketAddr) -> Command {
        let cert = self.certs.join("server.crt");
        let key = self.certs.join("server.key");
        let mut command = Command::new(program);
        match peer {
            SuitePeer::SecureChat => {
                command
                    .arg("--addr")
                    .arg(addr.to_string())
                    .arg("--cert")
                    .arg(&cert)
                    .arg("--key")
                    .arg(&key)
                    .args(["-q", "--rate", "0"])
                    .args(&self.server_args);
                // Nothing kept on disk unless asked for: a benchmark's rooms
                // are not worth keeping, and runs must not share a directory.
                let keeps = self
                    .server_args
                    .iter()
                    .any(|arg| arg.starts_with("--data-dir") || arg == "--no-data-dir");
                if !keeps {
                    command.arg("--no-data-dir");
                }
            }
            SuitePeer::GoNaive | SuitePeer::GoHub => {
                let design = if peer == SuitePeer::GoNaive {
                    "naive"
                } else {
                    "hub"
                };
                command
                    .arg("-addr")
                    .arg(addr.to_string())
                    .arg("-cert")
                    .arg(&cert)
                    .arg("-key")
                    .arg(&key)
                    .args(["-design", design, "-q"]);
            }
            SuitePeer::Ncat => {
                command
                    .args(["--ssl", "--ssl-cert"])
                    .arg(&cert)
                    .arg("--ssl-key")
                    .arg(&key)
                    .args(["--chat", "--listen", "127.0.0.1"])
                    .arg(addr.port().to_string())
                    .args(["--max-conns", "1100"]);
            }
            SuitePeer::CardChat => {
                command.arg(addr.to_string());
                // Checked by `program` before any server starts.
                if let Ok(dir) = self.card_chat_dir() {
                    command.current_dir(dir);
                }
            }
        }
        command
    }
}

/// `path` if it is a file.
fn existing(path: &Path) -> Option<PathBuf> {
    path.is_file().then(|| path.to_owned())
}

/// The first `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A free port on loopback: bound, read, released.
///
/// Another process could take it in between; the start then fails with a
/// clear message, which is rare enough not to need a retry.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|err| format!("cannot find a free port: {err}"))?;
    listener
        .local_addr()
        .map_err(|err| format!("cannot find a free port: {err}"))
}

/// A running server.
pub struct ServerProcess {
    /// The child process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its standard output and error go.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `peer` on a free port, logging to `log`, and waits until it
    /// accepts connections. With a `split`, the server starts on its cores:
    /// this thread takes the server's mask for the spawn, which the child
    /// inherits from its first instruction, then takes the bench's back.
    pub fn start(
        programs: &Programs,
        split: Option<&Split>,
        peer: SuitePeer,
        log: PathBuf,
    ) -> Result<ServerProcess, String> {
        let program = programs.program(peer)?;
        let addr = free_port()?;
        let out = File::create(&log).map_err(|err| format!("{}: {err}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|err| format!("{}: {err}", log.display()))?;
        if let Some(split) = split {
            pin::pin_this_thread(&split.server)?;
        }
        let child = programs
            .command(peer, &program, addr)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Our server's default log is what the suite expects.
            .env_remove("RUST_LOG")
            .spawn();
        let restored = split.map_or(Ok(()), |split| pin::pin_this_thread(&split.bench));
        let child = child.map_err(|err| format!("cannot start {}: {err}", program.display()))?;
        // Made before anything can fail, so that dropping it kills the child.
        let mut server = ServerProcess { child, addr, log };
        restored?;
        server.wait_until_accepting()?;
        if let Some(split) = split {
            // A check as much as a step: it moves only threads that changed
            // their own mask, and says so.
            let moved = pin::pin_process(server.pid(), &split.server)?;
            if moved > 0 {
                println!("suite: {peer} had set {moved} thread(s) off its cores; pinned again");
            }
        }
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the port to accept a TCP connection.
    fn wait_until_accepting(&mut self) -> Result<(), String> {
        let until = Instant::now() + START_WAIT;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the server exited at start ({status}): {}",
                    log_tail(&self.log)
                ));
            }
            // A plain TCP connection that closes at once: each server
            // takes it for a client that gave up during the handshake.
            if TcpStream::connect_timeout(&self.addr, POLL * 4).is_ok() {
                return Ok(());
            }
            thread::sleep(POLL);
        }
        Err(format!(
            "the server did not accept connections on {} within {} s: {}",
            self.addr,
            START_WAIT.as_secs(),
            log_tail(&self.log)
        ))
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within
    /// [`STOP_WAIT`]. Returns how it went, in words, if not as asked.
    pub fn stop(mut self) -> Option<String> {
        // Dropping `self` afterwards finds the process reaped.
        self.terminate()
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    fn terminate(&mut self) -> Option<String> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return Some("the server had exited before the end".to_string());
        }
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // Fails only if the process is gone already; the wait sees that.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let until = Instant::now() + STOP_WAIT;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            thread::sleep(POLL);
        }
        self.kill();
        Some(format!(
            "the server did not exit within {} s of SIGTERM and was killed",
            STOP_WAIT.as_secs()
        ))
    }

    /// SIGKILL, then reaps the process.
    fn kill(&mut self) {
        // Both fail only for a process already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            self.kill();
        }
    }
}

/// The last lines of a log, for an error message.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_map_to_protocols() {
        assert_eq!("go-hub".parse::<SuitePeer>(), Ok(SuitePeer::GoHub));
        assert_eq!(SuitePeer::GoNaive.protocol(), Peer::Go);
        assert_eq!(SuitePeer::Ncat.protocol(), Peer::Ncat);
        assert_eq!("card-chat".parse::<SuitePeer>(), Ok(SuitePeer::CardChat));
        assert_eq!(SuitePeer::CardChat.protocol(), Peer::Go);
        assert!("go".parse::<SuitePeer>().is_err());
    }

    #[test]
    fn a_missing_program_says_how_to_get_it() {
        let programs = Programs {
            server: PathBuf::from("/nonexistent/chat-server"),
            server_args: Vec::new(),
            go_peer: PathBuf::from("/nonexistent/chat-peer"),
            card_chat: PathBuf::from("/nonexistent/card-chat"),
            certs: PathBuf::from("certs"),
        };
        let err = programs.program(SuitePeer::SecureChat).unwrap_err();
        assert!(err.contains("cargo build --release"), "{err}");
        let err = programs.program(SuitePeer::GoHub).unwrap_err();
        assert!(err.contains("--go-peer"), "{err}");
    }

    #[test]
    fn a_free_port_is_on_loopback() {
        assert!(free_port().unwrap().ip().is_loopback());
    }
}
