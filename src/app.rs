//! The composition root: config → database → platforms → router → workers.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ProcessEnv};
use crate::db::{Database, redact_url};
use crate::inbox::Inbox;
use crate::ingress::{self, Ingress, Metrics};
use crate::outbox::render::Templates;
use crate::runtime::Runtime;
use crate::workers;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("recovery sweep failed: {0}")]
    Recover(sqlx::Error),
    #[error("tenant setup: {0}")]
    Tenant(String),
    #[error(transparent)]
    Templates(#[from] crate::outbox::render::TemplateError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyCheckError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started rollcall: HTTP server, inbox committers and workers.
pub struct RunningApp {
    /// The address the server listens on (useful with port 0).
    pub addr: SocketAddr,
    pub db: Database,
    pub metrics: Arc<Metrics>,
    /// What the handlers share (the clock, templates, tenants' clients).
    pub runtime: Runtime,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    workers: JoinHandle<()>,
    /// Connections to platforms that push events (DingTalk's Stream mode).
    listeners: JoinSet<()>,
    committers: JoinSet<()>,
    /// The handlers of inbound events (`conversation::queue`) and the
    /// outbox's sender (`outbox::queue`).
    handlers: JoinSet<()>,
}

/// Starts everything described by `config`, on the system clock.
pub async fn start(config: &Config) -> Result<RunningApp, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Opens the database and builds what handlers share, without serving
/// (the CLI's `scan`, and `start`).
pub async fn runtime(config: &Config, clock: Arc<dyn Clock>) -> Result<Runtime, StartError> {
    let db = Database::open(&config.database.url).await?;
    let templates_dir = Some(config.server.templates_dir.as_path()).filter(|d| d.is_dir());
    let templates = Templates::load(templates_dir)?;
    let (key, signer) = crate::keys::configured(&db.orm, config, &ProcessEnv, clock.now()).await?;
    for t in &config.tenants {
        let year = chrono::Datelike::year(&clock.now().with_timezone(&t.timezone));
        if !t.attendance.calendar.covers(year) {
            tracing::warn!(tenant = %t.id, year, "the holiday calendar has no data for this year: only weekly rest days count until a holiday file is configured (tenants.attendance.holidays)");
        }
    }
    let rt = Runtime::new(config, db, clock, templates, key, signer).map_err(StartError::Tenant)?;
    for t in &config.tenants {
        crate::evidence::log::ensure_log(
            &rt.db.orm,
            &t.id,
            &rt.origin(&t.id),
            t.timezone.name(),
            rt.clock.now(),
        )
        .await
        .map_err(|e| StartError::Db(crate::db::DbError::from(e)))?;
    }
    Ok(rt)
}

/// Starts everything described by `config`, on `clock`.
pub async fn start_with_clock(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningApp, StartError> {
    let rt = runtime(config, clock).await?;
    let db = rt.db.clone();
    tracing::info!(database = %redact_url(&config.database.url), tenants = config.tenants.len(), "database ready");

    let (inbox, committers) = Inbox::start(db.clone());
    let recovered = workers::recover(&db).await.map_err(StartError::Recover)?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "set back the jobs a stopped process held, and deleted the old per-event jobs"
        );
    }
    let arrivals = inbox.arrivals();

    let metrics = Arc::new(Metrics::default());
    let state = Ingress::new(config, &rt, inbox, metrics.clone());
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.server.listen,
        source,
    })?;

    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let listener_inbox = state.inbox.clone();
    let router = ingress::router(state).merge(ingress::runtime_router(rt.clone()));
    let server_stop = wait(stopped.clone());
    let limits = ingress::server::Limits {
        header_timeout: std::time::Duration::from_secs(config.server.header_timeout_secs),
        write_timeout: std::time::Duration::from_secs(config.server.write_timeout_secs),
        max_connections: config.server.max_connections,
    };
    let server = tokio::spawn(async move {
        ingress::server::serve(listener, router, limits, server_stop).await;
    });
    let mut listeners = JoinSet::new();
    for t in rt.tenants() {
        let Some(listener) = t.listener.clone() else {
            continue;
        };
        let sink = Arc::new(crate::inbox::TenantSink {
            inbox: listener_inbox.clone(),
            tenant_id: t.config.id.clone(),
            platform: listener.platform(),
        });
        let stop = Box::pin(wait(stopped.clone()));
        let tenant = t.config.id.clone();
        listeners.spawn(async move {
            match listener.run(sink, stop).await {
                Ok(()) => tracing::info!(%tenant, platform = listener.platform(), "event connection closed"),
                Err(e) => tracing::error!(%tenant, platform = listener.platform(), error = %e, "event connection cannot start (its configuration): no events arrive for this tenant until rollcall restarts"),
            }
        });
    }
    drop(listener_inbox);
    let mut handlers = JoinSet::new();
    for _ in 0..crate::conversation::queue::handlers(db.engine) {
        handlers.spawn(crate::conversation::queue::run(
            rt.clone(),
            arrivals.clone(),
            stopped.clone(),
        ));
    }
    handlers.spawn(crate::outbox::queue::run(
        rt.clone(),
        &crate::cases::notify::TellHr,
        rt.outbox_wake.clone(),
        stopped.clone(),
    ));
    let worker_rt = rt.clone();
    let worker_stop = wait(stopped);
    let workers = tokio::spawn(async move {
        workers::run(worker_rt, worker_stop).await;
    });
    tracing::info!(%addr, "listening");
    Ok(RunningApp {
        addr,
        db,
        metrics,
        runtime: rt,
        stop,
        server,
        workers,
        listeners,
        committers,
        handlers,
    })
}

impl RunningApp {
    /// Stops accepting callbacks, commits what was accepted, stops workers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        // Listeners store what their connections already took (and ack it).
        self.listeners.join_all().await;
        let _ = self.workers.await;
        // Each handler finishes its batch; what is left waits for the next start.
        self.handlers.join_all().await;
        // The server and the listeners held the last inbox handles: the
        // committers now drain what was queued and end.
        self.committers.join_all().await;
        self.db.close().await;
    }
}
