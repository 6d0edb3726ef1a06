//! Feishu's callback crypto. An encrypted event arrives as
//! `{"encrypt": base64(iv ‖ AES-256-CBC(key, iv, PKCS#7(json)))}` with
//! key = SHA-256 of the app's Encrypt Key and the IV the first 16 bytes of
//! the decoded ciphertext; the request is signed with `X-Lark-Signature` =
//! hex(SHA-256(timestamp ‖ nonce ‖ encrypt_key ‖ raw body)), from the
//! `X-Lark-Request-Timestamp` and `X-Lark-Request-Nonce` headers.

use aes::Aes256;
use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("signature does not match")]
    BadSignature,
    #[error("ciphertext is not valid base64")]
    CiphertextEncoding,
    #[error("ciphertext is shorter than its IV or not whole AES blocks")]
    CiphertextLength,
    #[error("padding is invalid")]
    BadPadding,
    #[error("decrypted message is not UTF-8")]
    NotUtf8,
}

/// One Feishu app's Encrypt Key, ready to use.
#[derive(Clone)]
pub struct FeishuCrypto {
    encrypt_key: String,
    key: [u8; 32],
}

impl std::fmt::Debug for FeishuCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeishuCrypto { .. }")
    }
}

impl FeishuCrypto {
    pub fn new(encrypt_key: &str) -> FeishuCrypto {
        FeishuCrypto {
            encrypt_key: encrypt_key.to_owned(),
            key: Sha256::digest(encrypt_key.as_bytes()).into(),
        }
    }

    /// The `X-Lark-Signature` of a request with these headers and `body`
    /// (the raw bytes, as received).
    pub fn sign(&self, timestamp: &str, nonce: &str, body: &[u8]) -> String {
        let mut hash = Sha256::new();
        hash.update(timestamp.as_bytes());
        hash.update(nonce.as_bytes());
        hash.update(self.encrypt_key.as_bytes());
        hash.update(body);
        hex::encode(hash.finalize())
    }

    /// Checks `signature` (hex, either case) in constant time.
    pub fn verify(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> Result<(), CryptoError> {
        let expected = self.sign(timestamp, nonce, body);
        let given = signature.trim().to_ascii_lowercase();
        if expected.as_bytes().ct_eq(given.as_bytes()).into() {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// Decrypts the `encrypt` field of an event.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encrypt.trim())
            .map_err(|_| CryptoError::CiphertextEncoding)?;
        if bytes.len() < 32 || bytes.len() % 16 != 0 {
            return Err(CryptoError::CiphertextLength);
        }
        let (iv, cipher) = bytes.split_at(16);
        let iv: [u8; 16] = iv.try_into().expect("16 bytes");
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(cipher)
            .map_err(|_| CryptoError::BadPadding)?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotUtf8)
    }

    /// Encrypts `plaintext` with the IV `iv`, as Feishu does (for the
    /// sandbox that plays Feishu, and tests).
    pub fn encrypt_with(&self, iv: [u8; 16], plaintext: &str) -> String {
        let cipher = cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_vec::<Pkcs7>(plaintext.as_bytes());
        let mut out = iv.to_vec();
        out.extend_from_slice(&cipher);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Encrypts with a fresh random IV.
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with(rand::random(), plaintext)
    }

    /// What Feishu sends for `plaintext` at `timestamp` (seconds) with
    /// `nonce`: the body `{"encrypt": …}` and the three signature headers.
    pub fn seal(
        &self,
        plaintext: &str,
        timestamp: &str,
        nonce: &str,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let body = serde_json::json!({ "encrypt": self.encrypt(plaintext) })
            .to_string()
            .into_bytes();
        let signature = self.sign(timestamp, nonce, &body);
        (
            vec![
                ("X-Lark-Request-Timestamp", timestamp.to_owned()),
                ("X-Lark-Request-Nonce", nonce.to_owned()),
                ("X-Lark-Signature", signature),
            ],
            body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/feishu.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every case of the vectors (made with pycryptodome, checked by
    /// lark-oapi's own decryptor): the signature of the raw body matches
    /// the header, and the envelope decrypts to the plaintext.
    #[test]
    fn every_vector_verifies_and_decrypts() {
        let v = vectors();
        let crypto = FeishuCrypto::new(v["encrypt_key"].as_str().unwrap());
        let cases = v["cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let h = &case["headers"];
            let body = case["body"].as_str().unwrap();
            let header = |k: &str| h[k].as_str().unwrap();
            assert_eq!(
                crypto.verify(
                    header("X-Lark-Signature"),
                    header("X-Lark-Request-Timestamp"),
                    header("X-Lark-Request-Nonce"),
                    body.as_bytes(),
                ),
                Ok(()),
                "{name}"
            );
            let envelope: Value = serde_json::from_str(body).unwrap();
            let plain = crypto
                .decrypt(envelope["encrypt"].as_str().unwrap())
                .unwrap();
            assert_eq!(plain, case["plaintext"].as_str().unwrap(), "{name}");
        }
    }

    #[test]
    fn a_changed_byte_or_another_key_is_refused() {
        let v = vectors();
        let crypto = FeishuCrypto::new(v["encrypt_key"].as_str().unwrap());
        let case = &v["cases"][0];
        let h = &case["headers"];
        let body = case["body"].as_str().unwrap();
        let header = |k: &str| h[k].as_str().unwrap();
        let (sig, ts, nonce) = (
            header("X-Lark-Signature"),
            header("X-Lark-Request-Timestamp"),
            header("X-Lark-Request-Nonce"),
        );
        let mut changed = body.as_bytes().to_vec();
        changed[3] ^= 1;
        assert_eq!(
            crypto.verify(sig, ts, nonce, &changed),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            crypto.verify(sig, "1764193167", nonce, body.as_bytes()),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            FeishuCrypto::new("another key").verify(sig, ts, nonce, body.as_bytes()),
            Err(CryptoError::BadSignature)
        );
        let envelope: Value = serde_json::from_str(body).unwrap();
        let encrypt = envelope["encrypt"].as_str().unwrap();
        assert!(FeishuCrypto::new("another key").decrypt(encrypt).is_err());
        assert_eq!(
            crypto.decrypt("not base64!"),
            Err(CryptoError::CiphertextEncoding)
        );
        assert_eq!(
            crypto.decrypt(&base64::engine::general_purpose::STANDARD.encode([0u8; 20])),
            Err(CryptoError::CiphertextLength)
        );
    }

    #[test]
    fn what_it_encrypts_it_decrypts_and_the_iv_leads() {
        let crypto = FeishuCrypto::new("k");
        let iv = [7u8; 16];
        let sealed = crypto.encrypt_with(iv, "{\"打卡\":1}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        assert_eq!(&bytes[..16], &iv);
        assert_eq!(crypto.decrypt(&sealed).unwrap(), "{\"打卡\":1}");
        assert_ne!(
            crypto.encrypt("x"),
            crypto.encrypt("x"),
            "a fresh IV each time"
        );
    }
}
