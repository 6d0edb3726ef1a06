//! rollcall: attendance evidence and return-to-work notices through enterprise chat.

pub mod app;
pub mod attendance;
pub mod backup;
pub mod cases;
pub mod clock;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod db;
pub mod demo;
pub mod employees;
pub mod evidence;
pub mod inbox;
pub mod ingress;
pub mod jobs;
pub mod keys;
pub mod lease;
pub mod loadgen;
pub mod outbox;
pub mod pdf;
pub mod platform;
pub mod privacy;
pub mod runtime;
pub mod sealed;
pub mod tls;
pub mod workers;
