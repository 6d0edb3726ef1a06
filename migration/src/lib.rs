//! rollcall's schema, as sea-orm migrations (schema only, no seed data).

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_inbound_events;
mod m20261126_000002_create_attendance_tables;
mod m20261126_000003_create_evidence_tables;
mod m20261126_000004_create_departure_tables;
mod m20261126_000005_create_export_downloads;
mod m20261206_000001_rename_outbox_card_ref;
mod m20261206_000002_outbox_read_at;
mod m20261206_000003_case_receipt;
mod m20261206_000004_key_checks;
mod m20261206_000005_link_secrets;
mod m20261206_000007_checkpoint_tsr;
mod m20261206_000008_delivery_agreement;
mod m20261206_000009_sms_reports;
mod m20261206_000011_key_handovers;
mod m20261207_000012_locks;
mod m20261207_000013_inbox_queue;
mod m20261207_000014_inbox_backoff_index;
mod m20261207_000015_job_requests;
mod m20261207_000016_shifts_and_contracts;
mod m20261207_000017_leavers;
mod m20261207_000018_documents;
mod m20261207_000019_risk_alerts;
mod m20261207_000020_check_ins_day_covering;
mod m20261207_000021_onboarding;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_inbound_events::Migration),
            Box::new(m20261126_000002_create_attendance_tables::Migration),
            Box::new(m20261126_000003_create_evidence_tables::Migration),
            Box::new(m20261126_000004_create_departure_tables::Migration),
            Box::new(m20261126_000005_create_export_downloads::Migration),
            Box::new(m20261206_000001_rename_outbox_card_ref::Migration),
            Box::new(m20261206_000002_outbox_read_at::Migration),
            Box::new(m20261206_000003_case_receipt::Migration),
            Box::new(m20261206_000004_key_checks::Migration),
            Box::new(m20261206_000005_link_secrets::Migration),
            Box::new(m20261206_000007_checkpoint_tsr::Migration),
            Box::new(m20261206_000008_delivery_agreement::Migration),
            Box::new(m20261206_000009_sms_reports::Migration),
            Box::new(m20261206_000011_key_handovers::Migration),
            Box::new(m20261207_000012_locks::Migration),
            Box::new(m20261207_000013_inbox_queue::Migration),
            Box::new(m20261207_000014_inbox_backoff_index::Migration),
            Box::new(m20261207_000015_job_requests::Migration),
            Box::new(m20261207_000016_shifts_and_contracts::Migration),
            Box::new(m20261207_000017_leavers::Migration),
            Box::new(m20261207_000018_documents::Migration),
            Box::new(m20261207_000019_risk_alerts::Migration),
            Box::new(m20261207_000020_check_ins_day_covering::Migration),
            Box::new(m20261207_000021_onboarding::Migration),
        ]
    }
}
