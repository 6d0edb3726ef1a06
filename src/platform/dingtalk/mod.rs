//! DingTalk (钉钉): the Stream-mode transport, by which an app receives robot
//! messages, card callbacks and events over a WebSocket it opens itself.

pub mod stream;
