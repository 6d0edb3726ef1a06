//! Personal data sealed at rest: phone numbers, emergency contacts and postal
//! addresses are stored as AES-256-GCM ciphertext, bound to the field they
//! belong to (the context is the associated data), so a value copied into
//! another employee's row or another column does not open.
//!
//! The key comes from `ROLLCALL_DATA_KEY` (base64 of 32 bytes) or from a key
//! file, created with mode 0600 on first use; the database records its
//! check value (`crate::keys`), so another key is refused at start.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Env;

/// Marks the format, so that a later key rotation can tell values apart.
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
/// What a key's check value is the HMAC of.
const CHECK_LABEL: &[u8] = b"rollcall data key check v1";

#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error("ROLLCALL_DATA_KEY must be base64 of 32 bytes")]
    BadEnvKey,
    #[error("data key file {path}: {reason}")]
    File { path: String, reason: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a sealed value")]
    Format,
    #[error(
        "the value does not open with this key for this field (wrong key, wrong field, or altered)"
    )]
    Rejected,
}

/// The key that seals personal data.
pub struct DataKey {
    cipher: Aes256Gcm,
    /// Names the key without revealing it (see [`DataKey::check_value`]).
    check: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.key_id())
    }
}

/// Where a data key came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File,
}

impl DataKey {
    /// `ROLLCALL_DATA_KEY` if set, else the key in `key_file`, creating the
    /// file (mode 0600) with a fresh random key if it does not exist.
    pub fn load(env: &dyn Env, key_file: &Path) -> Result<DataKey, DataKeyError> {
        match Self::read(env, key_file)? {
            Some((key, _)) => Ok(key),
            None => Self::create(key_file),
        }
    }

    /// `ROLLCALL_DATA_KEY` if set, else the key in `key_file`; `None` when
    /// neither exists (never creates one).
    pub fn read(
        env: &dyn Env,
        key_file: &Path,
    ) -> Result<Option<(DataKey, KeySource)>, DataKeyError> {
        if let Some(text) = env.var("ROLLCALL_DATA_KEY") {
            return Self::from_base64(&text)
                .map(|k| Some((k, KeySource::Env)))
                .ok_or(DataKeyError::BadEnvKey);
        }
        let file_err = |reason: String| DataKeyError::File {
            path: key_file.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                // A key others can read protects nothing.
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(key_file)
                        .map_err(|e| file_err(e.to_string()))?
                        .permissions()
                        .mode();
                    if mode & 0o077 != 0 {
                        return Err(file_err(format!(
                            "is readable by others (mode {:o}): run chmod 600 on it",
                            mode & 0o777
                        )));
                    }
                }
                Self::from_base64(&text)
                    .map(|k| Some((k, KeySource::File)))
                    .ok_or_else(|| file_err("does not hold base64 of 32 bytes".into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_err(e.to_string())),
        }
    }

    /// Writes a fresh random key to `key_file` (mode 0600), which must not
    /// exist yet.
    pub fn create(key_file: &Path) -> Result<DataKey, DataKeyError> {
        let file_err = |reason: String| DataKeyError::File {
            path: key_file.display().to_string(),
            reason,
        };
        let key = Key::<Aes256Gcm>::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(key_file)
            .map_err(|e| file_err(e.to_string()))?;
        writeln!(file, "{}", STANDARD.encode(key.as_slice()))
            .and_then(|_| file.sync_all())
            .map_err(|e| file_err(e.to_string()))?;
        Ok(DataKey::from_key(&key))
    }

    fn from_base64(text: &str) -> Option<DataKey> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        let key = Key::<Aes256Gcm>::try_from(bytes.as_slice()).ok()?;
        Some(DataKey::from_key(&key))
    }

    fn from_key(key: &Key<Aes256Gcm>) -> DataKey {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(CHECK_LABEL);
        let check = hex::encode(&mac.finalize().into_bytes()[..16]);
        DataKey {
            cipher: Aes256Gcm::new(key),
            check,
        }
    }

    /// Hex of the first 16 bytes of HMAC-SHA256(key, "rollcall data key
    /// check v1"): tells keys apart and proves nothing about the key.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    /// The check value's first 8 hex digits, to name the key by.
    pub fn key_id(&self) -> &str {
        &self.check[..8]
    }

    /// Seals `plaintext` for the field named by `context`
    /// (e.g. `employee:acme:zhangsan:phone`).
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce = Nonce::generate();
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens a value sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, OpenError> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(OpenError::Format)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| OpenError::Format)?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Rejected)?;
        String::from_utf8(plain).map_err(|_| OpenError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> [(&'static str, &'static str); 0] {
        []
    }

    #[test]
    fn a_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcall.key");
        let key = DataKey::load(&no_env(), &path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let sealed = key.seal("13800138000", "employee:acme:zhangsan:phone");
        assert!(!sealed.contains("13800138000"));
        let again = DataKey::load(&no_env(), &path).unwrap();
        assert_eq!(
            again.open(&sealed, "employee:acme:zhangsan:phone").unwrap(),
            "13800138000"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = DataKey::load(&no_env(), &path).unwrap_err().to_string();
            assert!(err.contains("readable by others"), "{err}");
        }
    }

    #[test]
    fn a_value_opens_only_for_its_field_and_unaltered() {
        let key = DataKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let sealed = key.seal(
            "王五 13900139000",
            "employee:acme:zhangsan:emergency_contact",
        );
        assert_eq!(
            key.open(&sealed, "employee:acme:lisi:emergency_contact"),
            Err(OpenError::Rejected)
        );
        let mut bytes = STANDARD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{PREFIX}{}", STANDARD.encode(bytes));
        assert_eq!(
            key.open(&altered, "employee:acme:zhangsan:emergency_contact"),
            Err(OpenError::Rejected)
        );
        assert_eq!(key.open("13900139000", "x"), Err(OpenError::Format));
        let other = DataKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert_eq!(
            other.open(&sealed, "employee:acme:zhangsan:emergency_contact"),
            Err(OpenError::Rejected)
        );
        assert_ne!(
            key.seal("x", "c"),
            key.seal("x", "c"),
            "a fresh nonce every time"
        );
    }

    #[test]
    fn the_check_value_names_the_key_and_not_more() {
        let key = DataKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let same = DataKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let other = DataKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert_eq!(key.check_value(), same.check_value());
        assert_ne!(key.check_value(), other.check_value());
        assert_eq!(key.check_value().len(), 32);
        assert_eq!(key.key_id(), &key.check_value()[..8]);
        // Computed independently, with Python's
        // hmac.new(bytes([7] * 32), b"rollcall data key check v1", "sha256").
        assert_eq!(key.check_value(), "1267d434f79ae7caf5c5e7a430bbc21d");
        assert_eq!(format!("{key:?}"), format!("DataKey({})", key.key_id()));
    }

    #[test]
    fn the_environment_key_wins_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollcall.key");
        let env_key = STANDARD.encode([9u8; 32]);
        let key = DataKey::load(&[("ROLLCALL_DATA_KEY", env_key.as_str())], &path).unwrap();
        assert!(
            !path.exists(),
            "no key file when the environment gives the key"
        );
        let sealed = key.seal("x", "c");
        assert_eq!(
            DataKey::from_base64(&env_key)
                .unwrap()
                .open(&sealed, "c")
                .unwrap(),
            "x"
        );
        assert!(matches!(
            DataKey::load(&[("ROLLCALL_DATA_KEY", "short")], &path),
            Err(DataKeyError::BadEnvKey)
        ));
    }
}
