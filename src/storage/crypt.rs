//! IO: client-side encryption of artifacts with age (a storage's `encryption`).
//! Artifacts are sealed to the storage's recipients (public keys from Git)
//! between compression and the checksum; restore opens them with an identity
//! file given to the daemon or CLI by reference (`--age-identity-file`).
//! The format is plain age, so `age -d -i key.txt` decrypts without safepoint.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Value of `ArtifactInfo::encryption` for age-encrypted artifacts.
pub const AGE: &str = "age";
/// File-name suffix of age-encrypted artifacts (`data.sqlite.zst.age`).
pub const AGE_SUFFIX: &str = ".age";

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("`{0}` is not an age or ssh public key; fix spec.encryption.ageRecipients")]
    BadRecipient(String),
    #[error("cannot set up age encryption: {0}")]
    Encrypt(String),
    #[error(
        "backup {backup} is encrypted with age; pass the identity with --age-identity-file PATH \
         (or SAFEPOINT_AGE_IDENTITY_FILE)"
    )]
    NoIdentity { backup: String },
    #[error(
        "cannot read age identity file {path}: {reason}; pass an `age-keygen` key file or an unencrypted ssh private key"
    )]
    BadIdentity { path: PathBuf, reason: String },
    #[error(
        "cannot decrypt backup {backup} with {path}: no identity in it matches the backup's \
         recipients; use the key whose public key was in spec.encryption.ageRecipients when the \
         backup was taken"
    )]
    WrongIdentity { backup: String, path: PathBuf },
    #[error("cannot decrypt backup {backup}: {reason}")]
    Decrypt { backup: String, reason: String },
    #[error("backup {backup} uses encryption `{scheme}`, which this safepoint cannot read")]
    Unknown { backup: String, scheme: String },
}

impl CryptError {
    pub fn kind(&self) -> &'static str {
        match self {
            CryptError::BadRecipient(_) => "bad-recipient",
            CryptError::Encrypt(_) => "encrypt",
            CryptError::NoIdentity { .. } => "no-identity",
            CryptError::BadIdentity { .. } => "bad-identity",
            CryptError::WrongIdentity { .. } => "wrong-identity",
            CryptError::Decrypt { .. } => "decrypt",
            CryptError::Unknown { .. } => "unknown-encryption",
        }
    }
}

/// Parses `age1...` and `ssh-ed25519`/`ssh-rsa` public keys.
pub fn recipients(keys: &[String]) -> Result<Vec<Box<dyn age::Recipient + Send>>, CryptError> {
    keys.iter()
        .map(|k| -> Result<Box<dyn age::Recipient + Send>, CryptError> {
            if let Ok(r) = age::x25519::Recipient::from_str(k) {
                Ok(Box::new(r))
            } else if let Ok(r) = age::ssh::Recipient::from_str(k) {
                Ok(Box::new(r))
            } else {
                Err(CryptError::BadRecipient(k.clone()))
            }
        })
        .collect()
}

/// The stored-bytes side of the pipeline: either passes bytes through or
/// seals them into an age stream.
pub enum Seal<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Seal<W> {
    /// Seals to `recipients`, or passes through when there are none.
    pub fn new(
        inner: W,
        recipients: &[Box<dyn age::Recipient + Send>],
    ) -> Result<Self, CryptError> {
        if recipients.is_empty() {
            return Ok(Seal::Plain(inner));
        }
        let encryptor = age::Encryptor::with_recipients(
            recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| CryptError::Encrypt(e.to_string()))?;
        let writer = encryptor
            .wrap_output(inner)
            .map_err(|e| CryptError::Encrypt(e.to_string()))?;
        Ok(Seal::Age(writer))
    }

    /// Writes the final age chunk and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Seal::Plain(w) => Ok(w),
            Seal::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Seal<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Seal::Plain(w) => w.write(buf),
            Seal::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Seal::Plain(w) => w.flush(),
            Seal::Age(w) => w.flush(),
        }
    }
}

/// Identities read from a key file: `age-keygen` output (one
/// `AGE-SECRET-KEY-1...` per line) or an unencrypted OpenSSH private key.
pub struct Identities {
    path: PathBuf,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    pub fn from_file(path: &Path) -> Result<Identities, CryptError> {
        let bad = |reason: String| CryptError::BadIdentity {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let keys = if text.starts_with(b"-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(&text[..], Some(path.display().to_string()))
                .map_err(|e| bad(e.to_string()))?;
            match id {
                age::ssh::Identity::Unencrypted(_) => {
                    vec![Box::new(id) as Box<dyn age::Identity + Send + Sync>]
                }
                age::ssh::Identity::Encrypted(_) => {
                    return Err(bad("the ssh key is passphrase-protected".into()));
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(bad("unsupported ssh key type (use ed25519 or rsa)".into()));
                }
            }
        } else {
            age::IdentityFile::from_buffer(io::BufReader::new(&text[..]))
                .map_err(|e| bad(e.to_string()))?
                .into_identities()
                .map_err(|e| bad(e.to_string()))?
        };
        if keys.is_empty() {
            return Err(bad("it holds no identity".into()));
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }
}

/// Opens the stored bytes of an artifact for reading its compressed stream:
/// decrypts age artifacts with `identities`, passes plain ones through.
pub fn open<'a, R: Read + Send + 'a>(
    reader: R,
    backup: &str,
    encryption: Option<&str>,
    identities: Option<&Identities>,
) -> Result<Box<dyn Read + Send + 'a>, CryptError> {
    match encryption {
        None => Ok(Box::new(reader)),
        Some(AGE) => {
            let ids = identities.ok_or_else(|| CryptError::NoIdentity {
                backup: backup.to_string(),
            })?;
            let decrypt = |e: age::DecryptError| match e {
                age::DecryptError::NoMatchingKeys => CryptError::WrongIdentity {
                    backup: backup.to_string(),
                    path: ids.path.clone(),
                },
                other => CryptError::Decrypt {
                    backup: backup.to_string(),
                    reason: other.to_string(),
                },
            };
            let decryptor =
                age::Decryptor::new_buffered(io::BufReader::new(reader)).map_err(decrypt)?;
            let stream = decryptor
                .decrypt(ids.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
                .map_err(decrypt)?;
            Ok(Box::new(stream))
        }
        Some(other) => Err(CryptError::Unknown {
            backup: backup.to_string(),
            scheme: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::storage::pipeline::{ArtifactWriter, Cancel, checksum_of, decompress};

    fn key_file(dir: &Path, name: &str) -> (PathBuf, String) {
        let id = age::x25519::Identity::generate();
        let path = dir.join(name);
        let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        std::fs::write(&path, format!("# test key\n{secret}\n")).unwrap();
        (path, id.to_public().to_string())
    }

    #[test]
    fn sealed_pipeline_stores_only_ciphertext_and_round_trips_with_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_file(dir.path(), "key.txt");
        let (other, _) = key_file(dir.path(), "other.txt");
        let data = b"plaintext-marker ".repeat(10_000);
        let recipients = recipients(&[public]).unwrap();
        let mut w = ArtifactWriter::sealed(Vec::new(), Cancel::new(), &recipients).unwrap();
        w.write_all(&data).unwrap();
        let (stored, written) = w.finish().unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        assert!(!stored.windows(16).any(|w| w == b"plaintext-marker"));
        assert_eq!(checksum_of(&stored[..]).unwrap().1, written.checksum);

        let ids = Identities::from_file(&key).unwrap();
        let plain = open(&stored[..], "b1", Some(AGE), Some(&ids)).unwrap();
        let mut back = Vec::new();
        decompress(plain).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);

        let wrong = Identities::from_file(&other).unwrap();
        let err = open(&stored[..], "b1", Some(AGE), Some(&wrong))
            .err()
            .unwrap();
        assert_eq!(err.kind(), "wrong-identity", "{err}");
        let err = open(&stored[..], "b1", Some(AGE), None).err().unwrap();
        assert!(err.to_string().contains("--age-identity-file"), "{err}");
    }

    #[test]
    fn identity_file_errors_never_echo_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "AGE-SECRET-KEY-NOT-REALLY\n").unwrap();
        let err = Identities::from_file(&bad).err().unwrap().to_string();
        assert!(!err.contains("NOT-REALLY"), "{err}");
        assert!(recipients(&["age1nope".into()]).is_err());
    }
}
