//! The built-in sandbox platform: a WeCom-compatible simulator for tests and
//! `rollcall demo`, speaking the real wire format. The API side (`gettoken`,
//! `message/send`, `message/update_template_card`, `media/get`, the address
//! book) records what rollcall did, with faults a test can switch on; the
//! callback side ([`CallbackSender`]) plays the WeCom servers that push
//! encrypted callbacks to rollcall, retries included.

pub mod api;
pub mod callbacks;

pub use api::{CardUpdate, DroppedMessage, Fault, PER_MEMBER_PER_MINUTE, SandboxApi, SentMessage};
pub use callbacks::{CallbackSender, Delivery};
