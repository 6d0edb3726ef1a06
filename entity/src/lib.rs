//! sea-orm entities for rollcall's tables (schema lives in `migration/`).

pub mod inbound_event;
