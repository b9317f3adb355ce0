//! What went wrong in a refused handshake, in words a user can act on: the
//! certificate problem read off rustls' error ([`CertProblem`]), and advice
//! on what to change ([`client_hint`]). No check is made here: rustls made it.

use std::fmt;

use super::{PinMismatch, Trust};
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
                Trust::PublicRoots => "no --ca was given, so only public CAs are trusted \
                     (certs/ca.crt is trusted by default only for a server on this machine, \
                     and only if it exists): pass --ca with the CA that signed the server's \
                     certificate (certs/ca.crt for `make certs`), or trust the server's key \
                     with --pin"
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
