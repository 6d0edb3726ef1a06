//! `rollcall employees …`: import a CSV file, sync from the chat platform's address book.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::{ImportError, ImportReport, SyncError, import_csv, sync_directory};
use crate::config::{Config, ProcessEnv};
use crate::db::{Database, DbError};

/// Files larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_FROM_BYTES: u64 = 1 << 20;
const API_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct EmployeesArgs {
    /// The key that seals personal data, used when ROLLCALL_DATA_KEY is not
    /// set; made (mode 0600) on first use. Default: `server.data_key_file`
    /// of the configuration (`rollcall.key`), the key `serve` uses.
    #[arg(long, global = true, env = "ROLLCALL_DATA_KEY_FILE")]
    data_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: EmployeesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum EmployeesCommand {
    /// Add or update employees from a CSV file; a bad row imports nothing.
    ///
    /// UTF-8 (with or without BOM), a header line first, columns in any order:
    /// user_id,name,department,manager_user_id,role,phone,email,
    /// emergency_contact_name,emergency_contact_phone,postal_address,
    /// hire_date,contract_end_date,rest_days,site. Only user_id and name are
    /// required; a column left out is kept as it is, an empty cell is cleared.
    /// Nobody is deleted.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The tenant id, as in the configuration.
        #[arg(long)]
        tenant: String,
    },
    /// Add or update employees from the tenant's chat platform's address book.
    Sync {
        /// The tenant id, as in the configuration.
        #[arg(long)]
        tenant: String,
    },
}

/// Why an `employees` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no tenant `{0}` in the configuration")]
    UnknownTenant(String),
    #[error("tenant `{0}` has no chat platform configured to sync from")]
    NoPlatform(String),
    #[error("{0}")]
    Platform(String),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::keys::KeyCheckError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{path}: {error}")]
    Import { path: PathBuf, error: ImportError },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Runs an `employees` command and prints its summary.
pub async fn run(config: &Config, args: EmployeesArgs) -> Result<(), CliError> {
    let tenant_id = match &args.command {
        EmployeesCommand::Import { tenant, .. } | EmployeesCommand::Sync { tenant } => tenant,
    };
    let tenant = config
        .tenant(tenant_id)
        .ok_or_else(|| CliError::UnknownTenant(tenant_id.clone()))?;
    let key_file = args
        .data_key_file
        .clone()
        .unwrap_or_else(|| config.server.data_key_file.clone());
    let db = Database::open(&config.database.url).await?;
    let key = match crate::keys::data_key(&db.orm, &ProcessEnv, &key_file, chrono::Utc::now()).await
    {
        Ok(key) => key,
        Err(e) => {
            db.close().await;
            return Err(e.into());
        }
    };
    match args.command {
        EmployeesCommand::Import { file, .. } => {
            let open = |source| CliError::Open {
                path: file.clone(),
                source,
            };
            let reader = std::fs::File::open(&file).map_err(open)?;
            let size = reader.metadata().map_err(open)?.len();
            let progress = std::io::stderr().is_terminal() && size > PROGRESS_FROM_BYTES;
            let report = import_csv(
                &db,
                &key,
                &tenant.id,
                std::io::BufReader::new(reader),
                progress,
            )
            .await
            .map_err(|error| CliError::Import {
                path: file.clone(),
                error,
            });
            db.close().await;
            println!("{}", summary("imported", &report?, "file"));
        }
        EmployeesCommand::Sync { .. } => {
            let api = crate::platform::build(tenant, API_TIMEOUT)
                .map_err(CliError::Platform)?
                .ok_or_else(|| CliError::NoPlatform(tenant.id.clone()))?
                .api;
            let report = sync_directory(&db, &key, &tenant.id, api.as_ref()).await;
            db.close().await;
            let from = format!("{} directory", api.platform());
            println!("{}", summary("synced", &report?, &from));
        }
    }
    Ok(())
}

fn summary(verb: &str, r: &ImportReport, from: &str) -> String {
    let mut text = format!("{verb}: {} added, {} updated", r.added, r.updated);
    if r.not_in_import > 0 {
        text.push_str(&format!(
            "\n{} employees in the table are not in the {from} and were left as they are \
             (nobody is deleted)",
            r.not_in_import
        ));
    }
    text
}
