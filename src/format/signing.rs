//! Ed25519 signing keys and narinfo signatures in the formats Nix uses.
//!
//! A key file, as `nix-store --generate-binary-cache-key NAME SECRET PUBLIC`
//! writes it, is one line `NAME:<base64>`: the secret key is 64 bytes (the
//! 32-byte seed, then the 32-byte public key), the public key 32 bytes.
//!
//! A narinfo is signed by signing its fingerprint
//! ([`narinfo::fingerprint`](crate::format::narinfo::fingerprint)), a line naming the store
//! path, its NAR hash and size and its references as *full* store paths. The
//! narinfo then carries `Sig: NAME:<base64 of the 64-byte signature>`. Ed25519
//! is deterministic, so for the same key and path we produce exactly the bytes
//! Nix produces; the tests check this against signatures made by Nix itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;

/// Length of a secret key: the seed followed by the public key.
const SECRET_KEY_LEN: usize = 64;
/// Length of a public key.
const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature.
const SIGNATURE_LEN: usize = 64;

/// What went wrong reading a key or a signature.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("missing ':' between the key name and the base64 {0}")]
    MissingColon(KeyKind),
    #[error("empty key name in {0}")]
    EmptyName(KeyKind),
    #[error("invalid base64 in {kind} {name:?}: {reason}")]
    Base64 {
        kind: KeyKind,
        name: String,
        reason: base64::DecodeError,
    },
    #[error("{kind} {name:?} is {len} bytes long, expected {expected}")]
    Length {
        kind: KeyKind,
        name: String,
        len: usize,
        expected: usize,
    },
    #[error(
        "{0:?} looks like a public key (32 bytes): signing needs the secret key, \
         the other file `nix-store --generate-binary-cache-key` wrote"
    )]
    PublicKeyForSecret(String),
    #[error("secret key {0:?}: its public half does not match its seed")]
    PublicHalfMismatch(String),
    #[error("public key {0:?} is not a valid ed25519 point")]
    InvalidPoint(String),
}

/// Which of the three `NAME:<base64>` forms an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    SecretKey,
    PublicKey,
    Signature,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::SecretKey => "secret key",
            KeyKind::PublicKey => "public key",
            KeyKind::Signature => "signature",
        })
    }
}

/// A secret key file could not be read or parsed.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("reading secret key file '{}': {reason}", path.display())]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("secret key file '{}': {reason}", path.display())]
    Parse { path: PathBuf, reason: KeyError },
}

/// Splits `NAME:<base64>` (surrounding whitespace ignored) and decodes the
/// base64 into exactly `N` bytes.
fn parse_named<const N: usize>(s: &str, kind: KeyKind) -> Result<(String, [u8; N]), KeyError> {
    let (name, data) = s
        .trim()
        .split_once(':')
        .ok_or(KeyError::MissingColon(kind))?;
    if name.is_empty() {
        return Err(KeyError::EmptyName(kind));
    }
    let bytes = STANDARD.decode(data).map_err(|reason| KeyError::Base64 {
        kind,
        name: name.to_owned(),
        reason,
    })?;
    let bytes: [u8; N] = bytes.try_into().map_err(|b: Vec<u8>| KeyError::Length {
        kind,
        name: name.to_owned(),
        len: b.len(),
        expected: N,
    })?;
    Ok((name.to_owned(), bytes))
}

/// A named ed25519 signing key, as in a Nix secret key file.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Reads a key file written by `nix-store --generate-binary-cache-key`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|reason| KeyFileError::Read {
            path: path.to_owned(),
            reason,
        })?;
        text.parse().map_err(|reason| KeyFileError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// The key's name, the part before the colon.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, with the same name.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a [`fingerprint`].
    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }
}

/// Parses `NAME:<base64 of seed ++ public key>`.
impl FromStr for SecretKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) =
            parse_named::<SECRET_KEY_LEN>(s, KeyKind::SecretKey).map_err(|e| match e {
                // The mistake behind this length: the public key file given
                // where the secret one belongs.
                KeyError::Length { name, len, .. } if len == PUBLIC_KEY_LEN => {
                    KeyError::PublicKeyForSecret(name)
                }
                e => e,
            })?;
        // Checks that the second half is the public key of the first.
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::PublicHalfMismatch(name.clone()))?;
        Ok(SecretKey { name, key })
    }
}

/// Shows the name and public key only, never the secret.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field(
                "public",
                &STANDARD.encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

/// A named ed25519 public key, as in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// The key's name, the part before the colon.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `signature` was made over `fingerprint` by this key's secret
    /// half. A signature by a key of another name is never accepted, as in Nix.
    pub fn verify(&self, fingerprint: &str, signature: &Signature) -> bool {
        signature.key_name == self.name
            && self
                .key
                .verify_strict(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&signature.bytes),
                )
                .is_ok()
    }
}

/// Parses `NAME:<base64 of 32 bytes>`.
impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = parse_named::<PUBLIC_KEY_LEN>(s, KeyKind::PublicKey)?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint(name.clone()))?;
        Ok(PublicKey { name, key })
    }
}

/// `NAME:<base64>`, the form of a public key file and of `trusted-public-keys`.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A signature of a narinfo fingerprint, as in its `Sig:` line.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    /// The name of the key that made it.
    pub key_name: String,
    pub bytes: [u8; SIGNATURE_LEN],
}

/// `NAME:<base64>`, the value of a narinfo `Sig:` line.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, STANDARD.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (key_name, bytes) = parse_named::<SIGNATURE_LEN>(s, KeyKind::Signature)?;
        Ok(Signature { key_name, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    // Made by `nix-store --generate-binary-cache-key test-cache-1 secret.key public.key`.
    // A key for these tests only: it signs nothing else.
    const SECRET: &str = include_str!("../../tests/fixtures/keys/secret.key");
    const PUBLIC: &str = include_str!("../../tests/fixtures/keys/public.key");
    // Written by Nix 2.8 `nix copy --to 'file://…?secret-key=secret.key'`.
    const WITH_REFS: &str =
        include_str!("../../tests/fixtures/keys/signed-with-references.narinfo");

    /// The fingerprint of `WITH_REFS`, as `NarInfo::fingerprint` makes it.
    const WITH_REFS_FINGERPRINT: &str = "1;/nix/store/s03jymp28rnic3p9yd1n5qmm74yr44dp-sig-fixture-top;\
         sha256:0jgvsjb4bx7dw1j65bk3y7z5avjl5dhw1q8fh4pm7d0dhp90s9x7;256;\
         /nix/store/d1hh7p5gsplhy181dx3fhwp9rr3jhnzs-sig-fixture-dep-b,\
         /nix/store/hl5wy5yxkvh48h5kj5nmi44xq1ppy88i-sig-fixture-dep-a";

    /// The `Sig:` line of a narinfo fixture.
    fn nix_signature(narinfo: &str) -> Signature {
        narinfo
            .lines()
            .find_map(|l| l.strip_prefix("Sig: "))
            .expect("the fixture is signed")
            .parse()
            .unwrap()
    }

    fn secret() -> SecretKey {
        SECRET.parse().unwrap()
    }

    #[test]
    fn reads_nix_generated_keys() {
        let sk = SecretKey::from_file(format!("{FIXTURES}/secret.key")).unwrap();
        assert_eq!(sk.name(), "test-cache-1");
        let pk: PublicKey = PUBLIC.parse().unwrap();
        assert_eq!(pk.name(), "test-cache-1");
        assert_eq!(sk.public(), pk);
        assert_eq!(pk.to_string(), PUBLIC.trim());
    }

    #[test]
    fn accepts_surrounding_whitespace() {
        let sk: SecretKey = format!("{SECRET}\n").parse().unwrap();
        assert_eq!(sk.public(), secret().public());
        let pk: PublicKey = format!("  {PUBLIC}\r\n\t").parse().unwrap();
        assert_eq!(pk, secret().public());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", secret());
        let bytes = STANDARD
            .decode(SECRET.trim().split_once(':').unwrap().1)
            .unwrap();
        let seed_b64 = STANDARD.encode(&bytes[..32]);
        assert!(!shown.contains(&seed_b64[..40]), "{shown}");
        assert!(shown.contains("test-cache-1"));
    }

    #[test]
    fn verification_rejects_tampering() {
        let pk = secret().public();
        let sig = nix_signature(WITH_REFS);
        let fp = WITH_REFS_FINGERPRINT;
        assert!(pk.verify(fp, &sig));
        // Another size, a dropped reference, a changed path.
        assert!(!pk.verify(&fp.replace(";256;", ";257;"), &sig));
        let fewer = fp.split_once(',').unwrap().0;
        assert!(!pk.verify(fewer, &sig));
        assert!(!pk.verify(&fp.replacen("sig-fixture-top", "sig-fixture-toq", 1), &sig));
        // A flipped bit in the signature.
        let mut bad = sig.clone();
        bad.bytes[10] ^= 1;
        assert!(!pk.verify(fp, &bad));
        // The same bytes under another key name.
        let renamed = Signature {
            key_name: "other".into(),
            ..sig.clone()
        };
        assert!(!pk.verify(fp, &renamed));
    }

    #[test]
    fn verification_rejects_another_key() {
        let sig = nix_signature(WITH_REFS);
        let fp = WITH_REFS_FINGERPRINT;
        // Same name, different key: seed of all 7s.
        let other = SigningKey::from_bytes(&[7; 32]);
        let other = PublicKey {
            name: "test-cache-1".into(),
            key: other.verifying_key(),
        };
        assert!(!other.verify(fp, &sig));
    }

    #[test]
    fn signature_round_trips() {
        let text = WITH_REFS
            .lines()
            .find_map(|l| l.strip_prefix("Sig: "))
            .unwrap();
        let sig: Signature = text.parse().unwrap();
        assert_eq!(sig.key_name, "test-cache-1");
        assert_eq!(sig.to_string(), text);
    }

    #[test]
    fn rejects_malformed_keys() {
        use KeyError::*;
        let b64 = SECRET.trim().split_once(':').unwrap().1;
        let pub_b64 = PUBLIC.trim().split_once(':').unwrap().1;
        assert_eq!(
            b64.parse::<SecretKey>().unwrap_err(),
            MissingColon(KeyKind::SecretKey)
        );
        assert_eq!(
            format!(":{b64}").parse::<SecretKey>().unwrap_err(),
            EmptyName(KeyKind::SecretKey)
        );
        assert!(matches!(
            "k:not base64!".parse::<SecretKey>().unwrap_err(),
            Base64 {
                kind: KeyKind::SecretKey,
                ..
            }
        ));
        // A public key where a secret key belongs, and the other way round.
        assert_eq!(
            format!("k:{pub_b64}").parse::<SecretKey>().unwrap_err(),
            PublicKeyForSecret("k".into())
        );
        // Any other length is only a wrong length.
        assert_eq!(
            format!("k:{}", STANDARD.encode([0; 48]))
                .parse::<SecretKey>()
                .unwrap_err(),
            Length {
                kind: KeyKind::SecretKey,
                name: "k".into(),
                len: 48,
                expected: 64
            }
        );
        assert_eq!(
            format!("k:{b64}").parse::<PublicKey>().unwrap_err(),
            Length {
                kind: KeyKind::PublicKey,
                name: "k".into(),
                len: 64,
                expected: 32
            }
        );
        assert_eq!(
            "k:".parse::<PublicKey>().unwrap_err().to_string(),
            "public key \"k\" is 0 bytes long, expected 32"
        );
        assert!(matches!(
            "k:AAAA".parse::<Signature>().unwrap_err(),
            Length {
                kind: KeyKind::Signature,
                len: 3,
                ..
            }
        ));
    }

    #[test]
    fn rejects_secret_with_foreign_public_half() {
        let mut bytes = STANDARD
            .decode(SECRET.trim().split_once(':').unwrap().1)
            .unwrap();
        bytes[40] ^= 0x80;
        let text = format!("test-cache-1:{}", STANDARD.encode(&bytes));
        let err = text.parse::<SecretKey>().unwrap_err();
        assert_eq!(err, KeyError::PublicHalfMismatch("test-cache-1".into()));
        assert_eq!(
            err.to_string(),
            "secret key \"test-cache-1\": its public half does not match its seed"
        );
    }

    #[test]
    fn key_file_errors_name_the_path() {
        let err = SecretKey::from_file("/nonexistent/secret.key").unwrap_err();
        assert!(matches!(err, KeyFileError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("reading secret key file '/nonexistent/secret.key': "),
            "{err}"
        );

        let err = SecretKey::from_file(format!("{FIXTURES}/public.key")).unwrap_err();
        assert!(matches!(err, KeyFileError::Parse { .. }));
        assert!(
            err.to_string()
                .contains("public.key': \"test-cache-1\" looks like a public key (32 bytes): signing needs the secret key"),
            "{err}"
        );
    }
}
