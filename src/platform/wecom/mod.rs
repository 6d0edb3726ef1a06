//! WeCom (企业微信): callback crypto, message parsing and the server API.

pub mod api;
pub mod callback;
pub mod callbacks;
pub mod chat;
pub mod checkin;
pub mod crypto;
pub mod directory;

pub use callback::{ParseError, parse_app_message, parse_envelope, parse_message};
pub use crypto::{CryptoError, WecomCrypto};
