//! Case packages asked for in chat (`/export 导出`): a job builds the
//! package outside the asking message's transaction, keeps the zip, and
//! sends the asker a link with a one-time token (kept sealed until the
//! message is sent, and withheld from the evidence log); the link serves it
//! once, and again if a transfer was cut off before its end. The monthly
//! attendance sheet asked for with `/report 考勤` goes the same way.

use chrono::{DateTime, Duration, Utc};
use entity::export_download;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    TryInsertResult,
};
use serde_json::json;

use super::export::{self, ExportError};
use super::log::sha256_hex;
use super::{NewLeaf, append_one};
use crate::attendance::sheet::{self, Month};
use crate::cases::notify::local;
use crate::cases::store::case_no;
use crate::outbox::render::{TemplateError, hex};
use crate::outbox::{NewMessage, Payload, SECRET_MARK, enqueue, seal_secret};
use crate::runtime::{Runtime, Tenant};

/// `export_downloads.kind` of a case package.
pub const PACKAGE: &str = "package";
/// `export_downloads.kind` of a monthly attendance sheet.
pub const ATTENDANCE_SHEET: &str = "attendance";
/// `export_downloads.kind` of a person's printable history page.
pub const HISTORY: &str = "history";

/// How long a download link works.
pub const LINK_TTL_HOURS: i64 = 24;

/// Where a requested package stands (the `export_downloads.status`
/// column, which keeps the words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum DownloadStatus {
    /// Asked for; its job has not built it yet.
    Pending,
    /// Built; the link works until it expires or is used.
    Ready,
    /// Being downloaded (until `serving_until`): a transfer that is cut off
    /// gives the link back, a complete one makes it `downloaded`.
    Serving,
    /// Could not be built (the asker was told why).
    Failed,
    /// Served once; the zip is gone.
    Downloaded,
}

impl DownloadStatus {
    /// The word stored in `export_downloads.status`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Records that `requested_by` asked for `employee`'s package in inbound
/// event `event_id`, with the job that builds it. Nothing is added if that
/// event asked already.
pub async fn request<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    employee: &str,
    case: Option<i64>,
    requested_by: &str,
    event_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    let asked = Asked {
        employee,
        case,
        kind: PACKAGE,
        period: None,
    };
    ask(conn, tenant, asked, requested_by, event_id, now).await
}

/// Records that `requested_by` asked for the attendance sheet of `month`
/// in inbound event `event_id`, with the job that builds it.
pub async fn request_sheet<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    month: Month,
    requested_by: &str,
    event_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    let asked = Asked {
        employee: "",
        case: None,
        kind: ATTENDANCE_SHEET,
        period: Some(month.to_string()),
    };
    ask(conn, tenant, asked, requested_by, event_id, now).await
}

/// Records that `requested_by` asked for `employee`'s printable history in
/// inbound event `event_id`, with the job that builds it.
pub async fn request_history<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    employee: &str,
    requested_by: &str,
    event_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    let asked = Asked {
        employee,
        case: None,
        kind: HISTORY,
        period: None,
    };
    ask(conn, tenant, asked, requested_by, event_id, now).await
}

/// What a link is asked for.
struct Asked<'a> {
    employee: &'a str,
    case: Option<i64>,
    kind: &'static str,
    period: Option<String>,
}

/// The request row and its job, once per inbound event.
async fn ask<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    asked: Asked<'_>,
    requested_by: &str,
    event_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    let row = export_download::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        employee: Set(asked.employee.to_owned()),
        case_id: Set(asked.case),
        requested_by: Set(requested_by.to_owned()),
        inbound_event_id: Set(event_id),
        status: Set(DownloadStatus::Pending.as_str().to_owned()),
        created_at: Set(now),
        kind: Set(asked.kind.to_owned()),
        period: Set(asked.period),
        ..Default::default()
    };
    let id = match export_download::Entity::insert(row)
        .on_conflict_do_nothing_on([export_download::Column::InboundEventId])
        .exec(conn)
        .await?
    {
        TryInsertResult::Inserted(r) => r.last_insert_id,
        TryInsertResult::Conflicted | TryInsertResult::Empty => return Ok(None),
    };
    crate::jobs::enqueue_export(conn, id).await?;
    Ok(Some(id))
}

/// Builds requested history page `row` and sends the asker its link.
async fn build_history(
    rt: &Runtime,
    row: &export_download::Model,
    tenant: &Tenant,
) -> Result<(), DownloadError> {
    let now = rt.clock.now();
    let person =
        crate::employees::directory::employee_row(&rt.db.orm, &row.tenant_id, &row.employee)
            .await?;
    let Some(person) = person else {
        let context = json!({ "name": row.employee, "reason": "no such person" });
        return failed(rt, row, "history_failed", &context, now).await;
    };
    let context = crate::hr::history::of(&rt.db.orm, tenant, &person, now).await?;
    let html = rt
        .templates
        .render("history.html", &context, &["html"])?
        .block("html")
        .to_owned();
    let bytes = html.into_bytes();
    let token = hex(&rand::random::<[u8; 32]>());
    let expires = now + Duration::hours(LINK_TTL_HOURS);
    let sha = sha256_hex(&bytes);
    let txn = rt.db.write().await?;
    if !make_ready(&*txn, row, &token, bytes, &sha, expires).await? {
        return Ok(());
    }
    append_one(
        &*txn,
        &row.tenant_id,
        now,
        NewLeaf::new("history_exported")
            .subject(Some(&row.employee))
            .actor(Some(&row.requested_by))
            .id("inbound_event", row.inbound_event_id.to_string())
            .detail(json!({ "sha256": sha, "delivered_as": "one-time link" })),
    )
    .await?;
    let context = json!({
        "name": person.name,
        "sha256": sha,
        "link": format!("{}/export/{SECRET_MARK}", rt.public_url),
        "expires": local(tenant, expires),
    });
    send(rt, &txn, row, "history_ready", &context, Some(&token), now).await?;
    txn.commit().await?;
    Ok(())
}

/// Makes the file behind the link into `row`, once: `Ok(false)` if another
/// run did already.
async fn make_ready<C: ConnectionTrait>(
    conn: &C,
    row: &export_download::Model,
    token: &str,
    bytes: Vec<u8>,
    sha256: &str,
    expires: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let done = export_download::Entity::update_many()
        .col_expr(
            export_download::Column::Status,
            Expr::value(DownloadStatus::Ready.as_str()),
        )
        .col_expr(
            export_download::Column::TokenSha256,
            Expr::value(sha256_hex(token.as_bytes())),
        )
        .col_expr(export_download::Column::Bytes, Expr::value(bytes))
        .col_expr(
            export_download::Column::ManifestSha256,
            Expr::value(sha256.to_owned()),
        )
        .col_expr(export_download::Column::ExpiresAt, Expr::value(expires))
        .filter(export_download::Column::Id.eq(row.id))
        .filter(export_download::Column::Status.eq(DownloadStatus::Pending.as_str()))
        .exec(conn)
        .await?;
    Ok(done.rows_affected == 1)
}

/// Builds requested sheet `row` and sends the asker its link.
async fn build_sheet(
    rt: &Runtime,
    row: &export_download::Model,
    tenant: &Tenant,
) -> Result<(), DownloadError> {
    let now = rt.clock.now();
    let made = match row.period.as_deref().and_then(Month::parse) {
        None => Err(format!("no such month: {:?}", row.period)),
        Some(month) => match sheet::build(&rt.db.orm, tenant, month, now).await {
            Err(e) => {
                tracing::warn!(id = row.id, error = %e, "building an attendance sheet failed");
                Err(e.to_string())
            }
            Ok(made) => sheet::to_xlsx(&made)
                .map(|bytes| (made, bytes))
                .map_err(|e| e.to_string()),
        },
    };
    let (made, bytes) = match made {
        Ok(m) => m,
        Err(reason) => {
            let context = json!({ "month": row.period, "reason": reason });
            return failed(rt, row, "sheet_failed", &context, now).await;
        }
    };
    let token = hex(&rand::random::<[u8; 32]>());
    let expires = now + Duration::hours(LINK_TTL_HOURS);
    let sha = sha256_hex(&bytes);
    let txn = rt.db.write().await?;
    if !make_ready(&*txn, row, &token, bytes, &sha, expires).await? {
        return Ok(());
    }
    sheet::record(
        &*txn,
        &made,
        &sha,
        Some(&row.requested_by),
        "one-time link",
        now,
    )
    .await?;
    let context = json!({
        "month": made.month.to_string(),
        "employees": made.rows.len(),
        "sha256": sha,
        "link": format!("{}/export/{SECRET_MARK}", rt.public_url),
        "expires": local(tenant, expires),
    });
    send(rt, &txn, row, "sheet_ready", &context, Some(&token), now).await?;
    txn.commit().await?;
    Ok(())
}

/// Marks `row` failed (once) and tells the asker why, with `block`.
async fn failed(
    rt: &Runtime,
    row: &export_download::Model,
    block: &str,
    context: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), DownloadError> {
    let txn = rt.db.write().await?;
    let done = export_download::Entity::update_many()
        .col_expr(
            export_download::Column::Status,
            Expr::value(DownloadStatus::Failed.as_str()),
        )
        .col_expr(
            export_download::Column::Error,
            Expr::value(context["reason"].as_str().map(str::to_owned)),
        )
        .filter(export_download::Column::Id.eq(row.id))
        .filter(export_download::Column::Status.eq(DownloadStatus::Pending.as_str()))
        .exec(&txn)
        .await?;
    if done.rows_affected == 1 {
        send(rt, &txn, row, block, context, None, now).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Builds requested package `id` (once) and sends the asker its link.
pub async fn build(rt: &Runtime, id: i64) -> Result<(), DownloadError> {
    let db = &rt.db.orm;
    let Some(row) = export_download::Entity::find_by_id(id).one(db).await? else {
        return Ok(());
    };
    if row.status != DownloadStatus::Pending.as_str() {
        return Ok(());
    }
    let Some(tenant) = rt.tenant(&row.tenant_id).cloned() else {
        return Ok(());
    };
    if row.kind == ATTENDANCE_SHEET {
        return build_sheet(rt, &row, &tenant).await;
    }
    if row.kind == HISTORY {
        return build_history(rt, &row, &tenant).await;
    }
    let name = crate::employees::directory::employee_row(db, &row.tenant_id, &row.employee)
        .await?
        .map_or_else(|| row.employee.clone(), |e| e.name);
    let built = export::package(rt, &row.tenant_id, &row.employee, row.case_id).await;
    let now = rt.clock.now();
    let case_text = row.case_id.map(case_no);
    let context = match built {
        Ok(package) => {
            let token = hex(&rand::random::<[u8; 32]>());
            let expires = now + Duration::hours(LINK_TTL_HOURS);
            let zip = package.to_zip();
            let manifest = package
                .file("manifest.json")
                .map(sha256_hex)
                .unwrap_or_default();
            let summary = &package.summary;
            let txn = rt.db.write().await?;
            if !make_ready(&*txn, &row, &token, zip, &manifest, expires).await? {
                return Ok(());
            }
            append_one(
                &txn,
                &row.tenant_id,
                now,
                NewLeaf::new("package_exported")
                    .case(row.case_id)
                    .subject(Some(&row.employee))
                    .actor(Some(&row.requested_by))
                    .id("inbound_event", row.inbound_event_id.to_string())
                    .detail(json!({
                        "manifest_sha256": manifest,
                        "checkpoint_size": summary.checkpoint_size,
                        "leaves": summary.leaves,
                        "delivered_as": "one-time link",
                    })),
            )
            .await?;
            let context = json!({
                "name": name,
                "case_no": case_text,
                "leaves": summary.leaves,
                "checkpoint_size": summary.checkpoint_size,
                "manifest_sha256": manifest,
                // The token goes into the text only when it is sent.
                "link": format!("{}/export/{SECRET_MARK}", rt.public_url),
                "expires": local(&tenant, expires),
            });
            send(rt, &txn, &row, "ready", &context, Some(&token), now).await?;
            txn.commit().await?;
            return Ok(());
        }
        Err(e) => {
            if matches!(e, ExportError::Db(_)) {
                tracing::warn!(id, error = %e, "building a case package failed");
            }
            json!({ "name": name, "reason": e.to_string() })
        }
    };
    failed(rt, &row, "failed", &context, now).await
}

async fn send<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    row: &export_download::Model,
    block: &str,
    context: &serde_json::Value,
    secret: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), DownloadError> {
    let rendered = rt.templates.render("export", context, &[block])?;
    let idem_key = format!("export:{}:{block}", row.id);
    enqueue(
        conn,
        NewMessage {
            secret: secret.map(|s| seal_secret(&rt.key, &row.tenant_id, &idem_key, s)),
            tenant_id: row.tenant_id.clone(),
            idem_key,
            case_id: None,
            fence: None,
            step: None,
            recipient: row.requested_by.clone(),
            template: rendered.template.clone(),
            template_hash: rendered.hash.clone(),
            payload: Payload::Text {
                content: rendered.block(block).to_owned(),
            },
        },
        now,
    )
    .await?;
    Ok(())
}

/// How long one transfer may hold a link before another may take it (a
/// transfer that is cut off gives it back at once; this is for a process
/// that died while serving).
pub const SERVING_LEASE_MINUTES: i64 = 10;

/// What a download link gives.
#[derive(Debug)]
pub enum Taken {
    /// The zip, and a file name for it: the caller serves it, then calls
    /// [`transferred`] if every byte went out, or [`cut_off`] if not.
    Package {
        id: i64,
        /// This transfer's hold on the link.
        lease: String,
        file_name: String,
        content_type: &'static str,
        bytes: Vec<u8>,
    },
    /// Another transfer of it is under way.
    Busy,
    /// Used already, or expired.
    Gone,
    NotFound,
}

/// Takes the package behind `token` for one transfer: the link is held
/// (`serving`) until [`transferred`] or [`cut_off`], or the lease ends.
pub async fn take(rt: &Runtime, token: &str) -> Result<Taken, DbErr> {
    let now = rt.clock.now();
    let hash = sha256_hex(token.as_bytes());
    let lease = hex(&rand::random::<[u8; 16]>());
    let claimed = export_download::Entity::update_many()
        .col_expr(
            export_download::Column::Status,
            Expr::value(DownloadStatus::Serving.as_str()),
        )
        .col_expr(export_download::Column::ServingLease, Expr::value(&lease))
        .col_expr(
            export_download::Column::ServingUntil,
            Expr::value(now + Duration::minutes(SERVING_LEASE_MINUTES)),
        )
        .filter(export_download::Column::TokenSha256.eq(&hash))
        .filter(export_download::Column::ExpiresAt.gt(now))
        .filter(
            Condition::any()
                .add(export_download::Column::Status.eq(DownloadStatus::Ready.as_str()))
                .add(
                    Condition::all()
                        .add(export_download::Column::Status.eq(DownloadStatus::Serving.as_str()))
                        .add(export_download::Column::ServingUntil.lte(now)),
                ),
        )
        .exec_with_returning(&rt.db.orm)
        .await?;
    let Some(row) = claimed.into_iter().next() else {
        let known = export_download::Entity::find()
            .filter(export_download::Column::TokenSha256.eq(&hash))
            .one(&rt.db.orm)
            .await?;
        return Ok(match known {
            None => Taken::NotFound,
            Some(r)
                if r.status == DownloadStatus::Serving.as_str()
                    && r.expires_at.is_some_and(|e| e > now) =>
            {
                Taken::Busy
            }
            Some(_) => Taken::Gone,
        });
    };
    let (file_name, content_type) = if row.kind == ATTENDANCE_SHEET {
        (
            format!(
                "rollcall-{}-attendance-{}.xlsx",
                row.tenant_id,
                row.period.as_deref().unwrap_or_default()
            ),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    } else if row.kind == HISTORY {
        (
            format!("rollcall-{}-{}-history.html", row.tenant_id, row.employee),
            "text/html; charset=utf-8",
        )
    } else {
        (
            format!(
                "rollcall-{}-{}{}.zip",
                row.tenant_id,
                row.employee,
                row.case_id
                    .map(|c| format!("-{}", case_no(c)))
                    .unwrap_or_default()
            ),
            "application/zip",
        )
    };
    Ok(Taken::Package {
        id: row.id,
        lease,
        file_name,
        content_type,
        bytes: row.bytes.unwrap_or_default(),
    })
}

/// Every byte of package `id` went out: the link is used, the stored zip
/// dropped and the download logged, in one transaction.
pub async fn transferred(rt: &Runtime, id: i64, lease: &str) -> Result<(), DbErr> {
    let now = rt.clock.now();
    let txn = rt.db.write().await?;
    // The write comes first: it claims the row (SQLite: the database).
    let done = export_download::Entity::update_many()
        .col_expr(
            export_download::Column::Status,
            Expr::value(DownloadStatus::Downloaded.as_str()),
        )
        .col_expr(export_download::Column::DownloadedAt, Expr::value(now))
        .col_expr(
            export_download::Column::ServingUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            export_download::Column::Bytes,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(export_download::Column::Id.eq(id))
        .filter(export_download::Column::Status.eq(DownloadStatus::Serving.as_str()))
        .filter(export_download::Column::ServingLease.eq(lease))
        .exec_with_returning(&txn)
        .await?;
    let Some(row) = done.into_iter().next() else {
        return txn.rollback().await;
    };
    append_one(
        &txn,
        &row.tenant_id,
        now,
        NewLeaf::new("package_downloaded")
            .case(row.case_id)
            .subject(Some(&row.employee))
            .actor(Some(&row.requested_by))
            .detail(json!({ "manifest_sha256": row.manifest_sha256 })),
    )
    .await?;
    txn.commit().await
}

/// A transfer of package `id` stopped before its end: the link works again.
pub async fn cut_off(rt: &Runtime, id: i64, lease: &str) -> Result<(), DbErr> {
    export_download::Entity::update_many()
        .col_expr(
            export_download::Column::Status,
            Expr::value(DownloadStatus::Ready.as_str()),
        )
        .col_expr(
            export_download::Column::ServingUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(export_download::Column::Id.eq(id))
        .filter(export_download::Column::Status.eq(DownloadStatus::Serving.as_str()))
        .filter(export_download::Column::ServingLease.eq(lease))
        .exec(&rt.db.orm)
        .await?;
    Ok(())
}
