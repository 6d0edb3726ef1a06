//! WeCom callback cryptography ("消息加解密"): SHA-1 signature over the sorted
//! (token, timestamp, nonce, encrypt) and AES-256-CBC with IV = key[0..16] and
//! PKCS#7 padding to 32 bytes. Plaintext layout: random(16) ‖ u32 BE length ‖
//! message ‖ receive id.

use aes::Aes256;
use base64::Engine;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::platform::aes_key::{self, AesKeyError, LENIENT};

/// WeCom pads to a multiple of 32 bytes, not the AES block size.
const PAD_BLOCK: usize = 32;

/// Why a callback could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 characters of base64, got {0} characters")]
    KeyLength(usize),
    #[error("EncodingAESKey is not valid base64")]
    KeyEncoding,
    #[error("signature does not match")]
    BadSignature,
    #[error("ciphertext is not valid base64")]
    CiphertextEncoding,
    #[error("ciphertext length is not a multiple of the AES block size")]
    CiphertextLength,
    #[error("padding is invalid")]
    BadPadding,
    #[error("decrypted payload is truncated")]
    Truncated,
    #[error("receive id does not match the configured corp id")]
    WrongReceiveId,
    #[error("decrypted message is not UTF-8")]
    NotUtf8,
}

/// One tenant's callback credentials, ready to use.
#[derive(Clone)]
pub struct WecomCrypto {
    token: String,
    key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for WecomCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomCrypto")
            .field("receive_id", &self.receive_id)
            .finish_non_exhaustive()
    }
}

/// Decodes a 43-character EncodingAESKey into the 32-byte AES key.
pub fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptoError> {
    aes_key::decode_aes_key(encoding_aes_key).map_err(|e| match e {
        AesKeyError::Length(n) => CryptoError::KeyLength(n),
        AesKeyError::Encoding => CryptoError::KeyEncoding,
    })
}

/// SHA-1 hex of the lexically sorted parts, as WeCom computes `msg_signature`.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for p in parts {
        hasher.update(p.as_bytes());
    }
    hex_lower(&hasher.finalize())
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
    out
}

impl WecomCrypto {
    /// Builds the crypto for one app; `receive_id` is the corp id.
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            token: token.to_owned(),
            key: decode_aes_key(encoding_aes_key)?,
            receive_id: receive_id.to_owned(),
        })
    }

    /// Checks `msg_signature` in constant time.
    pub fn verify(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        let expected = signature(&self.token, timestamp, nonce, encrypt);
        let given = msg_signature.to_ascii_lowercase();
        if expected.as_bytes().ct_eq(given.as_bytes()).into() {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// Verifies the signature, then decrypts and checks the receive id.
    pub fn open(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<String, CryptoError> {
        self.verify(msg_signature, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Decrypts `encrypt` and checks that the trailing receive id is ours.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let mut buf = LENIENT
            .decode(encrypt.trim())
            .map_err(|_| CryptoError::CiphertextEncoding)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptoError::CiphertextLength);
        }
        let iv: [u8; 16] = self.key[..16].try_into().expect("key is 32 bytes");
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::BadPadding)?;
        let pad = *plain.last().ok_or(CryptoError::BadPadding)? as usize;
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(CryptoError::BadPadding);
        }
        let body = &plain[..plain.len() - pad];
        if body.len() < 20 {
            return Err(CryptoError::Truncated);
        }
        let len = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        let rest = &body[20..];
        if len > rest.len() {
            return Err(CryptoError::Truncated);
        }
        let (msg, receive_id) = rest.split_at(len);
        if receive_id.ct_eq(self.receive_id.as_bytes()).unwrap_u8() != 1 {
            return Err(CryptoError::WrongReceiveId);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::NotUtf8)
    }

    /// Encrypts `msg` with the given 16 random bytes (for passive replies,
    /// the sandbox and the load generator).
    pub fn encrypt_with(&self, random: [u8; 16], msg: &str) -> String {
        self.encrypt_bytes(random, msg.as_bytes())
    }

    /// Encrypts any bytes as a message (a peer's message need not be
    /// UTF-8; a test sends what a hostile peer would).
    pub fn encrypt_bytes(&self, random: [u8; 16], msg: &[u8]) -> String {
        let mut plain = Vec::with_capacity(20 + msg.len() + self.receive_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(self.receive_id.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let iv: [u8; 16] = self.key[..16].try_into().expect("key is 32 bytes");
        let cipher = cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_vec::<NoPadding>(&plain);
        base64::engine::general_purpose::STANDARD.encode(cipher)
    }

    /// Encrypts with fresh random bytes.
    pub fn encrypt(&self, msg: &str) -> String {
        self.encrypt_with(rand::random(), msg)
    }

    /// Builds a signed, encrypted passive reply envelope.
    pub fn seal_reply(&self, msg: &str, timestamp: &str, nonce: &str) -> String {
        let encrypt = self.encrypt(msg);
        let sig = signature(&self.token, timestamp, nonce, &encrypt);
        format!(
            "<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{sig}]]></MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )
    }

    /// The signature this tenant's token gives for these parts.
    pub fn sign(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        signature(&self.token, timestamp, nonce, encrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_message_and_checks_receive_id() {
        let c =
            WecomCrypto::new("tok", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "corp").unwrap();
        for msg in ["", "a", "打卡", &"x".repeat(1000)] {
            let enc = c.encrypt(msg);
            assert_eq!(c.decrypt(&enc).unwrap(), msg);
        }
        let other = WecomCrypto::new(
            "tok",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "other",
        )
        .unwrap();
        assert_eq!(
            other.decrypt(&c.encrypt("hi")),
            Err(CryptoError::WrongReceiveId)
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(decode_aes_key("short"), Err(CryptoError::KeyLength(5)));
        assert_eq!(
            decode_aes_key(&"!".repeat(43)),
            Err(CryptoError::KeyEncoding)
        );
    }

    #[test]
    fn a_passive_reply_opens_with_the_same_credentials() {
        let c =
            WecomCrypto::new("tok", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "corp").unwrap();
        let reply = c.seal_reply(
            "<xml><Content>已记录</Content></xml>",
            "1409659813",
            "263014780",
        );
        let encrypt = crate::platform::wecom::parse_envelope(&reply).unwrap();
        let sig = reply
            .split("<MsgSignature><![CDATA[")
            .nth(1)
            .unwrap()
            .split("]]>")
            .next()
            .unwrap();
        assert_eq!(
            c.open(sig, "1409659813", "263014780", &encrypt).unwrap(),
            "<xml><Content>已记录</Content></xml>"
        );
    }

    #[test]
    fn signature_is_checked() {
        let c =
            WecomCrypto::new("tok", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "corp").unwrap();
        let enc = c.encrypt("x");
        let sig = c.sign("1", "2", &enc);
        assert_eq!(c.open(&sig, "1", "2", &enc).unwrap(), "x");
        assert_eq!(c.open(&sig, "1", "3", &enc), Err(CryptoError::BadSignature));
    }

    /// The vectors made by third-party implementations (tests/vectors/).
    mod vectors {
        use super::*;
        use serde_json::Value;

        fn load(name: &str) -> Value {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/vectors")
                .join(name);
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        }

        fn s<'a>(v: &'a Value, k: &str) -> &'a str {
            v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
        }

        #[test]
        fn wecom_json_cases() {
            let v = load("wecom.json");
            let c = WecomCrypto::new(s(&v, "token"), s(&v, "encoding_aes_key"), s(&v, "corp_id"))
                .unwrap();
            let cases = v["cases"].as_array().unwrap();
            assert!(cases.len() >= 12);
            for case in cases {
                let name = s(case, "name");
                let q = &case["query"];
                let (sig, ts, nonce) = (s(q, "msg_signature"), s(q, "timestamp"), s(q, "nonce"));
                let opened = if case["method"] == "GET" {
                    c.open(sig, ts, nonce, s(q, "echostr"))
                } else {
                    match crate::platform::wecom::parse_envelope(s(case, "body")) {
                        Ok(encrypt) => c.open(sig, ts, nonce, &encrypt),
                        Err(_) => {
                            assert_eq!(case["expect_status"], "4xx", "{name}: envelope refused");
                            continue;
                        }
                    }
                };
                if case["expect_status"] == 200 {
                    let expected = case["plaintext"]
                        .as_str()
                        .or(case["expect_body"].as_str())
                        .unwrap();
                    assert_eq!(opened.as_deref(), Ok(expected), "{name}");
                    if case["method"] == "POST" {
                        crate::platform::wecom::parse_message(expected)
                            .unwrap_or_else(|e| panic!("{name}: {e}"));
                    }
                } else {
                    assert!(opened.is_err(), "{name} must be refused");
                }
            }
        }

        #[test]
        fn published_wecom_cases() {
            let v = load("published.json");
            let mut checked = 0;
            for case in v["cases"].as_array().unwrap() {
                let kind = s(case, "kind");
                if kind == "dingtalk_event" {
                    continue;
                }
                let c = WecomCrypto::new(
                    s(case, "token"),
                    s(case, "encoding_aes_key"),
                    s(case, "receive_id"),
                )
                .unwrap();
                let ciphertext = if kind == "url_verification" {
                    s(case, "echostr")
                } else {
                    s(case, "encrypt")
                };
                let plain = c
                    .open(
                        s(case, "msg_signature"),
                        s(case, "timestamp"),
                        s(case, "nonce"),
                        ciphertext,
                    )
                    .unwrap_or_else(|e| panic!("{}: {e}", s(case, "source")));
                assert_eq!(plain, s(case, "plaintext"), "{}", s(case, "source"));
                // Our own encryption must round-trip under the same key.
                assert_eq!(c.decrypt(&c.encrypt(&plain)).unwrap(), plain);
                checked += 1;
            }
            assert_eq!(
                checked, 4,
                "two WeCom sources, each a URL check and a message"
            );
        }
    }
}
