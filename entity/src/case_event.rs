//! What happened to a case or in chat: state changes, commands, card presses.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "case_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub case_id: Option<i64>,
    /// The employee concerned.
    pub user_id: Option<String>,
    pub kind: String,
    /// The platform user id of who did it (none for the scan).
    pub actor: Option<String>,
    /// JSON.
    pub detail: String,
    pub inbound_event_id: Option<i64>,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
