//! Certificates and keys from PEM files, and the rustls configurations
//! built from them: what each side trusts, and what it presents.
//!
//! The client trusts one set of roots: the CA certificates in `--ca FILE`,
//! else, for a server on this machine, `certs/ca.crt` if it exists, else
//! the public web's roots compiled into `webpki-roots` ([`Trust`]). [`client_config`] hands them to rustls,
//! which wraps them in its verifier (`WebPkiServerVerifier`). Or it trusts
//! one server key, as SSH does: `--pin`, or a key the user accepted once
//! (see [`known_servers`](crate::known_servers)), checked by
//! [`PinnedServerVerifier`]. There is no switch to skip verification. The
//! server presents its chain and key, checked at start-up to belong
//! together; with `--client-ca` it demands a client certificate signed by
//! that CA, or, with `--guests` as well, asks for one and lets in a client
//! without ([`ClientCertificates`]).
//!
//! No check happens here. rustls runs them during the handshake, inside
//! `process_new_packets` (see [`duplex`](crate::duplex)), when it reads the
//! server's CertificateVerify: the chain to a root, every certificate's
//! dates against the clock, that the leaf is not a CA and may serve TLS,
//! that it holds the name the client asked for (its subjectAltName only),
//! and that its key signed this very handshake. The name comes from
//! [`client::handshake`](crate::client::handshake), not from here. A
//! failure comes back as a `rustls::Error`: [`certificate_problem`] reads
//! what was wrong off it, [`client_hint`] what the user can do.
//!
//! Both sides write their session secrets to a file when `SSLKEYLOGFILE`
//! names one ([`key_log`]), so that a capture of their traffic can be
//! decrypted. The pins live in `pin.rs`, the words for a refused handshake
//! in `problem.rs`.
//!
//! Next: [`client::connect`](crate::client::connect), where the client
//! uses this configuration and names the server it expects.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, CommonState, KeyLog, KeyLogFile, NoKeyLog, RootCertStore, ServerConfig,
};

use crate::error::Error;
use crate::x509;

mod pin;
mod problem;

pub use pin::{Fingerprint, LeafRecorder, PinMismatch, PinnedServerVerifier};
pub use problem::{certificate_problem, client_hint, CertProblem};

/// Reads every certificate in a PEM file, in order (leaf first, for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| bad_pem(path, source))?;
    if certs.is_empty() {
        return Err(Error::NoPem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        pem::Error::NoItemsFound => Error::NoPem {
            path: path.to_owned(),
            what: "private key",
        },
        source => bad_pem(path, source),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn bad_pem(path: &Path, source: pem::Error) -> Error {
    Error::BadPem {
        path: path.to_owned(),
        source,
    }
}

/// The server's TLS configuration: its certificate chain and key and, if
/// `client_ca` is given, the CA that client certificates must be signed by
/// (mutual TLS: then every client must present one, on every connection:
/// sessions are not resumed).
///
/// rustls checks here that the key belongs to the certificate, so a mix-up
/// is reported at start-up rather than as a failed handshake later.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let clients = match client_ca {
        None => ClientCertificates::NotAsked,
        Some(ca) => ClientCertificates::Required(ca),
    };
    server_config_for(cert, key, clients)
}

/// What the server asks of clients' certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates<'a> {
    /// Nothing: every client is a guest.
    NotAsked,
    /// One signed by the CA in this file, from every client (`--client-ca`).
    Required(&'a Path),
    /// Asked for, not required (`--client-ca` with `--guests`): a client
    /// that presents one must present a valid one, signed by the CA in
    /// this file; a client that presents none is a guest.
    Optional(&'a Path),
}

/// [`server_config`], with what is asked of clients' certificates said
/// in full.
pub fn server_config_for(
    cert: &Path,
    key: &Path,
    clients: ClientCertificates<'_>,
) -> Result<Arc<ServerConfig>, Error> {
    let chain = load_certs(cert)?;
    let private_key = load_private_key(key)?;
    let builder = ServerConfig::builder_with_provider(Arc::new(server_provider()))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions");
    let client_ca = match clients {
        ClientCertificates::NotAsked => None,
        ClientCertificates::Required(ca) | ClientCertificates::Optional(ca) => Some(ca),
    };
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = load_roots(path)?;
            let mut verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            if matches!(clients, ClientCertificates::Optional(_)) {
                // A certificate that is presented is still checked in
                // full: only its absence is let in.
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|source| Error::ClientVerifier {
                path: path.to_owned(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|source| Error::CertAndKey {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    // The server's order of cipher suites wins over the client's.
    config.ignore_client_order = true;
    if client_ca.is_none() {
        // Resumption: a returning client shows a ticket instead of being
        // authenticated again. Stateless tickets (the session, encrypted with
        // a key that rotates every six hours) work for any number of
        // clients; the default stateful cache remembers only 256 sessions.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(Error::Ticketer)?;
        // One ticket per connection: a chat client keeps one connection,
        // and each resumption brings a fresh ticket for the next.
        config.send_tls13_tickets = 1;
    } else {
        // With client certificates, none: a resumed session carries the
        // chain checked when it began, and each resumption hands out a new
        // ticket, so a client that reconnects within a ticket's lifetime
        // (chat-client does by itself) would go on as its certificate's
        // owner long after the certificate expired. Every connection shows
        // its certificate again, checked against today's date, at the cost
        // of a full handshake.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    config.key_log = key_log();
    Ok(Arc::new(config))
}

/// rustls' default cryptography, with AES-128-GCM preferred, in TLS 1.3
/// (with SHA-256) and in TLS 1.2 (for ECDSA and RSA keys alike).
///
/// rustls puts AES-256 first. Both are far beyond any attack; but in TLS
/// 1.3 AES-256 comes with SHA-384, and SHA-256 is computed in hardware by
/// current x86 and ARM processors and SHA-384 mostly is not, and the
/// handshake hashes its transcript and derives every key with it: on this
/// project's test machine the handshake costs about 5 % less CPU. AES-128
/// also encrypts a third faster, in either version.
fn server_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as C;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let aes_128_gcm = [
        C::TLS13_AES_128_GCM_SHA256,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    // A stable sort: the rest keeps rustls' order. Each version's suites
    // are chosen among themselves, so moving one ahead of another
    // version's changes nothing.
    provider
        .cipher_suites
        .sort_by_key(|suite| !aes_128_gcm.contains(&suite.suite()));
    provider
}

/// The environment variable that names the key log file, as browsers and
/// curl read it (OpenSSL only when built to).
pub const KEY_LOG_VARIABLE: &str = "SSLKEYLOGFILE";

/// Where both sides write each session's secrets: rustls' [`KeyLogFile`]
/// if [`KEY_LOG_VARIABLE`] names a file, else nowhere (rustls' default,
/// [`NoKeyLog`]).
///
/// The file is the standard key log format (one line per secret: label,
/// client random, secret) that Wireshark and tshark read to decrypt a
/// capture, which is the point: a learner can see that the chat's bytes on
/// the wire are ciphertext, and that they are the chat once decrypted. So
/// it also lets anyone who has it read those connections, hence the
/// warning. The variable is read, and the warning logged, once per process:
/// the configurations built later (a reconnecting client, a server reloading
/// its certificate) share the same file.
pub fn key_log() -> Arc<dyn KeyLog> {
    static KEY_LOG: OnceLock<Arc<dyn KeyLog>> = OnceLock::new();
    let chosen = KEY_LOG.get_or_init(|| match std::env::var_os(KEY_LOG_VARIABLE) {
        // Empty counts as unset, as for most tools that read it.
        Some(path) if !path.is_empty() => {
            log::warn!(
                "{KEY_LOG_VARIABLE} is set: writing the TLS secrets of every connection to {}; \
                 anyone who has that file can read those connections",
                Path::new(&path).display()
            );
            // rustls opens the file here, and logs a warning of its own if
            // it cannot.
            Arc::new(KeyLogFile::new())
        }
        _ => Arc::new(NoKeyLog),
    });
    Arc::clone(chosen)
}

/// Every certificate in a CA file, as trusted roots.
fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        // `add`, not `add_parsable_certificates`: a CA file we cannot use
        // is an error to report, not something to skip quietly.
        roots.add(cert).map_err(|source| Error::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// A certificate and its key, for a client that proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

/// Which certificate authorities the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The CA certificates in this PEM file, and nothing else.
    CaFile(PathBuf),
    /// The public web's root CAs, as shipped in `webpki-roots`.
    PublicRoots,
    /// No CA: exactly the server key with this fingerprint
    /// ([`PinnedServerVerifier`]).
    Pin(Fingerprint),
}

impl Trust {
    /// The trust a client uses when not told otherwise: `ca` if given; else
    /// `local_ca` (the CA `make certs` made) if that file exists and the
    /// server at `addr` (`HOST:PORT`) is on this machine; else the public
    /// roots.
    ///
    /// Only for loopback: `local_ca` is a path relative to wherever the
    /// client was started, and a `certs/ca.crt` left in any directory (a
    /// cloned repository, an unpacked archive) would otherwise vouch, from
    /// there, for every server the client reaches.
    pub fn choose(ca: Option<PathBuf>, local_ca: &Path, addr: &str) -> Trust {
        match ca {
            Some(path) => Trust::CaFile(path),
            None if is_loopback(crate::client::host_of(addr)) && local_ca.exists() => {
                Trust::CaFile(local_ca.to_owned())
            }
            None => Trust::PublicRoots,
        }
    }
}

/// Whether `host` (a name or an address, without brackets) names this
/// machine: `localhost`, or an address in 127.0.0.0/8 or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The client's TLS configuration: verify the server against `trust`, and
/// present `identity` if the server asks for a client certificate.
///
/// There is deliberately no way to turn verification off: a chat client
/// that accepts any certificate encrypts its messages for whoever answers.
pub fn client_config(
    trust: &Trust,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder();
    let builder = match trust {
        // `dangerous` is rustls' name for "your own verifier": this one
        // verifies, just against a key instead of a CA.
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(*pin))),
        Trust::CaFile(path) => builder.with_root_certificates(load_roots(path)?),
        Trust::PublicRoots => builder.with_root_certificates(public_roots()),
    };
    finish_client_config(builder, identity)
}

/// The public web's root CAs, as shipped in `webpki-roots`.
fn public_roots() -> RootCertStore {
    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

/// The rest of a client's configuration, once its verifier is chosen: the
/// certificate it presents if asked for one, and the key log.
fn finish_client_config(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, Error> {
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = load_certs(&identity.cert)?;
            let key = load_private_key(&identity.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| Error::CertAndKey {
                    cert: identity.cert.clone(),
                    key: identity.key.clone(),
                    source,
                })?
        }
    };
    config.key_log = key_log();
    Ok(Arc::new(config))
}

/// [`client_config`], with a [`LeafRecorder`] around its verifier: the
/// verification is the same, and afterwards the recorder tells which
/// certificate the server presented, even (above all) when it was refused.
pub fn recording_client_config(
    trust: &Trust,
    identity: Option<&Identity>,
) -> Result<(Arc<ClientConfig>, Arc<LeafRecorder>), Error> {
    let webpki = |roots: RootCertStore| -> Arc<dyn ServerCertVerifier> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            // It fails only for an empty root store, and neither is one: a
            // CA file with no certificate is an error in `load_roots`, and
            // webpki-roots is not empty.
            .expect("a root store with a root makes a verifier")
    };
    let inner: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Pin(pin) => Arc::new(PinnedServerVerifier::new(*pin)),
        Trust::CaFile(path) => webpki(load_roots(path)?),
        Trust::PublicRoots => webpki(public_roots()),
    };
    let recorder = Arc::new(LeafRecorder::around(inner));
    let builder = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&recorder) as Arc<dyn ServerCertVerifier>);
    Ok((finish_client_config(builder, identity)?, recorder))
}

/// What a handshake settled on, in one line: version, cipher suite, key
/// exchange group and the peer certificate's subject.
pub fn describe(conn: &CommonState) -> String {
    let version = conn
        .protocol_version()
        .map_or("?".to_string(), |v| format!("{v:?}").replace('_', "."));
    let suite = conn
        .negotiated_cipher_suite()
        .map_or("?".to_string(), |s| format!("{:?}", s.suite()));
    let group = conn
        .negotiated_key_exchange_group()
        .map_or("?".to_string(), |g| format!("{:?}", g.name()));
    let mut text = format!("{version}, {suite}, {group}");
    if let Some(subject) = peer_subject(conn) {
        text.push_str(", peer certificate ");
        text.push_str(&subject);
    }
    text
}

/// The subject of the certificate the peer presented, if it presented one.
fn peer_subject(conn: &CommonState) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    x509::subject(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server picks first in each version, for each key type.
    #[test]
    fn aes_128_gcm_is_preferred_in_tls_1_3_and_tls_1_2() {
        use rustls::{CipherSuite as C, SupportedCipherSuite as S};
        let suites = server_provider().cipher_suites;
        let first_of =
            |wanted: &dyn Fn(&S) -> bool| suites.iter().find(|s| wanted(s)).unwrap().suite();
        assert_eq!(
            first_of(&|s| matches!(s, S::Tls13(_))),
            C::TLS13_AES_128_GCM_SHA256
        );
        let tls12_with = |word: &'static str| {
            move |s: &S| matches!(s, S::Tls12(_)) && format!("{:?}", s.suite()).contains(word)
        };
        assert_eq!(
            first_of(&tls12_with("ECDSA")),
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
        assert_eq!(
            first_of(&tls12_with("RSA_")),
            C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        // Nothing lost on the way.
        assert_eq!(
            suites.len(),
            rustls::crypto::aws_lc_rs::default_provider()
                .cipher_suites
                .len()
        );
    }

    #[test]
    fn the_local_ca_is_trusted_by_default_only_on_this_machine() {
        let dir = std::env::temp_dir().join(format!("trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let local = dir.join("ca.crt");
        std::fs::write(&local, "").unwrap();
        for addr in [
            "localhost:8080",
            "LOCALHOST.:1",
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:8080",
        ] {
            assert_eq!(
                Trust::choose(None, &local, addr),
                Trust::CaFile(local.clone()),
                "{addr}"
            );
        }
        for addr in [
            "chat.example.org:8080",
            "192.0.2.10:8080",
            "[2001:db8::1]:8080",
            "localhost.example:1",
        ] {
            assert_eq!(
                Trust::choose(None, &local, addr),
                Trust::PublicRoots,
                "{addr}"
            );
        }
        // Named, it is trusted anywhere; missing, nowhere.
        let named = Some(local.clone());
        assert_eq!(
            Trust::choose(named, &local, "chat.example.org:1"),
            Trust::CaFile(local.clone())
        );
        let missing = dir.join("none.crt");
        assert_eq!(
            Trust::choose(None, &missing, "localhost:8080"),
            Trust::PublicRoots
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
