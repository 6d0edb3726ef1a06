//! Signed notes (C2SP signed-note) and log checkpoints (C2SP
//! tlog-checkpoint), signed with Ed25519. Groundwork for the evidence log.
//!
//! A note is text ending in a newline, a blank line, then one line per
//! signature: `— <key name> <base64(key id ‖ signature)>`. The key id is the
//! first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key); the
//! verifier key is written `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature algorithm byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
/// The em dash and space that start a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("a key name may not be empty or hold spaces, `+` or newlines")]
    BadName,
    #[error("the note text must end with a newline and hold no blank line")]
    BadText,
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("no signature by {0} verifies")]
    NotSigned(String),
}

fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadName);
    }
    Ok(())
}

/// A named Ed25519 key that signs notes.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer for `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        Ok(NoteSigner {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// Reads Go's `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>` encoding.
    pub fn from_private_key(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::BadKey("no PRIVATE+KEY+ prefix"))?;
        let mut parts = rest.splitn(3, '+');
        let (name, id, key) = (
            parts.next().ok_or(NoteError::BadKey("no name"))?,
            parts.next().ok_or(NoteError::BadKey("no key id"))?,
            parts.next().ok_or(NoteError::BadKey("no key"))?,
        );
        let bytes = STANDARD
            .decode(key)
            .map_err(|_| NoteError::BadKey("not base64"))?;
        let (&alg, seed) = bytes.split_first().ok_or(NoteError::BadKey("empty"))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::BadKey("not 32 bytes"))?;
        if alg != ED25519 {
            return Err(NoteError::BadKey("not Ed25519"));
        }
        let signer = NoteSigner::from_seed(name, &seed)?;
        if format!("{:08x}", signer.id()) != id {
            return Err(NoteError::BadKey("key id does not match"));
        }
        Ok(signer)
    }

    /// A fresh random key for `name`.
    pub fn generate(name: &str) -> Result<NoteSigner, NoteError> {
        NoteSigner::from_seed(name, &rand::random::<[u8; 32]>())
    }

    /// Go's private key encoding, which `from_private_key` reads.
    pub fn private_key(&self) -> String {
        let mut bytes = vec![ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id(),
            STANDARD.encode(bytes)
        )
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// A detached Ed25519 signature of `bytes` (the package manifest).
    pub fn sign_bytes(&self, bytes: &[u8]) -> [u8; 64] {
        self.key.sign(bytes).to_bytes()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        key_id(&self.name, &self.key.verifying_key())
    }

    /// The public key to publish: `<name>+<id>+<base64(0x01 ‖ key)>`.
    pub fn verifier_key(&self) -> String {
        let mut bytes = vec![ED25519];
        bytes.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id(), STANDARD.encode(bytes))
    }

    /// Signs `text` (ending in a newline, no blank line): the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.contains("\n\n") || text.starts_with('\n') {
            return Err(NoteError::BadText);
        }
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id().to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

/// Checks that `verifier_key` is a well-formed Ed25519 verifier key whose
/// id matches its name and key, before anything is verified with it.
pub fn check_verifier_key(verifier_key: &str) -> Result<(), NoteError> {
    parse_verifier_key(verifier_key).map(|_| ())
}

/// A verifier key's name, key id and public key.
fn parse_verifier_key(verifier_key: &str) -> Result<(&str, u32, VerifyingKey), NoteError> {
    let mut parts = verifier_key.splitn(3, '+');
    let (name, id, key) = (
        parts.next().ok_or(NoteError::BadKey("no name"))?,
        parts.next().ok_or(NoteError::BadKey("no key id"))?,
        parts.next().ok_or(NoteError::BadKey("no key"))?,
    );
    let bytes = STANDARD
        .decode(key)
        .map_err(|_| NoteError::BadKey("not base64"))?;
    let (&alg, public) = bytes.split_first().ok_or(NoteError::BadKey("empty"))?;
    if alg != ED25519 {
        return Err(NoteError::BadKey("not Ed25519"));
    }
    let public: [u8; 32] = public
        .try_into()
        .map_err(|_| NoteError::BadKey("not 32 bytes"))?;
    let public = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::BadKey("not a point"))?;
    let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::BadKey("key id not hex"))?;
    if key_id(name, &public) != id {
        return Err(NoteError::BadKey("key id does not match"));
    }
    Ok((name, id, public))
}

/// Verifies `note` against a published verifier key; returns its text.
pub fn verify(note: &str, verifier_key: &str) -> Result<String, NoteError> {
    let (name, id, public) = parse_verifier_key(verifier_key)?;
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    if !note.ends_with('\n') {
        return Err(NoteError::Malformed("no final newline"));
    }
    for line in sigs.lines() {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::Malformed("a signature line without the em dash"))?;
        let (line_name, blob) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("a signature line without a signature"))?;
        if line_name != name {
            continue;
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| NoteError::Malformed("signature not base64"))?;
        if blob.len() != 68 || u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) != id {
            continue;
        }
        let signature =
            Signature::from_slice(&blob[4..]).map_err(|_| NoteError::Malformed("bad signature"))?;
        if public.verify(text.as_bytes(), &signature).is_ok() {
            return Ok(text.to_owned());
        }
    }
    Err(NoteError::NotSigned(name.to_owned()))
}

/// The body of a C2SP tlog-checkpoint: origin, tree size, base64 root.
pub fn checkpoint_text(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", STANDARD.encode(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of golang.org/x/mod/sumdb/note (Go's reference implementation).
    const GO_PRIVATE: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn signs_and_names_keys_exactly_as_go_does() {
        let signer = NoteSigner::from_private_key(GO_PRIVATE).unwrap();
        assert_eq!(signer.verifier_key(), GO_VERIFIER);
        assert_eq!(signer.sign(GO_TEXT).unwrap(), GO_NOTE);
        assert_eq!(verify(GO_NOTE, GO_VERIFIER).unwrap(), GO_TEXT);
        assert_eq!(signer.private_key(), GO_PRIVATE);
    }

    #[test]
    fn a_changed_note_or_another_key_does_not_verify() {
        let tampered = GO_NOTE.replace("problem is", "problem was");
        assert_eq!(
            verify(&tampered, GO_VERIFIER),
            Err(NoteError::NotSigned("PeterNeumann".into()))
        );
        let other = NoteSigner::from_seed("PeterNeumann", &[7; 32]).unwrap();
        assert!(verify(GO_NOTE, &other.verifier_key()).is_err());
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let signer = NoteSigner::from_seed("rollcall.example/acme", &[9; 32]).unwrap();
        let text = checkpoint_text("rollcall.example/acme", 42, &[0xab; 32]);
        assert_eq!(text.lines().count(), 3);
        let note = signer.sign(&text).unwrap();
        assert_eq!(verify(&note, &signer.verifier_key()).unwrap(), text);
        assert_eq!(signer.sign("no newline"), Err(NoteError::BadText));
    }
}
