//! The `rollcall` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rollcall::config::{Config, ProcessEnv};
use rollcall::db::Database;

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Attendance evidence and return-to-work notices through enterprise chat"
)]
struct Cli {
    /// Configuration file (default: rollcall.toml when present).
    #[arg(long, global = true, env = "ROLLCALL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: callbacks, workers, migrations first.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// List a tenant's inbound events.
    Events {
        #[arg(long)]
        tenant: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Drive a running server with signed callbacks and report throughput and latency.
    Loadgen(rollcall::loadgen::LoadgenArgs),
    /// Import employees from a CSV file or sync them from WeCom.
    Employees(rollcall::employees::cli::EmployeesArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,apalis=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), &ProcessEnv)?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Database::connect(&config.database.url).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Events { tenant, json } => events(config, &tenant, json).await,
        Command::Loadgen(args) => rollcall::loadgen::run(&config, args).await,
        Command::Employees(args) => Ok(rollcall::employees::cli::run(&config, args).await?),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    match &config.source {
        Some(path) => tracing::info!(config = %path.display(), "configuration loaded"),
        None => tracing::warn!(
            "no configuration file: running on the embedded SQLite database with no tenants; \
             copy rollcall.example.toml to rollcall.toml and fill in a WeCom app to receive callbacks"
        ),
    }
    for t in &config.tenants {
        tracing::info!(tenant = %t.id, name = %t.name, timezone = %t.timezone, "callback URL path: /callback/wecom/{}", t.id);
    }
    let app = rollcall::app::start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn events(config: Config, tenant: &str, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.tenant(tenant).is_some(),
        "no tenant `{tenant}` in the configuration"
    );
    let db = Database::open(&config.database.url).await?;
    let rows = rollcall::inbox::list(&db, tenant)
        .await
        .context("reading events")?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for r in rows {
        if json {
            let line = serde_json::json!({
                "platform": r.platform,
                "msg_key": r.msg_key,
                "from_user": r.from_user,
                "kind": r.kind,
                "content": r.content,
                "received_at": r.received_at.to_rfc3339(),
                "processed": r.processed_at.is_some(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{}  {:<6} {:<12} {:<16} {}{}",
                r.received_at.format("%Y-%m-%d %H:%M:%S"),
                r.platform,
                r.kind,
                r.from_user,
                r.content.as_deref().unwrap_or(""),
                if r.processed_at.is_some() {
                    ""
                } else {
                    "  (not yet processed)"
                },
            )?;
        }
    }
    Ok(())
}
