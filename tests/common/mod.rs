//! Helpers shared by the integration tests: throwaway PKIs made with rcgen,
//! an in-process server on `127.0.0.1:0`, a scriptable TLS chat client, and
//! the two binaries run as child processes.
//!
//! Every wait here has a deadline ([`TIMEOUT`]); a test that would hang
//! fails instead.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection};
use secure_chat::duplex::{self, Received, WriteHalf};
use secure_chat::line::{Frame, LineFramer};
use secure_chat::server::{Gauges, Limits, Server, Stopper};
use secure_chat::tls::{self, Identity, Trust};

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "secure-chat-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A leftover temp dir is untidy, not a test failure.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What is wrong with the certificate a [`Pki`] gives the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Nothing: a leaf for localhost, 127.0.0.1 and ::1, signed by the CA.
    None,
    /// The client's CA file holds a different CA than the one that signed.
    UntrustedCa,
    /// The client trusts a CA with the signer's name but another key, as
    /// after `make clean-certs certs` on the server's machine only.
    RemadeCa,
    /// The leaf expired in 2021.
    Expired,
    /// The leaf is for `example.org` only.
    OtherHost,
    /// The server presents the CA certificate itself.
    CaAsLeaf,
}

/// A CA, a server certificate and key, written as PEM files.
pub struct Pki {
    dir: TempDir,
    /// The CA file the client should trust.
    pub ca: PathBuf,
    /// The CA that really signed the server's certificate: the same as
    /// `ca` unless the flaw is [`Flaw::UntrustedCa`].
    pub signer: PathBuf,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// How `signer` was made, and its key, for signing client
    /// certificates (`None` for a PKI made by `make certs`).
    issuer: Option<(CertificateParams, KeyPair)>,
}

/// What is wrong with a client certificate from [`Pki::client_identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFlaw {
    /// Nothing: signed by the PKI's CA, for client authentication.
    None,
    /// It expired in 2021.
    Expired,
    /// Signed by a CA the server does not know.
    OtherCa,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

impl Pki {
    /// A good PKI.
    pub fn new() -> Pki {
        Pki::with_flaw(Flaw::None)
    }

    pub fn with_flaw(flaw: Flaw) -> Pki {
        let dir = TempDir::new();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = ca_params("test CA");
        if flaw == Flaw::CaAsLeaf {
            ca.subject_alt_names = leaf_params(&["localhost", "127.0.0.1"]).subject_alt_names;
        }
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_again = ca.clone();
        let issuer = Issuer::new(ca, &ca_key);

        let mut leaf = match flaw {
            Flaw::OtherHost => leaf_params(&["example.org"]),
            _ => leaf_params(&["localhost", "127.0.0.1", "::1"]),
        };
        if flaw == Flaw::Expired {
            leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let trusted_ca_pem = match flaw {
            Flaw::UntrustedCa => {
                let other_key = KeyPair::generate().unwrap();
                ca_params("some other CA")
                    .self_signed(&other_key)
                    .unwrap()
                    .pem()
            }
            Flaw::RemadeCa => {
                let other_key = KeyPair::generate().unwrap();
                ca_params("test CA").self_signed(&other_key).unwrap().pem()
            }
            _ => ca_cert.pem(),
        };
        let (server_cert, server_key) = match flaw {
            Flaw::CaAsLeaf => (ca_cert.pem(), ca_key.serialize_pem()),
            _ => (leaf_cert.pem(), leaf_key.serialize_pem()),
        };

        let write = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            fs::write(&path, contents).unwrap();
            path
        };
        Pki {
            ca: write("ca.crt", &trusted_ca_pem),
            signer: write("signer.crt", &ca_cert.pem()),
            issuer: Some((ca_again, ca_key)),
            cert: write("server.crt", &server_cert),
            key: write("server.key", &server_key),
            dir,
        }
    }

    /// The files `make certs` wrote into `dir` (which the caller keeps).
    pub fn from_dir(dir: &Path) -> Pki {
        Pki {
            ca: dir.join("ca.crt"),
            signer: dir.join("ca.crt"),
            issuer: None,
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            // An empty directory of our own, so dropping this removes nothing
            // of the caller's.
            dir: TempDir::new(),
        }
    }

    /// A client certificate and key with common name `name`, written into
    /// this PKI's directory.
    pub fn client_identity(&self, name: &str, flaw: ClientFlaw) -> Identity {
        let stranger = (ca_params("stranger CA"), KeyPair::generate().unwrap());
        let (ca, ca_key) = match flaw {
            ClientFlaw::OtherCa => &stranger,
            _ => self.issuer.as_ref().expect("a PKI made by the tests"),
        };
        let issuer = Issuer::new(ca.clone(), ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if flaw == ClientFlaw::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let stem = format!("client-{name}-{flaw:?}");
        let identity = Identity {
            cert: self.path(&format!("{stem}.crt")),
            key: self.path(&format!("{stem}.key")),
        };
        fs::write(&identity.cert, cert.pem()).unwrap();
        fs::write(&identity.key, key.serialize_pem()).unwrap();
        identity
    }

    /// Another file in this PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The default limits without flood control, which would make every test
/// that sends more than a handful of lines slow. The flood control tests
/// turn it on.
pub fn test_limits() -> Limits {
    Limits {
        rate: None,
        ..Limits::default()
    }
}

/// A server running in a thread of the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    stopper: Stopper,
    /// Read by [`TestServer::open_connections`].
    gauges: Gauges,
    finished: Receiver<Result<(), secure_chat::Error>>,
    stopped: bool,
}

impl TestServer {
    /// A server with [`test_limits`] and certificates from `pki`.
    pub fn start(pki: &Pki) -> TestServer {
        TestServer::start_with(pki, test_limits())
    }

    pub fn start_with(pki: &Pki, limits: Limits) -> TestServer {
        TestServer::start_config(
            tls::server_config(&pki.cert, &pki.key, None).unwrap(),
            limits,
        )
    }

    /// A server that requires client certificates signed by `pki`'s CA.
    pub fn start_mutual(pki: &Pki) -> TestServer {
        let config = tls::server_config(&pki.cert, &pki.key, Some(&pki.signer)).unwrap();
        TestServer::start_config(config, test_limits())
    }

    pub fn start_config(config: Arc<rustls::ServerConfig>, limits: Limits) -> TestServer {
        // Bound before the thread starts: clients can connect at once.
        let server = Server::bind("127.0.0.1:0", config, limits).unwrap();
        let addr = server.local_addr();
        let stopper = server.stopper();
        let gauges = server.gauges();
        let (done, finished) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            let _ = done.send(server.run());
        });
        TestServer {
            addr,
            stopper,
            gauges,
            finished,
            stopped: false,
        }
    }

    /// Stops the server and checks that it stopped, threads and all.
    pub fn stop(mut self) {
        self.stopped = true;
        self.stopper.stop();
        match self.finished.recv_timeout(TIMEOUT) {
            Ok(result) => result.expect("server failed"),
            Err(_) => panic!("server did not stop within {TIMEOUT:?}"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that failed before `stop` still stops its server.
        if !self.stopped {
            self.stopper.stop();
            let _ = self.finished.recv_timeout(TIMEOUT);
        }
    }
}

/// What a [`TestClient`]'s reader thread saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Line(String),
    /// The server sent close_notify.
    Closed,
    /// The connection ended without close_notify.
    Eof,
    Failed(String),
}

/// A TLS chat client under the test's control: lines in, lines out.
pub struct TestClient {
    writer: WriteHalf,
    incoming: Receiver<Incoming>,
    /// The nick the server gave it, learnt from its greeting.
    pub nick: String,
}

/// Connects and finishes the TLS handshake, trusting `ca`.
pub fn tls_connect(addr: SocketAddr, ca: &Path) -> (Connection, TcpStream) {
    tls_connect_as(addr, ca, None)
}

/// Connects and finishes the TLS handshake, trusting `ca` and presenting
/// `identity` if given.
pub fn tls_connect_as(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&Identity>,
) -> (Connection, TcpStream) {
    let config = tls::client_config(&Trust::CaFile(ca.to_owned()), identity).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = Connection::Client(ClientConnection::new(config, name).unwrap());
    let socket = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    duplex::handshake(&mut conn, &socket, TIMEOUT).unwrap();
    (conn, socket)
}

impl TestClient {
    /// Connects and reads the greeting (see [`TestClient::read_greeting`]).
    pub fn connect(addr: SocketAddr, ca: &Path) -> TestClient {
        let mut client = TestClient::connect_quietly(addr, ca);
        client.read_greeting();
        client
    }

    /// Reads the greeting: the welcome, "you are NICK" (which becomes
    /// `self.nick`) and "you are in #lobby". Any topic and history are left
    /// to the test.
    pub fn read_greeting(&mut self) {
        assert_eq!(
            self.recv(),
            format!("notice {}", secure_chat::protocol::WELCOME)
        );
        let you_are = self.recv();
        self.nick = you_are
            .strip_prefix("notice you are ")
            .unwrap_or_else(|| panic!("expected 'you are', got {you_are:?}"))
            .to_string();
        let room = self.recv();
        assert!(room.starts_with("notice you are in #lobby ("), "{room}");
    }

    /// Connects without reading anything.
    pub fn connect_quietly(addr: SocketAddr, ca: &Path) -> TestClient {
        TestClient::over(tls_connect(addr, ca))
    }

    /// Connects with a client certificate, without reading anything.
    pub fn connect_as(addr: SocketAddr, ca: &Path, identity: &Identity) -> TestClient {
        TestClient::over(tls_connect_as(addr, ca, Some(identity)))
    }

    /// A test client on a connection whose handshake is done.
    pub fn over((conn, socket): (Connection, TcpStream)) -> TestClient {
        let (mut reader, writer) = duplex::split(conn, Arc::new(socket));
        let (tx, incoming) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            let mut framer = LineFramer::new(1 << 20);
            let mut frames = Vec::new();
            loop {
                let received = reader.receive(&mut |bytes| framer.push(bytes, &mut frames));
                for frame in frames.drain(..) {
                    let Frame::Line(line) = frame else {
                        panic!("server sent a bad line: {frame:?}")
                    };
                    let _ = tx.send(Incoming::Line(line));
                }
                let end = match received {
                    Ok(Received::Data { .. }) => continue,
                    Ok(Received::Closed) => Incoming::Closed,
                    Ok(Received::Eof) => Incoming::Eof,
                    Err(err) => Incoming::Failed(err.to_string()),
                };
                let _ = tx.send(end);
                return;
            }
        });
        TestClient {
            writer,
            incoming,
            nick: String::new(),
        }
    }

    /// Sends one line (the `\n` is added).
    pub fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.send(bytes).expect("send failed");
    }

    /// Sends close_notify; the server's last lines can still be read.
    pub fn close(&mut self) {
        self.writer.close().expect("close failed");
    }

    /// The next thing that arrives, line or end.
    pub fn next(&self) -> Incoming {
        match self.incoming.recv_timeout(TIMEOUT) {
            Ok(incoming) => incoming,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: nothing arrived in {TIMEOUT:?}", self.nick)
            }
            Err(RecvTimeoutError::Disconnected) => panic!("{}: read after the end", self.nick),
        }
    }

    /// The next line; fails if the connection ends instead.
    pub fn recv(&self) -> String {
        match self.next() {
            Incoming::Line(line) => line,
            other => panic!("{}: expected a line, got {other:?}", self.nick),
        }
    }

    /// Skips lines until one satisfies `wanted`, and returns it.
    pub fn recv_until(&self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.recv();
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The next line that is not a notice.
    pub fn recv_non_notice(&self) -> String {
        self.recv_until(|line| !line.starts_with("notice "))
    }

    /// Waits for the end of the connection, skipping any lines before it.
    pub fn expect_end(&self) -> Incoming {
        loop {
            match self.next() {
                Incoming::Line(_) => continue,
                end => return end,
            }
        }
    }

    /// True if nothing is waiting to be read right now.
    pub fn nothing_pending(&self) -> bool {
        self.incoming.is_empty()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        // Ends the reader thread, which waits on the socket.
        self.writer.disconnect();
    }
}

/// A client that finishes the handshake and then never reads.
pub struct SilentClient {
    _conn: Connection,
    socket: TcpStream,
}

impl SilentClient {
    pub fn connect(addr: SocketAddr, ca: &Path) -> SilentClient {
        let (conn, socket) = tls_connect(addr, ca);
        SilentClient {
            _conn: conn,
            socket,
        }
    }

    /// Reads (and discards) until the server ends the connection. Returns
    /// false if the connection was still open after [`TIMEOUT`] of silence.
    pub fn was_disconnected(&mut self) -> bool {
        self.socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.socket.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// The resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

impl TestServer {
    /// Connections the server holds right now, in any state (handshake,
    /// chatting, closing).
    pub fn open_connections(&self) -> usize {
        self.gauges.open_connections()
    }
}

/// The first half of a real TLS ClientHello, as a client trusting `ca`
/// would send it: enough for the server to start its handshake and then
/// wait for the rest.
pub fn half_client_hello(ca: &Path) -> Vec<u8> {
    let config = tls::client_config(&Trust::CaFile(ca.to_owned()), None).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    hello.truncate(hello.len() / 2);
    hello
}

/// Checks `condition` every few milliseconds until it holds; false if it
/// still does not after [`TIMEOUT`]. For conditions nothing can block on,
/// such as a counter going down.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The number of file descriptors this process has open. The directory
/// handle used to list them counts too, the same in every call.
pub fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The number of threads in this process.
pub fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

/// True if a thread of this process has the name `name` (names are cut
/// to 15 bytes by the kernel).
pub fn has_thread_named(name: &str) -> bool {
    fs::read_dir("/proc/self/task").unwrap().any(|task| {
        let comm = task.unwrap().path().join("comm");
        // A thread that ended since the listing has no name to read.
        fs::read_to_string(comm).is_ok_and(|comm| comm.trim_end() == name)
    })
}

/// A server with [`test_limits`] and `count` clients that have each seen
/// everyone after them join: the room most chat tests start from.
pub fn chat_of(count: usize) -> (Pki, TestServer, Vec<TestClient>) {
    chat_with(count, test_limits())
}

/// [`chat_of`] with other limits.
pub fn chat_with(count: usize, limits: Limits) -> (Pki, TestServer, Vec<TestClient>) {
    let pki = Pki::new();
    let server = TestServer::start_with(&pki, limits);
    let clients: Vec<TestClient> = (0..count)
        .map(|_| TestClient::connect(server.addr, &pki.ca))
        .collect();
    // Each earlier client hears of each later one joining.
    for (i, client) in clients.iter().enumerate() {
        for later in &clients[i + 1..] {
            assert_eq!(
                client.recv(),
                format!("notice {} joined #lobby", later.nick)
            );
        }
    }
    (pki, server, clients)
}

/// The chat-server binary Cargo built for these tests.
pub const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");

/// The chat-client binary Cargo built for these tests.
pub const CLIENT: &str = env!("CARGO_BIN_EXE_chat-client");

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
            Command::new(SERVER)
                .args(["--addr", "127.0.0.1:0"])
                .args(args),
        )
    }

    /// Runs `command`, which starts the server (perhaps through a wrapper
    /// that `exec`s it), without waiting for it.
    pub fn spawn_command(command: &mut Command) -> ServerProcess {
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
