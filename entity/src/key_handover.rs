//! An evidence key hand-over: a signed note, signed by the retiring key and
//! the key that follows it (see `rollcall::evidence::handover`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "key_handovers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The retiring key's verifier key.
    pub old_key: String,
    /// The following key's verifier key.
    pub new_key: String,
    /// The signed note, as written beside the key file.
    pub note: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
