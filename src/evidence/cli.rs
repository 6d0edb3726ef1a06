//! `rollcall evidence …`: the signing key, checkpoints (and, built on
//! them, verification and the case package).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::checkpoint::{self, fingerprint, load_or_create_key};
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
    }
}
