//! A signed checkpoint of a tenant's evidence log (C2SP tlog-checkpoint).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "evidence_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub size: i64,
    /// Hex of the tree's root at `size`.
    pub root: String,
    /// The signed note exactly as signed.
    pub note: String,
    pub created_at: DateTimeUtc,
    /// The RFC 3161 time-stamp answer (`.tsr`) over the SHA-256 of `note`,
    /// when `evidence.tsa_url` is set.
    pub tsr: Option<Vec<u8>>,
    /// The time the authority put in it.
    pub stamped_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
