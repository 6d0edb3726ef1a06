//! The built-in sandbox platform: a WeCom-compatible simulator for tests and
//! `rollcall demo`, speaking the real wire format. This part is the API side
//! (`gettoken`, `message/send`), recording every message, with faults that a
//! test can switch on. (The callback side, media and the directory come with
//! the ladder issue.)

pub mod api;

pub use api::{Fault, SandboxApi, SentMessage};
