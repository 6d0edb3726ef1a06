//! Exhibits: files and photos HR or a manager files on a case. WeCom chat
//! cannot caption an image, so `#证据 <who> <caption>` opens a short window
//! for its sender; each image, file, video or voice message they send
//! before it expires is downloaded, hashed, kept (`media`), recorded with the
//! caption (a case event whose evidence leaf carries the file itself) and
//! confirmed to the sender with its SHA-256.

use chrono::{DateTime, Duration, Utc};
use entity::{absence_case, exhibit, exhibit_window, media};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder,
};
use serde_json::json;

use super::store::{record, record_leaf};
use crate::evidence::NewLeaf;

/// The case exhibits about `user_id` are filed on: their unresolved case,
/// else their latest one (a postal receipt may come after the case closed).
pub async fn case_for<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<absence_case::Model>, DbErr> {
    if let Some(open) = super::store::unresolved(conn, tenant_id, user_id).await? {
        return Ok(Some(open));
    }
    absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(tenant_id))
        .filter(absence_case::Column::UserId.eq(user_id))
        .order_by_desc(absence_case::Column::Id)
        .one(conn)
        .await
}

/// Opens a window of `length` for `sender` on `case`: files they send
/// before it ends are filed there with `caption`. A newer window replaces
/// an older one.
#[allow(clippy::too_many_arguments)]
pub async fn open_window<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    sender: &str,
    caption: &str,
    length: Duration,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<exhibit_window::Model, DbErr> {
    let expires_at = now + length;
    let inserted = exhibit_window::Entity::insert(exhibit_window::ActiveModel {
        tenant_id: Set(case.tenant_id.clone()),
        sender: Set(sender.to_owned()),
        case_id: Set(case.id),
        user_id: Set(case.user_id.clone()),
        caption: Set(caption.to_owned()),
        inbound_event_id: Set(inbound_event_id),
        opened_at: Set(now),
        expires_at: Set(expires_at),
        ..Default::default()
    })
    .exec(conn)
    .await?;
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "exhibit_window_opened",
        Some(sender),
        json!({ "caption": caption, "expires_at": expires_at, "window": inserted.last_insert_id }),
        Some(inbound_event_id),
        now,
    )
    .await?;
    exhibit_window::Entity::find_by_id(inserted.last_insert_id)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("window {}", inserted.last_insert_id)))
}

/// The window of `sender` that is open at `now`, if any (the latest).
pub async fn open_window_of<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    sender: &str,
    now: DateTime<Utc>,
) -> Result<Option<exhibit_window::Model>, DbErr> {
    exhibit_window::Entity::find()
        .filter(exhibit_window::Column::TenantId.eq(tenant_id))
        .filter(exhibit_window::Column::Sender.eq(sender))
        .filter(exhibit_window::Column::ExpiresAt.gt(now))
        .order_by_desc(exhibit_window::Column::Id)
        .one(conn)
        .await
}

/// A file as downloaded from the platform.
#[derive(Debug, Clone)]
pub struct Download {
    pub sha256: String,
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
}

/// One inbound message carrying a file, for [`file`].
#[derive(Debug, Clone)]
pub struct Received<'a> {
    /// image, file, video or voice.
    pub kind: &'a str,
    pub media_id: &'a str,
    /// The name the message gave, else the download's.
    pub file_name: Option<String>,
    pub inbound_event_id: i64,
    /// The platform's message time.
    pub sent_at: DateTime<Utc>,
}

/// Keeps the bytes of `download` in `media` (once per tenant and hash);
/// returns their size.
pub async fn keep_media<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    received: &Received<'_>,
    download: &Download,
    now: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let size = i64::try_from(download.bytes.len()).unwrap_or(i64::MAX);
    media::Entity::insert(media::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        sha256: Set(download.sha256.clone()),
        content_type: Set(download.content_type.clone()),
        size: Set(size),
        bytes: Set(download.bytes.clone()),
        platform_media_id: Set(Some(received.media_id.to_owned())),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([media::Column::TenantId, media::Column::Sha256])
    .exec_without_returning(conn)
    .await?;
    Ok(size)
}

/// Files `download` on the window's case: the bytes in `media`, the
/// exhibit row, and a case event whose evidence leaf carries the file and
/// the caption.
pub async fn file<C: ConnectionTrait>(
    conn: &C,
    window: &exhibit_window::Model,
    sender: &str,
    received: Received<'_>,
    download: Download,
    now: DateTime<Utc>,
) -> Result<exhibit::Model, DbErr> {
    let size = keep_media(conn, &window.tenant_id, &received, &download, now).await?;
    let file_name = received.file_name.or(download.file_name);
    let row = exhibit::Entity::insert(exhibit::ActiveModel {
        tenant_id: Set(window.tenant_id.clone()),
        case_id: Set(window.case_id),
        user_id: Set(window.user_id.clone()),
        sender: Set(sender.to_owned()),
        media_kind: Set(received.kind.to_owned()),
        file_name: Set(file_name.clone()),
        content_type: Set(download.content_type.clone()),
        size: Set(size),
        sha256: Set(download.sha256.clone()),
        caption: Set(window.caption.clone()),
        platform_media_id: Set(Some(received.media_id.to_owned())),
        inbound_event_id: Set(received.inbound_event_id),
        received_at: Set(received.sent_at),
        recorded_at: Set(now),
        ..Default::default()
    })
    .exec_with_returning(conn)
    .await?;
    let media_type = download
        .content_type
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let leaf = NewLeaf::new("exhibit_filed")
        .case(Some(window.case_id))
        .subject(Some(&window.user_id))
        .actor(Some(sender))
        .channel("chat")
        .occurred_at(received.sent_at)
        .id("media_id", received.media_id)
        .raw("file", &media_type, download.bytes)
        .detail(json!({
            "exhibit": row.id,
            "kind": received.kind,
            "file_name": file_name,
            "content_type": download.content_type,
            "size": size,
            "sha256": download.sha256,
            "caption": window.caption,
            "window": window.id,
        }));
    record_leaf(
        conn,
        &window.tenant_id,
        leaf,
        Some(received.inbound_event_id),
        now,
    )
    .await?;
    // A postal slip filed after `/邮政 签收` proves the letter's receipt.
    if let Some(case) = absence_case::Entity::find_by_id(window.case_id)
        .one(conn)
        .await?
        .filter(|c| c.formal_notice_at.is_some() && c.receipt_at.is_none())
    {
        super::store::establish_receipt(conn, &case, now).await?;
    }
    Ok(row)
}

/// The exhibits of a case, oldest first.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    case_id: i64,
) -> Result<Vec<exhibit::Model>, DbErr> {
    exhibit::Entity::find()
        .filter(exhibit::Column::CaseId.eq(case_id))
        .order_by_asc(exhibit::Column::Id)
        .all(conn)
        .await
}

/// How many exhibits a case has.
pub async fn count<C: ConnectionTrait>(conn: &C, case_id: i64) -> Result<u64, DbErr> {
    exhibit::Entity::find()
        .filter(exhibit::Column::CaseId.eq(case_id))
        .count(conn)
        .await
}
