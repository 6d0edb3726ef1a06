//! `rollcall evidence …`: the signing key, checkpoints, verification (and,
//! built on them, the case package).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use std::io::Write as _;

use super::checkpoint::{self, fingerprint, load_or_create_key};
use super::verify::{VerifyReport, verify_log};
use crate::config::Config;
use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    #[command(subcommand)]
    command: EvidenceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvidenceCommand {
    /// Print the public key that verifies checkpoints and packages, and its
    /// fingerprint, for the employer to publish (the key is created, mode
    /// 0600, if there is none yet).
    Pubkey,
    /// Sign a checkpoint of a tenant's log now (if it grew since the last).
    Checkpoint {
        #[arg(long)]
        tenant: String,
    },
    /// Recompute a tenant's log from what is stored: every leaf from its
    /// content, every raw payload, the tree at every checkpoint, each
    /// checkpoint's signature and the consistency between consecutive
    /// checkpoints. One line per record that does not match, then a
    /// summary; the exit status is 1 if anything does not match.
    Verify {
        #[arg(long)]
        tenant: String,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
        /// The published verifier key (`name+id+key`) to check signatures
        /// with; default: the key of `evidence.key_file`.
        #[arg(long)]
        verifier_key: Option<String>,
    },
}

pub async fn run(config: &Config, args: EvidenceArgs) -> anyhow::Result<()> {
    match args.command {
        EvidenceCommand::Pubkey => {
            let signer = load_or_create_key(&config.evidence.key_file, &config.evidence.name)?;
            println!("verifier key: {}", signer.verifier_key());
            println!(
                "Ed25519 public key (base64): {}",
                STANDARD.encode(signer.public_key())
            );
            println!("fingerprint (SHA-256): {}", fingerprint(&signer));
            Ok(())
        }
        EvidenceCommand::Checkpoint { tenant } => {
            anyhow::ensure!(
                config.tenant(&tenant).is_some(),
                "no tenant `{tenant}` in the configuration"
            );
            let signer = load_or_create_key(&config.evidence.key_file, &config.evidence.name)?;
            let db = Database::open(&config.database.url).await?;
            let made =
                checkpoint::checkpoint(&db.orm, &signer, &tenant, chrono::Utc::now()).await?;
            match made {
                Some(c) => print!("{}", c.note),
                None => println!("the log of `{tenant}` is empty: nothing to sign"),
            }
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
                    let path = &config.evidence.key_file;
                    // Verifying never creates a key: a new one would verify nothing.
                    anyhow::ensure!(
                        path.exists(),
                        "no evidence key file at {}: give --verifier-key",
                        path.display()
                    );
                    load_or_create_key(path, &config.evidence.name)?.verifier_key()
                }
            };
            let db = Database::connect(&config.database.url).await?;
            let report = verify_log(&db.orm, &tenant, &key).await?;
            match print_report(&report, json) {
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

fn print_report(report: &VerifyReport, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(report).map_err(std::io::Error::other)?;
        value["ok"] = report.ok().into();
        return writeln!(out, "{value}");
    }
    for p in &report.problems {
        writeln!(out, "{p}")?;
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
