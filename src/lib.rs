//! rollcall: attendance evidence and return-to-work notices through enterprise chat.

pub mod app;
pub mod attendance;
pub mod cases;
pub mod commands;
pub mod config;
pub mod db;
pub mod employees;
pub mod inbox;
pub mod ingress;
pub mod loadgen;
pub mod platform;
pub mod sealed;
pub mod workers;
