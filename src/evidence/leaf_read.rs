//! Reading a log's leaves for verification straight from the SQLite file:
//! a read-only connection of its own (rusqlite, on the same libsqlite3 that
//! sqlx uses), stepping one statement over the leaves in index order. Through
//! sqlx every value of the million rows of a large log is copied on sqlx's
//! worker thread and handed over a channel; that hand-over, not the hashing,
//! was most of the time `evidence verify` took.
//!
//! **One snapshot.** The verifier reads everything else (the head, raw
//! payloads, checkpoints) in its own transaction, so this connection must
//! see the same log. [`SqliteLeaves::open`] reads the head again in this
//! connection's transaction and is refused unless it is the same. That is
//! enough: every write to a leaf moves the head, since leaves are only
//! appended, and an erasure (`privacy forget`) appends its `forgotten` leaf
//! in the same transaction.

use std::path::Path;

use entity::{evidence_leaf, evidence_log};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sea_orm::EntityName as _;

/// One leaf row as verification reads it.
pub struct LeafRow {
    pub idx: i64,
    pub kind: String,
    pub case_id: Option<i64>,
    pub subject: Option<String>,
    pub source: Option<String>,
    pub leaf_hash: String,
    pub content: Option<String>,
    pub erased: bool,
}

/// A read transaction on the database file, seeing the same head as the
/// verifier's own transaction.
pub struct SqliteLeaves {
    conn: Connection,
    tenant: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeafReadError {
    #[error("reading the leaves from the SQLite file: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl SqliteLeaves {
    /// Opens `file` read-only and begins a read transaction in which the
    /// head of `tenant`'s log has `size` and `frontier`. `Ok(None)` when
    /// the head is not that: the log moved since the verifier's transaction
    /// began.
    pub fn open(
        file: &Path,
        tenant: &str,
        size: i64,
        frontier: &str,
    ) -> Result<Option<SqliteLeaves>, LeafReadError> {
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The transaction's snapshot begins with its first read: the head.
        conn.execute_batch("BEGIN DEFERRED")?;
        let head: Option<(i64, String)> = conn
            .query_row(
                &format!(
                    "SELECT size, frontier FROM {} WHERE tenant_id = ?1",
                    evidence_log::Entity.table_name()
                ),
                [tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if head
            .as_ref()
            .is_none_or(|(s, f)| *s != size || f != frontier)
        {
            return Ok(None);
        }
        Ok(Some(SqliteLeaves {
            conn,
            tenant: tenant.to_owned(),
        }))
    }

    /// Leaves `start..end` in index order, handed to `each` a page of
    /// `page` rows at a time. Stops early when `each` returns false.
    pub fn pages(
        &self,
        start: i64,
        end: i64,
        page: usize,
        mut each: impl FnMut(Vec<LeafRow>) -> bool,
    ) -> Result<(), LeafReadError> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT idx, kind, case_id, subject, source, leaf_hash, content, erased_at IS NOT NULL \
             FROM {} WHERE tenant_id = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
            evidence_leaf::Entity.table_name()
        ))?;
        let mut rows = statement.query(rusqlite::params![self.tenant, start, end])?;
        let mut batch = Vec::with_capacity(page);
        while let Some(r) = rows.next()? {
            batch.push(LeafRow {
                idx: r.get(0)?,
                kind: r.get(1)?,
                case_id: r.get(2)?,
                subject: r.get(3)?,
                source: r.get(4)?,
                leaf_hash: r.get(5)?,
                content: r.get(6)?,
                erased: r.get(7)?,
            });
            if batch.len() == page && !each(std::mem::replace(&mut batch, Vec::with_capacity(page)))
            {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            each(batch);
        }
        Ok(())
    }
}
