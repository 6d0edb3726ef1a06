//! `rollcall keys …`: the keys this database is bound to.

use crate::config::{Config, ProcessEnv};
use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Check both keys against the database (recording them on the first
    /// use) and print their ids and check values.
    Show,
    /// Re-seal every sealed value (phone numbers, emergency contacts,
    /// postal addresses) under a new data key, in one transaction; the old
    /// key is kept beside it as `{data_key_file}.retired-{id}`. With
    /// `--evidence`, start a new evidence signing key instead, with a
    /// hand-over signed by both keys. Stop the service first: a running one
    /// holds the old key.
    Rotate {
        /// Rotate the data key (the default).
        #[arg(long, conflicts_with = "evidence")]
        data: bool,
        /// Rotate the evidence signing key: the old key signs a last
        /// checkpoint of every log, and both keys sign a hand-over.
        #[arg(long)]
        evidence: bool,
    },
}

pub async fn run(config: &Config, args: KeysArgs) -> anyhow::Result<()> {
    let db = Database::open(&config.database.url).await?;
    let now = chrono::Utc::now();
    let data_file = &config.server.data_key_file;
    match args.command {
        KeysCommand::Show => {
            let (data, signer) = super::configured(&db.orm, config, &ProcessEnv, now).await?;
            println!(
                "data key: id {}, check value {}",
                data.key_id(),
                data.check_value()
            );
            println!(
                "evidence key: id {:08x}, verifier key {}",
                signer.id(),
                signer.verifier_key()
            );
            println!(
                "evidence key fingerprint (SHA-256): {}",
                crate::evidence::checkpoint::fingerprint(&signer)
            );
        }
        KeysCommand::Rotate { evidence: true, .. } => {
            let witness = crate::evidence::witness::Witness::new(&config.evidence.witness_dir);
            let done = super::rotate_evidence_key(
                &db.orm,
                &ProcessEnv,
                &config.evidence.key_file,
                &config.evidence.name,
                &witness,
                now,
            )
            .await?;
            println!(
                "evidence key rotated: checkpoints are now signed by {} (was {}); the hand-over signed by both is stored and in {}; the old key is kept in {}. Publish the new key's fingerprint (`rollcall evidence pubkey`) beside the old one",
                done.new_key,
                done.old_key,
                done.handover_file.display(),
                done.retired.display()
            );
        }
        KeysCommand::Rotate { .. } => {
            let done = super::rotate_data_key(&db.orm, &ProcessEnv, data_file, now).await?;
            println!(
                "data key rotated: {} values re-sealed under key {} (was {}); the old key is kept in {}: keep it with the backups made before now",
                done.values,
                done.new_id,
                done.old_id,
                done.retired.display()
            );
        }
    }
    db.close().await;
    Ok(())
}
