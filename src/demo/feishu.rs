//! The demo's story on a Feishu tenant: the sandbox's Feishu API takes
//! rollcall's messages and cards, and its [`FeishuPhone`] pushes what
//! employees do (messages, locations, photos, card presses, reads) to
//! rollcall's callback URL, encrypted and signed as Feishu does.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::{
    DEMO_PHOTO, PHONE_PATIENCE, SETTLE_WITHIN, Stage, StageFault, TENANT, card_label, seed_roster,
    tenant_toml,
};
use crate::clock::{Clock, SimulatedClock};
use crate::config::{Config, ProcessEnv};
use crate::platform::sandbox::{
    FeishuDelivery, FeishuFault, FeishuPhone, SandboxFeishuApi, SandboxMail, SandboxSms,
};
use crate::runtime::Runtime;

const APP_ID: &str = "cli_sandboxdemo0001";
const APP_SECRET: &str = "sandbox-feishu-secret";

/// The `[[tenants]]` table of the Feishu sandbox tenant on `api`.
pub(super) fn sandbox_tenant_toml(
    api: &SandboxFeishuApi,
    encrypt_key: &str,
    token: &str,
    sms: &SandboxSms,
    mail: &SandboxMail,
) -> String {
    let base = api.api_base();
    let chat = format!(
        r#"[tenants.feishu]
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
encrypt_key = "{encrypt_key}"
verification_token = "{token}"
api_base = "{base}""#
    );
    tenant_toml("示例建筑有限公司（飞书沙箱）", &chat, sms, mail)
}

/// The sandbox Feishu API of the demo's app.
pub(super) async fn start_api() -> anyhow::Result<SandboxFeishuApi> {
    SandboxFeishuApi::start(APP_ID, APP_SECRET)
        .await
        .context("starting the sandbox Feishu API")
}

/// rollcall on a Feishu sandbox tenant with a simulated clock.
pub struct SandboxedFeishu {
    pub app: crate::app::RunningApp,
    pub rt: Runtime,
    pub api: SandboxFeishuApi,
    pub phone: FeishuPhone,
    pub sms: SandboxSms,
    pub mail: SandboxMail,
    pub clock: Arc<SimulatedClock>,
}

impl SandboxedFeishu {
    /// Starts rollcall on `database_url` with the demo roster, the clock at
    /// `start`, its events pushed encrypted. A notice's read status is asked
    /// for 1, 5, 15, … seconds after sending (a minute in production).
    /// `extra` is appended to the configuration (TOML).
    pub async fn start(
        database_url: &str,
        key_file: &std::path::Path,
        start: DateTime<Utc>,
        extra: &str,
    ) -> anyhow::Result<SandboxedFeishu> {
        let api = start_api().await?;
        let sms = SandboxSms::start(super::SMS_SECRET)
            .await
            .context("starting the sandbox SMS gateway")?;
        let mail = SandboxMail::start()
            .await
            .context("starting the sandbox mail server")?;
        let (token, _) = super::fresh_secrets();
        let encrypt_key = ulid::Ulid::new().to_string();
        let (delivery, extra) = super::with_read_checks_each_second(extra);
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{database_url}\"\n{delivery}{}{extra}",
            key_file.display(),
            crate::config::evidence_key_beside(key_file).display(),
            sandbox_tenant_toml(&api, &encrypt_key, &token, &sms, &mail)
        );
        let config = Config::parse(&toml, &ProcessEnv).context("sandbox configuration")?;
        let clock = Arc::new(SimulatedClock::new(start));
        let app = crate::app::start_with_clock(&config, clock.clone()).await?;
        let rt = app.runtime.clone();
        seed_roster(&rt).await?;
        let url = format!("http://{}/callback/feishu/{TENANT}", app.addr);
        let phone =
            FeishuPhone::new(&url, Some(&encrypt_key), &token, APP_ID).with_timeout(PHONE_PATIENCE);
        Ok(SandboxedFeishu {
            app,
            rt,
            api,
            phone,
            sms,
            mail,
            clock,
        })
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    fn accepted(d: FeishuDelivery, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(d.delivered, "{what} was not accepted: {d:?}");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Stage for SandboxedFeishu {
    fn rt(&self) -> &Runtime {
        &self.rt
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.app.addr
    }

    fn at(&self, date: &str, time: &str) {
        self.clock.set(super::shanghai(date, time));
    }

    async fn text(&self, user: &str, text: &str) -> anyhow::Result<()> {
        let d = self.phone.text(user, text, self.now()).await;
        Self::accepted(d, &format!("the message of {user}"))
    }

    async fn place(&self, user: &str, lat: f64, lon: f64, label: &str) -> anyhow::Result<()> {
        // Feishu sends coordinates as strings.
        let content = json!({
            "name": label,
            "latitude": lat.to_string(),
            "longitude": lon.to_string(),
        });
        let d = self
            .phone
            .message(user, "location", content, self.now(), None)
            .await;
        Self::accepted(d, &format!("the location of {user}"))
    }

    async fn photo(&self, user: &str) -> anyhow::Result<()> {
        self.media(user, DEMO_PHOTO.to_vec(), "image/jpeg", None)
            .await
    }

    fn recorded_punch(&self, user: &str, _lat: f64, _lon: f64, missed: bool) {
        let at = self.now();
        // Feishu's flows carry no coordinates, only the place's name.
        let flow = json!({
            "user_id": user,
            "creator_id": user,
            "location_name": "上海市黄浦区一号工地",
            "check_time": at.to_string(),
            "comment": "",
            "record_id": format!("flow{at}{user}"),
            "is_field": false,
            "is_wifi": false,
            // 0: the user punched; 3: the system filled the row in.
            "type": if missed { 3 } else { 0 },
        });
        self.api.add_flows(vec![flow]);
    }

    async fn media(
        &self,
        user: &str,
        bytes: Vec<u8>,
        content_type: &str,
        file_name: Option<&str>,
    ) -> anyhow::Result<()> {
        let message_id = self.phone.next_id("om_");
        let (message_type, content) = match file_name {
            None => {
                let key = self
                    .api
                    .add_media(&message_id, "image", bytes, content_type, None);
                ("image", json!({ "image_key": key }))
            }
            Some(name) => {
                let key = self
                    .api
                    .add_media(&message_id, "file", bytes, content_type, Some(name));
                ("file", json!({ "file_key": key, "file_name": name }))
            }
        };
        let d = self
            .phone
            .message(user, message_type, content, self.now(), Some(message_id))
            .await;
        Self::accepted(d, &format!("the file of {user}"))
    }

    async fn press(&self, user: &str, action: &str) -> anyhow::Result<()> {
        let label = card_label(action);
        let (message, key) = self
            .api
            .sent()
            .into_iter()
            .rev()
            .filter(|m| m.receive_id == user && m.msg_type == "interactive")
            .find_map(|m| {
                let key = m.button_key(&label)?;
                Some((m, key))
            })
            .with_context(|| format!("{user} has no card with a button {label}"))?;
        let card = message.card_id().unwrap_or_default();
        let d = self
            .phone
            .press(
                user,
                json!({ "key": key, "card": card }),
                &message.message_id,
                self.now(),
            )
            .await;
        Self::accepted(d, &format!("the press of {user}"))?;
        self.settle().await
    }

    /// `user` reads their latest text: Feishu pushes the read event, and
    /// `read_users` lists them too.
    async fn read_latest(&self, user: &str) -> anyhow::Result<()> {
        let message_id = self
            .api
            .sent()
            .into_iter()
            .rev()
            .find(|m| m.receive_id == user && m.msg_type == "text")
            .map(|m| m.message_id)
            .with_context(|| format!("{user} got no text"))?;
        let at = self.clock.now().timestamp_millis();
        self.api.mark_read(&message_id, user, at);
        let d = self
            .phone
            .read(user, std::slice::from_ref(&message_id), at)
            .await;
        Self::accepted(d, &format!("the read of {user}"))?;
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let row = entity::outbox::Entity::find()
                .filter(entity::outbox::Column::ReceiptId.eq(&message_id))
                .one(&self.rt.db.orm)
                .await?;
            match row {
                Some(r) if r.read_at.is_some() => return Ok(()),
                Some(_) if Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Some(r) => anyhow::bail!(
                    "the read of {user} was not recorded within {SETTLE_WITHIN:?} (outbox row {})",
                    r.id
                ),
                None => anyhow::bail!("{user}'s latest message is not in the outbox"),
            }
        }
    }

    fn sent(&self) -> Vec<String> {
        self.api
            .sent()
            .into_iter()
            .map(|m| m.body.to_string())
            .collect()
    }

    fn outage(&self) -> &crate::platform::sandbox::Outage {
        self.api.outage()
    }

    fn push_faults(&self, faults: &[StageFault]) {
        for fault in faults {
            self.api.push_fault(match *fault {
                StageFault::ServerError => FeishuFault::ServerError,
                StageFault::Busy => FeishuFault::Busy,
                StageFault::Timeout(d) => FeishuFault::Timeout(d),
                StageFault::RateLimited => FeishuFault::RateLimited,
                StageFault::ExpiredToken => FeishuFault::ExpiredToken,
            });
        }
    }

    fn mark_invalid(&self, user: &str) {
        self.api.mark_invalid(user);
    }

    fn card_copies(&self, card_id: &str) -> usize {
        self.api
            .sent()
            .iter()
            .filter(|m| m.card_id().as_deref() == Some(card_id))
            .count()
    }

    fn received(&self, user: &str) -> Vec<String> {
        self.api
            .sent()
            .into_iter()
            .filter(|m| m.receive_id == user)
            .filter_map(|m| match m.msg_type.as_str() {
                "text" => m.content["text"].as_str().map(str::to_owned),
                "interactive" => {
                    let title = m.content["header"]["title"]["content"].as_str()?;
                    let body = m.content["elements"][0]["text"]["content"].as_str()?;
                    Some(format!("{title}\n{body}"))
                }
                _ => None,
            })
            .collect()
    }

    fn sms(&self) -> &SandboxSms {
        &self.sms
    }

    fn mail(&self) -> &SandboxMail {
        &self.mail
    }

    async fn stop(self: Box<Self>) {
        self.app.stop().await;
    }
}
