//! DingTalk (钉钉): callbacks over HTTP (event subscription and robot
//! messages), and the Stream-mode transport, by which an app receives robot
//! messages, card callbacks and events over a WebSocket it opens itself.
//! Neither is wired to a tenant yet (the API side and the configuration come
//! next); `PROTOCOL.md` holds the facts both follow, with their sources.

pub mod callbacks;
pub mod stream;
