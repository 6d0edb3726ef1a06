//! A person's risk score crossing the threshold: one row per crossing.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "risk_alerts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub user_id: String,
    pub crossed_at: DateTimeUtc,
    pub score: i64,
    /// The factors as computed then (JSON).
    pub factors: String,
    /// When the score fell back below the threshold.
    pub cleared_at: Option<DateTimeUtc>,
    pub seen_by: Option<String>,
    pub seen_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
