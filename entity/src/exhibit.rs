//! A file or photo HR or a manager filed on a case (`#证据`), with its caption.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exhibits")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub case_id: i64,
    /// The employee the case is about.
    pub user_id: String,
    /// The platform user id of who sent it.
    pub sender: String,
    /// image, file, video or voice.
    pub media_kind: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub size: i64,
    /// Lowercase hex; the bytes are the `media` row with this hash.
    pub sha256: String,
    pub caption: String,
    pub platform_media_id: Option<String>,
    pub inbound_event_id: i64,
    /// The platform's message time.
    pub received_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
