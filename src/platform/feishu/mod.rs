//! Feishu / Lark (飞书): the server API behind [`crate::platform::ChatApi`]
//! (`api.rs`: messages and cards, card updates, media downloads, the
//! directory, read receipts, attendance punches) and the HTTP callbacks
//! (`callbacks.rs`: events and card presses, encrypted and signed with the
//! crypto of `crypto.rs`). Lark, the international edition, is the same API
//! at `https://open.larksuite.com`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::FeishuConfig;
use crate::platform::Platform;

pub mod api;
pub mod callbacks;
pub mod crypto;

/// A Feishu tenant's platform: its API and its callback side, whose card
/// presses are answered with `toast`.
pub fn platform(config: &FeishuConfig, timeout: Duration, toast: Option<String>) -> Platform {
    let api = api::FeishuApi::new(
        api::FeishuApiConfig {
            api_base: config.api_base.clone(),
            app_id: config.app_id.clone(),
            app_secret: config.app_secret.clone(),
            id_type: config.id_type,
        },
        timeout,
    );
    let callbacks = callbacks::FeishuCallbacks::new(
        config.encrypt_key.as_ref().map(|k| k.expose()),
        config.verification_token.expose(),
        config.id_type,
        toast,
    );
    Platform {
        api: Arc::new(api),
        callbacks: Some(Arc::new(callbacks)),
        listener: None,
    }
}
