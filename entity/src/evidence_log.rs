//! The head of one tenant's evidence log: its size and right edge.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "evidence_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    /// The checkpoint origin line, `{name}/{tenant}`.
    pub origin: String,
    /// The tenant's IANA time zone, for each leaf's local `recorded_at`.
    pub zone: String,
    pub size: i64,
    /// Hex of the perfect subtrees' roots, largest first.
    pub frontier: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
