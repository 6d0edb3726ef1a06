//! A case package or a monthly attendance sheet asked for in chat, served once through a link with a
//! one-time token.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "export_downloads")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    /// The employee the package is about.
    pub employee: String,
    pub case_id: Option<i64>,
    /// Platform user id of who asked.
    pub requested_by: String,
    pub inbound_event_id: i64,
    /// pending, ready, serving, downloaded, expired or failed.
    pub status: String,
    /// SHA-256 of the one-time token (the token itself is only in the link).
    pub token_sha256: Option<String>,
    /// The package as a zip, until it is downloaded.
    pub bytes: Option<Vec<u8>>,
    pub manifest_sha256: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub downloaded_at: Option<DateTimeUtc>,
    /// While status is `serving`: until when the transfer holds the link
    /// (a transfer cut off gives it back at once; a process that died, then).
    pub serving_until: Option<DateTimeUtc>,
    /// Which transfer holds the link: only it may give it back or use it up.
    pub serving_lease: Option<String>,
    /// package (a case package) or attendance (a monthly sheet).
    pub kind: String,
    /// The sheet's month (`2026-12`).
    pub period: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
