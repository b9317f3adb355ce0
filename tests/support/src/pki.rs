//! Throwaway PKIs made with rcgen: a CA, a server certificate with one of
//! the mistakes a learner can make ([`Flaw`]), client certificates, all
//! written as PEM files into a directory removed when the test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use secure_chat::tls::Identity;

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory with a name no other test uses.
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

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
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

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    /// A good PKI.
    pub fn new() -> Pki {
        Pki::with_flaw(Flaw::None)
    }

    /// A PKI whose server certificate has `flaw`.
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
