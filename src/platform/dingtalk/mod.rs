//! DingTalk (钉钉): callbacks over HTTP (event subscription and robot
//! messages).

pub mod callbacks;
