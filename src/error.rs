//! The error type of the core, and when each variant happens: what stops
//! a server from starting or a client from connecting, and what ends a
//! running server or client before its time (a connection that fails, a
//! hub or writer thread that panicked). The Redis link, a layer of its
//! own, has its own (`linked::redis_link::LinkError`).
//!
//! Expected conditions of a running chat (a bad command, a slow client, a
//! peer that hangs up) are not errors; they are values handled where they
//! occur.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::duplex::HandshakeError;

/// What stopped a server or client from starting, or ended it early.
#[derive(Debug)]
pub enum Error {
    /// A certificate, key or CA file could not be read from disk.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why the operating system refused.
        source: io::Error,
    },
    /// A PEM file was read but holds no usable item of the kind expected.
    NoPem {
        /// The file.
        path: PathBuf,
        /// What was looked for: "certificate" or "private key".
        what: &'static str,
    },
    /// A PEM file is damaged: an item starts but cannot be decoded.
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader found wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A CA certificate could not be added to the set of trusted roots.
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The client CA file could not be made into a client certificate
    /// verifier (it holds no usable CA).
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused a certificate and key pair, for example because
    /// the key does not belong to the certificate.
    CertAndKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why rustls refused them.
        source: rustls::Error,
    },
    /// The keys that encrypt session tickets could not be made (the system's
    /// random number generator failed).
    Ticketer(rustls::Error),
    /// The listening socket could not be bound (address in use, not allowed).
    Bind {
        /// The address asked for.
        addr: String,
        /// Why the operating system refused.
        source: io::Error,
    },
    /// The server's address did not resolve to any IP address.
    Resolve {
        /// The address asked for.
        addr: String,
        /// Why it did not resolve.
        source: io::Error,
    },
    /// The TCP connection to the server could not be made.
    Connect {
        /// The address asked for.
        addr: String,
        /// Why the connection failed.
        source: io::Error,
    },
    /// The name to check the server's certificate against is not a valid
    /// DNS name or IP address.
    ServerName {
        /// The name given.
        name: String,
    },
    /// The TLS handshake failed: a certificate was refused, the peer
    /// hung up, or it took too long.
    Handshake {
        /// Who we were talking to.
        peer: String,
        /// The failure itself.
        source: HandshakeError,
        /// What the user can do about it, when we can tell.
        hint: Option<String>,
    },
    /// Reading from or writing to an established connection failed.
    Io(io::Error),
    /// Writing to standard output failed (other than a closed pipe, which
    /// the client treats as the reader having left).
    Output(io::Error),
    /// The operating system refused to start a thread.
    Thread(io::Error),
    /// More clients were asked for than the system's limits allow.
    Capacity {
        /// The `--max-clients` asked for.
        asked: usize,
        /// What the limits allow, and how to raise them.
        capacity: String,
    },
    /// The hub thread ended by panicking; the chat could not go on.
    HubFailed,
    /// A writer thread ended by panicking; its clients heard nothing more.
    WriterFailed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadFile { path, .. } => write!(f, "cannot read {}", path.display()),
            Error::NoPem { path, what } => {
                write!(f, "{} holds no PEM {what}", path.display())
            }
            Error::BadPem { path, .. } => write!(f, "{} is not valid PEM", path.display()),
            Error::BadCa { path, .. } => {
                write!(f, "{} is not a usable CA certificate", path.display())
            }
            Error::ClientVerifier { path, .. } => {
                write!(
                    f,
                    "cannot verify client certificates with {}",
                    path.display()
                )
            }
            Error::CertAndKey { cert, key, source } => match source {
                rustls::Error::InconsistentKeys(_) => write!(
                    f,
                    "the key in {} does not belong to the certificate in {}",
                    key.display(),
                    cert.display()
                ),
                _ => write!(f, "cannot use {} with {}", cert.display(), key.display()),
            },
            Error::Ticketer(_) => write!(f, "cannot make the keys for session tickets"),
            Error::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Error::Resolve { addr, .. } => write!(f, "cannot resolve {addr}"),
            Error::Connect { addr, .. } => write!(f, "cannot connect to {addr}"),
            Error::ServerName { name } => write!(
                f,
                "{name:?} is not a valid server name: give a DNS name or an IP address"
            ),
            // The cause is part of this message because the hint must come
            // after it; `report` does not repeat it.
            Error::Handshake { peer, source, hint } => {
                write!(f, "TLS handshake with {peer} failed: {source}")?;
                match hint {
                    Some(hint) => write!(f, ": {hint}"),
                    None => Ok(()),
                }
            }
            Error::Io(_) => write!(f, "connection failed"),
            Error::Output(_) => write!(f, "cannot write the output"),
            Error::Thread(_) => write!(f, "cannot start a thread"),
            Error::Capacity { asked, capacity } => write!(
                f,
                "--max-clients {asked} is more than this machine allows: {capacity}"
            ),
            Error::HubFailed => write!(
                f,
                "the hub thread failed (a bug: please report it with the log); \
                 every connection was closed"
            ),
            Error::WriterFailed => write!(
                f,
                "a writer thread failed (a bug: please report it with the log); \
                 every connection was closed"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadFile { source, .. }
            | Error::Bind { source, .. }
            | Error::Resolve { source, .. }
            | Error::Connect { source, .. }
            | Error::Io(source)
            | Error::Output(source)
            | Error::Thread(source) => Some(source),
            Error::BadPem { source, .. } => Some(source),
            Error::BadCa { source, .. }
            | Error::CertAndKey { source, .. }
            | Error::Ticketer(source) => Some(source),
            Error::Handshake { source, .. } => Some(source),
            Error::ClientVerifier { source, .. } => Some(source),
            Error::NoPem { .. }
            | Error::ServerName { .. }
            | Error::Capacity { .. }
            | Error::HubFailed
            | Error::WriterFailed => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

/// Formats an error with its chain of causes: `outer: inner: innermost`.
///
/// `Display` of each error says only its own part (the cause is in
/// `source()`), so this is what a binary prints for a human.
pub fn report(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        // A wrapper may already spell out its cause (see `Error::Handshake`).
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}
