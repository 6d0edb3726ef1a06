//! The archive: HR sends `#合同 <who> [说明]` (or `#员工手册`, `#奖惩`,
//! `#考勤报表`), then the files; like `#证据`, the caption opens a short
//! window for its sender, and each image, file, video or voice message sent
//! in it is downloaded, hashed, kept (`media`), recorded as a document of
//! that person with the tag (an evidence leaf carrying the file) and
//! confirmed with its SHA-256. `/档案 <who> [tag]` lists them.

use chrono::{DateTime, Duration, Utc};
use entity::{archive_window, document};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::json;

use crate::cases::exhibits::{Download, Received, keep_media};
use crate::cases::store::{record, record_leaf};
use crate::evidence::NewLeaf;

/// The tags, as HR writes them after `#`.
pub const TAGS: [&str; 4] = ["合同", "员工手册", "奖惩", "考勤报表"];

/// The first words of a `#奖惩` note that make it a punishment (the risk
/// score counts those; any other 奖惩 document, a reward, it does not).
pub const PUNISHMENT_WORDS: [&str; 5] = ["惩", "处分", "警告", "罚款", "记过"];

/// Whether a `#奖惩` document with `note` is a punishment.
pub fn is_punishment(note: &str) -> bool {
    let first = note.split_whitespace().next().unwrap_or_default();
    PUNISHMENT_WORDS.iter().any(|w| first.starts_with(w))
}

/// Opens a window of `length` for `sender`: the files they send before it
/// ends are `user_id`'s documents with `tag` and `note`.
#[allow(clippy::too_many_arguments)]
pub async fn open_window<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    sender: &str,
    user_id: &str,
    tag: &str,
    note: &str,
    length: Duration,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<archive_window::Model, DbErr> {
    let expires_at = now + length;
    let inserted = archive_window::Entity::insert(archive_window::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        sender: Set(sender.to_owned()),
        user_id: Set(user_id.to_owned()),
        tag: Set(tag.to_owned()),
        note: Set(note.to_owned()),
        inbound_event_id: Set(inbound_event_id),
        opened_at: Set(now),
        expires_at: Set(expires_at),
        ..Default::default()
    })
    .exec(conn)
    .await?;
    record(
        conn,
        tenant_id,
        None,
        Some(user_id),
        "archive_window_opened",
        Some(sender),
        json!({ "tag": tag, "note": note, "expires_at": expires_at, "window": inserted.last_insert_id }),
        Some(inbound_event_id),
        now,
    )
    .await?;
    archive_window::Entity::find_by_id(inserted.last_insert_id)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("window {}", inserted.last_insert_id)))
}

/// The archive window of `sender` open at `now`, if any (the latest).
pub async fn open_window_of<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    sender: &str,
    now: DateTime<Utc>,
) -> Result<Option<archive_window::Model>, DbErr> {
    archive_window::Entity::find()
        .filter(archive_window::Column::TenantId.eq(tenant_id))
        .filter(archive_window::Column::Sender.eq(sender))
        .filter(archive_window::Column::ExpiresAt.gt(now))
        .order_by_desc(archive_window::Column::Id)
        .one(conn)
        .await
}

/// Files `download` as a document of the window's person: the bytes in
/// `media`, the document row, and an event whose leaf carries the file.
pub async fn file<C: ConnectionTrait>(
    conn: &C,
    window: &archive_window::Model,
    sender: &str,
    received: Received<'_>,
    download: Download,
    now: DateTime<Utc>,
) -> Result<document::Model, DbErr> {
    let size = keep_media(conn, &window.tenant_id, &received, &download, now).await?;
    let file_name = received.file_name.or(download.file_name);
    let row = document::Entity::insert(document::ActiveModel {
        tenant_id: Set(window.tenant_id.clone()),
        user_id: Set(window.user_id.clone()),
        tag: Set(window.tag.clone()),
        note: Set(window.note.clone()),
        media_kind: Set(received.kind.to_owned()),
        file_name: Set(file_name.clone()),
        content_type: Set(download.content_type.clone()),
        size: Set(size),
        sha256: Set(download.sha256.clone()),
        filed_by: Set(sender.to_owned()),
        inbound_event_id: Set(received.inbound_event_id),
        filed_at: Set(now),
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
    let leaf = NewLeaf::new("document_filed")
        .subject(Some(&window.user_id))
        .actor(Some(sender))
        .channel("chat")
        .occurred_at(received.sent_at)
        .id("media_id", received.media_id)
        .raw("file", &media_type, download.bytes)
        .detail(json!({
            "document": row.id,
            "tag": window.tag,
            "note": window.note,
            "kind": received.kind,
            "file_name": file_name,
            "content_type": download.content_type,
            "size": size,
            "sha256": download.sha256,
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
    Ok(row)
}

/// `user_id`'s documents (with `tag` only, if given), oldest first.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
    tag: Option<&str>,
) -> Result<Vec<document::Model>, DbErr> {
    let mut q = document::Entity::find()
        .filter(document::Column::TenantId.eq(tenant_id))
        .filter(document::Column::UserId.eq(user_id));
    if let Some(tag) = tag {
        q = q.filter(document::Column::Tag.eq(tag));
    }
    q.order_by_asc(document::Column::Id).all(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("处分 旷工", true)]
    #[case("警告：迟到三次", true)]
    #[case("惩 罚款 200 元", true)]
    #[case("记过一次", true)]
    #[case("奖励 安全生产标兵", false)]
    #[case("", false)]
    #[case("通报 处分", false)]
    fn punishments_are_named_first(#[case] note: &str, #[case] punishment: bool) {
        assert_eq!(is_punishment(note), punishment);
    }
}
