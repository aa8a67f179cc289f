//! Test certificates, made in the test: a CA, and server and client certificates it signs, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair, SanType};

/// A certificate authority of the test.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and key signed by a [`TestCa`], as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self { cert, key }
    }

    /// The CA's certificate, as PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `localhost` and 127.0.0.1 (server or client alike).
    pub fn issue(&self) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A directory of PEM files for one test, removed when dropped.
pub struct PemDir(PathBuf);

impl PemDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("strata-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pem dir");
        Self(dir)
    }

    /// Writes `pem` to `file` (atomically: a reader never sees half a file) and returns its path.
    pub fn write(&self, file: &str, pem: &str) -> PathBuf {
        let path = self.0.join(file);
        let tmp = self.0.join(format!("{file}.tmp"));
        std::fs::write(&tmp, pem).expect("write pem");
        std::fs::rename(&tmp, &path).expect("rename pem");
        path
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
