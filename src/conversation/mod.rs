//! What the bot does with one inbound event: a check-in, a card press, a
//! command, a reply to a case, or a short help. Everything an event causes
//! (rows, case changes, replies in the outbox) is written in one transaction
//! that also marks the event processed, so handling it again changes
//! nothing. [`queue`] runs this for batches of events in one transaction.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use entity::{card_action, employee, inbound_event, media, outbox};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::attendance::checkin::{self, NewCheckIn, geofence, is_checkin_text, work_date};
use crate::attendance::shift::{self, Direction};
use crate::cases::CaseStatus;
use crate::cases::departure::{self, Capacity, Halt, Recorded, Refusal, UnionNotice};
use crate::cases::exhibits::{self, Download, Received};
use crate::cases::notify::local;
use crate::cases::store::{self, Resolution, case_no};
use crate::employees::directory::{employee_row, hr_people};
use crate::evidence::{NewLeaf, append_later};
use crate::hr::archive;
use crate::outbox::render::hex;
use crate::outbox::{NewMessage, Payload, enqueue};
use crate::platform::{InboundEvent, InboundKind};
use crate::runtime::{Runtime, Tenant};

pub mod queue;
pub mod turn;

use turn::{HandleError, Turn};

/// A downloaded photo or file, fetched before the transaction opens.
type Photo = Download;

/// Handles inbound event `id` once, in its own transaction. Returns its
/// classification, or `None` if there is no such event. The queue
/// ([`queue`]) handles events in batches through the same two steps.
pub async fn handle(rt: &Runtime, id: i64) -> Result<Option<String>, HandleError> {
    let db = &rt.db.orm;
    let Some(row) = inbound_event::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    if row.processed_at.is_some() {
        return Ok(row.classification);
    }
    let prepared = prepare(rt, row).await?;
    let txn = rt.db.write().await?;
    match apply(rt, &txn, prepared, Claim::First).await? {
        Some(class) => {
            txn.commit().await?;
            Ok(Some(class.to_owned()))
        }
        None => {
            txn.rollback().await?;
            Ok(inbound_event::Entity::find_by_id(id)
                .one(db)
                .await?
                .and_then(|r| r.classification))
        }
    }
}

/// An event read and ready for its transaction: parsed, its tenant found,
/// and its photo or file downloaded (before any transaction opens, so that
/// no write waits on the platform).
pub(crate) struct Prepared {
    row: inbound_event::Model,
    event: InboundEvent,
    tenant: Option<Arc<Tenant>>,
    photo: Option<Photo>,
    now: DateTime<Utc>,
}

/// The reads and downloads of an event before its transaction.
pub(crate) async fn prepare(
    rt: &Runtime,
    row: inbound_event::Model,
) -> Result<Prepared, HandleError> {
    let db = &rt.db.orm;
    let event: InboundEvent =
        serde_json::from_str(&row.fields).map_err(|e| HandleError::Unreadable {
            id: row.id,
            reason: e.to_string(),
        })?;
    let tenant = rt.tenant(&row.tenant_id).cloned();
    // Downloaded only for someone in the directory: a stranger's photo is
    // neither fetched nor kept. Other files are evidence only: fetched when
    // their sender has an evidence window open.
    let now = rt.clock.now();
    let media_id = match &event.kind {
        InboundKind::Image { media_id, .. } => Some(media_id.as_str()),
        _ => event.attachment(),
    };
    let photo = match (&tenant, media_id) {
        (Some(tenant), Some(media_id))
            if employee_row(db, &tenant.config.id, &event.sender)
                .await?
                .is_some_and(|e| e.active)
                && (matches!(event.kind, InboundKind::Image { .. })
                    || exhibits::open_window_of(db, &tenant.config.id, &event.sender, now)
                        .await?
                        .is_some()
                    || archive::open_window_of(db, &tenant.config.id, &event.sender, now)
                        .await?
                        .is_some()) =>
        {
            fetch_photo(tenant, media_id).await
        }
        _ => None,
    };
    Ok(Prepared {
        row,
        event,
        tenant,
        photo,
        now,
    })
}

/// How [`apply`] makes sure an event is handled once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// By an update that marks it processed before anything else, and finds
    /// it unprocessed (or `apply` returns `None`).
    First,
    /// The caller found it unprocessed in `txn`, which no other writer can
    /// change under it (SQLite's write lock, or PostgreSQL's row lock): it is
    /// marked processed with its classification at the end, one update of
    /// its row instead of two.
    Made,
}

/// Everything an event causes, written in `txn`, which also marks the event
/// processed. `None` if it was processed already (by another worker, seen
/// by [`Claim::First`]): the caller then rolls back whatever `txn` holds of
/// it.
pub(crate) async fn apply(
    rt: &Runtime,
    txn: &DatabaseTransaction,
    p: Prepared,
    claim: Claim,
) -> Result<Option<&'static str>, HandleError> {
    let Prepared {
        row,
        event,
        tenant,
        photo,
        now,
    } = p;
    let id = row.id;
    if claim == Claim::First {
        // A concurrent or repeated run finds it taken.
        let claimed = inbound_event::Entity::update_many()
            .col_expr(inbound_event::Column::ProcessedAt, Expr::value(Utc::now()))
            .filter(inbound_event::Column::Id.eq(id))
            .filter(inbound_event::Column::ProcessedAt.is_null())
            .exec(txn)
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(None);
        }
    }
    let Some(tenant) = tenant else {
        classify(txn, id, "unknown_tenant", claim).await?;
        return Ok(Some("unknown_tenant"));
    };
    let sent_at = DateTime::from_timestamp(event.sent_at, 0).unwrap_or(now);
    // The callback itself is the first leaf of what it causes.
    let fields: Value = serde_json::from_str(&row.fields).unwrap_or(Value::Null);
    let mut leaf = NewLeaf::new("callback")
        .subject(Some(&event.sender))
        .actor(Some(&event.sender))
        .channel("chat")
        .occurred_at(sent_at)
        .id("msg_key", row.msg_key)
        .id("platform", row.platform)
        .raw("callback", &event.media_type, row.raw_body)
        .raw("query", "application/x-www-form-urlencoded", row.raw_query)
        .raw("decrypted", &event.media_type, row.plaintext)
        .source("inbound_events", id)
        .detail(fields);
    if let Some(p) = &photo {
        leaf = leaf.raw(
            "file",
            p.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
            p.bytes.clone(),
        );
    }
    append_later(txn, &tenant.config.id, now, leaf).await?;
    let turn = Turn {
        rt,
        txn,
        tenant: &tenant,
        event_id: id,
        event: &event,
        sent_at,
        now,
    };
    let sender = employee_row(txn, &tenant.config.id, &event.sender)
        .await?
        .filter(|e| e.active);
    let class = dispatch(&turn, sender.as_ref(), photo).await?;
    classify(txn, id, class, claim).await?;
    Ok(Some(class))
}

/// Sets event `id`'s classification, and marks it processed if the claim
/// did not.
async fn classify(
    txn: &DatabaseTransaction,
    id: i64,
    class: &str,
    claim: Claim,
) -> Result<(), DbErr> {
    let mut update = inbound_event::Entity::update_many().col_expr(
        inbound_event::Column::Classification,
        Expr::value(class.to_owned()),
    );
    if claim == Claim::Made {
        update = update.col_expr(inbound_event::Column::ProcessedAt, Expr::value(Utc::now()));
    }
    update
        .filter(inbound_event::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

async fn fetch_photo(tenant: &Tenant, media_id: &str) -> Option<Photo> {
    let api = tenant.chat.as_ref()?;
    match api.fetch_media(media_id).await {
        Ok(m) => Some(Photo {
            sha256: hex(&Sha256::digest(&m.bytes)),
            bytes: m.bytes,
            content_type: Some(m.content_type),
            file_name: m.file_name,
        }),
        Err(e) => {
            tracing::warn!(tenant = %tenant.config.id, error = %e, "could not download a photo or file; the message is kept without it");
            None
        }
    }
}

async fn dispatch(
    turn: &Turn<'_>,
    sender: Option<&employee::Model>,
    photo: Option<Photo>,
) -> Result<&'static str, HandleError> {
    let Some(sender) = sender else {
        return match &turn.event.kind {
            InboundKind::Read {
                message_ids,
                read_at,
            } => pushed_read(turn, message_ids, *read_at).await,
            InboundKind::Text { .. }
            | InboundKind::Location { .. }
            | InboundKind::Image { .. }
            | InboundKind::Voice { .. }
            | InboundKind::Video { .. }
            | InboundKind::File { .. } => {
                turn.record(
                    None,
                    None,
                    "unknown_sender",
                    json!({ "kind": turn.event.kind.name() }),
                )
                .await?;
                turn.reply("command", "unknown_user", &json!({})).await?;
                Ok("unknown_sender")
            }
            _ => Ok("ignored"),
        };
    };
    match &turn.event.kind {
        InboundKind::Text { content, .. } => {
            let t = content.trim_start();
            if t.starts_with('/') || t.starts_with('／') {
                crate::commands::handle::command(turn, sender, content).await?;
                Ok("command")
            } else if crate::commands::parse_archive_caption(content).is_some() {
                crate::commands::handle::archive_caption(turn, sender, content).await?;
                Ok("archive_caption")
            } else if crate::commands::parse_caption(content).is_some() {
                // Before the check-in keywords: a caption may well say 打卡.
                crate::commands::handle::caption(turn, sender, content).await?;
                Ok("evidence_caption")
            } else if is_checkin_text(&turn.tenant.config.attendance.checkout_keywords, content) {
                // Before the check-in keywords: 下班打卡 says 打卡 too.
                check_in(turn, sender, "text", Some(Direction::Out), None, None).await?;
                Ok("checkout")
            } else if is_checkin_text(&turn.tenant.config.attendance.keywords, content) {
                check_in(turn, sender, "text", None, None, None).await?;
                Ok("checkin")
            } else if let Some(dialog) =
                crate::hr::onboarding::active(turn.txn, &turn.tenant.config.id, &sender.user_id)
                    .await?
            {
                // An onboarding dialog under way takes the person's other
                // texts (a command, a caption or a check-in still works; 退出
                // ends it). Looked up only here, off the check-ins' path.
                crate::hr::onboarding::answer(turn, sender, &dialog, content).await?;
                Ok("onboarding")
            } else {
                free_text(turn, sender, content).await
            }
        }
        InboundKind::Punch {
            latitude,
            longitude,
            label,
        } => {
            let place = latitude
                .zip(*longitude)
                .map(|(lat, lon)| (lat, lon, label.clone()));
            check_in(turn, sender, "punch", None, place, None).await?;
            Ok("checkin")
        }
        InboundKind::Location {
            latitude,
            longitude,
            label,
            ..
        } => {
            check_in(
                turn,
                sender,
                "location",
                None,
                Some((*latitude, *longitude, label.clone())),
                None,
            )
            .await?;
            Ok("checkin")
        }
        InboundKind::Image { media_id, .. } => {
            // In an evidence window a photo is an exhibit, not a check-in.
            match exhibits::open_window_of(
                turn.txn,
                &turn.tenant.config.id,
                &sender.user_id,
                turn.now,
            )
            .await?
            {
                Some(window) => {
                    file_exhibit(turn, sender, &window, media_id, None, photo).await?;
                    Ok("exhibit")
                }
                None if let Some(window) = archive::open_window_of(
                    turn.txn,
                    &turn.tenant.config.id,
                    &sender.user_id,
                    turn.now,
                )
                .await? =>
                {
                    file_document(turn, sender, &window, media_id, None, photo).await?;
                    Ok("document")
                }
                None => {
                    check_in(
                        turn,
                        sender,
                        "image",
                        None,
                        None,
                        Some((media_id.clone(), photo)),
                    )
                    .await?;
                    Ok("checkin")
                }
            }
        }
        InboundKind::Voice { media_id, .. }
        | InboundKind::Video { media_id, .. }
        | InboundKind::File { media_id, .. } => {
            let file_name = match &turn.event.kind {
                InboundKind::File { file_name, .. } => file_name.clone(),
                _ => None,
            };
            match exhibits::open_window_of(
                turn.txn,
                &turn.tenant.config.id,
                &sender.user_id,
                turn.now,
            )
            .await?
            {
                Some(window) => {
                    file_exhibit(turn, sender, &window, media_id, file_name, photo).await?;
                    Ok("exhibit")
                }
                None if let Some(window) = archive::open_window_of(
                    turn.txn,
                    &turn.tenant.config.id,
                    &sender.user_id,
                    turn.now,
                )
                .await? =>
                {
                    file_document(turn, sender, &window, media_id, file_name, photo).await?;
                    Ok("document")
                }
                None => {
                    turn.reply(
                        "command",
                        "file_without_window",
                        &json!({
                            "kind": turn.event.kind.name(),
                            "window_minutes": turn.tenant.config.departure.evidence_window.num_minutes(),
                        }),
                    )
                    .await?;
                    Ok("message")
                }
            }
        }
        InboundKind::CardButton { key, card_ref, .. } => {
            card_press(turn, sender, key, card_ref.as_deref()).await
        }
        InboundKind::Read {
            message_ids,
            read_at,
        } => pushed_read(turn, message_ids, *read_at).await,
        InboundKind::Other { .. } => Ok("ignored"),
    }
}

/// A read the platform pushed: recorded for the reader's own messages among
/// `message_ids`, whether or not the reader is still active (a read of the
/// termination notice counts after they left).
async fn pushed_read(
    turn: &Turn<'_>,
    message_ids: &[String],
    read_at: Option<i64>,
) -> Result<&'static str, HandleError> {
    let read_at = read_at.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    let marked = crate::outbox::reads::pushed(
        turn.txn,
        &turn.tenant.config.id,
        &turn.event.sender,
        message_ids,
        read_at,
        turn.event_id,
        turn.now,
    )
    .await?;
    if marked == 0 {
        return Ok("read_unknown");
    }
    // A read formal notice proves its receipt: its deadline starts.
    let open = entity::absence_case::Entity::find()
        .filter(entity::absence_case::Column::TenantId.eq(&turn.tenant.config.id))
        .filter(entity::absence_case::Column::UserId.eq(&turn.event.sender))
        .filter(entity::absence_case::Column::FormalNoticeAt.is_not_null())
        .filter(entity::absence_case::Column::ReceiptAt.is_null())
        .all(turn.txn)
        .await?;
    for case in open {
        store::establish_receipt(turn.txn, &case, turn.now).await?;
    }
    Ok("read")
}

type Place = (f64, f64, Option<String>);

/// A file sent in an archive `window`: a document of its person, confirmed
/// with its hash, or, if it could not be downloaded, recorded and the
/// sender asked again.
async fn file_document(
    turn: &Turn<'_>,
    sender: &employee::Model,
    window: &entity::archive_window::Model,
    media_id: &str,
    file_name: Option<String>,
    download: Option<Download>,
) -> Result<(), HandleError> {
    let kind = turn.event.kind.name();
    let subject = employee_row(turn.txn, &turn.tenant.config.id, &window.user_id).await?;
    let mut context = json!({
        "name": subject.map(|s| s.name).unwrap_or_else(|| window.user_id.clone()),
        "kind": kind,
        "tag": window.tag,
        "note": window.note,
    });
    let Some(download) = download else {
        turn.record(
            None,
            Some(&window.user_id),
            "media_unavailable",
            json!({ "media_id": media_id, "kind": kind, "archive_window": window.id }),
        )
        .await?;
        return turn
            .reply("command", "document_unavailable", &context)
            .await;
    };
    let received = Received {
        kind,
        media_id,
        file_name,
        inbound_event_id: turn.event_id,
        sent_at: turn.sent_at,
    };
    let row = archive::file(
        turn.txn,
        window,
        &sender.user_id,
        received,
        download,
        turn.now,
    )
    .await?;
    context["file_name"] = json!(row.file_name);
    context["size"] = json!(row.size);
    context["sha256"] = json!(row.sha256);
    turn.reply("command", "document_filed", &context).await
}

/// A file sent in `window`: filed on its case and confirmed with its hash,
/// or, if it could not be downloaded, recorded and the sender asked again.
async fn file_exhibit(
    turn: &Turn<'_>,
    sender: &employee::Model,
    window: &entity::exhibit_window::Model,
    media_id: &str,
    file_name: Option<String>,
    download: Option<Download>,
) -> Result<(), HandleError> {
    let kind = turn.event.kind.name();
    let subject = employee_row(turn.txn, &turn.tenant.config.id, &window.user_id).await?;
    let mut context = json!({
        "case_no": case_no(window.case_id),
        "name": subject.map(|s| s.name).unwrap_or_else(|| window.user_id.clone()),
        "kind": kind,
        "caption": window.caption,
    });
    let Some(download) = download else {
        turn.record(
            Some(window.case_id),
            Some(&window.user_id),
            "media_unavailable",
            json!({ "media_id": media_id, "kind": kind, "window": window.id }),
        )
        .await?;
        return turn.reply("command", "exhibit_unavailable", &context).await;
    };
    let received = Received {
        kind,
        media_id,
        file_name,
        inbound_event_id: turn.event_id,
        sent_at: turn.sent_at,
    };
    let row = exhibits::file(
        turn.txn,
        window,
        &sender.user_id,
        received,
        download,
        turn.now,
    )
    .await?;
    context["file_name"] = json!(row.file_name);
    context["size"] = json!(row.size);
    context["sha256"] = json!(row.sha256);
    turn.reply("command", "exhibit_filed", &context).await
}

/// A check-in (or, with a shift, a check-out) from `source`; `direction`
/// `None` when the message does not say which (see
/// [`shift::infer_direction`]).
async fn check_in(
    turn: &Turn<'_>,
    sender: &employee::Model,
    source: &'static str,
    direction: Option<Direction>,
    place: Option<Place>,
    image: Option<(String, Option<Photo>)>,
) -> Result<(), HandleError> {
    let tenant = &turn.tenant.config;
    let shift = tenant.shift_for(sender.shift.as_deref(), sender.site.as_deref());
    let (day, direction, minutes_off) = match shift {
        // Without a shift a day is its date, and nothing is late.
        None => (
            work_date(turn.sent_at, tenant.timezone),
            direction.unwrap_or(Direction::In),
            None,
        ),
        Some(shift) => {
            let local = turn.sent_at.with_timezone(&tenant.timezone).naive_local();
            let direction = match direction {
                Some(d) => d,
                None => {
                    let today = local.date();
                    let since = today.pred_opt().unwrap_or(today);
                    let checked: Vec<chrono::NaiveDate> = entity::check_in::Entity::find()
                        .select_only()
                        .column(entity::check_in::Column::WorkDate)
                        .filter(entity::check_in::Column::TenantId.eq(&tenant.id))
                        .filter(entity::check_in::Column::UserId.eq(&sender.user_id))
                        .filter(entity::check_in::Column::Direction.eq(Direction::In.as_str()))
                        .filter(entity::check_in::Column::WorkDate.gte(since))
                        .filter(entity::check_in::Column::WorkDate.lte(today))
                        .into_tuple()
                        .all(turn.txn)
                        .await?;
                    shift::infer_direction(shift, local, &checked)
                }
            };
            let judged = shift.judge(local, direction);
            (judged.day, direction, judged.minutes_off)
        }
    };
    let fence = place
        .as_ref()
        .map(|(lat, lon, _)| geofence(&turn.tenant.config.sites, *lat, *lon));
    let mut media_sha256 = None;
    if let Some((media_id, photo)) = image {
        match photo {
            Some(p) => {
                media_sha256 = Some(p.sha256.clone());
                media::Entity::insert(media::ActiveModel {
                    tenant_id: Set(tenant.id.clone()),
                    sha256: Set(p.sha256),
                    content_type: Set(p.content_type),
                    size: Set(i64::try_from(p.bytes.len()).unwrap_or(i64::MAX)),
                    bytes: Set(p.bytes),
                    platform_media_id: Set(Some(media_id)),
                    created_at: Set(turn.now),
                    ..Default::default()
                })
                .on_conflict_do_nothing_on([media::Column::TenantId, media::Column::Sha256])
                .exec_without_returning(turn.txn)
                .await?;
            }
            None => {
                turn.record(
                    None,
                    Some(&sender.user_id),
                    "media_unavailable",
                    json!({ "media_id": media_id }),
                )
                .await?
            }
        }
    }
    let flagged = fence.as_ref().is_some_and(|f| !f.inside);
    let new = NewCheckIn {
        tenant_id: tenant.id.clone(),
        user_id: sender.user_id.clone(),
        work_date: day,
        checked_at: turn.sent_at,
        source,
        inbound_event_id: turn.event_id,
        site: fence
            .as_ref()
            .filter(|f| f.inside)
            .and_then(|f| f.nearest.clone()),
        flagged,
        latitude: place.as_ref().map(|p| p.0),
        longitude: place.as_ref().map(|p| p.1),
        label: place.and_then(|p| p.2),
        distance_m: fence.as_ref().and_then(|f| f.distance_m),
        media_sha256,
        direction,
        shift: shift.map(|s| s.name.clone()),
        minutes_off,
    };
    // A punch in the platform's attendance app came from there, not a chat.
    let channel = if source == "punch" {
        "attendance"
    } else {
        "chat"
    };
    let leaf = NewLeaf::new("check_in")
        .subject(Some(&sender.user_id))
        .actor(Some(&sender.user_id))
        .channel(channel)
        .occurred_at(turn.sent_at)
        .id("inbound_event", turn.event_id.to_string())
        .detail(json!({
            "source": source,
            "work_date": day,
            "site": new.site,
            "flagged": flagged,
            "distance_m": new.distance_m,
            "media_sha256": new.media_sha256,
            "direction": direction.as_str(),
            "shift": new.shift,
            "minutes_off": minutes_off,
        }));
    if checkin::store(turn.txn, new, turn.now).await? {
        append_later(turn.txn, &tenant.id, turn.now, leaf).await?;
    }
    let mut resolved = None;
    let mut departure_case = None;
    if let Some(case) = store::unresolved(turn.txn, &tenant.id, &sender.user_id).await?
        && day >= case.first_missed
    {
        if CaseStatus::of(&case) == Some(CaseStatus::Departing) {
            // Someone who came back is not terminated by a process that
            // goes on by itself: it halts, and HR decides.
            departure::halt(
                turn.rt,
                turn.txn,
                turn.tenant,
                &case,
                sender,
                Halt::CheckedIn { source },
                turn.sent_at,
                turn.event_id,
                turn.now,
            )
            .await?;
            departure_case = Some(case_no(case.id));
        } else if store::resolve(
            turn.txn,
            &case,
            &Resolution::CheckedIn { day },
            Some(&sender.user_id),
            Some(turn.event_id),
            turn.now,
        )
        .await?
        {
            resolved = Some(case_no(case.id));
        }
    }
    // Someone who punched in the attendance app did not write to the bot:
    // an answer would be noise, unless the punch closed their case.
    if source == "punch" && resolved.is_none() && departure_case.is_none() {
        return Ok(());
    }
    turn.reply(
        "checkin_reply",
        "text",
        &json!({
            "name": sender.name,
            "time": local(turn.tenant, turn.sent_at),
            "source": source,
            "site": fence.as_ref().filter(|f| f.inside).and_then(|f| f.nearest.clone()),
            "nearest_site": fence.as_ref().and_then(|f| f.nearest.clone()),
            "distance_m": fence.as_ref().and_then(|f| f.distance_m),
            "flagged": flagged,
            "resolved_case": resolved,
            "departure_case": departure_case,
            "direction": direction.as_str(),
            "shift": shift.map(|s| json!({
                "name": s.name,
                "start": s.start.format("%H:%M").to_string(),
                "end": s.end.format("%H:%M").to_string(),
            })),
            "minutes_off": minutes_off,
        }),
    )
    .await
}

/// A text that is neither a command nor a check-in: an employee's answer to
/// their case (pauses it, HR decides), a manager's note on a report's case,
/// or a short help.
async fn free_text(
    turn: &Turn<'_>,
    sender: &employee::Model,
    text: &str,
) -> Result<&'static str, HandleError> {
    if let Some(case) = store::unresolved(turn.txn, &turn.tenant.config.id, &sender.user_id).await?
    {
        store::pause(
            turn.txn,
            &case,
            json!({ "reply": text }),
            Some(turn.event_id),
            turn.now,
        )
        .await?;
        halt_departure(turn, sender, &case).await?;
        forward_to_hr(turn, sender, &case, "reply", text).await?;
        turn.reply(
            "command",
            "reply_recorded",
            &json!({ "case_no": case_no(case.id) }),
        )
        .await?;
        return Ok("case_reply");
    }
    // A manager writing after a card about a report: a note on that case.
    let recent_card = outbox::Entity::find()
        .filter(outbox::Column::TenantId.eq(&turn.tenant.config.id))
        .filter(outbox::Column::Recipient.eq(&sender.user_id))
        .filter(outbox::Column::CaseId.is_not_null())
        .filter(outbox::Column::Step.eq("second_reminder"))
        .order_by_desc(outbox::Column::Id)
        .one(turn.txn)
        .await?;
    if let Some(card) = recent_card
        && let Some(case_id) = card.case_id
        && let Some(case) = entity::absence_case::Entity::find_by_id(case_id)
            .one(turn.txn)
            .await?
        && CaseStatus::of(&case) != Some(CaseStatus::Resolved)
    {
        turn.record(
            Some(case.id),
            Some(&case.user_id),
            "manager_note",
            json!({ "text": text }),
        )
        .await?;
        turn.reply(
            "command",
            "reply_recorded",
            &json!({ "case_no": case_no(case.id) }),
        )
        .await?;
        return Ok("manager_note");
    }
    turn.reply("command", "chat_help", &json!({})).await?;
    Ok("message")
}

/// An answer from the employee halts a self-departure process in progress
/// (the answer goes to HR, who closes the case or goes on).
async fn halt_departure(
    turn: &Turn<'_>,
    sender: &employee::Model,
    case: &entity::absence_case::Model,
) -> Result<(), HandleError> {
    if CaseStatus::of(case) == Some(CaseStatus::Departing) {
        departure::halt(
            turn.rt,
            turn.txn,
            turn.tenant,
            case,
            sender,
            Halt::Replied,
            turn.sent_at,
            turn.event_id,
            turn.now,
        )
        .await?;
    }
    Ok(())
}

async fn forward_to_hr(
    turn: &Turn<'_>,
    sender: &employee::Model,
    case: &entity::absence_case::Model,
    what: &str,
    text: &str,
) -> Result<(), HandleError> {
    let context = json!({ "name": sender.name, "user_id": sender.user_id, "case_no": case_no(case.id), "what": what, "text": text, "departing": CaseStatus::of(case) == Some(CaseStatus::Departing) });
    for hr in hr_people(turn.txn, &turn.tenant.config.id).await? {
        let key = format!("forward:{}:{}", turn.event_id, hr.user_id);
        turn.send_text(&key, &hr.user_id, "employee_replied.hr", "text", &context)
            .await?;
    }
    Ok(())
}

/// The answer to a confirmation or union press, with what is still missing.
fn departure_reply(context: &mut Value, recorded: Recorded, done: &'static str) -> &'static str {
    match recorded {
        Recorded::Done(p) => {
            context["pending"] = json!(p.pending);
            context["document_sha256"] = json!(p.departure.document_sha256);
            context["union_status"] = json!(p.departure.union_status);
            done
        }
        Recorded::Already(_) => "reply_departure_done_already",
        Recorded::Stale => "reply_stale",
    }
}

/// Why `sender` may not press `action` now, if they may not: their own
/// case's departure buttons (`own_case`), HR's items by someone no longer in
/// HR (`no_longer_hr`), the manager's confirmation by someone no longer the
/// subject's manager (`no_longer_manager`).
async fn press_refusal(
    turn: &Turn<'_>,
    sender: &employee::Model,
    action: &card_action::Model,
) -> Result<Option<&'static str>, HandleError> {
    const DEPARTURE: [&str; 5] = [
        "start_departure",
        "confirm_manager",
        "confirm_hr",
        "union_notified",
        "no_union",
    ];
    if !DEPARTURE.contains(&action.action.as_str()) {
        return Ok(None);
    }
    let Some(case_id) = action.case_id else {
        return Ok(None);
    };
    let case = store::reload(turn.txn, case_id).await?;
    if case.user_id == sender.user_id {
        return Ok(Some("own_case"));
    }
    Ok(match action.action.as_str() {
        "confirm_hr" | "union_notified" | "no_union" if sender.role != "hr" => Some("no_longer_hr"),
        "confirm_manager" => {
            let subject = employee_row(turn.txn, &turn.tenant.config.id, &case.user_id).await?;
            let manager = subject.and_then(|s| s.manager_user_id);
            (manager.as_deref() != Some(sender.user_id.as_str())).then_some("no_longer_manager")
        }
        _ => None,
    })
}

/// A button press on one of our cards: the key is an opaque token that says
/// which case and action, and for whom.
async fn card_press(
    turn: &Turn<'_>,
    sender: &employee::Model,
    token: &str,
    card_ref: Option<&str>,
) -> Result<&'static str, HandleError> {
    let Some(action) = card_action::Entity::find()
        .filter(card_action::Column::TenantId.eq(&turn.tenant.config.id))
        .filter(card_action::Column::Token.eq(token))
        .one(turn.txn)
        .await?
    else {
        turn.record(
            None,
            Some(&sender.user_id),
            "card_press_unknown",
            json!({ "key": token }),
        )
        .await?;
        return Ok("card_unknown");
    };
    if action.for_user != sender.user_id {
        turn.record(
            action.case_id,
            None,
            "card_press_foreign",
            json!({ "key": token, "for": action.for_user }),
        )
        .await?;
        return Ok("card_foreign");
    }
    // A card stays in a chat: whoever presses it must still hold the role it
    // was sent for, and nobody decides their own case. Checked before the
    // press is claimed, so a refused press leaves the button as it was.
    if let Some(refusal) = press_refusal(turn, sender, &action).await? {
        let case = match action.case_id {
            Some(id) => Some(store::reload(turn.txn, id).await?),
            None => None,
        };
        let name = match &case {
            Some(c) => employee_row(turn.txn, &turn.tenant.config.id, &c.user_id)
                .await?
                .map(|e| e.name),
            None => None,
        };
        turn.record(
            action.case_id,
            case.as_ref().map(|c| c.user_id.as_str()),
            "card_press_refused",
            json!({ "action": action.action, "reason": refusal }),
        )
        .await?;
        let context = json!({
            "case_no": case.as_ref().map(|c| case_no(c.id)),
            "name": name,
            "refusal": refusal,
        });
        turn.reply("card_pressed", "reply_departure_refused", &context)
            .await?;
        return Ok("card_refused");
    }
    // A button counts once: pressing it again (the card may not have been
    // updated yet) records nothing new.
    let first = card_action::Entity::update_many()
        .col_expr(card_action::Column::PressedAt, Expr::value(turn.now))
        .filter(card_action::Column::Id.eq(action.id))
        .filter(card_action::Column::PressedAt.is_null())
        .exec(turn.txn)
        .await?;
    if first.rows_affected == 0 {
        turn.record(
            action.case_id,
            None,
            "card_press_again",
            json!({ "action": action.action }),
        )
        .await?;
        return Ok("card_again");
    }
    let case = match action.case_id {
        Some(id) => {
            entity::absence_case::Entity::find_by_id(id)
                .one(turn.txn)
                .await?
        }
        None => None,
    };
    let subject = match &case {
        Some(c) => employee_row(turn.txn, &turn.tenant.config.id, &c.user_id).await?,
        None => None,
    };
    turn.record(
        case.as_ref().map(|c| c.id),
        case.as_ref().map(|c| c.user_id.as_str()),
        "card_pressed",
        json!({ "action": action.action, "outbox": action.outbox_id }),
    )
    .await?;
    let mut context = json!({
        "case_no": case.as_ref().map(|c| case_no(c.id)),
        "name": subject.as_ref().map(|s| s.name.clone()),
        "actor_name": sender.name,
        "time": local(turn.tenant, turn.sent_at),
        "deadline": case.as_ref().and_then(|c| c.deadline_at).map(|d| local(turn.tenant, d)),
        "window_minutes": turn.tenant.config.departure.evidence_window.num_minutes(),
    });
    let live = case
        .as_ref()
        .filter(|c| CaseStatus::of(c) != Some(CaseStatus::Resolved));
    let departing = live.filter(|c| CaseStatus::of(c) == Some(CaseStatus::Departing));
    let reply_block = match (action.action.as_str(), live) {
        // A check-in is a check-in even if the case is closed already.
        ("arrived", _) => {
            check_in(turn, sender, "card", Some(Direction::In), None, None).await?;
            None
        }
        ("on_leave", Some(c)) => {
            store::pause(
                turn.txn,
                c,
                json!({ "claimed": "on_leave" }),
                Some(turn.event_id),
                turn.now,
            )
            .await?;
            halt_departure(turn, sender, c).await?;
            forward_to_hr(turn, sender, c, "on_leave", "").await?;
            Some("reply_on_leave")
        }
        ("explain", Some(_)) => Some("reply_explain"),
        ("contacted", Some(c)) => {
            turn.record(Some(c.id), Some(&c.user_id), "manager_contacted", json!({}))
                .await?;
            Some("reply_contacted")
        }
        ("received", Some(c)) => {
            store::acknowledge(turn.txn, c, Some(turn.event_id), turn.now).await?;
            // The acknowledgment proves the notice arrived: the deadline
            // runs from it (or from an earlier read).
            let c = store::reload(turn.txn, c.id).await?;
            let c = store::establish_receipt(turn.txn, &c, turn.now).await?;
            context["deadline"] = json!(c.deadline_at.map(|d| local(turn.tenant, d)));
            Some("reply_received")
        }
        // Only HR decides, whoever the policy sends the deadline card to.
        ("start_departure", Some(_)) if sender.role != "hr" => {
            context["refusal"] = json!("not_hr");
            Some("reply_departure_refused")
        }
        ("start_departure", Some(c)) => {
            let started = departure::start(
                turn.rt,
                turn.txn,
                turn.tenant,
                c,
                sender,
                "card",
                turn.event_id,
                turn.now,
            )
            .await?;
            match started {
                Ok(_) => Some("reply_start_departure"),
                Err(refusal) => {
                    context["refusal"] = json!(match refusal {
                        Refusal::NotDue { .. } => "not_due",
                        Refusal::NotReceived => "not_received",
                        Refusal::Already => "already",
                        Refusal::Closed => "closed",
                    });
                    Some("reply_departure_refused")
                }
            }
        }
        ("confirm_manager" | "confirm_hr", Some(c)) if departing.is_some() => {
            let capacity = if action.action == Capacity::Manager.action() {
                Capacity::Manager
            } else {
                Capacity::Hr
            };
            let recorded = departure::confirm(
                turn.rt,
                turn.txn,
                turn.tenant,
                c,
                sender,
                capacity,
                turn.event_id,
                turn.sent_at,
                turn.now,
            )
            .await?;
            Some(departure_reply(&mut context, recorded, "reply_confirmed"))
        }
        ("union_notified" | "no_union", Some(c)) if departing.is_some() => {
            let notice = if action.action == UnionNotice::Notified.action() {
                UnionNotice::Notified
            } else {
                UnionNotice::NoUnion
            };
            let recorded = departure::record_union(
                turn.rt,
                turn.txn,
                turn.tenant,
                c,
                sender,
                notice,
                None,
                turn.event_id,
                turn.sent_at,
                turn.now,
            )
            .await?;
            Some(departure_reply(&mut context, recorded, "reply_union"))
        }
        // The termination notice's card: the case is closed by then.
        ("termination_received", _) if case.is_some() => {
            if let Some(c) = &case {
                turn.record(
                    Some(c.id),
                    Some(&c.user_id),
                    "termination_acknowledged",
                    json!({ "outbox": action.outbox_id }),
                )
                .await?;
            }
            Some("reply_termination_received")
        }
        ("contract_renew" | "contract_not_renew" | "contract_later", _) => {
            Some(crate::hr::contracts::pressed(turn, sender, &action, &mut context).await?)
        }
        ("risk_seen", _) => {
            Some(crate::hr::risk::pressed(turn, sender, &action, &mut context).await?)
        }
        (a, _) if a.starts_with("leaver_") => {
            Some(crate::hr::leavers::pressed(turn, sender, &action, &mut context).await?)
        }
        _ => Some("reply_stale"),
    };
    if let Some(block) = reply_block {
        turn.reply("card_pressed", block, &context).await?;
    }
    // The card's button becomes a label (a platform's reference may be
    // single-use: it comes with this press).
    if let Some(card_ref) = card_ref.filter(|c| !c.is_empty()) {
        let replace = format!("replace_{}", action.action);
        let rendered = turn
            .rt
            .templates
            .render("card_pressed", &context, &[&replace])?;
        let message = NewMessage {
            secret: None,
            tenant_id: turn.tenant.config.id.clone(),
            idem_key: format!("card_update:{}", turn.event_id),
            case_id: None,
            fence: None,
            step: None,
            recipient: sender.user_id.clone(),
            template: rendered.template.clone(),
            template_hash: rendered.hash.clone(),
            payload: Payload::CardUpdate {
                card_ref: card_ref.to_owned(),
                label: rendered.block(&replace).to_owned(),
                card: crate::outbox::card_as_sent(turn.txn, action.outbox_id).await?,
            },
        };
        enqueue(turn.txn, message, turn.now).await?;
    }
    Ok("card_action")
}
