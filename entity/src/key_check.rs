//! The check value of a key the database is bound to: `data` (the key
//! sealing personal data) or `evidence` (the key signing checkpoints).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "key_checks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub purpose: String,
    /// How people name the key: the first 8 hex digits of the data key's
    /// check value, or the evidence key's note key id.
    pub key_id: String,
    /// Data key: hex HMAC-SHA256(key, "rollcall data key check v1"), 16
    /// bytes. Evidence key: its verifier key (public).
    pub check_value: String,
    pub recorded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
