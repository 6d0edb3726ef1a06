//! `rollcall demo`: the whole story on a sandbox tenant with a simulated
//! clock, through the real app. On WeCom (the default) callbacks are
//! encrypted and posted by the sandbox and notices go out through the
//! sandbox's WeCom API; with `--platform dingtalk` (`dingtalk.rs`) the
//! sandbox's Stream gateway pushes the frames and its DingTalk API takes
//! the notices. The story is written once, against [`Stage`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use entity::{absence_case, case_event, employee, outbox};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::cases::store::case_no;
use crate::clock::{Clock, SimulatedClock};
use crate::config::{Config, ProcessEnv};
use crate::platform::sandbox::{CallbackSender, SandboxApi, SandboxMail, SandboxSms, SentMessage};
use crate::runtime::Runtime;

pub mod dingtalk;
pub mod feishu;

pub const TENANT: &str = "demo";
const CORP_ID: &str = "wwsandbox0000demo";
const SECRET: &str = "sandbox-secret";
const AGENT_ID: i64 = 1000002;

/// The demo company (data, not bot text), imported as an HR user would.
const ROSTER_CSV: &str = "\
user_id,name,department,manager_user_id,role,phone,email,emergency_contact_name,emergency_contact_phone,postal_address,hire_date,contract_end_date,rest_days,site
wangmin,王敏,人力资源部,,hr,13800000001,wangmin@example.com,,,,2024-03-01,,,
zhaogang,赵刚,一号工地,,manager,13800000002,zhaogang@example.com,,,,2024-05-01,,,一号工地
zhangsan,张三,一号工地,zhaogang,employee,13800000003,zhangsan@example.com,张父,13900000003,上海市浦东新区示例路1号,2025-03-01,2027-02-28,,一号工地
lisi,李四,一号工地,zhaogang,employee,13800000004,lisi@example.com,李母,13900000004,,2025-04-01,2027-03-31,,一号工地
wangwu,王五,一号工地,zhaogang,employee,13800000005,wangwu@example.com,王妻,13900000005,,2025-06-01,2027-05-31,,一号工地
";

/// The tenant configuration of the demo and of `serve` with no config file.
fn sandbox_tenant_toml(platform: &SandboxPlatform) -> String {
    let api_base = platform.api.api_base();
    let token = &platform.token;
    let aes_key = &platform.aes_key;
    tenant_toml(
        "示例建筑有限公司（沙箱）",
        &format!(
            r#"[tenants.wecom]
corp_id = "{CORP_ID}"
agent_id = {AGENT_ID}
secret = "{SECRET}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{api_base}""#
        ),
        &platform.sms,
        &platform.mail,
    )
}

/// The sandbox tenant on the chat platform `chat` (its TOML table), with
/// the demo's site, rule, SMS gateway and mail server.
fn tenant_toml(name: &str, chat: &str, sms: &SandboxSms, mail: &SandboxMail) -> String {
    let sms_table = sandbox_sms_table(sms);
    let mail_port = mail.port();
    format!(
        r#"
[[tenants]]
id = "{TENANT}"
name = "{name}"
timezone = "Asia/Shanghai"
{chat}
[[tenants.sites]]
name = "一号工地"
latitude = 31.2304
longitude = 121.4737
radius_m = 300
[tenants.notice]
rule = "《员工手册》第五章第十二条（连续旷工三个工作日以上的，视为严重违反规章制度）"
rule_version = "2026-01"
hr_contact = "人力资源部 王敏，021-00000000"
{sms_table}[tenants.email]
host = "127.0.0.1"
port = {mail_port}
security = "none"
from = "示例建筑有限公司人力资源部 <hr@example.com>"
"#
    )
}

const SMS_SECRET: &str = "sandbox-sms-secret";

/// The `[tenants.sms]` table of the sandbox gateway.
fn sandbox_sms_table(sms: &SandboxSms) -> String {
    format!(
        "[tenants.sms]\nprovider = \"webhook\"\nurl = \"{}\"\nsecret = \"{SMS_SECRET}\"\n",
        sms.url()
    )
}

/// The `[delivery]` table that asks about reads after 1, 5, 15, … seconds
/// (a minute in production), and `extra` without it: the setting goes into
/// the caller's own `[delivery]` table when `extra` has one (a TOML table
/// is written once).
fn with_read_checks_each_second(extra: &str) -> (String, String) {
    let unit = "read_check_unit_secs = 1\n";
    match extra.contains("[delivery]\n") {
        true => (
            String::new(),
            extra.replacen("[delivery]\n", &format!("[delivery]\n{unit}"), 1),
        ),
        false => (format!("[delivery]\n{unit}"), extra.to_owned()),
    }
}

/// The whole simulated platform of the sandbox tenant: the WeCom-compatible
/// API, an SMS gateway and a mail server, all on 127.0.0.1 in this process.
pub struct SandboxPlatform {
    pub api: SandboxApi,
    pub sms: SandboxSms,
    pub mail: SandboxMail,
    /// The callback token and EncodingAESKey of the tenant.
    pub token: String,
    pub aes_key: String,
}

impl SandboxPlatform {
    pub async fn start() -> anyhow::Result<SandboxPlatform> {
        let (token, aes_key) = fresh_secrets();
        Ok(SandboxPlatform {
            api: SandboxApi::start(CORP_ID, SECRET)
                .await
                .context("starting the sandbox API")?,
            sms: SandboxSms::start(SMS_SECRET)
                .await
                .context("starting the sandbox SMS gateway")?,
            mail: SandboxMail::start()
                .await
                .context("starting the sandbox mail server")?,
            token,
            aes_key,
        })
    }

    /// The `[[tenants]]` table of the sandbox tenant (TOML).
    pub fn tenant_toml(&self) -> String {
        sandbox_tenant_toml(self)
    }

    /// A phone of the sandbox tenant's app: signed, encrypted callbacks to
    /// `url` (the tenant's callback URL on a running server).
    pub fn callback_sender(&self, url: &str) -> anyhow::Result<CallbackSender> {
        Ok(CallbackSender::new(
            url,
            &self.token,
            &self.aes_key,
            CORP_ID,
            AGENT_ID,
        )?)
    }
}

/// The sandbox tenant of a command run without a configuration file, on
/// the platform its events came in on (a database `rollcall demo
/// --platform dingtalk` left is a DingTalk tenant's): its `[[tenants]]`
/// table, and its simulated services, which answer as long as this lives.
pub struct SandboxTenant {
    pub toml: String,
    _services: Vec<Box<dyn std::any::Any + Send>>,
}

impl SandboxTenant {
    pub async fn start(platform: DemoPlatform) -> anyhow::Result<SandboxTenant> {
        let sms = || SandboxSms::start(SMS_SECRET);
        Ok(match platform {
            DemoPlatform::Wecom => {
                let p = SandboxPlatform::start().await?;
                SandboxTenant {
                    toml: p.tenant_toml(),
                    _services: vec![Box::new(p)],
                }
            }
            DemoPlatform::Dingtalk => {
                let (api, sms, mail) = (
                    dingtalk::start_api().await?,
                    sms().await?,
                    SandboxMail::start().await?,
                );
                SandboxTenant {
                    toml: dingtalk::sandbox_tenant_toml(&api, "", &sms, &mail),
                    _services: vec![Box::new(api), Box::new(sms), Box::new(mail)],
                }
            }
            DemoPlatform::Feishu => {
                let (api, sms, mail) = (
                    feishu::start_api().await?,
                    sms().await?,
                    SandboxMail::start().await?,
                );
                let (token, _) = fresh_secrets();
                let encrypt_key = ulid::Ulid::new().to_string();
                SandboxTenant {
                    toml: feishu::sandbox_tenant_toml(&api, &encrypt_key, &token, &sms, &mail),
                    _services: vec![Box::new(api), Box::new(sms), Box::new(mail)],
                }
            }
        })
    }

    /// The platform of the sandbox tenant's events in the database at `url`
    /// (WeCom when it has none: the platform of `serve` without a
    /// configuration).
    /// The database is only read: a file that does not exist, or has no
    /// tables yet, is WeCom's.
    pub async fn platform_in(url: &str) -> anyhow::Result<DemoPlatform> {
        use std::str::FromStr;
        if url.starts_with("sqlite:") {
            let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .get_filename()
                .to_path_buf();
            if !file.exists() {
                return Ok(DemoPlatform::Wecom);
            }
        }
        let db = crate::db::Database::connect(url).await?;
        let first = entity::inbound_event::Entity::find()
            .filter(entity::inbound_event::Column::TenantId.eq(TENANT))
            .order_by_asc(entity::inbound_event::Column::Id)
            .one(&db.orm)
            .await
            .ok()
            .flatten();
        db.close().await;
        Ok(match first.as_ref().map(|e| e.platform.as_str()) {
            Some("dingtalk") => DemoPlatform::Dingtalk,
            Some("feishu") => DemoPlatform::Feishu,
            _ => DemoPlatform::Wecom,
        })
    }
}

/// A fresh callback token and EncodingAESKey.
pub fn fresh_secrets() -> (String, String) {
    let token: String = ulid::Ulid::new().to_string();
    let key: [u8; 32] = rand::random();
    let aes = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key);
    (token, aes)
}

/// Puts the demo roster in the database, through the CSV import.
pub async fn seed_roster(rt: &Runtime) -> anyhow::Result<()> {
    crate::employees::import_csv(&rt.db, &rt.key, TENANT, ROSTER_CSV.as_bytes(), false).await?;
    Ok(())
}

/// Options of `rollcall demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// One JSON object per line instead of the readable timeline.
    #[arg(long)]
    pub json: bool,
    /// The chat platform the story runs on.
    #[arg(long, value_enum, default_value_t)]
    pub platform: DemoPlatform,
}

/// What the demo leaves behind.
pub struct DemoRun {
    pub lines: Vec<Value>,
    pub db_path: PathBuf,
    /// Each chat message that reached the sandbox platform: its request
    /// body as sent.
    pub sent: Vec<String>,
    /// What reached the sandbox SMS gateway and mail server.
    pub texts: Vec<crate::platform::sandbox::SmsRecord>,
    pub mails: Vec<crate::platform::sandbox::MailRecord>,
    pub elapsed: Duration,
    /// The whole story only: the absent employee's package, written out.
    pub package: Option<ExportedPackage>,
}

/// The package the whole story ends with.
pub struct ExportedPackage {
    pub dir: PathBuf,
    /// The fingerprint of the key that signed it, as the employer publishes it.
    pub fingerprint: String,
}

/// `date` (YYYY-MM-DD) `time` (HH:MM) in Shanghai, as an instant.
pub fn shanghai(date: &str, time: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M")
        .expect("demo times are valid");
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .expect("no DST in Shanghai")
        .with_timezone(&Utc)
}

/// How long the simulated phone waits for rollcall's answer to a callback.
/// The platforms wait 1.5 to 5 s; the story and the tests are about what
/// rollcall does, not how fast it answers on a loaded machine (the load
/// generator measures that), so they wait longer rather than retry.
pub const PHONE_PATIENCE: Duration = Duration::from_secs(60);

/// A running app on the sandbox tenant with a simulated clock: what the
/// demo and the request tests drive.
pub struct Sandboxed {
    pub app: crate::app::RunningApp,
    pub rt: Runtime,
    pub sandbox: SandboxApi,
    pub sms: SandboxSms,
    pub mail: SandboxMail,
    pub phone: CallbackSender,
    pub clock: Arc<SimulatedClock>,
}

impl Sandboxed {
    /// Starts rollcall on `database_url` with the demo roster, the clock at
    /// `start`. `extra` is appended to the configuration (TOML).
    pub async fn start(
        database_url: &str,
        key_file: &std::path::Path,
        start: DateTime<Utc>,
        extra: &str,
    ) -> anyhow::Result<Sandboxed> {
        let platform = SandboxPlatform::start().await?;
        let mut tenant = platform.tenant_toml();
        if extra.contains("[tenants.sms]\n") {
            // The caller's own gateway (a TOML table is written once).
            tenant = tenant.replace(&sandbox_sms_table(&platform.sms), "");
        }
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{database_url}\"\n{tenant}{extra}",
            key_file.display(),
            crate::config::evidence_key_beside(key_file).display(),
        );
        let config = Config::parse(&toml, &ProcessEnv).context("sandbox configuration")?;
        let clock = Arc::new(SimulatedClock::new(start));
        let app = crate::app::start_with_clock(&config, clock.clone()).await?;
        let rt = app.runtime.clone();
        seed_roster(&rt).await?;
        let url = format!("http://{}/callback/wecom/{TENANT}", app.addr);
        let phone =
            CallbackSender::new(&url, &platform.token, &platform.aes_key, CORP_ID, AGENT_ID)?
                .with_timeout(PHONE_PATIENCE);
        Ok(Sandboxed {
            app,
            rt,
            sandbox: platform.api,
            sms: platform.sms,
            mail: platform.mail,
            phone,
            clock,
        })
    }

    /// Sets the clock to `date` `time` in Shanghai; returns it as a WeCom CreateTime.
    pub fn at(&self, date: &str, time: &str) -> i64 {
        let t = shanghai(date, time);
        self.clock.set(t);
        t.timestamp()
    }

    /// Each of `users` sends 打卡 at the current time.
    pub async fn check_in(&self, users: &[&str]) -> anyhow::Result<()> {
        let t = self.clock.now().timestamp();
        for user in users {
            let d = self.phone.text(user, "打卡", t).await;
            anyhow::ensure!(d.delivered, "check-in of {user} not accepted: {d:?}");
        }
        self.settle().await
    }

    /// Sends a text from `user` at the current time and waits for its effects.
    pub async fn say(&self, user: &str, text: &str) -> anyhow::Result<()> {
        let d = self
            .phone
            .text(user, text, self.clock.now().timestamp())
            .await;
        anyhow::ensure!(d.delivered, "message of {user} not accepted: {d:?}");
        self.settle().await
    }

    /// Runs the scan for the last ended workday and waits for its notices.
    pub async fn scan(&self) -> anyhow::Result<crate::cases::scan::ScanReport> {
        let report = crate::attendance::punches::scan(&self.rt, TENANT, None).await?;
        self.settle().await?;
        Ok(report)
    }

    /// Presses `action` on the latest card `user` received.
    pub async fn press(&self, user: &str, action: &str) -> anyhow::Result<()> {
        press(
            &self.sandbox,
            &self.phone,
            user,
            action,
            self.clock.now().timestamp(),
        )
        .await?;
        self.settle().await
    }

    pub async fn settle(&self) -> anyhow::Result<()> {
        settle(&self.rt).await
    }

    pub async fn stop(self) {
        self.app.stop().await;
    }
}

/// The chat platform a demo runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoPlatform {
    /// WeCom: encrypted callbacks posted to rollcall.
    #[default]
    Wecom,
    /// DingTalk in Stream mode: frames over the connection rollcall opens.
    Dingtalk,
    /// Feishu: encrypted, signed events posted to rollcall.
    Feishu,
}

impl DemoPlatform {
    /// The platform's name, as events and evidence carry it.
    pub fn name(self) -> &'static str {
        match self {
            DemoPlatform::Wecom => "wecom",
            DemoPlatform::Dingtalk => "dingtalk",
            DemoPlatform::Feishu => "feishu",
        }
    }
}

/// A fault every platform's sandbox can put in the way of rollcall's next
/// call, each answered the way that platform answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageFault {
    /// A 5xx.
    ServerError,
    /// "System busy".
    Busy,
    /// No answer for this long.
    Timeout(Duration),
    /// The platform's frequency limit.
    RateLimited,
    /// The caller's token expired (and is revoked).
    ExpiredToken,
}

/// What the story does on a platform: an employee's phone, and what the
/// platform received.
#[async_trait::async_trait]
pub trait Stage: Send + Sync {
    fn rt(&self) -> &Runtime;
    /// Where rollcall listens (the links it sends point here).
    fn addr(&self) -> std::net::SocketAddr;
    /// Sets the clock to `date` `time` in Shanghai.
    fn at(&self, date: &str, time: &str);
    /// `user` sends `text` now; returns once rollcall stored it.
    async fn text(&self, user: &str, text: &str) -> anyhow::Result<()>;
    /// `user` checks in from a place: a location message (WeCom) or a
    /// punch in the attendance app (DingTalk, whose robot takes no location).
    async fn place(&self, user: &str, lat: f64, lon: f64, label: &str) -> anyhow::Result<()>;
    /// `user` sends a photo of the site.
    async fn photo(&self, user: &str) -> anyhow::Result<()>;
    /// The platform's attendance app records a punch of `user` now at
    /// (`lat`, `lon`), without telling rollcall (no event): what an import
    /// of the records finds. `missed`: the row the platform fills in for a
    /// scheduled punch nobody made.
    fn recorded_punch(&self, user: &str, lat: f64, lon: f64, missed: bool);
    /// `user` sends `bytes`: a photo when `file_name` is `None`, else a
    /// file of that name; returns once rollcall stored it.
    async fn media(
        &self,
        user: &str,
        bytes: Vec<u8>,
        content_type: &str,
        file_name: Option<&str>,
    ) -> anyhow::Result<()>;
    /// `user` presses the button for `action` on their latest card with it.
    async fn press(&self, user: &str, action: &str) -> anyhow::Result<()>;
    /// `user` reads the latest text they got, where the platform tells
    /// (DingTalk); waits until rollcall recorded the read. No-op on WeCom.
    async fn read_latest(&self, user: &str) -> anyhow::Result<()>;
    /// Each message that reached the platform (its request body).
    fn sent(&self) -> Vec<String>;
    /// The platform's next calls meet `faults`, in order.
    fn push_faults(&self, faults: &[StageFault]);
    /// The platform's outage switch: while down, its whole API answers 503.
    fn outage(&self) -> &crate::platform::sandbox::Outage;
    /// Makes `user` unknown to the platform's app.
    fn mark_invalid(&self, user: &str);
    /// How many times the card `card_id` reached the platform.
    fn card_copies(&self, card_id: &str) -> usize;
    /// Each chat message that reached `user`, oldest first, as rollcall
    /// wrote it: a text as its content, a card as its title and its body on
    /// the next line (what the platform adds, such as DingTalk's reference
    /// line, left out).
    fn received(&self, user: &str) -> Vec<String>;
    fn sms(&self) -> &SandboxSms;
    fn mail(&self) -> &SandboxMail;
    async fn stop(self: Box<Self>);

    async fn settle(&self) -> anyhow::Result<()> {
        settle(self.rt()).await
    }

    /// `user` sends `text` now and waits for its effects.
    async fn say(&self, user: &str, text: &str) -> anyhow::Result<()> {
        self.text(user, text).await?;
        self.settle().await
    }

    async fn check_in(&self, users: &[&str]) -> anyhow::Result<()> {
        for user in users {
            self.text(user, "打卡").await?;
        }
        self.settle().await
    }

    /// Runs the scan for the last ended workday and waits for its notices.
    async fn scan(&self) -> anyhow::Result<crate::cases::scan::ScanReport> {
        let report = crate::attendance::punches::scan(self.rt(), TENANT, None).await?;
        self.settle().await?;
        Ok(report)
    }

    /// Sends HR the contract reminders due now (what the daily scan job
    /// does before each scan) and waits for them.
    async fn hr_reminders(&self) -> anyhow::Result<crate::hr::contracts::Reminded> {
        let tenant = self.rt().tenant(TENANT).context("the sandbox tenant")?;
        let now = self.rt().clock.now();
        let report = crate::hr::contracts::remind(self.rt(), tenant, now).await?;
        self.settle().await?;
        Ok(report)
    }

    /// Scores everyone now and sends HR the cards of new crossings (what
    /// the daily scan job does too), and waits for them.
    async fn risk_alerts(&self) -> anyhow::Result<crate::hr::risk::Alerted> {
        let tenant = self.rt().tenant(TENANT).context("the sandbox tenant")?;
        let now = self.rt().clock.now();
        let report = crate::hr::risk::alert(self.rt(), tenant, now).await?;
        self.settle().await?;
        Ok(report)
    }

    /// Notes who left and sends HR the follow-ups due now (what the daily
    /// scan job does too) and waits for them.
    async fn follow_ups(&self) -> anyhow::Result<crate::hr::leavers::FollowedUp> {
        let tenant = self.rt().tenant(TENANT).context("the sandbox tenant")?;
        let now = self.rt().clock.now();
        let report = crate::hr::leavers::follow_up(self.rt(), tenant, now).await?;
        self.settle().await?;
        Ok(report)
    }

    /// Fetches the one-time link in the latest message `user` got that has
    /// one, from rollcall's own address, as the phone would.
    async fn download_latest_link(&self, user: &str) -> anyhow::Result<Vec<u8>> {
        let link = self
            .received(user)
            .iter()
            .rev()
            .find_map(|m| {
                m.lines()
                    .find(|l| l.contains("/export/"))
                    .map(str::to_owned)
            })
            .with_context(|| format!("{user} got no download link"))?;
        let token = link
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let url = format!("http://{}/export/{token}", self.addr());
        let response = reqwest::get(&url).await?.error_for_status()?;
        Ok(response.bytes().await?.to_vec())
    }
}

/// rollcall on the sandbox tenant of `platform`, with the demo roster and
/// the clock at `start`; `extra` is appended to the configuration (TOML).
pub async fn stage(
    platform: DemoPlatform,
    database_url: &str,
    key_file: &std::path::Path,
    start: DateTime<Utc>,
    extra: &str,
) -> anyhow::Result<Box<dyn Stage>> {
    Ok(match platform {
        DemoPlatform::Wecom => {
            Box::new(Sandboxed::start(database_url, key_file, start, extra).await?)
        }
        DemoPlatform::Dingtalk => Box::new(
            dingtalk::SandboxedDingtalk::start(database_url, key_file, start, extra).await?,
        ),
        DemoPlatform::Feishu => {
            Box::new(feishu::SandboxedFeishu::start(database_url, key_file, start, extra).await?)
        }
    })
}

#[async_trait::async_trait]
impl Stage for Sandboxed {
    fn rt(&self) -> &Runtime {
        &self.rt
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.app.addr
    }

    fn at(&self, date: &str, time: &str) {
        Sandboxed::at(self, date, time);
    }

    async fn text(&self, user: &str, text: &str) -> anyhow::Result<()> {
        let d = self
            .phone
            .text(user, text, self.clock.now().timestamp())
            .await;
        anyhow::ensure!(d.delivered, "message of {user} not accepted: {d:?}");
        Ok(())
    }

    async fn place(&self, user: &str, lat: f64, lon: f64, label: &str) -> anyhow::Result<()> {
        let d = self
            .phone
            .location(user, lat, lon, label, self.clock.now().timestamp())
            .await;
        anyhow::ensure!(d.delivered, "location of {user} not accepted: {d:?}");
        Ok(())
    }

    async fn photo(&self, user: &str) -> anyhow::Result<()> {
        self.media(user, DEMO_PHOTO.to_vec(), "image/jpeg", None)
            .await
    }

    fn recorded_punch(&self, user: &str, lat: f64, lon: f64, missed: bool) {
        let millionths = |degrees: f64| (degrees * 1_000_000.0).round() as i64;
        let (exception, lat, lng) = match missed {
            true => ("未打卡", 0, 0),
            false => ("", millionths(lat), millionths(lon)),
        };
        self.sandbox.add_checkins(vec![json!({
            "userid": user,
            "groupname": "一号工地考勤",
            "checkin_type": "上班打卡",
            "exception_type": exception,
            "checkin_time": self.clock.now().timestamp(),
            "location_title": if missed { "" } else { "一号工地" },
            "location_detail": "",
            "wifiname": "",
            "notes": "",
            "wifimac": "",
            "mediaids": [],
            "lat": lat,
            "lng": lng,
            "deviceid": "",
        })]);
    }

    async fn media(
        &self,
        user: &str,
        bytes: Vec<u8>,
        content_type: &str,
        file_name: Option<&str>,
    ) -> anyhow::Result<()> {
        let media = self.sandbox.add_media(bytes, content_type);
        let t = self.clock.now().timestamp();
        let d = match file_name {
            None => self.phone.image(user, &media, t).await,
            Some(name) => self.phone.file(user, &media, name, t).await,
        };
        anyhow::ensure!(d.delivered, "the file of {user} was not accepted: {d:?}");
        Ok(())
    }

    async fn press(&self, user: &str, action: &str) -> anyhow::Result<()> {
        Sandboxed::press(self, user, action).await
    }

    async fn read_latest(&self, _user: &str) -> anyhow::Result<()> {
        Ok(())
    }

    fn sent(&self) -> Vec<String> {
        self.sandbox
            .sent()
            .into_iter()
            .map(|m| m.body.to_string())
            .collect()
    }

    fn outage(&self) -> &crate::platform::sandbox::Outage {
        self.sandbox.outage()
    }

    fn push_faults(&self, faults: &[StageFault]) {
        use crate::platform::sandbox::Fault;
        for fault in faults {
            self.sandbox.push_fault(match *fault {
                StageFault::ServerError => Fault::ServerError,
                StageFault::Busy => Fault::Busy,
                StageFault::Timeout(d) => Fault::Timeout(d),
                StageFault::RateLimited => Fault::RateLimited,
                StageFault::ExpiredToken => Fault::ExpiredToken,
            });
        }
    }

    fn mark_invalid(&self, user: &str) {
        self.sandbox.mark_invalid(user);
    }

    fn card_copies(&self, card_id: &str) -> usize {
        self.sandbox
            .sent()
            .iter()
            .filter(|m| m.body["template_card"]["task_id"] == card_id)
            .count()
    }

    fn received(&self, user: &str) -> Vec<String> {
        self.sandbox
            .sent()
            .into_iter()
            .filter(|m| m.touser.split('|').any(|u| u == user))
            .filter_map(|m| match m.msgtype.as_str() {
                "text" => m.body["text"]["content"].as_str().map(str::to_owned),
                "template_card" => {
                    let card = &m.body["template_card"];
                    Some(format!(
                        "{}\n{}",
                        card["main_title"]["title"].as_str().unwrap_or_default(),
                        card["sub_title_text"].as_str().unwrap_or_default()
                    ))
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

/// The bytes of the demo's site photo.
const DEMO_PHOTO: &[u8] = b"\xff\xd8\xff\xe0demo-site-photo";
/// The bytes of the photo HR files as evidence.
const EVIDENCE_PHOTO: &[u8] = b"\xff\xd8\xff\xe0demo-dormitory-emptied";

/// When the story's clock starts: Monday morning.
fn story_begins() -> DateTime<Utc> {
    shanghai("2026-11-30", "08:00")
}

/// Runs the story on `database_url`, on WeCom.
pub async fn run_story(database_url: &str, key_file: &std::path::Path) -> anyhow::Result<DemoRun> {
    run_story_on(DemoPlatform::Wecom, database_url, key_file).await
}

/// Runs the story on `database_url`, on `platform`.
pub async fn run_story_on(
    platform: DemoPlatform,
    database_url: &str,
    key_file: &std::path::Path,
) -> anyhow::Result<DemoRun> {
    let started = Instant::now();
    let s = stage(platform, database_url, key_file, story_begins(), "").await?;
    to_the_deadline(&*s, false).await?;
    finish(s, database_url, started, None).await
}

/// Runs the whole story on `database_url`, on `platform`: to HR's deadline
/// card, then the self-departure process to the termination notice and its
/// receipts, and the absent employee's package written into `package_dir`.
pub async fn run_whole_story_on(
    platform: DemoPlatform,
    database_url: &str,
    key_file: &std::path::Path,
    package_dir: &std::path::Path,
    sheet: &std::path::Path,
) -> anyhow::Result<DemoRun> {
    let started = Instant::now();
    let s = stage(platform, database_url, key_file, story_begins(), DAY_SHIFT).await?;
    to_the_deadline(&*s, true).await?;
    departure(&*s).await?;
    hr_toolkit(&*s, sheet).await?;
    let case = absent_case(&*s)
        .await?
        .context("the absent employee has no case")?;
    let package = crate::evidence::export::package(s.rt(), TENANT, ABSENT, Some(case.id))
        .await
        .context("exporting the package")?;
    package
        .write_dir(package_dir)
        .with_context(|| format!("writing the package to {}", package_dir.display()))?;
    let exported = ExportedPackage {
        dir: package_dir.to_path_buf(),
        fingerprint: package.summary.fingerprint.clone(),
    };
    finish(s, database_url, started, Some(exported)).await
}

/// The whole story's shift: everyone works 08:00 to 17:00, and a check-in
/// more than 10 minutes after the start is late.
const DAY_SHIFT: &str = r#"[[tenants.shifts]]
name = "白班"
start = "08:00"
end = "17:00"
grace_minutes = 10
[tenants.attendance]
shift = "白班"
"#;

/// After the termination, a day of HR's other work: 李四 comes in late and
/// forgets to check out, 王五 leaves early; HR enters 王五's contract end
/// (in 29 days), the next morning's job reminds HR of it and HR presses
/// 续签; HR asks for December's attendance sheet in chat and opens the
/// one-time link, which is written to `sheet`.
async fn hr_toolkit(s: &dyn Stage, sheet: &std::path::Path) -> anyhow::Result<()> {
    s.at("2026-12-09", "07:55");
    for user in ["wangmin", "zhaogang", "wangwu"] {
        s.text(user, "打卡").await?;
    }
    s.at("2026-12-09", "08:25");
    s.text("lisi", "打卡").await?;
    s.settle().await?;
    s.at("2026-12-09", "16:30");
    s.say("wangwu", "下班打卡").await?;
    s.at("2026-12-09", "17:05");
    for user in ["wangmin", "zhaogang"] {
        s.text(user, "下班").await?;
    }
    s.settle().await?;
    s.at("2026-12-09", "18:00");
    crate::employees::import_csv(
        &s.rt().db,
        &s.rt().key,
        TENANT,
        "user_id,name,contract_end_date\nwangwu,王五,2027-01-08\n".as_bytes(),
        false,
    )
    .await?;
    s.at("2026-12-10", "10:00");
    let reminded = s.hr_reminders().await?;
    anyhow::ensure!(
        reminded.new == 1,
        "no contract reminder went out: {reminded:?}"
    );
    s.at("2026-12-10", "10:30");
    s.press("wangmin", "contract_renew").await?;
    s.settle().await?;
    s.at("2026-12-10", "11:00");
    s.say("wangmin", "/报表 考勤 2026-12").await?;
    downloads_built(s.rt()).await?;
    let bytes = s.download_latest_link("wangmin").await?;
    std::fs::write(sheet, bytes).with_context(|| format!("writing {}", sheet.display()))?;
    Ok(())
}

/// Waits until every file asked for in chat (a package, a sheet) is built
/// by its job and its message final.
pub async fn downloads_built(rt: &Runtime) -> anyhow::Result<()> {
    use crate::evidence::download::DownloadStatus;
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let pending = entity::export_download::Entity::find()
            .filter(entity::export_download::Column::Status.eq(DownloadStatus::Pending.as_str()))
            .count(&rt.db.orm)
            .await?;
        if pending == 0 {
            return settle(rt).await;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{pending} downloads still not built after {SETTLE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The employee who stops coming in the story.
const ABSENT: &str = "zhangsan";

/// The timeline and what reached the sandbox, then the stage stopped.
async fn finish(
    s: Box<dyn Stage>,
    database_url: &str,
    started: Instant,
    package: Option<ExportedPackage>,
) -> anyhow::Result<DemoRun> {
    let lines = timeline(s.rt()).await?;
    let sent = s.sent();
    let texts = s.sms().texts();
    let mails = s.mail().messages();
    s.stop().await;
    Ok(DemoRun {
        lines,
        db_path: PathBuf::from(database_url),
        sent,
        texts,
        mails,
        elapsed: started.elapsed(),
        package,
    })
}

/// Monday to the next Monday: 张三 stops coming, the ladder runs, the
/// formal notice reaches him, and the deadline passes (HR gets the card).
/// `second_monday`: the others check in on the next Monday morning too (the
/// whole story, whose month's sheet shows that day).
async fn to_the_deadline(s: &dyn Stage, second_monday: bool) -> anyhow::Result<()> {
    let everyone = ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"];
    let but = |absent: &[&str]| {
        everyone
            .iter()
            .copied()
            .filter(|u| !absent.contains(u))
            .collect::<Vec<_>>()
    };

    // Monday: everyone checks in, by text, place and photo.
    s.at("2026-11-30", "08:10");
    for (i, user) in everyone.iter().enumerate() {
        match i % 3 {
            0 => s.text(user, "打卡").await?,
            1 => s.place(user, 31.2306, 121.4739, "一号工地北门").await?,
            _ => s.photo(user).await?,
        };
    }
    s.settle().await?;
    // Tuesday: 张三 and 李四 do not come.
    s.at("2026-12-01", "08:05");
    s.check_in(&but(&["zhangsan", "lisi"])).await?;
    // Wednesday 10:00: the scan of Tuesday: day-1 reminders.
    s.at("2026-12-02", "10:00");
    s.scan().await?;
    // 李四 comes in late and presses 我已到岗 on his reminder: his case closes.
    s.at("2026-12-02", "10:40");
    s.press("lisi", "arrived").await?;
    s.check_in(&but(&["zhangsan", "lisi"])).await?;
    // Thursday: day 2 for 张三; his manager gets a card and attests the call.
    s.at("2026-12-03", "10:00");
    s.scan().await?;
    s.at("2026-12-03", "11:15");
    s.press("zhaogang", "contacted").await?;
    s.check_in(&but(&["zhangsan"])).await?;
    // Friday: day 3, the formal notice on every channel; 张三 reads it
    // (where the platform tells) and acknowledges it.
    s.at("2026-12-04", "08:00");
    s.check_in(&but(&["zhangsan"])).await?;
    s.at("2026-12-04", "10:00");
    s.scan().await?;
    s.at("2026-12-04", "20:25");
    s.read_latest("zhangsan").await?;
    s.at("2026-12-04", "20:30");
    s.press("zhangsan", "received").await?;
    if second_monday {
        s.at("2026-12-07", "07:58");
        s.check_in(&but(&["zhangsan"])).await?;
    }
    // He does not return. The deadline ran from the first proof that the
    // notice reached him (his read at 20:25 where the platform tells, else
    // his acknowledgment at 20:30), not from its sending: on Monday at 20:35
    // it has passed, and HR gets the card.
    s.at("2026-12-07", "20:35");
    s.scan().await?;
    Ok(())
}

/// From HR's deadline card to the termination notice: HR starts the
/// self-departure process (the draft goes to the manager and HR), files a
/// photo of the emptied dormitory as evidence, the manager and HR confirm
/// the draft, HR records that the union was told, and the termination
/// notice goes out on every channel; 张三 acknowledges it.
async fn departure(s: &dyn Stage) -> anyhow::Result<()> {
    s.at("2026-12-07", "20:40");
    s.press("wangmin", "start_departure").await?;
    s.at("2026-12-08", "07:58");
    s.check_in(&["wangmin", "zhaogang", "lisi", "wangwu"])
        .await?;
    s.at("2026-12-08", "09:00");
    s.say("wangmin", "#证据 张三 宿舍已搬空，行李已取走")
        .await?;
    s.at("2026-12-08", "09:02");
    s.media("wangmin", EVIDENCE_PHOTO.to_vec(), "image/jpeg", None)
        .await?;
    s.settle().await?;
    s.at("2026-12-08", "10:00");
    s.press("zhaogang", "confirm_manager").await?;
    s.at("2026-12-08", "10:10");
    s.press("wangmin", "confirm_hr").await?;
    s.at("2026-12-08", "10:20");
    s.press("wangmin", "union_notified").await?;
    s.settle().await?;
    s.at("2026-12-08", "20:00");
    s.read_latest(ABSENT).await?;
    s.at("2026-12-08", "20:05");
    s.press(ABSENT, "termination_received").await?;
    s.settle().await?;
    let case = absent_case(s).await?;
    anyhow::ensure!(
        case.and_then(|c| c.resolution).as_deref() == Some("terminated"),
        "the story did not end with the termination: see the timeline (`rollcall demo --json`)"
    );
    Ok(())
}

/// The absent employee's latest case.
async fn absent_case(s: &dyn Stage) -> Result<Option<absence_case::Model>, sea_orm::DbErr> {
    absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(TENANT))
        .filter(absence_case::Column::UserId.eq(ABSENT))
        .order_by_desc(absence_case::Column::Id)
        .one(&s.rt().db.orm)
        .await
}

/// Presses the button for `action` on the latest card `user` received that
/// has it (HR may have a newer card with other buttons).
async fn press(
    sandbox: &SandboxApi,
    phone: &CallbackSender,
    user: &str,
    action: &str,
    t: i64,
) -> anyhow::Result<()> {
    // The buttons carry opaque keys; find the one for `action` as a person
    // finds a button: by its label (rendered from the same template).
    let label = card_label(action);
    let button = |m: &SentMessage| {
        m.body["template_card"]["button_list"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["text"] == label))
            .and_then(|b| b["key"].as_str())
            .map(str::to_owned)
    };
    let (card, key) = sandbox
        .sent()
        .into_iter()
        .rev()
        .filter(|m| m.touser == user && m.msgtype == "template_card")
        .find_map(|m| button(&m).map(|k| (m, k)))
        .with_context(|| format!("{user} has no card with a button {label}"))?;
    let task = card.body["template_card"]["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let code = sandbox.issue_response_code();
    let d = phone.card_button(user, &task, &key, &code, t).await;
    anyhow::ensure!(d.delivered, "the card press was not accepted: {d:?}");
    Ok(())
}

/// The label of an action's button, as the templates render it.
fn card_label(action: &str) -> String {
    let templates =
        crate::outbox::render::Templates::load(None).expect("built-in templates compile");
    let (template, block) = match action {
        "contacted" => ("second_reminder.manager", "button_contacted"),
        "received" => ("formal_notice.employee", "button_received"),
        "start_departure" => ("deadline_passed.hr", "button_start_departure"),
        "confirm_manager" | "confirm_hr" => ("departure", "button_confirm"),
        "union_notified" => ("departure", "button_union_notified"),
        "no_union" => ("departure", "button_no_union"),
        "termination_received" => ("termination_notice.employee", "button_termination_received"),
        "contract_renew" => ("contract.hr", "button_contract_renew"),
        "contract_not_renew" => ("contract.hr", "button_contract_not_renew"),
        "contract_later" => ("contract.hr", "button_contract_later"),
        "risk_seen" => ("risk.hr", "button_risk_seen"),
        a if a.starts_with("leaver_") => {
            return templates
                .render("leaver.hr", json!({}), &[&format!("button_{a}")])
                .map(|r| r.block(&format!("button_{a}")).to_owned())
                .unwrap_or_default();
        }
        other => (
            "first_reminder.employee",
            if other == "arrived" {
                "button_arrived"
            } else if other == "on_leave" {
                "button_on_leave"
            } else {
                "button_explain"
            },
        ),
    };
    templates
        .render(template, json!({}), &[block])
        .map(|r| r.block(block).to_owned())
        .unwrap_or_default()
}

/// How long [`settle`] waits before it reports what is stuck. Generous: it
/// returns as soon as everything is done, and a loaded 2-core machine (a
/// build beside the test suite) can take many times the usual few seconds.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(180);

/// Waits until every inbound event is handled and every outbox row is final.
pub async fn settle(rt: &Runtime) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let unhandled = entity::inbound_event::Entity::find()
            .filter(entity::inbound_event::Column::ProcessedAt.is_null())
            .count(&rt.db.orm)
            .await?;
        let pending = outbox::Entity::find()
            .filter(outbox::Column::Status.is_in(["pending", "sending"]))
            .count(&rt.db.orm)
            .await?;
        if unhandled == 0 && pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut events = Vec::new();
            for e in entity::inbound_event::Entity::find()
                .filter(entity::inbound_event::Column::ProcessedAt.is_null())
                .all(&rt.db.orm)
                .await?
            {
                events.push(format!(
                    "event {} {} from {} attempts={} error={:?}",
                    e.id, e.kind, e.from_user, e.attempts, e.last_error
                ));
            }
            let mut stuck = Vec::new();
            for o in outbox::Entity::find()
                .filter(outbox::Column::Status.is_in(["pending", "sending"]))
                .all(&rt.db.orm)
                .await?
            {
                stuck.push(format!(
                    "{} {} attempts={} error={:?} not_before={} claimed_at={:?}",
                    o.idem_key, o.status, o.attempts, o.error, o.not_before, o.claimed_at
                ));
            }
            anyhow::bail!(
                "still {unhandled} events and {pending} messages pending after {SETTLE_WITHIN:?}: {events:?} {stuck:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message and decision, in order: one JSON object each.
pub async fn timeline(rt: &Runtime) -> anyhow::Result<Vec<Value>> {
    let tz = chrono_tz::Asia::Shanghai;
    let names: std::collections::HashMap<String, String> = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(TENANT))
        .all(&rt.db.orm)
        .await?
        .into_iter()
        .map(|e| (e.user_id, e.name))
        .collect();
    let name = |u: &str| names.get(u).cloned().unwrap_or_else(|| u.to_owned());
    let cases: std::collections::HashMap<i64, String> = absence_case::Entity::find()
        .all(&rt.db.orm)
        .await?
        .into_iter()
        .map(|c| (c.id, c.user_id))
        .collect();
    let mut lines: Vec<(DateTime<Utc>, i64, Value)> = Vec::new();
    for o in outbox::Entity::find()
        .order_by_asc(outbox::Column::Id)
        .all(&rt.db.orm)
        .await?
    {
        let employee = o.case_id.and_then(|c| cases.get(&c)).map(|u| name(u));
        let sent = match &o.receipt_id {
            Some(id) => format!("{} ({id})", o.status),
            None => o.status.clone(),
        };
        let outcome = match o.read_at {
            Some(at) => format!(
                "{sent}, read {}",
                at.with_timezone(&tz).format("%m-%d %H:%M")
            ),
            None => sent,
        };
        lines.push((o.created_at, o.id * 2, json!({
            "at": o.created_at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "employee": employee,
            "case": o.case_id.map(case_no),
            "step": o.step.clone().unwrap_or_else(|| o.idem_key.split(':').next().unwrap_or_default().to_owned()),
            "recipient": name(&o.recipient),
            "channel": o.channel,
            "template": o.template,
            "outcome": outcome,
        })));
    }
    for e in case_event::Entity::find()
        .filter(case_event::Column::Kind.is_in([
            "case_opened",
            "case_resolved",
            "manager_contacted",
            "notice_acknowledged",
            "card_pressed",
            "missed_workday",
            "departure_started",
            "exhibit_filed",
            "departure_confirmed",
            "union_recorded",
            "termination_notice_issued",
            "termination_acknowledged",
            "contract_renew",
            "contract_not_renew",
            "contract_later",
        ]))
        .order_by_asc(case_event::Column::Id)
        .all(&rt.db.orm)
        .await?
    {
        lines.push((e.at, e.id * 2 + 1, json!({
            "at": e.at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "employee": e.user_id.as_deref().map(name),
            "case": e.case_id.map(case_no),
            "step": e.kind,
            "recipient": null,
            "channel": null,
            "template": null,
            // Without an actor: the scan's judgement, or what follows from
            // the last step by itself (the termination notice after the union item).
            "outcome": e.actor.as_deref().map(|a| format!("by {}", name(a))).unwrap_or_else(|| {
                if e.kind == "termination_notice_issued" { "by rollcall, after the last item".into() } else { "by the scan".into() }
            }),
        })));
    }
    // Late check-ins and early check-outs against the person's shift.
    for c in entity::check_in::Entity::find()
        .filter(entity::check_in::Column::MinutesOff.is_not_null())
        .order_by_asc(entity::check_in::Column::Id)
        .all(&rt.db.orm)
        .await?
    {
        let step = if c.direction == "out" {
            "left_early"
        } else {
            "late"
        };
        lines.push((c.checked_at, c.inbound_event_id * 2 + 1, json!({
            "at": c.checked_at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "employee": name(&c.user_id),
            "case": null,
            "step": step,
            "recipient": null,
            "channel": null,
            "template": null,
            "outcome": format!("{} min, shift {}", c.minutes_off.unwrap_or_default(), c.shift.unwrap_or_default()),
        })));
    }
    lines.sort_by_key(|l| (l.0, l.1 % 2 == 0, l.1));
    Ok(lines.into_iter().map(|(_, _, v)| v).collect())
}

/// `rollcall demo`. `db`: where to keep the database (the global `--db`, a
/// new SQLite file); the key files, the package (`demo-package/`) and the
/// fingerprint the employer would publish (`demo.fingerprint`) go beside it.
pub async fn run(args: DemoArgs, db: Option<PathBuf>) -> anyhow::Result<()> {
    let db = match db {
        Some(p) => p,
        None => tempfile::Builder::new()
            .prefix("rollcall-demo-")
            .tempdir()?
            .keep()
            .join("demo.db"),
    };
    let left = Left::beside(&db);
    // An earlier demo's witness would hold a checkpoint this database
    // lacks, and signing would be refused: it goes with its database.
    anyhow::ensure!(
        !matches!(
            db.extension().and_then(|e| e.to_str()),
            Some("key" | "fingerprint" | "witness")
        ),
        "{} would be the name of a key or fingerprint file: give the database another name (demo.db)",
        db.display()
    );
    let journal = |suffix: &str| {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    let (wal, shm) = (journal("-wal"), journal("-shm"));
    for path in [
        &db,
        &wal,
        &shm,
        &left.package,
        &left.fingerprint,
        &left.witness,
        &left.sheet,
    ] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists already: give another --db, or remove what an earlier demo left",
            path.display()
        );
    }
    let key_file = db.with_extension("key");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut run =
        run_whole_story_on(args.platform, &url, &key_file, &left.package, &left.sheet).await?;
    run.db_path = db;
    let exported = run
        .package
        .as_ref()
        .context("the whole story exports a package")?;
    std::fs::write(&left.fingerprint, format!("{}\n", exported.fingerprint))
        .with_context(|| format!("writing {}", left.fingerprint.display()))?;
    let verified = verify_package(exported);
    match print_timeline(&run, args.json, &left, &verified) {
        // `rollcall demo | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => match verified {
            Verified::Failed(out) => anyhow::bail!("the package's verify.py failed:\n{out}"),
            _ => Ok(()),
        },
    }
}

/// What the demo leaves beside its database.
pub struct Left {
    /// The absent employee's package (`demo-package/` beside `demo.db`).
    pub package: PathBuf,
    /// The fingerprint of the evidence key, as the employer publishes it
    /// (`demo.fingerprint`).
    pub fingerprint: PathBuf,
    /// The witness of the checkpoints signed (`demo-evidence.key.witness/`).
    pub witness: PathBuf,
    /// December's attendance sheet, as HR downloaded it
    /// (`demo-attendance-2026-12.xlsx`).
    pub sheet: PathBuf,
}

impl Left {
    pub fn beside(db: &std::path::Path) -> Left {
        let stem = db
            .file_stem()
            .map_or_else(|| "demo".to_owned(), |s| s.to_string_lossy().into_owned());
        // As `Config::with_database_file` names it.
        let mut witness =
            crate::config::evidence_key_beside(&db.with_extension("key")).into_os_string();
        witness.push(".witness");
        Left {
            package: db.with_file_name(format!("{stem}-package")),
            fingerprint: db.with_extension("fingerprint"),
            witness: PathBuf::from(witness),
            sheet: db.with_file_name(format!("{stem}-attendance-2026-12.xlsx")),
        }
    }
}

/// What the package's own verify.py said.
pub enum Verified {
    /// Its output, all checks passed.
    Passed(String),
    /// Its output (and errors): a check failed.
    Failed(String),
    /// There is no `python3` to run it with.
    NoPython,
}

/// Runs the package's verify.py with the published fingerprint, as the other
/// party would (no terminal: the fingerprint is given).
fn verify_package(p: &ExportedPackage) -> Verified {
    let out = std::process::Command::new("python3")
        .arg(p.dir.join("verify.py"))
        .args(["--fingerprint", &p.fingerprint])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Err(_) => Verified::NoPython,
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                Verified::Passed(text)
            } else {
                Verified::Failed(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            }
        }
    }
}

fn print_timeline(
    run: &DemoRun,
    json: bool,
    left: &Left,
    verified: &Verified,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for line in &run.lines {
        if json {
            writeln!(out, "{line}")?;
        } else {
            let s = |k: &str| line[k].as_str().unwrap_or("").to_owned();
            writeln!(
                out,
                "{}  {:<8} {:<10} {:<20} {:<6} {:<6} {}",
                &s("at")[..16].replace('T', " "),
                s("employee"),
                s("case"),
                s("step"),
                s("recipient"),
                s("channel"),
                s("outcome"),
            )?;
        }
    }
    if json {
        return Ok(());
    }
    writeln!(
        out,
        "\n{} messages reached the sandbox in {:.1} s; database: {}",
        run.sent.len(),
        run.elapsed.as_secs_f64(),
        run.db_path.display()
    )?;
    let package = &left.package;
    writeln!(out, "package:       {}", package.display())?;
    writeln!(
        out,
        "report:        {}",
        package.join("report.html").display()
    )?;
    writeln!(out, "sheet:         {}", left.sheet.display())?;
    writeln!(
        out,
        "fingerprint:   {} (in {})",
        run.package.as_ref().map_or("", |p| p.fingerprint.as_str()),
        left.fingerprint.display()
    )?;
    let command = format!(
        "python3 {} --fingerprint \"$(cat {})\"",
        package.join("verify.py").display(),
        left.fingerprint.display()
    );
    match verified {
        Verified::Passed(text) | Verified::Failed(text) => {
            writeln!(out, "verified:      {command}")?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            for l in &lines[lines.len().saturating_sub(3)..] {
                writeln!(out, "  {l}")?;
            }
        }
        Verified::NoPython => writeln!(
            out,
            "verify:        no python3 here; with Python 3 run: {command}"
        )?,
    }
    Ok(())
}
