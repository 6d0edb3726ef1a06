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
