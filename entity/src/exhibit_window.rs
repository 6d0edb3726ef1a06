//! A short window opened by `#证据 <who> <caption>`: files its sender sends
//! before it expires are filed on that case with that caption.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exhibit_windows")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub sender: String,
    pub case_id: i64,
    pub user_id: String,
    pub caption: String,
    pub inbound_event_id: i64,
    pub opened_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
