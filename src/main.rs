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
    /// Work on this SQLite file and the key files beside it (`demo.db`:
    /// `demo.key`, `demo-evidence.key`), as `rollcall demo --db` leaves them;
    /// it replaces the configuration's database and key files.
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
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
    /// Judge an ended day now: open, advance and resolve absence cases and
    /// enqueue the notices due (the running `serve` delivers them).
    Scan {
        #[arg(long)]
        tenant: String,
        /// The day to judge (default: the last ended workday).
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<chrono::NaiveDate>,
    },
    /// Import the punches of the platform's own attendance app (DingTalk's
    /// attendance records, WeCom's 打卡) as check-ins; a punch already
    /// stored is not stored again.
    Punches {
        #[arg(long)]
        tenant: String,
        /// The first day (default: yesterday, in the tenant's time zone).
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: Option<chrono::NaiveDate>,
        /// The last day (default: today, up to now).
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: Option<chrono::NaiveDate>,
    },
    /// The whole story on a sandbox tenant with a simulated clock, in seconds.
    Demo(rollcall::demo::DemoArgs),
    /// Import employees from a CSV file or sync them from WeCom.
    Employees(rollcall::employees::cli::EmployeesArgs),
    /// The evidence log: its public key, checkpoints, verification, packages.
    Evidence(rollcall::evidence::cli::EvidenceArgs),
    /// Personal data: forget a person once their retention period has passed.
    Privacy(rollcall::privacy::cli::PrivacyArgs),
    /// The keys this database is bound to: show their check values, rotate
    /// the data key.
    Keys(rollcall::keys::cli::KeysArgs),
    /// Write a consistent copy of the SQLite database to a new file while
    /// the service runs (`VACUUM INTO`, flushed and checked). It holds the
    /// check values of its keys, not the keys: back up the key files apart.
    Backup {
        /// The new file (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Bring a backup back as the configured SQLite database, which must not
    /// exist; the configured keys are checked against it.
    Restore {
        /// The backup file (it is copied, not moved).
        #[arg(long)]
        from: PathBuf,
    },
    /// Reports: the monthly attendance sheet (考勤表).
    #[command(subcommand)]
    Report(Report),
    /// Write the letter that sends a notice by post (EMS, registered mail),
    /// print-ready as PDF and HTML, addressed to the employee's postal
    /// address: the notice as it went out electronically. The same letter is
    /// kept as evidence when HR records the tracking number (`/邮政 邮寄`).
    Letter {
        #[arg(long)]
        tenant: String,
        /// The employee's user id.
        #[arg(long)]
        employee: String,
        #[arg(long, value_enum, default_value = "formal-notice")]
        kind: rollcall::cases::post::LetterKind,
        /// The folder to write `RC-…-<kind>.pdf` and `.html` into.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Report {
    /// One row per employee, one column per day (√ present, 迟 late, 早
    /// early, 未 no check-out, 缺 absent, 假 leave, 休 rest, 节 holiday),
    /// and totals, as an `.xlsx` file; logged as evidence with its SHA-256.
    Attendance {
        #[arg(long)]
        tenant: String,
        /// The month, as 2026-12.
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
        /// The new file (it must not exist; mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    rollcall::tls::install_crypto_provider();
    let cli = Cli::parse();
    // The demo's output is its timeline: only warnings go to stderr.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info,sqlx=warn,sea_orm=warn,apalis=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref(), &ProcessEnv)?;
    if let Some(db) = &cli.db {
        // The path goes into a URL, which `?`, `#` and `%` would change.
        let text = db.to_str().unwrap_or("?");
        anyhow::ensure!(
            !text.contains(['?', '#', '%']),
            "--db {}: give a path without `?`, `#` or `%` (and in UTF-8)",
            db.display()
        );
        // A command that works on data already there does not make a new database
        // out of a mistyped path.
        let makes_one = matches!(
            cli.command,
            Command::Serve
                | Command::Migrate
                | Command::Demo(_)
                | Command::Restore { .. }
                | Command::Employees(_)
        );
        anyhow::ensure!(
            makes_one || db.exists(),
            "there is no database file {}",
            db.display()
        );
        config = config.with_database_file(db);
    }
    // With no configuration file every command works on the sandbox tenant
    // `serve` runs (its simulated platform lives as long as the command).
    // A database the demo left on DingTalk or Feishu is that platform's.
    let mut sandbox = None;
    let mut _sandbox_tenant = None;
    match &cli.command {
        _ if config.source.is_some() => {}
        // The demo starts its own; a load generator needs the tenant of the
        // server it drives, from that server's configuration; the rest need
        // none (and a restore must find no database yet).
        Command::Demo(_)
        | Command::Loadgen(_)
        | Command::Migrate
        | Command::Backup { .. }
        | Command::Restore { .. } => {}
        Command::Serve => {
            let platform = rollcall::demo::SandboxPlatform::start().await?;
            config.tenants = Config::parse(&platform.tenant_toml(), &ProcessEnv)?.tenants;
            sandbox = Some(platform);
        }
        _ => {
            use rollcall::demo::SandboxTenant;
            let platform = SandboxTenant::platform_in(&config.database.url).await?;
            let tenant = SandboxTenant::start(platform).await?;
            config.tenants = Config::parse(&tenant.toml, &ProcessEnv)?.tenants;
            _sandbox_tenant = Some(tenant);
        }
    }
    match cli.command {
        Command::Serve => serve(config, sandbox).await,
        Command::Migrate => {
            let db = Database::connect(&config.database.url).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Events { tenant, json } => events(config, &tenant, json).await,
        Command::Loadgen(args) => rollcall::loadgen::run(&config, args).await,
        Command::Scan { tenant, as_of } => {
            let rt =
                rollcall::app::runtime(&config, std::sync::Arc::new(rollcall::clock::SystemClock))
                    .await?;
            let report = rollcall::attendance::punches::scan(&rt, &tenant, as_of).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Punches { tenant, from, to } => {
            let rt =
                rollcall::app::runtime(&config, std::sync::Arc::new(rollcall::clock::SystemClock))
                    .await?;
            let (from, to) = rollcall::attendance::punches::period(&rt, &tenant, from, to)?;
            let report = rollcall::attendance::punches::import(&rt, &tenant, from, to).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Demo(args) => rollcall::demo::run(args, cli.db).await,
        Command::Employees(args) => Ok(rollcall::employees::cli::run(&config, args).await?),
        Command::Evidence(args) => rollcall::evidence::cli::run(&config, args, open_runtime).await,
        Command::Privacy(args) => rollcall::privacy::cli::run(&config, args).await,
        Command::Keys(args) => rollcall::keys::cli::run(&config, args).await,
        Command::Backup { out } => {
            let b = rollcall::backup::backup(&config, &out).await?;
            println!(
                "backup: {} ({} bytes, SHA-256 {})\nbound to {}\nkeep the key files {} and {} (and the witness folder {}) backed up apart from it",
                b.path.display(),
                b.bytes,
                b.sha256,
                b.keys,
                config.server.data_key_file.display(),
                config.evidence.key_file.display(),
                config.evidence.witness_dir.display(),
            );
            Ok(())
        }
        Command::Restore { from } => {
            let r = rollcall::backup::restore(&config, &from).await?;
            println!(
                "restored: {} from {}\nbound to {}",
                r.path.display(),
                from.display(),
                r.keys,
            );
            for (tenant, witnessed, restored, to) in &r.set_aside {
                println!(
                    "tenant {tenant}: the witness holds a checkpoint of {witnessed} leaves that the backup does not have (its log has {restored}): it proves what was lost since the backup; kept as {}, and the next checkpoint starts a new witness",
                    to.display()
                );
            }
            Ok(())
        }
        Command::Letter {
            tenant,
            employee,
            kind,
            out,
        } => letter(&config, &tenant, &employee, kind, &out).await,
        Command::Report(Report::Attendance { tenant, month, out }) => {
            attendance_sheet(&config, &tenant, &month, &out).await
        }
    }
}

async fn attendance_sheet(
    config: &Config,
    tenant: &str,
    month: &str,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use rollcall::attendance::sheet;
    use std::io::Write;
    let month = sheet::Month::parse(month)
        .ok_or_else(|| anyhow::anyhow!("`{month}` is not a month like 2026-12"))?;
    let rt = open_runtime(config).await?;
    let t = rt
        .tenant(tenant)
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant} in the configuration"))?;
    let now = rt.clock.now();
    let made = sheet::build(&rt.db.orm, t, month, now).await?;
    let bytes = sheet::to_xlsx(&made)?;
    let sha = rollcall::outbox::render::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    rollcall::evidence::export::private_file(out)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .with_context(|| format!("cannot write {} (it must not exist yet)", out.display()))?;
    let txn = rt.db.write().await?;
    sheet::record(&*txn, &made, &sha, None, "command line", now).await?;
    txn.commit().await?;
    println!(
        "{}: {} employees, {month}  SHA-256 {sha}",
        out.display(),
        made.rows.len()
    );
    Ok(())
}

async fn letter(
    config: &Config,
    tenant: &str,
    employee: &str,
    kind: rollcall::cases::post::LetterKind,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use rollcall::cases::post;
    use std::io::Write;
    let rt = open_runtime(config).await?;
    let t = rt
        .tenant(tenant)
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant} in the configuration"))?;
    let case = post::case_for(&rt.db.orm, tenant, employee, kind)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{employee} has no {} to send by post (a formal notice needs an open case that sent one)",
                kind.step()
            )
        })?;
    let letter = post::letter(&rt.db.orm, &rt.templates, &rt.key, t, &case, kind).await?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let stem = format!(
        "{}-{}",
        rollcall::cases::store::case_no(case.id),
        kind.step()
    );
    for (ext, bytes, sha) in [
        ("pdf", letter.pdf.as_slice(), &letter.pdf_sha256),
        ("html", letter.html.as_bytes(), &letter.html_sha256),
    ] {
        let path = out.join(format!("{stem}.{ext}"));
        rollcall::evidence::export::private_file(&path)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("cannot write {} (it must not exist yet)", path.display()))?;
        println!("{}  SHA-256 {sha}", path.display());
    }
    Ok(())
}

/// The handlers' runtime, for the CLI commands that need one.
fn open_runtime(
    config: &Config,
) -> futures::future::BoxFuture<'_, anyhow::Result<rollcall::runtime::Runtime>> {
    Box::pin(async move {
        Ok(
            rollcall::app::runtime(config, std::sync::Arc::new(rollcall::clock::SystemClock))
                .await?,
        )
    })
}

/// `sandbox`: the simulated platform of the sandbox tenant, when there is no
/// configuration file (the service can be tried without credentials).
async fn serve(
    config: Config,
    sandbox: Option<rollcall::demo::SandboxPlatform>,
) -> anyhow::Result<()> {
    match &sandbox {
        None => tracing::info!(
            config = %config.source.as_deref().unwrap_or(std::path::Path::new("")).display(),
            "configuration loaded"
        ),
        Some(platform) => {
            eprintln!(
                "\n  rollcall is running WITHOUT a configuration file: embedded SQLite ({}),\n  \
                 one SANDBOX tenant `{}`: its WeCom API ({}), SMS gateway and mail server are\n  \
                 simulated in this process; nothing reaches a real platform, phone or mailbox.\n  \
                 Callback URL /callback/wecom/{}, token {}, EncodingAESKey {}.\n  \
                 For a real tenant copy rollcall.example.toml to rollcall.toml.\n",
                config.database.url,
                rollcall::demo::TENANT,
                platform.api.api_base(),
                rollcall::demo::TENANT,
                platform.token,
                platform.aes_key,
            );
        }
    }
    for t in &config.tenants {
        match t.events_arrive() {
            Some(rollcall::config::EventsArrive::Callback(platform)) => {
                tracing::info!(tenant = %t.id, name = %t.name, timezone = %t.timezone, "callback URL path: /callback/{platform}/{}", t.id);
            }
            Some(rollcall::config::EventsArrive::Connection(platform)) => {
                tracing::info!(tenant = %t.id, name = %t.name, timezone = %t.timezone, platform, "events arrive over a connection rollcall opens (no callback URL)");
            }
            None => {
                tracing::warn!(tenant = %t.id, "no chat platform configured: no events arrive for this tenant");
            }
        }
    }
    let app = rollcall::app::start(&config).await?;
    if sandbox.is_some() {
        rollcall::demo::seed_roster(&app.runtime).await?;
    }
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

/// At most two malloc arenas, before any thread starts. glibc gives threads
/// that allocate at the same moment arenas of their own, up to eight per
/// core, and each keeps memory its threads freed: under a steady 2,000
/// callbacks/s the server's RSS was 129-166 MiB with glibc's default and
/// 77-89 MiB with two arenas, handling as fast (`BENCHMARKS.md`, the soak).
/// `MALLOC_ARENA_MAX` set by the operator wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator setting; nothing else
        // runs yet (no thread has started).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
