//! Trusting a server by its key instead of a CA, as SSH does: the key's
//! [`Fingerprint`], the [`PinnedServerVerifier`] that checks it, and the
//! [`LeafRecorder`] that shows a refused server's key so a user can pin it.
//! Reading PEM files and building configurations is the parent module's.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::load_certs;
use crate::error::Error;
use crate::sync;
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
    /// A recorder that lets `inner` decide.
    pub(super) fn around(inner: Arc<dyn ServerCertVerifier>) -> LeafRecorder {
        LeafRecorder {
            inner,
            leaf: Mutex::new(None),
        }
    }

    /// The leaf certificate of the last handshake, if one got that far.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        // One swap of a value at a time: never half changed.
        sync::lock(&self.leaf).clone()
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
        *sync::lock(&self.leaf) = Some(end_entity.clone().into_owned());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{certificate_problem, CertProblem};

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
