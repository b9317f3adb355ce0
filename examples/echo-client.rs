//! The original app's client, in Rust: it verifies the server against
//! certs/ca.crt (never skipping that check), sends each line typed and
//! prints the reply. Run: `cargo run --example echo-client [ADDR]`.
//! Next: examples/card-chat.rs, where every client hears every other.

use std::env;
use std::error::Error;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How long the server may take to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest reply read; a server that sends more is not this one.
const MAX_LINE: u64 = 64 * 1024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo-client: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let addr = env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let config = make_config().map_err(|err| format!("{err} (run make certs)"))?;
    // The name the certificate must hold: `make certs` puts localhost and
    // 127.0.0.1 in it, so the host part of ADDR will do for either.
    let host = addr
        .rsplit_once(':')
        .map_or(addr.as_str(), |(host, _)| host);
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
    let conn = ClientConnection::new(Arc::new(config), name)?;
    let socket =
        TcpStream::connect(&addr).map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    let mut tls = StreamOwned::new(conn, socket);
    // Finished here, with a deadline: a certificate problem shows now, not
    // as a puzzling failure of the first read.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while tls.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the server did not finish the handshake in time".into());
        }
        tls.sock.set_read_timeout(Some(left))?;
        match tls.conn.complete_io(&mut tls.sock) {
            // The read timeout ran out: no data yet, and the deadline decides.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) => return Err(format!("TLS handshake with {addr} failed: {err} (is the server's certificate from this certs/ca.crt? run make certs)").into()),
            Ok(_) => {}
        }
    }
    tls.sock.set_read_timeout(None)?;
    let version = tls
        .conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    eprintln!("connected to {addr}: {version}, certificate verified against certs/ca.crt");

    let mut server = BufReader::new(tls);
    // The server speaks first: its welcome line.
    if !print_reply(&mut server)? {
        return Ok(());
    }
    for line in io::stdin().lock().lines() {
        let line = line?;
        server.get_mut().write_all(format!("{line}\n").as_bytes())?;
        if !print_reply(&mut server)? {
            return Ok(()); // The server closed.
        }
        if line.trim().eq_ignore_ascii_case("bye") {
            // The server said goodbye and sends its close_notify: wait for it.
            while print_reply(&mut server)? {}
            return Ok(());
        }
    }
    // End of input: close_notify says we are done on purpose; the server
    // answers with its own, and anything sent before it is read and dropped.
    let tls = server.get_mut();
    tls.conn.send_close_notify();
    tls.flush()?;
    io::copy(&mut server, &mut io::sink())?;
    Ok(())
}

/// A `ClientConfig` that trusts the CA in certs/ca.crt and nothing else.
fn make_config() -> Result<ClientConfig, Box<dyn Error>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("certs/ca.crt")? {
        // `add` refuses a bad certificate loudly, where skipping it would
        // only show later as an untrusted server.
        roots.add(cert)?;
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("{path}: {err}"))?
        .collect();
    certs.map_err(|err| format!("{path}: {err}"))
}

/// Reads one line from the server and prints it; false once the server
/// has closed the connection.
fn print_reply(
    server: &mut BufReader<StreamOwned<ClientConnection, TcpStream>>,
) -> io::Result<bool> {
    let mut line = Vec::new();
    match server.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
        Ok(0) => return Ok(false),
        Ok(_) => {}
        Err(err) if err.kind() == ErrorKind::UnexpectedEof => {
            eprintln!("the connection ended without close_notify");
            return Ok(false);
        }
        Err(err) => return Err(err),
    }
    println!("{}", String::from_utf8_lossy(&line).trim_end());
    Ok(true)
}
