//! The original app's server, in Rust: a TCP listener, rustls' `StreamOwned`
//! and one thread per client, each answering its own client only.
//! Run: `make certs`, then `cargo run --example echo-server [ADDR]`.
//! Next: examples/echo-client.rs, then examples/card-chat.rs (a real chat).

use std::env;
use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A client that has not finished its handshake by then is dropped, so a
/// silent connection cannot keep a thread for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest line read; the rest of a longer one is answered as a line
/// of its own. Reading without a limit would let one client fill memory.
const MAX_LINE: u64 = 4096;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo-server: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let addr = env::args().nth(1).unwrap_or("127.0.0.1:8080".into());
    let config =
        make_config().map_err(|err| format!("{err} (does certs/ exist? run make certs)"))?;
    let config = Arc::new(config);
    let listener =
        TcpListener::bind(&addr).map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    println!("listening on {}", listener.local_addr()?);
    for socket in listener.incoming() {
        // A failed accept (out of file descriptors, say) is that client's loss.
        let socket = match socket {
            Ok(socket) => socket,
            Err(err) => {
                eprintln!("echo-server: accept: {err}");
                continue;
            }
        };
        let config = Arc::clone(&config);
        // One OS thread per client: simple, and enough for a handful.
        thread::spawn(move || {
            let peer = socket.peer_addr().map_or(String::new(), |a| a.to_string());
            match serve(config, socket) {
                Ok(()) => println!("{peer}: done"),
                Err(err) => println!("{peer}: {err}"),
            }
        });
    }
    Ok(())
}

/// The server's certificate chain and key, as rustls' own examples load them.
fn make_config() -> Result<ServerConfig, Box<dyn Error>> {
    let certs = load_certs("certs/server.crt")?;
    let key = load_private_key("certs/server.key")?;
    Ok(ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("{path}: {err}"))?
        .collect();
    certs.map_err(|err| format!("{path}: {err}"))
}

fn load_private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| format!("{path}: {err}"))
}

/// One client, from the handshake to its `bye` (or its going away).
fn serve(config: Arc<ServerConfig>, socket: TcpStream) -> io::Result<()> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, socket);
    // Finished here, with a deadline, rather than lazily inside the first
    // read or write, which would wait for ever on a client that says nothing.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while tls.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        tls.sock.set_read_timeout(Some(left))?;
        if let Err(err) = tls.conn.complete_io(&mut tls.sock) {
            // A read timeout is "no data yet": the deadline above decides.
            if !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                return Err(err);
            }
        }
    }
    tls.sock.set_read_timeout(None)?;
    tls.write_all(b"Welcome to the secure chat server!\n")?;

    let mut reader = BufReader::new(tls);
    let mut line = Vec::new();
    loop {
        line.clear();
        // `take` bounds the line; 0 bytes means the client sent close_notify.
        match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            // A client gone without close_notify is an ordinary end too.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(err),
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let tls = reader.get_mut();
        match text.trim().to_ascii_lowercase().as_str() {
            "hi" => tls.write_all("Hola, cómo puedo ayudarte hoy?\n".as_bytes())?,
            "bye" => {
                tls.write_all(b"Ciao, Buonanotte!\n")?;
                break;
            }
            _ => tls.write_all(format!("Server received your message: {text}\n").as_bytes())?,
        }
    }
    // close_notify tells the client the end is real, not a cut connection.
    let tls = reader.get_mut();
    tls.conn.send_close_notify();
    tls.flush()?;
    // Closing a socket with unread bytes in it (the client's next line, or
    // its close_notify) sends a TCP reset, which can destroy the goodbye
    // before it is read: so wait, a little, for the client to hang up.
    tls.sock.shutdown(Shutdown::Write)?;
    tls.sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    // Ends at the client's close or at the timeout; either will do.
    let _ = io::copy(&mut tls.sock, &mut io::sink());
    Ok(())
}
