//! An opaque button key on a card, and what pressing it means.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "card_actions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub token: String,
    pub case_id: Option<i64>,
    pub outbox_id: i64,
    /// arrived, on_leave, explain, contacted, received, start_departure.
    pub action: String,
    /// Only this user's press counts.
    pub for_user: String,
    pub pressed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
