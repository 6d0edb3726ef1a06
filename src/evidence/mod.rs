//! The evidence log (groundwork for the evidence issue): an append-only
//! Merkle tree hashed as RFC 6962, its inclusion and consistency proofs.
//! Not wired to the rest of rollcall yet.

pub mod merkle;
pub mod note;
