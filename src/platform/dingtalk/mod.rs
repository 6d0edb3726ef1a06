//! DingTalk (钉钉): the server API behind [`crate::platform::ChatApi`] — robot
//! one-to-one messages, interactive cards from a registered template, media
//! a user sent to the robot, and the address book (see
//! `/work/notes/dingtalk-api.md` for the facts and their sources).

pub mod api;
