//! Feishu / Lark (飞书). So far its callback crypto only (issue 10 builds the
//! rest of the platform on it): the `X-Lark-Signature` check and the
//! AES-256-CBC envelope of encrypted events.

pub mod crypto;
