//! An archive caption (`#合同 <who>`, …): its sender's files until it
//! expires are that person's documents with the tag.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "archive_windows")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub sender: String,
    /// Whose documents the files are.
    pub user_id: String,
    pub tag: String,
    pub note: String,
    pub inbound_event_id: i64,
    pub opened_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
