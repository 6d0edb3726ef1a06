//! `rollcall privacy …`: forgetting a person once their retention period
//! has passed.

use std::io::Write as _;

use super::{DirectoryEntry, ForgetReport, forget};
use crate::config::Config;
use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    command: PrivacyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PrivacyCommand {
    /// Delete a person's stored content and leaf salts (crypto-shredding)
    /// once `evidence.retention_days` have passed since their last case
    /// closed (or, if they never had a case, since their last record).
    /// Every other proof stays valid; `evidence verify` reports their
    /// leaves as erased.
    Forget {
        #[arg(long)]
        tenant: String,
        /// The person's platform user id.
        #[arg(long)]
        employee: String,
        /// Only list what would be erased.
        #[arg(long)]
        dry_run: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, args: PrivacyArgs) -> anyhow::Result<()> {
    match args.command {
        PrivacyCommand::Forget {
            tenant,
            employee,
            dry_run,
            json,
        } => {
            let db = Database::open(&config.database.url).await?;
            let report = forget(
                &db.orm,
                &tenant,
                &employee,
                config.evidence.retention_days,
                chrono::Utc::now(),
                dry_run,
            )
            .await?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                print_report(&mut out, &report)?;
            }
            Ok(())
        }
    }
}

fn print_report(out: &mut impl std::io::Write, r: &ForgetReport) -> std::io::Result<()> {
    let (verb, would) = if r.dry_run {
        ("would be erased", "would be ")
    } else {
        ("erased", "")
    };
    if r.dry_run {
        for (index, kind) in &r.leaves {
            writeln!(out, "leaf {index} ({kind}): content and salt {verb}")?;
        }
        for sha in &r.raw {
            writeln!(out, "raw {sha}: {verb} (bytes and row)")?;
        }
    }
    for sha in &r.raw_kept {
        writeln!(
            out,
            "raw {sha}: kept, another person's leaf references it too"
        )?;
    }
    let indexes: Vec<u64> = r.leaves.iter().map(|(i, _)| *i).collect();
    writeln!(
        out,
        "{} leaves {verb} ({}), {} raw payloads {verb}",
        r.leaves.len(),
        crate::evidence::verify::ranges(&indexes),
        r.raw.len()
    )?;
    writeln!(
        out,
        "content {would}cleared: {} callbacks, {} check-ins, {} photos, {} case events, {} messages, {} leave records, {} case resolutions, {} exhibits, {} 自离 drafts and union notes, {} stored packages",
        r.inbound_events,
        r.check_ins,
        r.photos,
        r.case_events,
        r.messages,
        r.leave_records,
        r.cases,
        r.exhibits,
        r.departures,
        r.exports
    )?;
    let entry = match r.directory {
        DirectoryEntry::None => "no directory entry".to_owned(),
        DirectoryEntry::ContactsCleared => {
            format!("directory entry: still active, contact columns {would}cleared")
        }
        DirectoryEntry::Deleted => format!("directory entry: left, {would}deleted"),
    };
    writeln!(out, "{entry}")?;
    if r.wal_truncated == Some(false) {
        writeln!(
            out,
            "the SQLite WAL could not be emptied now (another connection was using it): run `PRAGMA wal_checkpoint(TRUNCATE)` when rollcall is idle"
        )?;
    }
    match r.recorded_as {
        Some(index) => writeln!(
            out,
            "`{}` of tenant `{}` is forgotten; leaf {index} records it",
            r.user, r.tenant
        ),
        None => writeln!(out, "dry run: nothing was changed"),
    }
}
