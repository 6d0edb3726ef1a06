//! A reminder to HR that a person's contract ends, and HR's choice.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contract_reminders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    /// The contract end date reminded of: a new date is a new contract.
    pub contract_end: Date,
    pub reminded_at: DateTimeUtc,
    /// renew or not_renew; `None` while undecided.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTimeUtc>,
    /// 稍后提醒: the card comes again on this day.
    pub remind_again_on: Option<Date>,
    /// Cards sent: the first, and one per 稍后提醒.
    pub rounds: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
