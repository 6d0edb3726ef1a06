//! One callback as received from a platform: the raw request, its decrypted
//! plaintext and the parsed fields.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "inbound_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    pub platform: String,
    /// Identifies one platform delivery; unique per tenant and platform.
    pub msg_key: String,
    pub kind: String,
    pub from_user: String,
    /// The text of a text message.
    pub content: Option<String>,
    /// The parsed event as JSON.
    pub fields: String,
    /// The platform's message time (seconds since the epoch).
    pub platform_time: i64,
    pub raw_query: String,
    pub raw_body: String,
    pub plaintext: String,
    pub received_at: DateTimeUtc,
    pub processed_at: Option<DateTimeUtc>,
    /// What the worker judged this event to be.
    pub classification: Option<String>,
    /// Failed attempts to handle it (each rolled back).
    pub attempts: i32,
    /// After a failed attempt: not tried again before this time.
    pub not_before: Option<DateTimeUtc>,
    /// The error the last failed attempt met.
    pub last_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
