//! Someone who left, and why (HR's answer to the follow-up card).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "leavers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    /// The department when they left.
    pub department: String,
    pub left_on: Date,
    /// self_departure, contract_end or directory.
    pub how: String,
    /// HR's reminder is due on this day.
    pub follow_up_on: Date,
    pub reminded_at: Option<DateTimeUtc>,
    /// pay, workload, family, conditions or other; `None` until HR says.
    pub reason: Option<String>,
    pub recorded_by: Option<String>,
    pub recorded_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
