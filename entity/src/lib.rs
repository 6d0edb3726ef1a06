//! sea-orm entities for rollcall's tables (schema lives in `migration/`).

pub mod absence_case;
pub mod archive_window;
pub mod card_action;
pub mod case_event;
pub mod check_in;
pub mod contract_reminder;
pub mod departure;
pub mod document;
pub mod employee;
pub mod evidence_checkpoint;
pub mod evidence_leaf;
pub mod evidence_log;
pub mod evidence_raw;
pub mod exhibit;
pub mod exhibit_window;
pub mod export_download;
pub mod inbound_event;
pub mod job_request;
pub mod key_check;
pub mod key_handover;
pub mod leave;
pub mod leaver;
pub mod media;
pub mod onboarding;
pub mod outbox;
pub mod risk_alert;
