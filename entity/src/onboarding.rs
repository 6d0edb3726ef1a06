//! Where a person stands in the onboarding dialog.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "onboardings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    /// The question waiting for an answer; `done` or `cancelled` at the end.
    pub step: String,
    /// The answers so far (JSON), sealed with the data key.
    pub answers_sealed: String,
    /// After a correction, the summary comes back instead of the next question.
    pub correcting: bool,
    pub started_by: String,
    pub started_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
