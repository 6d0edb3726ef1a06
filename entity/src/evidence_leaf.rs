//! One leaf of a tenant's evidence log. Inserted, never updated, except
//! that forgetting a person clears `content` (and with it the salt).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "evidence_leaves")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    /// The leaf index, from 0, without gaps.
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i64,
    pub kind: String,
    pub case_id: Option<i64>,
    /// The employee concerned.
    pub subject: Option<String>,
    /// The operational row it records, `table/id`.
    pub source: Option<String>,
    /// Hex of SHA-256(0x00 ‖ content).
    pub leaf_hash: String,
    /// The leaf data exactly as hashed (RFC 8785 JSON with its salt).
    pub content: Option<String>,
    pub recorded_at: DateTimeUtc,
    pub erased_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
