//! Certificates and keys from PEM files, and the rustls configurations
//! built from them: what each side trusts, and what it presents.
//!
//! The client trusts one set of roots: the CA certificates in `--ca FILE`,
//! else `certs/ca.crt` if it exists, else the public web's roots compiled
//! into `webpki-roots` ([`Trust`]). [`client_config`] hands them to rustls,
//! which wraps them in its verifier (`WebPkiServerVerifier`). Or it trusts
//! one server key, as SSH does: `--pin`, or a key the user accepted once
//! (see [`known_servers`](crate::known_servers)), checked by
//! [`PinnedServerVerifier`]. There is no switch to skip verification. The
//! server presents its chain and key, checked at start-up to belong
//! together; with `--client-ca` it demands a client certificate signed by
//! that CA.
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
//! Next: [`client::connect`](crate::client::connect), where the client
//! uses this configuration and names the server it expects.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::error::Error;
use crate::x509;

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
/// (mutual TLS: then every client must present one).
///
/// rustls checks here that the key belongs to the certificate, so a mix-up
/// is reported at start-up rather than as a failed handshake later.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let chain = load_certs(cert)?;
    let private_key = load_private_key(key)?;
    let builder = ServerConfig::builder_with_provider(Arc::new(server_provider()))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = load_roots(path)?;
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|source| Error::ClientVerifier {
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
    // Resumption: a returning client shows a ticket instead of being
    // authenticated again. Stateless tickets (the session, encrypted with a
    // key that rotates every six hours) work for any number of clients; the
    // default stateful cache remembers only 256 sessions.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(Error::Ticketer)?;
    // One ticket per connection: a chat client keeps one connection, and
    // each resumption brings a fresh ticket for the next.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// rustls' default cryptography, with AES-128-GCM and SHA-256 preferred.
///
/// rustls puts AES-256 with SHA-384 first. Both are far beyond any attack;
/// but SHA-256 is computed in hardware by current x86 and ARM processors
/// and SHA-384 mostly is not, and the handshake hashes its transcript and
/// derives every key with it: on this project's test machine the handshake
/// costs about 5 % less CPU. AES-128 also encrypts a third faster.
fn server_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::{self, cipher_suite};
    let mut provider = aws_lc_rs::default_provider();
    let preferred = cipher_suite::TLS13_AES_128_GCM_SHA256;
    provider.cipher_suites.retain(|suite| *suite != preferred);
    provider.cipher_suites.insert(0, preferred);
    provider
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
    /// The trust a client uses when not told otherwise: `ca` if given, else
    /// `default_ca` if that file exists, else the public roots.
    pub fn choose(ca: Option<PathBuf>, default_ca: &Path) -> Trust {
        match ca {
            Some(path) => Trust::CaFile(path),
            None if default_ca.exists() => Trust::CaFile(default_ca.to_owned()),
            None => Trust::PublicRoots,
        }
    }
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
        Trust::CaFile(_) | Trust::PublicRoots => builder.with_root_certificates(roots(trust)?),
    };
    let config = match identity {
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
    Ok(Arc::new(config))
}

/// The roots a CA trust stands for; none for a pin.
fn roots(trust: &Trust) -> Result<RootCertStore, Error> {
    match trust {
        Trust::CaFile(path) => load_roots(path),
        Trust::PublicRoots => Ok(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        )),
        Trust::Pin(_) => Ok(RootCertStore::empty()),
    }
}

/// [`client_config`], with a [`LeafRecorder`] around its verifier: the
/// verification is the same, and afterwards the recorder tells which
/// certificate the server presented, even (above all) when it was refused.
pub fn recording_client_config(
    trust: &Trust,
    identity: Option<&Identity>,
) -> Result<(Arc<ClientConfig>, Arc<LeafRecorder>), Error> {
    let inner: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Pin(pin) => Arc::new(PinnedServerVerifier::new(*pin)),
        Trust::CaFile(_) | Trust::PublicRoots => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(trust)?), provider)
                .build()
                // It fails only for an empty root store, and `roots` never
                // returns one: a CA file with no certificate is an error
                // there, and webpki-roots is not empty.
                .expect("a root store with a root makes a verifier")
        }
    };
    let recorder = Arc::new(LeafRecorder {
        inner,
        leaf: Mutex::new(None),
    });
    let mut config = Arc::unwrap_or_clone(client_config(trust, identity)?);
    config
        .dangerous()
        .set_certificate_verifier(Arc::clone(&recorder) as Arc<dyn ServerCertVerifier>);
    Ok((Arc::new(config), recorder))
}

/// The SHA-256 of a server certificate's key: what a pin names.
///
/// It is computed over the leaf certificate's SubjectPublicKeyInfo (the
/// DER of its public key and algorithm), not over the whole certificate:
/// a certificate renewed with the same key keeps its fingerprint, and
/// only a new key changes it. (`openssl x509 -pubkey -noout -in CERT |
/// openssl pkey -pubin -outform der | openssl dgst -sha256 -binary |
/// base64` computes the same, with a `=` at the end.)
///
/// Written `sha256:` and the 32 bytes in base64 without padding (43
/// characters), as OpenSSH writes its keys' fingerprints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Fingerprint {
        use rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
        use rustls::SupportedCipherSuite as Suite;
        // The SHA-256 already in the build: aws-lc's, the one this suite
        // hashes the handshake with. Its output is 32 bytes by definition.
        let sha256 = match TLS13_AES_128_GCM_SHA256 {
            Suite::Tls13(suite) => suite.common.hash_provider,
            Suite::Tls12(suite) => suite.common.hash_provider,
        };
        let digest = sha256.hash(spki_der);
        let mut bytes = [0u8; 32];
        for (byte, digest) in bytes.iter_mut().zip(digest.as_ref()) {
            *byte = *digest;
        }
        Fingerprint(bytes)
    }

    /// The fingerprint of a DER certificate's key; `None` if webpki cannot
    /// parse the certificate.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<Fingerprint> {
        // webpki parses the certificate and hands back its SPKI, outer
        // SEQUENCE included: no DER walking of our own.
        let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
        Some(Fingerprint::of_spki(
            parsed.subject_public_key_info().as_ref(),
        ))
    }

    /// The fingerprint of the first (leaf) certificate in a PEM file.
    pub fn of_certificate_file(path: &Path) -> Result<Fingerprint, Error> {
        let certs = load_certs(path)?;
        certs
            .first()
            .and_then(Fingerprint::of_certificate)
            .ok_or_else(|| Error::NoPem {
                path: path.to_owned(),
                what: "certificate that can be parsed",
            })
    }
}

/// What a fingerprint starts with: the hash, as in `sha256:...`.
const FINGERPRINT_PREFIX: &str = "sha256:";

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", base64(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// Reads what [`Display`](fmt::Display) writes: `sha256:` and 43
    /// base64 characters. `SHA256:` (OpenSSH's spelling) and a trailing
    /// `=` (what `base64` adds) are accepted too.
    fn from_str(text: &str) -> Result<Fingerprint, String> {
        let bad = || {
            format!(
                "{text:?} is not a fingerprint: expected sha256: and 43 base64 characters, \
                 as chat-server logs it"
            )
        };
        let digits = text
            .get(..FINGERPRINT_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(FINGERPRINT_PREFIX))
            .map(|_| &text[FINGERPRINT_PREFIX.len()..])
            .ok_or_else(bad)?;
        let digits = digits.strip_suffix('=').unwrap_or(digits);
        let bytes = unbase64(digits).ok_or_else(bad)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Fingerprint(bytes))
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, section 4), without padding.
fn base64(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        // Up to three bytes make 24 bits; n bytes make n + 1 characters.
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, &byte)| {
            bits | u32::from(byte) << (16 - 8 * i)
        });
        for i in 0..=chunk.len() {
            let sextet = (bits >> (18 - 6 * i)) & 0x3f;
            text.push(char::from(BASE64[sextet as usize]));
        }
    }
    text
}

/// The inverse of [`base64`]; `None` for anything it would not have
/// written (a foreign character, an impossible length, stray low bits).
fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for c in text.bytes() {
        let sextet = BASE64.iter().position(|&b| b == c)?;
        bits = (bits << 6) | sextet as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    // One leftover character (6 bits) is no byte; leftover bits are zero.
    (count < 6 && bits == 0).then_some(bytes)
}

/// Verifies a server by its key alone, as SSH does: the leaf
/// certificate's key must have the pinned [`Fingerprint`], and the
/// handshake must be signed with that key.
///
/// A CA vouches for a name: "this key belongs to chat.example.org, until
/// this date". Whoever trusts the CA can meet any server the CA vouches
/// for without having seen it before, and a key that leaks stops being
/// trusted when its certificate expires (or is revoked). A pin skips the
/// voucher: the user learnt the key itself, from the server's operator
/// (who reads it from chat-server's log), and trusts exactly that key.
///
/// So the certificate's dates, names and issuer are not checked at all:
/// they are claims a CA makes about a key, and here nobody makes them.
/// That is acceptable because what the pin trusts is the key, and the key
/// is checked where it matters: the server must sign this very handshake
/// with it (the signature checks below are rustls' own, unchanged), which
/// only the holder of its private key can do. What a pin gives up: the
/// fingerprint must reach the user by a channel they trust (read out by
/// the operator, not copied from the connection it is meant to check);
/// nothing ever expires, so a leaked key stays trusted until the user
/// removes the pin; and a server with a new key is refused until the user
/// pins it anew.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pin: Fingerprint,
    /// The signature algorithms rustls verifies handshakes with.
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    /// A verifier that trusts only the key with fingerprint `pin`.
    pub fn new(pin: Fingerprint) -> PinnedServerVerifier {
        PinnedServerVerifier {
            pin,
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    /// The one check a pin makes on the certificate: its key's fingerprint.
    /// Intermediates, the name and the time are ignored on purpose (see
    /// the type's documentation).
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_certificate(end_entity).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        )?;
        // A fingerprint is public: a plain comparison leaks nothing.
        if presented == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch {
                pinned: self.pin,
                presented,
            };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )))
        }
    }

    /// rustls' own check that the certificate's key signed the handshake.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    /// rustls' own check that the certificate's key signed the handshake.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server presented another key than the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    /// The key the client trusts.
    pub pinned: Fingerprint,
    /// The key the server presented.
    pub presented: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's key is not the pinned one (pinned {}, presented {})",
            self.pinned, self.presented
        )
    }
}

impl std::error::Error for PinMismatch {}

/// A verifier around another that notes the leaf certificate the server
/// presented, then lets the other decide.
///
/// This is how the client can show a fingerprint before asking the user
/// to trust a server: the handshake that the CA check refuses has already
/// shown the certificate, so the recorder keeps it and no extra connection
/// is needed just to look. (rustls does not keep a refused certificate:
/// `peer_certificates` is set only once verification succeeded.) Trusting
/// the key then takes a new connection with a [`PinnedServerVerifier`],
/// which checks the key again: a server that changed its key in between
/// is refused.
#[derive(Debug)]
pub struct LeafRecorder {
    inner: Arc<dyn ServerCertVerifier>,
    leaf: Mutex<Option<CertificateDer<'static>>>,
}

impl LeafRecorder {
    /// The leaf certificate of the last handshake, if one got that far.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.leaf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ServerCertVerifier for LeafRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
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
pub fn peer_subject(conn: &CommonState) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    x509::subject(leaf)
}

/// What was wrong with a certificate the peer presented, in the terms a
/// user can act on. [`certificate_problem`] reads it off rustls' error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// It does not chain to a trusted CA: signed by a CA we do not trust
    /// (`UnknownIssuer`), or by one with a trusted CA's name but another
    /// key (`BadSignature`, most often a CA made anew after signing).
    NotTrusted(&'static str),
    /// Its validity ended.
    Expired,
    /// Its validity has not begun: a clock is wrong.
    NotValidYet,
    /// It is valid, but for other names than the one the client asked for;
    /// the names it holds, when rustls says.
    WrongName(Vec<String>),
    /// The peer presented a CA certificate as its own, instead of a leaf
    /// signed by it.
    CaAsLeaf,
    /// The client trusts a pinned key, and the server presented another.
    PinMismatch(PinMismatch),
    /// Anything else rustls refused it for, as rustls names it.
    Other(String),
}

/// The certificate problem behind a TLS error, if it was one.
///
/// rustls reports most problems as its own values. webpki's finer ones
/// (a CA certificate used as a leaf among them) reach us wrapped as
/// `Other`, holding webpki's value: matched as that value, not its text.
pub fn certificate_problem(err: &rustls::Error) -> Option<CertProblem> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(err) = err else {
        return None;
    };
    if let C::Other(other) = err {
        if let Some(mismatch) = other.0.downcast_ref::<PinMismatch>() {
            return Some(CertProblem::PinMismatch(mismatch.clone()));
        }
    }
    let problem = match err {
        C::UnknownIssuer => CertProblem::NotTrusted("UnknownIssuer"),
        C::BadSignature => CertProblem::NotTrusted("BadSignature"),
        C::Expired | C::ExpiredContext { .. } => CertProblem::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => CertProblem::NotValidYet,
        C::NotValidForName => CertProblem::WrongName(Vec::new()),
        C::NotValidForNameContext { presented, .. } => {
            CertProblem::WrongName(presented.iter().map(|name| plain_name(name)).collect())
        }
        C::Other(other)
            if other.0.downcast_ref::<webpki::Error>()
                == Some(&webpki::Error::CaUsedAsEndEntity) =>
        {
            CertProblem::CaAsLeaf
        }
        other => CertProblem::Other(format!("{other:?}")),
    };
    Some(problem)
}

/// `localhost` for rustls' `DnsName("localhost")`, `::1` for `IpAddress(::1)`.
fn plain_name(presented: &str) -> String {
    match presented.split_once('(') {
        Some((_, inner)) => inner.trim_end_matches(')').trim_matches('"').to_string(),
        None => presented.to_string(),
    }
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertProblem::NotTrusted(why) => write!(f, "certificate not trusted ({why})"),
            CertProblem::Expired => write!(f, "certificate expired (Expired)"),
            CertProblem::NotValidYet => write!(f, "certificate not valid yet (NotValidYet)"),
            CertProblem::WrongName(names) if names.is_empty() => {
                write!(f, "certificate is for another host (NotValidForName)")
            }
            CertProblem::WrongName(names) => write!(
                f,
                "certificate is for another host (NotValidForName; it names {})",
                names.join(", ")
            ),
            CertProblem::CaAsLeaf => write!(
                f,
                "the peer presented a CA certificate as its own (CaUsedAsEndEntity)"
            ),
            CertProblem::PinMismatch(mismatch) => write!(f, "{mismatch}"),
            CertProblem::Other(what) => write!(f, "certificate refused ({what})"),
        }
    }
}

/// Advice for a client whose handshake failed on `err`: what to check or
/// change. `trust` is what the client trusted, `server_name` the name it
/// checked.
pub fn client_hint(err: &rustls::Error, trust: &Trust, server_name: &str) -> Option<String> {
    use rustls::{AlertDescription as A, Error as E};
    if let Some(problem) = certificate_problem(err) {
        let hint = match problem {
            CertProblem::NotTrusted(_) => match trust {
                Trust::CaFile(path) => format!(
                    "does --ca point at the CA that signed the server's certificate? \
                     (now {}; `make certs` makes certs/ca.crt)",
                    path.display()
                ),
                Trust::PublicRoots => "no --ca was given and certs/ca.crt does not exist, so \
                     only public CAs are trusted: pass --ca with the CA that signed the \
                     server's certificate (certs/ca.crt for `make certs`)"
                    .to_string(),
                // A pin never reports an untrusted issuer; for completeness.
                Trust::Pin(_) => "only the pinned key is trusted".to_string(),
            },
            CertProblem::Expired => "the server must renew its certificate (for local ones: \
                 `make clean-certs certs`, then restart the server)"
                .to_string(),
            CertProblem::NotValidYet => "check the clocks of both machines".to_string(),
            CertProblem::WrongName(_) => format!(
                "connect by a name the certificate holds, or pass --server-name with one \
                 (checked: {server_name})"
            ),
            CertProblem::CaAsLeaf => "the server must use a leaf certificate signed by the CA, \
                 not the CA certificate itself (`make certs` makes both)"
                .to_string(),
            CertProblem::PinMismatch(_) => "check the fingerprint with the server's operator \
                 (chat-server logs `certificate fingerprint sha256:...` when it starts); if the \
                 server has a new key, pin the new fingerprint"
                .to_string(),
            CertProblem::Other(_) => return None,
        };
        return Some(hint);
    }
    let hint = match err {
        E::AlertReceived(A::CertificateRequired) => "the server accepts only clients with a \
             certificate: pass --cert and --key (`make client-cert NAME=you` makes a pair)"
            .to_string(),
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError) => {
            "the server does not accept your client certificate: is it signed by the CA \
             the server trusts (its --client-ca)?"
                .to_string()
        }
        E::AlertReceived(A::CertificateExpired) => {
            "your client certificate has expired: make a new one \
             (`make client-cert NAME=you`)"
                .to_string()
        }
        E::AlertReceived(A::HandshakeFailure) => {
            "the server may require a client certificate (--cert and --key)".to_string()
        }
        _ => return None,
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_without_padding() {
        for (bytes, text) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(bytes.as_bytes()), text);
            assert_eq!(unbase64(text).as_deref(), Some(bytes.as_bytes()));
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8");
        // A lone character, stray low bits, a foreign character.
        assert_eq!(unbase64("Zm9vY"), None);
        assert_eq!(unbase64("Zh"), None);
        assert_eq!(unbase64("Zm-v"), None);
    }

    #[test]
    fn fingerprint_is_sha256_in_base64() {
        // SHA-256 of nothing, a fixed test vector: e3b0c442...b855.
        let empty = Fingerprint::of_spki(b"");
        assert_eq!(
            empty.to_string(),
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(empty.0[..4], [0xe3, 0xb0, 0xc4, 0x42]);
    }

    #[test]
    fn fingerprint_reads_what_it_writes_and_nothing_else() {
        let fingerprint = Fingerprint::of_spki(b"some key");
        let text = fingerprint.to_string();
        assert_eq!(text.len(), "sha256:".len() + 43);
        assert_eq!(text.parse(), Ok(fingerprint));
        assert_eq!(text.replace("sha256:", "SHA256:").parse(), Ok(fingerprint));
        assert_eq!(format!("{text}=").parse(), Ok(fingerprint));
        for bad in [
            "",
            "sha256:",
            "sha1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            &text[7..],
            &text[..text.len() - 1],
            &format!("{text}A"),
            &format!("{text}=="),
            // Non-ASCII where the prefix ends must not panic.
            "sha25é:x",
        ] {
            let err = bad.parse::<Fingerprint>().unwrap_err();
            assert!(err.contains("is not a fingerprint"), "{bad:?}: {err}");
        }
    }

    fn certificate() -> (CertificateDer<'static>, Vec<u8>) {
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.der().clone(), key.subject_public_key_info())
    }

    #[test]
    fn a_certificate_fingerprint_is_its_keys() {
        let (cert, spki) = certificate();
        assert_eq!(
            Fingerprint::of_certificate(&cert),
            Some(Fingerprint::of_spki(&spki))
        );
        assert_eq!(
            Fingerprint::of_certificate(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }

    #[test]
    fn the_pin_verifier_checks_the_key_and_only_the_key() {
        let (cert, spki) = certificate();
        let name = ServerName::try_from("not-the-name.example").unwrap();
        // Far in the future: dates are not a pin's business.
        let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1 << 40));
        let right = PinnedServerVerifier::new(Fingerprint::of_spki(&spki));
        assert!(right
            .verify_server_cert(&cert, &[], &name, &[], when)
            .is_ok());

        let other = Fingerprint::of_spki(b"another key");
        let err = PinnedServerVerifier::new(other)
            .verify_server_cert(&cert, &[], &name, &[], when)
            .unwrap_err();
        assert_eq!(
            certificate_problem(&err),
            Some(CertProblem::PinMismatch(PinMismatch {
                pinned: other,
                presented: Fingerprint::of_spki(&spki),
            }))
        );
        let garbage = CertificateDer::from(vec![0xff; 10]);
        let err = right
            .verify_server_cert(&garbage, &[], &name, &[], when)
            .err();
        assert_eq!(
            err,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding
            ))
        );
        assert!(!right.supported_verify_schemes().is_empty());
    }
}
