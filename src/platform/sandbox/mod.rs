//! The built-in sandbox platform: a WeCom-compatible simulator for tests and
//! `rollcall demo`, speaking the real wire format. The API side (`gettoken`,
//! `message/send`, `message/update_template_card`, `media/get`, the address
//! book) records what rollcall did, with faults a test can switch on; the
//! callback side ([`CallbackSender`]) plays the WeCom servers that push
//! encrypted callbacks to rollcall, retries included. The other channels
//! have theirs: an SMS gateway behind the signed webhook ([`SandboxSms`]) and
//! a plain SMTP server ([`SandboxMail`]). DingTalk has its own: its API
//! ([`SandboxDingtalkApi`]) and its Stream gateway ([`SandboxStreamGateway`]);
//! Feishu its API ([`SandboxFeishuApi`]) and its event pusher
//! ([`FeishuPhone`]).

pub mod api;
pub mod callbacks;
pub mod dingtalk_api;
pub mod dingtalk_stream;
pub mod feishu;
pub mod mail;
pub mod sms;

pub use api::{CardUpdate, DroppedMessage, Fault, PER_MEMBER_PER_MINUTE, SandboxApi, SentMessage};
pub use callbacks::{CallbackSender, Delivery};
pub use dingtalk_api::{
    DingtalkCard, DingtalkCardUpdate, DingtalkDepartment, DingtalkDropped, DingtalkFault,
    DingtalkSent, DingtalkUser, SandboxDingtalkApi,
};
pub use dingtalk_stream::SandboxStreamGateway;
pub use feishu::{
    FeishuCardUpdate, FeishuDelivery, FeishuDepartment, FeishuFault, FeishuPhone, FeishuSent,
    FeishuUser, SandboxFeishuApi,
};
pub use mail::{MailRecord, SandboxMail};
pub use sms::{SandboxSms, SmsFault, SmsRecord};

/// A platform's outage, for minutes or hours: while it is down, every
/// request to that sandbox's API is answered 503 with an HTML page (what a
/// load balancer with no healthy server behind it sends), before any
/// queued fault or handler. Each such request is counted. Cloned, it is
/// the same outage.
#[derive(Clone, Default)]
pub struct Outage(std::sync::Arc<OutageState>);

#[derive(Default)]
struct OutageState {
    down: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicU64,
}

impl Outage {
    /// Takes the platform down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.0.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Requests answered 503 because the platform was down.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `router` behind this outage's gate.
    pub(crate) fn guard(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), gate))
    }
}

async fn gate(
    axum::extract::State(outage): axum::extract::State<Outage>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use std::sync::atomic::Ordering;
    if outage.0.down.load(Ordering::SeqCst) {
        outage.0.refused.fetch_add(1, Ordering::SeqCst);
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        )
            .into_response();
    }
    next.run(request).await
}
