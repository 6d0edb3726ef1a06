//! What `/metrics` tells an operator (Prometheus text format), besides the
//! callback counters of [`crate::ingress::Metrics`]:
//!
//! - counters of this process: sends by channel and outcome, and platform
//!   token fetches by platform and outcome (process-wide, as a Prometheus
//!   client's default registry is: one process answers one scrape);
//! - gauges read from the database at each scrape, shared by every
//!   instance: inbox, outbox and job depth and the age of their oldest
//!   waiting row, each tenant's evidence log size and the age of its last
//!   signed (witnessed) checkpoint, and whether the database answers.
//!
//! `docs/operations.md` says which of these to page on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use entity::{evidence_checkpoint, evidence_log, inbound_event, job_request, outbox};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};

use crate::db::Database;
use crate::outbox::OutboxStatus;

/// A counter's name and its two label values.
type Key = (&'static str, String, String);

static COUNTERS: Mutex<BTreeMap<Key, u64>> = Mutex::new(BTreeMap::new());

/// The counters: (metric, first label, second label).
const SENDS: (&str, &str, &str) = ("rollcall_sends_total", "channel", "outcome");
const TOKENS: (&str, &str, &str) = ("rollcall_token_fetches_total", "platform", "outcome");

fn add(metric: &'static str, a: &str, b: &str) {
    let mut counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    *counters
        .entry((metric, a.to_owned(), b.to_owned()))
        .or_default() += 1;
}

fn get(metric: &'static str, a: &str, b: &str) -> u64 {
    let counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    counters
        .get(&(metric, a.to_owned(), b.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// One delivery attempt on `channel` ended as `outcome` (sent, retry,
/// failed, undeliverable, unknown, error; a row cancelled before its
/// attempt is not an attempt).
pub fn count_send(channel: &str, outcome: &str) {
    add(SENDS.0, channel, outcome);
}

/// Attempts on `channel` that ended as `outcome`, since the process started.
pub fn sends(channel: &str, outcome: &str) -> u64 {
    get(SENDS.0, channel, outcome)
}

/// A fetch of `platform`'s access token succeeded (`ok`) or not.
pub fn count_token_fetch(platform: &str, ok: bool) {
    add(TOKENS.0, platform, if ok { "ok" } else { "error" });
}

/// Token fetches of `platform` that ended `ok` or not.
pub fn token_fetches(platform: &str, ok: bool) -> u64 {
    get(TOKENS.0, platform, if ok { "ok" } else { "error" })
}

/// The counters of this process, in the text format.
pub fn render_counters(out: &mut String) {
    let counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    for (metric, a, b) in [SENDS, TOKENS] {
        let _ = writeln!(out, "# TYPE {metric} counter");
        for ((m, x, y), n) in counters.iter() {
            if *m == metric {
                let _ = writeln!(out, "{metric}{{{a}=\"{x}\",{b}=\"{y}\"}} {n}");
            }
        }
    }
}

/// Seconds from `then` to `now`, never negative.
fn age(now: DateTime<Utc>, then: Option<DateTime<Utc>>) -> i64 {
    then.map_or(0, |t| (now - t).num_seconds().max(0))
}

/// The gauges read from the database; `rollcall_database_up 0` alone if
/// it does not answer.
pub async fn render_gauges(db: &Database, now: DateTime<Utc>, out: &mut String) {
    let mut gauges = String::new();
    let up = gauges_into(db, now, &mut gauges).await.is_ok();
    let _ = writeln!(out, "# TYPE rollcall_database_up gauge");
    let _ = writeln!(out, "rollcall_database_up {}", u8::from(up));
    if up {
        out.push_str(&gauges);
    }
}

async fn gauges_into(db: &Database, now: DateTime<Utc>, out: &mut String) -> Result<(), DbErr> {
    let conn = &db.orm;
    let (inbox, oldest): (i64, Option<DateTime<Utc>>) = inbound_event::Entity::find()
        .select_only()
        .column_as(inbound_event::Column::Id.count(), "n")
        .column_as(inbound_event::Column::ReceivedAt.min(), "oldest")
        .filter(inbound_event::Column::ProcessedAt.is_null())
        .into_tuple()
        .one(conn)
        .await?
        .unwrap_or((0, None));
    let _ = writeln!(
        out,
        "# TYPE rollcall_inbox_depth gauge\nrollcall_inbox_depth {inbox}\n\
         # TYPE rollcall_inbox_oldest_age_seconds gauge\nrollcall_inbox_oldest_age_seconds {}",
        age(now, oldest)
    );

    // Waiting: pending or being sent; the age is of the oldest row due.
    let waiting = [
        OutboxStatus::Pending.as_str(),
        OutboxStatus::Sending.as_str(),
    ];
    let by_channel: Vec<(String, i64)> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Channel)
        .column_as(outbox::Column::Id.count(), "n")
        .filter(outbox::Column::Status.is_in(waiting))
        .group_by(outbox::Column::Channel)
        .into_tuple()
        .all(conn)
        .await?;
    let oldest_due: Option<DateTime<Utc>> = outbox::Entity::find()
        .select_only()
        .column_as(outbox::Column::NotBefore.min(), "oldest")
        .filter(outbox::Column::Status.is_in(waiting))
        .filter(outbox::Column::NotBefore.lte(now))
        .into_tuple()
        .one(conn)
        .await?
        .flatten();
    let _ = writeln!(out, "# TYPE rollcall_outbox_depth gauge");
    for channel in ["chat", "sms", "email"] {
        let n = by_channel
            .iter()
            .find(|(c, _)| c == channel)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "rollcall_outbox_depth{{channel=\"{channel}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# TYPE rollcall_outbox_oldest_due_age_seconds gauge\nrollcall_outbox_oldest_due_age_seconds {}",
        age(now, oldest_due)
    );

    let (jobs, oldest_job): (i64, Option<DateTime<Utc>>) = job_request::Entity::find()
        .select_only()
        .column_as(job_request::Column::Id.count(), "n")
        .column_as(job_request::Column::CreatedAt.min(), "oldest")
        .into_tuple()
        .one(conn)
        .await?
        .unwrap_or((0, None));
    let _ = writeln!(
        out,
        "# TYPE rollcall_job_requests_depth gauge\nrollcall_job_requests_depth {jobs}\n\
         # TYPE rollcall_job_requests_oldest_age_seconds gauge\nrollcall_job_requests_oldest_age_seconds {}",
        age(now, oldest_job)
    );

    let logs: Vec<(String, i64)> = evidence_log::Entity::find()
        .select_only()
        .column(evidence_log::Column::TenantId)
        .column(evidence_log::Column::Size)
        .into_tuple()
        .all(conn)
        .await?;
    let signed: Vec<(String, Option<DateTime<Utc>>)> = evidence_checkpoint::Entity::find()
        .select_only()
        .column(evidence_checkpoint::Column::TenantId)
        .column_as(evidence_checkpoint::Column::CreatedAt.max(), "last")
        .group_by(evidence_checkpoint::Column::TenantId)
        .into_tuple()
        .all(conn)
        .await?;
    let _ = writeln!(out, "# TYPE rollcall_evidence_leaves gauge");
    for (tenant, size) in &logs {
        let _ = writeln!(
            out,
            "rollcall_evidence_leaves{{tenant=\"{tenant}\"}} {size}"
        );
    }
    // A log with leaves and no checkpoint yet: +Inf, overdue.
    let _ = writeln!(out, "# TYPE rollcall_evidence_checkpoint_age_seconds gauge");
    for (tenant, size) in &logs {
        if *size == 0 {
            continue;
        }
        let last = signed
            .iter()
            .find(|(t, _)| t == tenant)
            .and_then(|(_, at)| *at);
        match last {
            Some(at) => {
                let _ = writeln!(
                    out,
                    "rollcall_evidence_checkpoint_age_seconds{{tenant=\"{tenant}\"}} {}",
                    age(now, Some(at))
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "rollcall_evidence_checkpoint_age_seconds{{tenant=\"{tenant}\"}} +Inf"
                );
            }
        }
    }
    Ok(())
}
