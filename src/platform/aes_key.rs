//! The EncodingAESKey of WeCom's and DingTalk's encrypted callbacks: 43
//! characters of base64 for a 32-byte AES key. Used to check the
//! configuration and to open callbacks.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Every published EncodingAESKey has non-zero trailing bits in its last
/// symbol, and ciphertexts are sometimes sent without `=` padding.
pub(crate) const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an EncodingAESKey is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AesKeyError {
    /// Not 43 characters (how many it has).
    Length(usize),
    /// Not base64.
    Encoding,
}

/// Decodes a 43-character EncodingAESKey into the 32-byte AES key.
pub fn decode_aes_key(encoding_aes_key: &str) -> Result<[u8; 32], AesKeyError> {
    let chars = encoding_aes_key.chars().count();
    if chars != 43 {
        return Err(AesKeyError::Length(chars));
    }
    let bytes = LENIENT
        .decode(format!("{encoding_aes_key}="))
        .map_err(|_| AesKeyError::Encoding)?;
    bytes.try_into().map_err(|_| AesKeyError::Encoding)
}
