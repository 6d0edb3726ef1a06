//! The demo's story on a DingTalk tenant in Stream mode: the sandbox's
//! DingTalk API and Stream gateway stand in for DingTalk; employees write to
//! the robot, punch in the attendance app, press interactive cards and read
//! their notices, each as the frame DingTalk would push.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use super::{
    DEMO_PHOTO, PHONE_PATIENCE, SETTLE_WITHIN, Stage, StageFault, card_label, seed_roster,
    tenant_toml,
};
use crate::clock::{Clock, SimulatedClock};
use crate::config::{Config, ProcessEnv};
use crate::platform::dingtalk::stream::{TOPIC_BOT_MESSAGE, TOPIC_CARD_CALLBACK};
use crate::platform::sandbox::dingtalk_api::WORK_NOTICE_KEY;
use crate::platform::sandbox::{
    DingtalkFault, SandboxDingtalkApi, SandboxMail, SandboxSms, SandboxStreamGateway,
};
use crate::runtime::Runtime;

const APP_KEY: &str = "dingsandboxdemo";
const APP_SECRET: &str = "sandbox-dingtalk-secret";
const AGENT_ID: i64 = 3000002;
/// The interactive card template the sandbox accepts (any id: the sandbox
/// renders no card).
const TEMPLATE: &str = "rollcall-sandbox.schema";

/// The `[[tenants]]` table of the DingTalk sandbox tenant on `api`, with
/// `app` added to its `[tenants.dingtalk]` table.
pub(super) fn sandbox_tenant_toml(
    api: &SandboxDingtalkApi,
    app: &str,
    sms: &SandboxSms,
    mail: &SandboxMail,
) -> String {
    let base = api.api_base_v1();
    let chat = format!(
        r#"[tenants.dingtalk]
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
agent_id = {AGENT_ID}
card_template_id = "{TEMPLATE}"
api_base = "{base}"
api_base_v1 = "{base}"
{app}"#
    );
    tenant_toml("示例建筑有限公司（钉钉沙箱）", &chat, sms, mail)
}

/// The sandbox DingTalk API of the demo's app.
pub(super) async fn start_api() -> anyhow::Result<SandboxDingtalkApi> {
    SandboxDingtalkApi::start(APP_KEY, APP_SECRET)
        .await
        .context("starting the sandbox DingTalk API")
}

/// rollcall on a DingTalk sandbox tenant with a simulated clock.
pub struct SandboxedDingtalk {
    pub app: crate::app::RunningApp,
    pub rt: Runtime,
    pub api: SandboxDingtalkApi,
    pub gateway: SandboxStreamGateway,
    pub sms: SandboxSms,
    pub mail: SandboxMail,
    pub clock: Arc<SimulatedClock>,
}

impl SandboxedDingtalk {
    /// Starts rollcall on `database_url` with the demo roster, the clock at
    /// `start`, connected to the sandbox gateway. A notice's read status is
    /// asked for 1, 5, 15, … seconds after sending (a minute in production).
    pub async fn start(
        database_url: &str,
        key_file: &std::path::Path,
        start: DateTime<Utc>,
        extra: &str,
    ) -> anyhow::Result<SandboxedDingtalk> {
        Self::start_with(database_url, key_file, start, "", extra).await
    }

    /// [`SandboxedDingtalk::start`] with `app` added to the tenant's
    /// `[tenants.dingtalk]` table (TOML lines, such as
    /// `texts = "work_notice"`).
    pub async fn start_with(
        database_url: &str,
        key_file: &std::path::Path,
        start: DateTime<Utc>,
        app: &str,
        extra: &str,
    ) -> anyhow::Result<SandboxedDingtalk> {
        let api = start_api().await?;
        let gateway = SandboxStreamGateway::start(APP_KEY, APP_SECRET)
            .await
            .context("starting the sandbox Stream gateway")?;
        api.set_gateway(&gateway.api_base());
        let sms = SandboxSms::start(super::SMS_SECRET)
            .await
            .context("starting the sandbox SMS gateway")?;
        let mail = SandboxMail::start()
            .await
            .context("starting the sandbox mail server")?;
        let (delivery, extra) = super::with_read_checks_each_second(extra);
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{database_url}\"\n{delivery}{}{extra}",
            key_file.display(),
            crate::config::evidence_key_beside(key_file).display(),
            sandbox_tenant_toml(&api, app, &sms, &mail)
        );
        let config = Config::parse(&toml, &ProcessEnv).context("sandbox configuration")?;
        let clock = Arc::new(SimulatedClock::new(start));
        let app = crate::app::start_with_clock(&config, clock.clone()).await?;
        let rt = app.runtime.clone();
        seed_roster(&rt).await?;
        anyhow::ensure!(
            gateway.wait_connections(1, PHONE_PATIENCE).await,
            "rollcall did not open its Stream connection within {PHONE_PATIENCE:?}"
        );
        Ok(SandboxedDingtalk {
            app,
            rt,
            api,
            gateway,
            sms,
            mail,
            clock,
        })
    }

    /// Waits until rollcall acknowledged frame `id` (it stores a frame
    /// before it acknowledges it).
    async fn stored(&self, id: &str, what: &str) -> anyhow::Result<()> {
        let ack = self
            .gateway
            .wait_ack(id, PHONE_PATIENCE)
            .await
            .with_context(|| format!("{what} was not acknowledged within {PHONE_PATIENCE:?}"))?;
        anyhow::ensure!(ack["code"] == 200, "{what} was refused: {ack}");
        Ok(())
    }

    /// A robot message from `user` now, with `msgtype` and its fields.
    async fn robot(&self, user: &str, fields: Value, what: &str) -> anyhow::Result<()> {
        let mut data = json!({
            "msgId": format!("msg{}", ulid::Ulid::new()),
            "senderStaffId": user,
            "senderNick": user,
            "conversationType": "1",
            "conversationId": format!("cid-{user}"),
            "createAt": self.clock.now().timestamp_millis(),
            "robotCode": APP_KEY,
        });
        if let (Some(data), Some(fields)) = (data.as_object_mut(), fields.as_object()) {
            data.extend(fields.clone());
        }
        let id = self
            .gateway
            .push_callback(TOPIC_BOT_MESSAGE, &data.to_string());
        self.stored(&id, what).await
    }
}

#[async_trait::async_trait]
impl Stage for SandboxedDingtalk {
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
        let fields = json!({ "msgtype": "text", "text": { "content": text } });
        self.robot(user, fields, &format!("the message of {user}"))
            .await
    }

    async fn place(&self, user: &str, lat: f64, lon: f64, label: &str) -> anyhow::Result<()> {
        let punch = json!({ "dataList": [{
            "userId": user,
            "checkTime": self.clock.now().timestamp_millis(),
            "latitude": lat,
            "longitude": lon,
            "address": label,
            "locationMethod": "MAP",
        }]});
        let id = self
            .gateway
            .push_event("attendance_check_record", &punch.to_string());
        self.stored(&id, &format!("the punch of {user}")).await
    }

    async fn photo(&self, user: &str) -> anyhow::Result<()> {
        self.media(user, DEMO_PHOTO.to_vec(), "image/jpeg", None)
            .await
    }

    fn recorded_punch(&self, user: &str, lat: f64, lon: f64, missed: bool) {
        let at = self.clock.now().timestamp_millis();
        let mut record = json!({
            "id": at,
            "userId": user,
            "userCheckTime": at,
            "baseCheckTime": at,
            "checkType": "OnDuty",
            "timeResult": "Normal",
            "locationResult": "Normal",
            "sourceType": "USER",
            "userLatitude": lat,
            "userLongitude": lon,
            "userAddress": "上海市黄浦区一号工地",
        });
        if missed {
            record["timeResult"] = json!("NotSigned");
            record["locationResult"] = json!("NotSigned");
            record["sourceType"] = json!("SYSTEM");
        }
        self.api.add_punch_records(vec![record]);
    }

    async fn media(
        &self,
        user: &str,
        bytes: Vec<u8>,
        content_type: &str,
        file_name: Option<&str>,
    ) -> anyhow::Result<()> {
        let code = self.api.add_media(bytes, content_type);
        let fields = match file_name {
            None => json!({ "msgtype": "picture", "content": { "downloadCode": code } }),
            Some(name) => json!({
                "msgtype": "file",
                "content": { "downloadCode": code, "fileName": name },
            }),
        };
        self.robot(user, fields, &format!("the file of {user}"))
            .await
    }

    async fn press(&self, user: &str, action: &str) -> anyhow::Result<()> {
        let label = card_label(action);
        let (card, key) = self
            .api
            .cards()
            .into_iter()
            .rev()
            .filter(|c| c.user_id == user)
            .find_map(|c| {
                let buttons: Vec<Value> =
                    serde_json::from_str(c.params.get("buttons")?.as_str()?).ok()?;
                let key = buttons
                    .iter()
                    .find(|b| b["label"] == label.as_str())?
                    .get("key")?
                    .as_str()?
                    .to_owned();
                Some((c, key))
            })
            .with_context(|| format!("{user} has no card with a button {label}"))?;
        let content =
            json!({ "cardPrivateData": { "actionIds": [action], "params": { "key": key } } });
        let data = json!({
            "type": "actionCallback",
            "outTrackId": card.out_track_id,
            "corpId": self.gateway.corp_id(),
            "userId": user,
            "content": content.to_string(),
        });
        let id = self
            .gateway
            .push_callback(TOPIC_CARD_CALLBACK, &data.to_string());
        self.stored(&id, &format!("the press of {user}")).await?;
        self.settle().await
    }

    async fn read_latest(&self, user: &str) -> anyhow::Result<()> {
        let key = self
            .api
            .sent()
            .into_iter()
            .rev()
            .find(|m| m.user_ids == [user])
            .map(|m| m.process_query_key)
            .with_context(|| format!("{user} got no robot message"))?;
        self.api
            .mark_read(&key, user, self.clock.now().timestamp_millis());
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            // A work notice's receipt is its task id, marked as one.
            let receipts = [key.clone(), format!("work_notice:{key}")];
            let row = entity::outbox::Entity::find()
                .filter(entity::outbox::Column::ReceiptId.is_in(receipts))
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
                // A reply, not a notice: it is not asked about.
                None => anyhow::bail!("{user}'s latest message is not in the outbox"),
            }
        }
    }

    fn sent(&self) -> Vec<String> {
        let texts = self.api.sent().into_iter().map(|m| m.body.to_string());
        let cards = self.api.cards().into_iter().map(|c| c.body.to_string());
        texts.chain(cards).collect()
    }

    fn outage(&self) -> &crate::platform::sandbox::Outage {
        self.api.outage()
    }

    fn push_faults(&self, faults: &[StageFault]) {
        for fault in faults {
            self.api.push_fault(match *fault {
                StageFault::ServerError => DingtalkFault::ServerError,
                StageFault::Busy => DingtalkFault::Busy,
                StageFault::Timeout(d) => DingtalkFault::Timeout(d),
                StageFault::RateLimited => DingtalkFault::RateLimited,
                StageFault::ExpiredToken => DingtalkFault::ExpiredToken,
            });
        }
    }

    fn mark_invalid(&self, user: &str) {
        self.api.mark_invalid(user);
    }

    fn card_copies(&self, card_id: &str) -> usize {
        self.api
            .cards()
            .iter()
            .filter(|c| c.out_track_id == card_id)
            .count()
    }

    fn received(&self, user: &str) -> Vec<String> {
        let delivered = self.api.delivered_to(user);
        let texts = self
            .api
            .sent()
            .into_iter()
            .filter(|m| delivered.contains(&m.process_query_key))
            .filter_map(|m| {
                let text = match m.msg_key.as_str() {
                    "sampleText" => m.msg_param["content"].as_str()?.to_owned(),
                    WORK_NOTICE_KEY => m.msg_param["text"]["content"].as_str()?.to_owned(),
                    // A card sent without a card template: its markdown.
                    "sampleMarkdown" => m.msg_param["text"].as_str()?.to_owned(),
                    _ => return None,
                };
                Some((m.seq, without_reference(&text).to_owned()))
            });
        let cards = self
            .api
            .cards()
            .into_iter()
            .filter(|c| c.user_id == user)
            .map(|c| {
                let param = |name: &str| {
                    c.params
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (c.seq, format!("{}\n{}", param("title"), param("body")))
            });
        let mut all: Vec<(u64, String)> = texts.chain(cards).collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, text)| text).collect()
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

/// `text` without the reference line rollcall ends each DingTalk message
/// with (`\n#` and eight hex digits: see `DingtalkApi::send`).
fn without_reference(text: &str) -> &str {
    match text.rsplit_once("\n#") {
        Some((head, tail)) if tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => text,
    }
}
