//! The evidence log: an append-only, per-tenant Merkle log (RFC 6962) of
//! everything that happens to a case, signed checkpoints, and what is
//! built on them (verification, the case package).

pub mod checkpoint;
pub mod cli;
pub mod download;
pub mod export;
pub mod handover;
pub mod leaf_read;
pub mod log;
pub mod merkle;
pub mod note;
pub mod tsa;
pub mod verify;
pub mod witness;
pub mod witness_mail;

pub use log::{NewLeaf, append, append_later, append_one};
