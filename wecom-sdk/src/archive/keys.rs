//! The RSA step of §5.3, done by us: a ring of the corp's private keys by `publickey_ver`, and
//! PKCS#1 v1.5 decryption of `encrypt_random_key` with aws-lc-rs (never OAEP, never the library).
//!
//! Keys come as PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`); both are
//! accepted. Every version a corp ever uploaded must stay in the ring: old records stay wrapped
//! with the old key.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::rsa::{
    Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

/// Why a key could not be loaded or a record's key not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM text of a configured key is unusable.
    #[error("private key of publickey_ver {version}: {reason}")]
    Pem {
        /// The version it was configured for.
        version: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A public key (emulator side) is unusable.
    #[error("public key: {0}")]
    PublicKey(String),
    /// No private key of this version is in the ring.
    #[error("no private key for publickey_ver {0}")]
    UnknownVersion(u32),
    /// `encrypt_random_key` is not base64.
    #[error("encrypt_random_key is not base64")]
    BadBase64,
    /// RSA decryption failed: the key of that version is not the one that wrapped it, or the
    /// ciphertext is damaged.
    #[error(
        "RSA decryption with the key of publickey_ver {0} failed (wrong key for this version?)"
    )]
    Rsa(u32),
    /// The unwrapped key is not the short printable string the library expects.
    #[error("the unwrapped key of publickey_ver {0} is not printable text")]
    NotText(u32),
}

impl KeyError {
    /// A short stable code for storage and metrics: `unknown_key_version`, `bad_key`, …
    pub fn code(&self) -> &'static str {
        match self {
            Self::Pem { .. } | Self::PublicKey(_) => "key_config",
            Self::UnknownVersion(_) => "unknown_key_version",
            Self::BadBase64 => "corrupt_key",
            Self::Rsa(_) | Self::NotText(_) => "bad_key",
        }
    }
}

/// The corp's private keys by `publickey_ver`.
#[derive(Default)]
pub struct KeyRing {
    keys: BTreeMap<u32, Pkcs1PrivateDecryptingKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("KeyRing")
            .field("versions", &self.versions())
            .finish()
    }
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the key of `version` from PEM text.
    pub fn insert_pem(&mut self, version: u32, pem: &str) -> Result<(), KeyError> {
        let bad = |reason: String| KeyError::Pem { version, reason };
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| bad(format!("not a PEM private key ({e})")))?;
        let pkcs8 = match &der {
            PrivateKeyDer::Pkcs8(d) => d.secret_pkcs8_der().to_vec(),
            PrivateKeyDer::Pkcs1(d) => pkcs1_to_pkcs8(d.secret_pkcs1_der()),
            _ => return Err(bad("not an RSA key (PKCS#8 or PKCS#1 expected)".into())),
        };
        let key = PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|e| bad(format!("not a usable RSA key of 2048 to 8192 bits ({e})")))?;
        let key = Pkcs1PrivateDecryptingKey::new(key)
            .map_err(|_| bad("not usable for PKCS#1 v1.5 decryption".into()))?;
        self.keys.insert(version, key);
        Ok(())
    }

    /// The versions held, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Whether the ring holds `version`.
    pub fn has(&self, version: u32) -> bool {
        self.keys.contains_key(&version)
    }

    /// Unwraps a record's `encrypt_random_key`: base64, then RSA PKCS#1 v1.5 with the key of
    /// `version`; the result is the text `DecryptData` takes.
    pub fn unwrap_key(&self, version: u32, encrypt_random_key: &str) -> Result<String, KeyError> {
        let key = self
            .keys
            .get(&version)
            .ok_or(KeyError::UnknownVersion(version))?;
        let ct = STANDARD
            .decode(encrypt_random_key.trim())
            .map_err(|_| KeyError::BadBase64)?;
        let mut out = vec![0u8; key.key_size_bytes()];
        let plain = key
            .decrypt(&ct, &mut out)
            .map_err(|_| KeyError::Rsa(version))?;
        let text = std::str::from_utf8(plain).map_err(|_| KeyError::NotText(version))?;
        if text.is_empty() || text.contains('\0') {
            return Err(KeyError::NotText(version));
        }
        Ok(text.to_owned())
    }
}

/// A corp's public key, for the emulator's side: wraps a per-message key as WeCom does.
pub struct PublicKey(Pkcs1PublicEncryptingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey")
    }
}

impl PublicKey {
    /// From PEM (`BEGIN PUBLIC KEY`, X.509 SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| KeyError::PublicKey(format!("not a PEM public key ({e})")))?;
        let key = PublicEncryptingKey::from_der(der.as_ref())
            .map_err(|e| KeyError::PublicKey(format!("not an RSA public key ({e})")))?;
        Pkcs1PublicEncryptingKey::new(key)
            .map(Self)
            .map_err(|_| KeyError::PublicKey("not usable for PKCS#1 v1.5".into()))
    }

    /// base64 of `plain` encrypted with PKCS#1 v1.5 padding (random, so two calls differ).
    pub fn wrap(&self, plain: &str) -> Result<String, KeyError> {
        let mut out = vec![0u8; self.0.ciphertext_size()];
        let ct = self
            .0
            .encrypt(plain.as_bytes(), &mut out)
            .map_err(|_| KeyError::PublicKey("message too long for the key".into()))?;
        Ok(STANDARD.encode(ct))
    }
}

/// A new RSA-2048 key pair for the chat archive's 消息加密公钥: the private key as PKCS#8 PEM
/// (`BEGIN PRIVATE KEY`, for `[corps.archive] keys`) and the public key as PEM (`BEGIN PUBLIC
/// KEY`, what the corp uploads in WeCom's admin console).
pub fn generate_pem_pair() -> Result<(String, String), KeyError> {
    use aws_lc_rs::encoding::AsDer as _;
    let failed = |what: &str| KeyError::PublicKey(format!("cannot {what}"));
    let key = PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| failed("generate an RSA key"))?;
    let private = key.as_der().map_err(|_| failed("encode the private key"))?;
    let public = key
        .public_key()
        .as_der()
        .map_err(|_| failed("encode the public key"))?;
    Ok((
        pem("PRIVATE KEY", private.as_ref()),
        pem("PUBLIC KEY", public.as_ref()),
    ))
}

/// DER as PEM: base64 in lines of 64 between the label's BEGIN and END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Wraps a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo` (version 0, rsaEncryption, NULL
/// parameters), which is what aws-lc-rs reads.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut body = vec![0x02, 0x01, 0x00]; // INTEGER 0
    body.extend_from_slice(&ALGORITHM);
    body.push(0x04); // OCTET STRING
    der_len(&mut body, pkcs1.len());
    body.extend_from_slice(pkcs1);
    let mut out = vec![0x30]; // SEQUENCE
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "a test fails loudly"
    )]
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../fixtures/archive/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).expect(&path)
    }

    #[test]
    fn a_generated_pair_wraps_and_unwraps() {
        let (private, public) = super::generate_pem_pair().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let mut ring = KeyRing::new();
        ring.insert_pem(7, &private).unwrap();
        let wrapped = PublicKey::from_pem(&public)
            .unwrap()
            .wrap("0123456789abcdef")
            .unwrap();
        assert_eq!(ring.unwrap_key(7, &wrapped).unwrap(), "0123456789abcdef");
        let (other, _) = super::generate_pem_pair().unwrap();
        assert_ne!(other, private, "a new key each time");
    }

    #[test]
    fn pkcs8_and_pkcs1_keys_unwrap_what_their_public_keys_wrapped() {
        let mut ring = KeyRing::new();
        ring.insert_pem(1, &fixture("v1.pem")).unwrap(); // PKCS#8
        ring.insert_pem(2, &fixture("v2.pem")).unwrap(); // PKCS#1
        assert_eq!(ring.versions(), vec![1, 2]);
        for v in [1, 2] {
            let public = PublicKey::from_pem(&fixture(&format!("v{v}.pub.pem"))).unwrap();
            let wrapped = public.wrap("a1b2c3d4e5f6g7h8").unwrap();
            assert_eq!(ring.unwrap_key(v, &wrapped).unwrap(), "a1b2c3d4e5f6g7h8");
        }
    }

    #[test]
    fn each_failure_has_its_reason() {
        let mut ring = KeyRing::new();
        ring.insert_pem(1, &fixture("v1.pem")).unwrap();
        let other = PublicKey::from_pem(&fixture("vother.pub.pem")).unwrap();
        let wrapped = other.wrap("secret-key-text").unwrap();
        assert_eq!(ring.unwrap_key(1, &wrapped), Err(KeyError::Rsa(1)));
        assert_eq!(ring.unwrap_key(1, &wrapped).unwrap_err().code(), "bad_key");
        assert_eq!(
            ring.unwrap_key(7, &wrapped),
            Err(KeyError::UnknownVersion(7))
        );
        assert_eq!(
            ring.unwrap_key(1, "**not base64**"),
            Err(KeyError::BadBase64)
        );
        assert_eq!(ring.unwrap_key(1, "AAAA"), Err(KeyError::Rsa(1)));
    }

    #[test]
    fn unusable_pem_is_a_clear_error() {
        let mut ring = KeyRing::new();
        let err = ring.insert_pem(4, "hello").unwrap_err();
        assert!(err.to_string().contains("publickey_ver 4"), "{err}");
        let err = ring.insert_pem(4, &fixture("v1.pub.pem")).unwrap_err();
        assert!(matches!(err, KeyError::Pem { version: 4, .. }), "{err}");
        assert!(!format!("{ring:?}").contains("BEGIN"));
    }
}
