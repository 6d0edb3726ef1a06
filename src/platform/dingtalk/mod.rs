//! DingTalk (钉钉): the server API behind [`crate::platform::ChatApi`] (robot
//! one-to-one messages, interactive cards from a registered template, media a
//! user sent to the robot, the address book, read status), callbacks over
//! HTTP (event subscription and robot messages), and the Stream-mode
//! transport, by which an app receives robot messages, card callbacks and
//! events over a WebSocket it opens itself. Not yet wired to a tenant: the
//! configuration, `platform::build` and the Stream runner come next.
//! `PROTOCOL.md` holds the facts all three follow, with their sources.

pub mod api;
pub mod callbacks;
pub mod stream;
