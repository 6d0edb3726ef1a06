//! `rollcall evidence …`: the signing key, checkpoints, verification (and,
//! built on them, the case package).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use futures::future::BoxFuture;

use super::checkpoint::{self, load_or_create_key};
use super::export;
use super::verify::{VerifyReport, verify_log};
use super::witness::Witness;
use crate::cases::store::{case_no, parse_case_no};
use crate::config::{Config, ProcessEnv};
use crate::db::Database;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    #[command(subcommand)]
    command: EvidenceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvidenceCommand {
    /// Print the public key that verifies checkpoints and packages, and its
    /// fingerprint, in the lines of a package's `pubkey.txt`: the employer
    /// publishes the fingerprint, and whoever checks a package passes it to
    /// `verify.py --fingerprint` (the key is created, mode 0600, if there is
    /// none yet).
    Pubkey,
    /// Sign a checkpoint of a tenant's log now (if it grew since the last).
    Checkpoint {
        #[arg(long)]
        tenant: String,
    },
    /// Export the evidence package of an employee, or of one of their
    /// cases: leaves with inclusion proofs against a checkpoint signed now,
    /// raw payloads, notices, a report, a signed manifest and a verifier.
    Export {
        #[arg(long)]
        tenant: String,
        /// The employee's platform user id.
        #[arg(long)]
        employee: String,
        /// Only this case (RC-000002 or 2) and the employee's other records
        /// in its period.
        #[arg(long, value_parser = case_arg)]
        case: Option<i64>,
        /// A new folder, or a zip file when it ends in `.zip`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute a tenant's log from what is stored: every leaf from its
    /// content, every raw payload, the tree at every checkpoint, each
    /// checkpoint's signature (by the key, or by one it took over from
    /// through hand-overs signed by both keys, each checked) and the
    /// consistency between consecutive checkpoints. One line per record that does not match, then a
    /// summary; the exit status is 1 if anything does not match.
    Verify {
        #[arg(long)]
        tenant: String,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
        /// The published verifier key (`name+id+key`) to check signatures
        /// with; default: the key of `ROLLCALL_EVIDENCE_KEY`, else of
        /// `evidence.key_file`.
        #[arg(long)]
        verifier_key: Option<String>,
    },
}

fn case_arg(text: &str) -> Result<i64, String> {
    parse_case_no(text).ok_or_else(|| format!("`{text}` is not a case number (RC-000002 or 2)"))
}

/// Builds the handlers' runtime from the configuration, for the commands
/// that need one (`export`): the composition root's `app::runtime`, passed
/// in by `main`.
pub type OpenRuntime = for<'a> fn(&'a Config) -> BoxFuture<'a, anyhow::Result<Runtime>>;

pub async fn run(
    config: &Config,
    args: EvidenceArgs,
    open_runtime: OpenRuntime,
) -> anyhow::Result<()> {
    match args.command {
        EvidenceCommand::Pubkey => {
            // Checked against the database like at start: a lost key file is
            // never replaced by a new key whose fingerprint gets published.
            let db = Database::open(&config.database.url).await?;
            let signer = crate::keys::evidence_key(
                &db.orm,
                &ProcessEnv,
                &config.evidence.key_file,
                &config.evidence.name,
                chrono::Utc::now(),
            )
            .await;
            db.close().await;
            print!("{}", export::pubkey_text(&signer?));
            Ok(())
        }
        EvidenceCommand::Checkpoint { tenant } => {
            anyhow::ensure!(
                config.tenant(&tenant).is_some(),
                "no tenant `{tenant}` in the configuration"
            );
            let db = Database::open(&config.database.url).await?;
            let signer = crate::keys::evidence_key(
                &db.orm,
                &ProcessEnv,
                &config.evidence.key_file,
                &config.evidence.name,
                chrono::Utc::now(),
            )
            .await?;
            let witness = Witness::new(&config.evidence.witness_dir);
            let made =
                checkpoint::checkpoint(&db.orm, &signer, &witness, &tenant, chrono::Utc::now())
                    .await?;
            match made {
                Some(c) => print!("{}", c.note),
                None => println!("the log of `{tenant}` is empty: nothing to sign"),
            }
            Ok(())
        }
        EvidenceCommand::Export {
            tenant,
            employee,
            case,
            out,
        } => {
            anyhow::ensure!(
                config.tenant(&tenant).is_some(),
                "no tenant `{tenant}` in the configuration"
            );
            let zip = out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
            anyhow::ensure!(
                !(zip && out.exists()),
                "{} exists already: give a new path",
                out.display()
            );
            let rt = open_runtime(config).await?;
            let package = export::package(&rt, &tenant, &employee, case).await?;
            if zip {
                let mut file = export::private_file(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                file.write_all(&package.to_zip())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing {}", out.display()))?;
            } else {
                package.write_dir(&out)?;
            }
            let s = &package.summary;
            println!(
                "exported {} leaves about {employee}{} to {}",
                s.leaves,
                case.map(|c| format!(" (case {})", case_no(c)))
                    .unwrap_or_default(),
                out.display()
            );
            println!(
                "proved against the checkpoint of {} leaves, root {}",
                s.checkpoint_size, s.checkpoint_root
            );
            match s.earliest_checkpoint {
                Some(size) => println!("consistent with the earlier checkpoint of {size} leaves"),
                None => println!("no checkpoint covered the case before this export"),
            }
            println!("key fingerprint (SHA-256): {}", s.fingerprint);
            Ok(())
        }
        EvidenceCommand::Verify {
            tenant,
            json,
            verifier_key,
        } => {
            let key = match verifier_key {
                Some(k) => k,
                None => {
                    if let Some(signer) = crate::keys::evidence_key_from_env(&ProcessEnv)? {
                        signer.verifier_key()
                    } else {
                        let path = &config.evidence.key_file;
                        // Verifying never creates a key: a new one would verify nothing.
                        anyhow::ensure!(
                            path.exists(),
                            "no evidence key file at {}: give --verifier-key",
                            path.display()
                        );
                        load_or_create_key(path, &config.evidence.name)?.verifier_key()
                    }
                }
            };
            let db = Database::connect(&config.database.url).await?;
            let witnessed = Witness::new(&config.evidence.witness_dir).read(&tenant)?;
            let report = verify_log(&db.orm, &tenant, &key, witnessed.as_ref()).await?;
            let every = chrono::Duration::seconds(
                i64::try_from(config.evidence.checkpoint_every_secs).unwrap_or(i64::MAX / 2),
            );
            let stale = stale_tail(&report, every, chrono::Utc::now());
            match print_report(&report, stale, json) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
            anyhow::ensure!(
                report.ok(),
                "the evidence log of `{tenant}` does not verify: {} problems",
                report.problems.len()
            );
            Ok(())
        }
    }
}

/// Whether the leaves after the last checkpoint have waited for a
/// signature much longer than `every` (twice, and a minute): the service
/// that signs them is not running, or cannot sign.
pub fn stale_tail(
    report: &VerifyReport,
    every: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let since = report
        .last_checkpoint
        .map_or(chrono::DateTime::UNIX_EPOCH, |(_, at)| at);
    report.unsigned_tail > 0 && now - since > every * 2 + chrono::Duration::minutes(1)
}

fn print_report(report: &VerifyReport, stale: bool, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(report).map_err(std::io::Error::other)?;
        value["ok"] = report.ok().into();
        value["stale_tail"] = stale.into();
        return writeln!(out, "{value}");
    }
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    match report.witnessed {
        Some(size) => writeln!(
            out,
            "witness file: the checkpoint of {size} leaves signed before is in the database"
        )?,
        None if report.checkpoints > 0 => writeln!(
            out,
            "witness file: none for this tenant here (a first start after an upgrade, another host, or it was removed): checkpoints checked against the database only"
        )?,
        None => {}
    }
    if report.unsigned_tail > 0 {
        let since = match report.last_checkpoint {
            Some((size, at)) => format!(
                "the checkpoint of {size} leaves, signed at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => "the start (no checkpoint yet)".to_owned(),
        };
        writeln!(
            out,
            "unsigned tail: {} leaves appended since {since}{}",
            report.unsigned_tail,
            if stale {
                "; STALE: the service has not signed them in twice evidence.checkpoint_every_secs"
            } else {
                ""
            }
        )?;
    }
    if !report.erased.is_empty() {
        writeln!(
            out,
            "erased (content and salt deleted by privacy forget): leaves {}",
            report.erased_ranges()
        )?;
    }
    writeln!(out, "{}", report.summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_is_stale_after_twice_the_interval_and_a_minute() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let every = chrono::Duration::minutes(10);
        let report = |tail: u64, last: Option<u64>| VerifyReport {
            tenant: "acme".into(),
            origin: "rollcall/acme".into(),
            size: 10 + tail,
            leaves: 10 + tail,
            erased: vec![],
            raw: 0,
            raw_erased: 0,
            checkpoints: u64::from(last.is_some()),
            last_checkpoint: last.map(|size| (size, at)),
            unsigned_tail: tail,
            witnessed: None,
            problems: vec![],
        };
        let minutes = |m| at + chrono::Duration::minutes(m);
        assert!(!stale_tail(&report(3, Some(10)), every, minutes(21)));
        assert!(stale_tail(&report(3, Some(10)), every, minutes(22)));
        // Nothing unsigned is never stale.
        assert!(!stale_tail(&report(0, Some(10)), every, minutes(600)));
        // Nothing ever signed: stale since the epoch.
        assert!(stale_tail(&report(3, None), every, minutes(22)));
    }
}
