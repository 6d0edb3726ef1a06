//! DingTalk (钉钉): the server API behind [`crate::platform::ChatApi`] (robot
//! one-to-one messages, interactive cards from a registered template, media a
//! user sent to the robot, the address book, read status), callbacks over
//! HTTP (event subscription and robot messages), and Stream mode, by which
//! an app receives robot messages, card callbacks and events over a
//! WebSocket it opens itself (`stream.rs`, kept by `listener.rs`).
//! `PROTOCOL.md` holds the facts all of them follow, with their sources.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{DingtalkConfig, DingtalkMode};
use crate::platform::{CallbackSide, Listener, Platform};

pub mod api;
pub mod callbacks;
pub mod listener;
pub mod stream;

/// A DingTalk tenant's platform: its API, and in HTTP mode the callback
/// side, in Stream mode the listener.
pub fn platform(config: &DingtalkConfig, timeout: Duration) -> Result<Platform, String> {
    let api = api::DingtalkApi::new(
        api::DingtalkApiConfig {
            api_base: config.api_base.clone(),
            api_base_v1: config.api_base_v1.clone(),
            app_key: config.app_key.clone(),
            app_secret: config.app_secret.clone(),
            agent_id: config.agent_id,
            robot_code: config.robot_code.clone(),
            card_template_id: config.card_template_id.clone(),
            work_notices: config.work_notices,
        },
        timeout,
    );
    let mut stream = stream::StreamConfig::new(
        &config.api_base_v1,
        &config.app_key,
        config.app_secret.expose(),
    );
    stream.http_timeout = timeout;
    // Each frame is its own inbox commit: many in flight share one fsync.
    stream.handler_concurrency = 64;
    let mut callbacks: Option<Arc<dyn CallbackSide>> = None;
    let listener: Option<Arc<dyn Listener>> = match (config.mode, &config.token, &config.aes_key) {
        (DingtalkMode::Stream, _, _) => Some(Arc::new(listener::DingtalkListener::new(stream))),
        (DingtalkMode::Http, Some(token), Some(aes_key)) => {
            let side = callbacks::DingtalkCallbacks::new(
                token.expose(),
                aes_key.expose(),
                &config.app_key,
                config.app_secret.expose(),
            )
            .map_err(|e| e.to_string())?;
            // Cards are created with callbackType STREAM (a card callback URL
            // would have to be registered through the API first, which
            // rollcall does not do yet): their presses come over a Stream
            // connection that carries nothing else.
            callbacks = Some(Arc::new(side));
            config.card_template_id.as_ref().map(|_| {
                stream.subscriptions =
                    vec![stream::Subscription::callback(stream::TOPIC_CARD_CALLBACK)];
                Arc::new(listener::DingtalkListener::new(stream)) as _
            })
        }
        (DingtalkMode::Http, _, _) => {
            return Err("DingTalk HTTP mode needs token and aes_key".into());
        }
    };
    Ok(Platform {
        api: Arc::new(api),
        callbacks,
        listener,
    })
}
