//! A job asked for and not yet handed to the job queue: written in the
//! caller's transaction, pushed to apalis and deleted by the relay.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_requests")]
pub struct Model {
    /// The relay takes requests in this order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The job queue's name, e.g. `rollcall.scan`.
    pub queue: String,
    /// The job's idempotency key: one job per queue and key.
    pub idempotency_key: String,
    /// The job's payload (JSON), as the queue stores it.
    pub args: Vec<u8>,
    /// The job runs no earlier than this.
    pub run_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
