//! What the workers and handlers share: the database, the clock, the
//! templates, the data key, and each tenant's configuration and channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, DeliveryConfig, EvidenceConfig, TenantConfig};
use crate::db::Database;
use crate::evidence::note::NoteSigner;
use crate::evidence::witness::Witness;
use crate::outbox::email::Mailer;
use crate::outbox::render::Templates;
use crate::outbox::sms::{SmsProvider, sms_provider};
use crate::platform::{CallbackSide, ChatApi, Listener};
use crate::sealed::DataKey;

/// One tenant's configuration and the clients for its channels.
pub struct Tenant {
    pub config: TenantConfig,
    /// The chat platform's API (see [`crate::platform::build`]).
    pub chat: Option<Arc<dyn ChatApi>>,
    /// How the platform's events arrive: its callbacks (answered by the
    /// ingress) and its connection (kept by a listener), built with `chat`
    /// once per tenant.
    pub callbacks: Option<Arc<dyn CallbackSide>>,
    pub listener: Option<Arc<dyn Listener>>,
    pub sms: Option<Arc<dyn SmsProvider>>,
    pub mail: Option<Mailer>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.config.id)
            .field("chat", &self.chat)
            .field("sms", &self.sms.as_ref().map(|s| s.name()))
            .field("mail", &self.mail)
            .finish()
    }
}

/// The shared dependencies of every handler.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub db: Database,
    pub clock: Arc<dyn Clock>,
    pub templates: Arc<Templates>,
    pub key: Arc<DataKey>,
    pub delivery: DeliveryConfig,
    /// The key that signs checkpoints and packages.
    pub signer: Arc<NoteSigner>,
    /// What this server signed before, kept outside the database.
    pub witness: Arc<Witness>,
    pub evidence: EvidenceConfig,
    /// The base of links people open from their phones (`server.public_url`).
    pub public_url: String,
    /// How many times a job worker was started again after it stopped
    /// (see `workers::supervise`).
    pub worker_restarts: Arc<std::sync::atomic::AtomicU64>,
    /// Wakes the outbox's sender (`outbox::queue`) when replies were committed.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
}

impl Runtime {
    pub fn new(
        config: &Config,
        db: Database,
        clock: Arc<dyn Clock>,
        templates: Templates,
        key: DataKey,
        signer: NoteSigner,
    ) -> Result<Runtime, String> {
        let timeout = Duration::from_secs(config.delivery.timeout_secs);
        let texts = crate::platform::PlatformTexts {
            card_toast: templates
                .render("card_pressed", serde_json::json!({}), &["toast"])
                .map(|r| r.block("toast").trim().to_owned())
                .map_err(|e| e.to_string())
                .map(Some)?,
        };
        let tenants = config
            .tenants
            .iter()
            .map(|t| {
                let platform = crate::platform::build_with(t, timeout, &texts)?;
                let tenant = Tenant {
                    config: t.clone(),
                    chat: platform.as_ref().map(|p| p.api.clone()),
                    callbacks: platform.as_ref().and_then(|p| p.callbacks.clone()),
                    listener: platform.and_then(|p| p.listener),
                    sms: t.sms.as_ref().map(|c| sms_provider(c, timeout)),
                    mail: t.email.clone().map(Mailer::new),
                };
                Ok((t.id.clone(), Arc::new(tenant)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Runtime {
            db,
            clock,
            templates: Arc::new(templates),
            key: Arc::new(key),
            delivery: config.delivery.clone(),
            signer: Arc::new(signer),
            witness: Arc::new(Witness::new(&config.evidence.witness_dir)),
            evidence: config.evidence.clone(),
            public_url: config.server.public_url.clone(),
            worker_restarts: Arc::default(),
            outbox_wake: Arc::default(),
            tenants: Arc::new(tenants),
        })
    }

    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    /// The checkpoint origin of `tenant`'s log.
    pub fn origin(&self, tenant: &str) -> String {
        format!("{}/{tenant}", self.evidence.name)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}
