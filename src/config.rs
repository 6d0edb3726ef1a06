//! Configuration: one TOML file (`--config FILE`, default `rollcall.toml` when
//! present) overridden by `ROLLCALL_*` environment variables. Secrets may be
//! given inline or as `<name>_env = "VAR"` / `<name>_file = "path"`.
//!
//! A bad configuration is refused at start with the key and the reason.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use lettre::message::Mailbox;
use lettre::transport::smtp::client::Certificate;
use serde::Deserialize;

use chrono::NaiveTime;

use crate::attendance::calendar::{HolidayCalendar, HolidayYear, RestDays};
use crate::attendance::shift::Shift;
use crate::cases::Policy;
use crate::platform::aes_key::{AesKeyError, decode_aes_key};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "rollcall.toml";
/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://rollcall.db?mode=rwc";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_REPLAY_WINDOW_SECS: u64 = 600;
/// The replay windows an operator may set (`server.replay_window_secs`):
/// below a minute, ordinary clock drift refuses genuine callbacks; above an
/// hour, a captured request stays replayable for too long.
pub const REPLAY_WINDOW_SECS: std::ops::RangeInclusive<u64> = 60..=3600;

/// A configuration problem, naming the key and why it is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the code that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub delivery: DeliveryConfig,
    pub evidence: EvidenceConfig,
    pub database: DatabaseConfig,
    pub tenants: Vec<TenantConfig>,
    /// Where it came from, for the start-up banner (`None`: built-in defaults).
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The AES-256-GCM key that seals personal data, created (mode 0600) on
    /// first start; `ROLLCALL_DATA_KEY` (base64 of 32 bytes) wins over it.
    pub data_key_file: PathBuf,
    /// Where bot text is read from (files here replace the built-in ones).
    pub templates_dir: PathBuf,
    /// Callbacks whose timestamp is further than this from now are refused.
    pub replay_window_secs: u64,
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its last response) is closed.
    pub header_timeout_secs: u64,
    /// A request body not received in full within this is refused (408).
    pub body_timeout_secs: u64,
    /// A connection whose client takes no bytes of the answer for this long
    /// is closed (a client that never reads would hold its slot for ever).
    pub write_timeout_secs: u64,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// How people reach this server from their phones: the base of the
    /// one-time download links that `/export` sends.
    pub public_url: String,
}

/// The evidence log: its signing key, checkpoints and retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceConfig {
    /// The Ed25519 key that signs checkpoints and packages, created (mode
    /// 0600) on first start; `ROLLCALL_EVIDENCE_KEY` (the text such a file
    /// holds) wins over it, and then no file is read or written.
    pub key_file: PathBuf,
    /// Where the witness of the last signed checkpoints is kept, outside
    /// the database (default: `{key_file}.witness`).
    pub witness_dir: PathBuf,
    /// The key's name, and the first part of each tenant's log origin
    /// (`{name}/{tenant}`): no spaces, no `+`.
    pub name: String,
    /// A checkpoint is signed this often when the log grew.
    pub checkpoint_every_secs: u64,
    /// An RFC 3161 time-stamping authority that stamps each tenant's last
    /// checkpoint (and the one of every export).
    pub tsa_url: Option<String>,
    /// A person's records may be forgotten this many days after their last
    /// case closed.
    pub retention_days: u64,
}

/// How outbound messages are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// The longest wait between two attempts (also caps a platform's
    /// "retry after").
    pub max_backoff_secs: u64,
    /// Transient failures are retried this long, then the message fails
    /// and HR is told.
    pub retry_for_secs: u64,
    /// How long one call to a platform or gateway may take.
    pub timeout_secs: u64,
    /// Chat messages one member may receive per window (WeCom: 30 a
    /// minute; more are dropped without an error).
    pub member_limit: u64,
    pub member_window_secs: u64,
    /// The unit of the schedule on which a notice's read status is asked
    /// for (1, 5, 15, 30, 60, … units after sending; see
    /// `outbox::reads`), on platforms that report reads.
    pub read_check_unit_secs: u64,
    /// Requests the outbox's sender makes at once (each platform's and
    /// member's limits still hold).
    pub sends_at_once: u64,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub timezone: Tz,
    /// The tenant's chat platform: at most one of these is set.
    pub wecom: Option<WecomConfig>,
    pub dingtalk: Option<DingtalkConfig>,
    pub feishu: Option<FeishuConfig>,
    pub attendance: AttendanceConfig,
    /// Work sites a location check-in is matched against.
    pub sites: Vec<Site>,
    /// The ladder in force for new cases.
    pub policy: Policy,
    pub notice: NoticeConfig,
    /// The SMS gateway for formal notices, if any.
    pub sms: Option<SmsConfig>,
    /// The mail server for formal notices, if any.
    pub email: Option<EmailConfig>,
    pub departure: DepartureConfig,
    /// Who receives the tenant's last signed checkpoint by email every day
    /// (`[tenants.evidence] witness_emails`): copies outside rollcall that a
    /// later package must be consistent with.
    pub witness_emails: Vec<String>,
    /// Named shifts (`[[tenants.shifts]]`): a person's own, else their
    /// site's, else `attendance.shift`; without one, no lateness is judged.
    pub shifts: Vec<Shift>,
    /// HR's reminders (`[tenants.hr]`).
    pub hr: HrConfig,
    /// The risk score's formula and threshold (`[tenants.risk]`).
    pub risk: RiskConfig,
}

/// The risk score: each factor counted over the last `window_days` days
/// times its weight, summed; HR gets a card when a person's score reaches
/// `threshold` (once per crossing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskConfig {
    pub window_days: i64,
    /// Per day with a late first check-in.
    pub late: i64,
    /// Per day with an early last check-out.
    pub early: i64,
    /// Per missed workday the scan recorded.
    pub missed_day: i64,
    /// Per open absence case.
    pub open_case: i64,
    /// Per punishment archived with `#奖惩`.
    pub punishment: i64,
    pub threshold: i64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            window_days: 30,
            late: 1,
            early: 1,
            missed_day: 5,
            open_case: 10,
            punishment: 5,
            threshold: 20,
        }
    }
}

/// HR's reminders of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HrConfig {
    /// How many days before a contract ends HR gets the card (default 30).
    pub contract_remind_days: i64,
    /// How many days 稍后提醒 puts the card off (default 7).
    pub contract_snooze_days: i64,
    /// How many days after someone left HR is asked why (default 30).
    pub follow_up_days: i64,
}

impl Default for HrConfig {
    fn default() -> Self {
        Self {
            contract_remind_days: 30,
            contract_snooze_days: 7,
            follow_up_days: 30,
        }
    }
}

impl TenantConfig {
    /// The shift of a person with `own` shift at `site`, if any applies: a
    /// name is checked against `shifts` when the configuration is read, and
    /// an employee's unknown name (from an import) falls back like none.
    pub fn shift_for(&self, own: Option<&str>, site: Option<&str>) -> Option<&Shift> {
        let by_name = |name: &str| self.shifts.iter().find(|s| s.name == name);
        own.and_then(by_name)
            .or_else(|| {
                let site = self.sites.iter().find(|s| Some(s.name.as_str()) == site)?;
                by_name(site.shift.as_deref()?)
            })
            .or_else(|| by_name(self.attendance.shift.as_deref()?))
    }
}

/// How a tenant's events reach rollcall, with the platform's name as the
/// configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsArrive {
    /// At `/callback/{platform}/{tenant}`.
    Callback(&'static str),
    /// Over a connection rollcall opens (DingTalk's Stream mode).
    Connection(&'static str),
}

impl TenantConfig {
    /// The name of this tenant's chat platform as the configuration spells
    /// it (`wecom`, `dingtalk`, `feishu`), or `None` without one.
    pub fn platform(&self) -> Option<&'static str> {
        match self.events_arrive()? {
            EventsArrive::Callback(p) | EventsArrive::Connection(p) => Some(p),
        }
    }

    /// How this tenant's events arrive, or `None` without a chat platform.
    pub fn events_arrive(&self) -> Option<EventsArrive> {
        if self.wecom.is_some() {
            return Some(EventsArrive::Callback("wecom"));
        }
        if self.feishu.is_some() {
            return Some(EventsArrive::Callback("feishu"));
        }
        match self.dingtalk.as_ref()?.mode {
            DingtalkMode::Stream => Some(EventsArrive::Connection("dingtalk")),
            DingtalkMode::Http => Some(EventsArrive::Callback("dingtalk")),
        }
    }
}

/// The self-departure (自离) process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartureConfig {
    /// How long after `#证据 <who> <caption>` the sender's files are filed
    /// on that case.
    pub evidence_window: chrono::Duration,
}

/// How a tenant's attendance is judged.
#[derive(Debug, Clone)]
pub struct AttendanceConfig {
    /// Texts that count as a check-in (a message containing one).
    pub keywords: Vec<String>,
    /// Weekly rest days (an employee's own override wins).
    pub rest_days: RestDays,
    /// How long after midnight (tenant's zone) a day may still change.
    pub grace: chrono::Duration,
    /// When the daily absence scan runs (tenant's zone); `None` (`"off"`):
    /// never by itself, only `rollcall scan`.
    pub scan_at: Option<NaiveTime>,
    /// Statutory holidays and adjusted workdays: shipped years plus overrides.
    pub calendar: HolidayCalendar,
    /// Read the punches of the platform's own attendance app before each
    /// scan (`platform_punches`, default off: the app needs the platform's
    /// permission to read them, and a scan waits while they cannot be read).
    pub platform_punches: bool,
    /// The shift of everyone without their own or their site's.
    pub shift: Option<String>,
    /// Texts that end the day's work (下班打卡): looked for before `keywords`.
    pub checkout_keywords: Vec<String>,
}

/// A work site: a location within `radius_m` of it is on site.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
    pub radius_m: f64,
    /// The shift of the people working here (a name from `shifts`).
    pub shift: Option<String>,
}

/// What the formal notice cites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeConfig {
    /// The rule breached, as the employee handbook words it (the template
    /// names a generic rule when this is not given).
    pub rule: Option<String>,
    /// The rule's version or date, shown next to it.
    pub rule_version: String,
    /// How to reach HR, printed in every formal notice.
    pub hr_contact: String,
}

#[derive(Debug, Clone)]
pub struct WecomConfig {
    pub corp_id: String,
    pub agent_id: i64,
    pub secret: Secret,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    pub api_base: String,
}

/// A DingTalk (钉钉) internal app (`[tenants.dingtalk]`).
#[derive(Debug, Clone)]
pub struct DingtalkConfig {
    /// The app's Client ID (AppKey).
    pub app_key: String,
    /// The app's Client Secret (AppSecret).
    pub app_secret: Secret,
    /// The app's AgentId (work notices).
    pub agent_id: i64,
    /// The robot's code (the app key for an app's own robot, the default).
    pub robot_code: String,
    /// How events reach rollcall.
    pub mode: DingtalkMode,
    /// HTTP mode's event subscription token and AES key (both required
    /// there, unused in Stream mode).
    pub token: Option<Secret>,
    pub aes_key: Option<Secret>,
    /// The interactive card template with rollcall's params (see
    /// `platform::dingtalk::api`); without one, cards go out as markdown.
    pub card_template_id: Option<String>,
    /// How texts (messages without buttons) go out: by the robot (the
    /// default; its read receipts say when) or as work notices (工作通知,
    /// `texts = "work_notice"`; their read receipts say only whether).
    pub work_notices: bool,
    /// oapi.dingtalk.com, or a stand-in.
    pub api_base: String,
    /// api.dingtalk.com (new API and Stream connections), or a stand-in.
    pub api_base_v1: String,
}

/// A Feishu (飞书) or Lark custom app (`[tenants.feishu]`). Lark, the
/// international edition, is the same API at another address
/// (`api_base = "https://open.larksuite.com"`).
#[derive(Debug, Clone)]
pub struct FeishuConfig {
    /// The app's App ID (`cli_…`).
    pub app_id: String,
    pub app_secret: Secret,
    /// The Encrypt Key of the event subscription: with one, events arrive
    /// encrypted and signed, and plain ones are refused; without one, plain
    /// events are taken on the verification token alone.
    pub encrypt_key: Option<Secret>,
    /// The Verification Token of the event subscription.
    pub verification_token: Secret,
    /// Which of Feishu's ids is an employee's `user_id` in rollcall.
    pub id_type: FeishuIdType,
    /// `https://open.feishu.cn`, Lark's `https://open.larksuite.com`, or a
    /// stand-in.
    pub api_base: String,
}

/// Which Feishu id names a person (`id_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeishuIdType {
    /// The tenant's own user id (the admin console's 用户 ID): the default,
    /// the id a CSV import from the directory carries. Reading it needs the
    /// `contact:user.employee_id:readonly` permission.
    UserId,
    /// The app's open id (`ou_…`), which needs no extra permission.
    OpenId,
}

impl FeishuIdType {
    /// The name Feishu's APIs take (`receive_id_type`, `user_id_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            FeishuIdType::UserId => "user_id",
            FeishuIdType::OpenId => "open_id",
        }
    }
}

/// How a DingTalk app delivers events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DingtalkMode {
    /// rollcall dials out to DingTalk's gateway (no public URL needed).
    Stream,
    /// DingTalk POSTs to `/callback/dingtalk/{tenant}`.
    Http,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    evidence: RawEvidence,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_key_file: Option<PathBuf>,
    templates_dir: Option<PathBuf>,
    replay_window_secs: Option<u64>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    write_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    public_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvidence {
    key_file: Option<PathBuf>,
    witness_dir: Option<PathBuf>,
    tsa_url: Option<String>,
    name: Option<String>,
    checkpoint_every_secs: Option<u64>,
    retention_days: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_backoff_secs: Option<u64>,
    retry_for_secs: Option<u64>,
    timeout_secs: Option<u64>,
    member_limit: Option<u64>,
    member_window_secs: Option<u64>,
    read_check_unit_secs: Option<u64>,
    sends_at_once: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: Option<String>,
    name: Option<String>,
    timezone: Option<String>,
    wecom: Option<RawWecom>,
    dingtalk: Option<RawDingtalk>,
    feishu: Option<RawFeishu>,
    attendance: Option<RawAttendance>,
    #[serde(default)]
    sites: Vec<RawSite>,
    policy: Option<Policy>,
    notice: Option<RawNotice>,
    sms: Option<RawSmsConfig>,
    email: Option<RawEmailConfig>,
    departure: Option<RawDeparture>,
    evidence: Option<RawTenantEvidence>,
    #[serde(default)]
    shifts: Vec<RawShift>,
    hr: Option<RawHr>,
    risk: Option<RawRisk>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    window_days: Option<i64>,
    late: Option<i64>,
    early: Option<i64>,
    missed_day: Option<i64>,
    open_case: Option<i64>,
    punishment: Option<i64>,
    threshold: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    name: Option<String>,
    start: Option<String>,
    end: Option<String>,
    grace_minutes: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHr {
    contract_remind_days: Option<i64>,
    contract_snooze_days: Option<i64>,
    follow_up_days: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTenantEvidence {
    #[serde(default)]
    witness_emails: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDeparture {
    evidence_window_minutes: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAttendance {
    keywords: Option<Vec<String>>,
    rest_days: Option<String>,
    grace_minutes: Option<i64>,
    scan_at: Option<String>,
    /// Holiday files (the format of `src/attendance/holidays/`), each replacing its year.
    #[serde(default)]
    holidays: Vec<PathBuf>,
    platform_punches: Option<bool>,
    shift: Option<String>,
    checkout_keywords: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    radius_m: Option<f64>,
    shift: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotice {
    rule: Option<String>,
    rule_version: Option<String>,
    hr_contact: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWecom {
    corp_id: Option<String>,
    agent_id: Option<i64>,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    encoding_aes_key: Option<String>,
    encoding_aes_key_env: Option<String>,
    encoding_aes_key_file: Option<PathBuf>,
    api_base: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDingtalk {
    app_key: Option<String>,
    app_secret: Option<String>,
    app_secret_env: Option<String>,
    app_secret_file: Option<PathBuf>,
    agent_id: Option<i64>,
    robot_code: Option<String>,
    mode: Option<String>,
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    aes_key: Option<String>,
    aes_key_env: Option<String>,
    aes_key_file: Option<PathBuf>,
    card_template_id: Option<String>,
    texts: Option<String>,
    api_base: Option<String>,
    api_base_v1: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeishu {
    app_id: Option<String>,
    app_secret: Option<String>,
    app_secret_env: Option<String>,
    app_secret_file: Option<PathBuf>,
    encrypt_key: Option<String>,
    encrypt_key_env: Option<String>,
    encrypt_key_file: Option<PathBuf>,
    verification_token: Option<String>,
    verification_token_env: Option<String>,
    verification_token_file: Option<PathBuf>,
    id_type: Option<String>,
    api_base: Option<String>,
}

/// Where environment variables come from (the process, or a map in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

impl Config {
    /// Loads `path`, or `rollcall.toml` when present, or the built-in defaults;
    /// then applies the `ROLLCALL_*` environment.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?,
            None => String::new(),
        };
        let mut config = Self::parse(&text, env).map_err(|e| match (e, &path) {
            (ConfigError::Syntax { message, .. }, Some(p)) => ConfigError::Syntax {
                path: p.clone(),
                message,
            },
            (e, _) => e,
        })?;
        config.source = path;
        Ok(config)
    }

    /// Parses TOML text and applies the environment.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        let listen_text = env
            .var("ROLLCALL_LISTEN")
            .or(raw.server.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
            )
        })?;
        let replay_window_secs = match env.var("ROLLCALL_REPLAY_WINDOW_SECS") {
            Some(v) => v.parse().map_err(|_| {
                invalid(
                    "ROLLCALL_REPLAY_WINDOW_SECS",
                    format!("`{v}` is not a number of seconds"),
                )
            })?,
            None => raw
                .server
                .replay_window_secs
                .unwrap_or(DEFAULT_REPLAY_WINDOW_SECS),
        };
        if !REPLAY_WINDOW_SECS.contains(&replay_window_secs) {
            let from_env = env.var("ROLLCALL_REPLAY_WINDOW_SECS").is_some();
            return Err(invalid(
                if from_env {
                    "ROLLCALL_REPLAY_WINDOW_SECS"
                } else {
                    "server.replay_window_secs"
                },
                format!(
                    "{replay_window_secs} is outside {}..={} seconds",
                    REPLAY_WINDOW_SECS.start(),
                    REPLAY_WINDOW_SECS.end()
                ),
            ));
        }
        let url = env
            .var("ROLLCALL_DATABASE_URL")
            .or(raw.database.url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        let mut seen = HashSet::new();
        // One platform app serves one tenant: two tenants on the same app
        // would each take the other's callbacks as their own.
        let mut apps: HashMap<String, String> = HashMap::new();
        let tenants = raw
            .tenants
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let tenant = resolve_tenant(i, t, env)?;
                if !seen.insert(tenant.id.clone()) {
                    return Err(invalid(
                        format!("tenants[{i}].id"),
                        format!("`{}` is used twice", tenant.id),
                    ));
                }
                let app = match (&tenant.wecom, &tenant.dingtalk, &tenant.feishu) {
                    (Some(w), _, _) => Some(("wecom", format!("wecom:{}:{}", w.corp_id, w.agent_id))),
                    (_, Some(d), _) => Some(("dingtalk", format!("dingtalk:{}", d.app_key))),
                    (_, _, Some(f)) => Some(("feishu", format!("feishu:{}", f.app_id))),
                    _ => None,
                };
                if let Some((platform, app)) = app
                    && let Some(other) = apps.insert(app, tenant.id.clone())
                {
                    return Err(invalid(
                        format!("tenants[{i}].{platform}"),
                        format!(
                            "tenant `{}` uses the same {platform} app as tenant `{other}`: one app serves one tenant",
                            tenant.id
                        ),
                    ));
                }
                Ok(tenant)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let public_url = raw
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid(
                "server.public_url".to_owned(),
                format!("`{public_url}` must start with http:// or https://"),
            ));
        }
        let evidence_name = raw.evidence.name.unwrap_or_else(|| "rollcall".to_owned());
        if evidence_name.is_empty() || evidence_name.chars().any(|c| c.is_whitespace() || c == '+')
        {
            return Err(invalid(
                "evidence.name".to_owned(),
                format!("`{evidence_name}` must be non-empty, without spaces or `+`"),
            ));
        }
        if let Some(url) = raw
            .evidence
            .tsa_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            // Plain http is fine: the answer is signed by the authority.
            http_url("evidence.tsa_url", url)?;
        }
        let key_file = raw
            .evidence
            .key_file
            .unwrap_or_else(|| PathBuf::from("rollcall-evidence.key"));
        Ok(Config {
            evidence: EvidenceConfig {
                witness_dir: raw.evidence.witness_dir.unwrap_or_else(|| {
                    let mut beside = key_file.as_os_str().to_owned();
                    beside.push(".witness");
                    PathBuf::from(beside)
                }),
                key_file,
                name: evidence_name,
                checkpoint_every_secs: raw.evidence.checkpoint_every_secs.unwrap_or(600).max(1),
                tsa_url: raw.evidence.tsa_url.filter(|u| !u.trim().is_empty()),
                retention_days: raw.evidence.retention_days.unwrap_or(3 * 365),
            },
            server: ServerConfig {
                listen,
                data_key_file: raw
                    .server
                    .data_key_file
                    .unwrap_or_else(|| PathBuf::from("rollcall.key")),
                templates_dir: raw
                    .server
                    .templates_dir
                    .unwrap_or_else(|| PathBuf::from("bot-templates")),
                replay_window_secs,
                header_timeout_secs: raw.server.header_timeout_secs.unwrap_or(10).max(1),
                body_timeout_secs: raw.server.body_timeout_secs.unwrap_or(30).max(1),
                write_timeout_secs: raw.server.write_timeout_secs.unwrap_or(60).max(1),
                max_connections: raw.server.max_connections.unwrap_or(1024).max(1),
                public_url: public_url.trim_end_matches('/').to_owned(),
            },
            database: DatabaseConfig { url },
            delivery: DeliveryConfig {
                max_backoff_secs: raw.delivery.max_backoff_secs.unwrap_or(300).max(1),
                retry_for_secs: raw.delivery.retry_for_secs.unwrap_or(6 * 3600),
                timeout_secs: raw.delivery.timeout_secs.unwrap_or(10).max(1),
                member_limit: raw.delivery.member_limit.unwrap_or(30).max(1),
                member_window_secs: raw.delivery.member_window_secs.unwrap_or(60).max(1),
                read_check_unit_secs: raw.delivery.read_check_unit_secs.unwrap_or(60).max(1),
                sends_at_once: raw.delivery.sends_at_once.unwrap_or(32).max(1),
            },
            tenants,
            source: None,
        })
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// Works on the SQLite file `db` (`--db`): the database and the key
    /// files beside it, named as `serve` and `rollcall demo --db` name them
    /// (`demo.db`: `demo.key`, `demo-evidence.key`, `demo-evidence.key.witness/`).
    /// Replaces what the configuration said of the three.
    pub fn with_database_file(mut self, db: &Path) -> Config {
        self.database.url = format!("sqlite://{}?mode=rwc", db.display());
        self.server.data_key_file = db.with_extension("key");
        self.evidence.key_file = evidence_key_beside(&self.server.data_key_file);
        let mut witness = self.evidence.key_file.as_os_str().to_owned();
        witness.push(".witness");
        self.evidence.witness_dir = PathBuf::from(witness);
        self
    }
}

/// The evidence key's file beside the data key's: `rollcall.key` →
/// `rollcall-evidence.key` (the defaults), `demo.key` → `demo-evidence.key`.
pub fn evidence_key_beside(data_key_file: &Path) -> PathBuf {
    let stem = data_key_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rollcall".to_owned());
    data_key_file.with_file_name(format!("{stem}-evidence.key"))
}

fn resolve_tenant(i: usize, t: RawTenant, env: &dyn Env) -> Result<TenantConfig, ConfigError> {
    let key = |k: &str| format!("tenants[{i}].{k}");
    let id =
        t.id.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid(key("id"), "is missing"))?;
    if !is_tenant_id(&id) {
        return Err(invalid(
            key("id"),
            format!("`{id}` may only hold ASCII letters, digits, - and _ (it appears in URLs)"),
        ));
    }
    let timezone_text = t.timezone.unwrap_or_else(|| "Asia/Shanghai".to_owned());
    let timezone: Tz = timezone_text.parse().map_err(|_| {
        invalid(
            key("timezone"),
            format!("`{timezone_text}` is not a known IANA time zone"),
        )
    })?;
    let chats = [
        ("wecom", t.wecom.is_some()),
        ("dingtalk", t.dingtalk.is_some()),
        ("feishu", t.feishu.is_some()),
    ];
    let chats: Vec<&str> = chats.iter().filter(|c| c.1).map(|c| c.0).collect();
    if let [first, second, ..] = chats[..] {
        return Err(invalid(
            key(second),
            format!("tenant `{id}` has [tenants.{first}] too: a tenant has one chat platform"),
        ));
    }
    let wecom = t
        .wecom
        .map(|w| resolve_wecom(&key("wecom"), w, env))
        .transpose()?;
    let dingtalk = t
        .dingtalk
        .map(|d| resolve_dingtalk(&key("dingtalk"), d, env))
        .transpose()?;
    let feishu = t
        .feishu
        .map(|f| resolve_feishu(&key("feishu"), f, env))
        .transpose()?;
    let attendance = resolve_attendance(&key("attendance"), t.attendance.unwrap_or_default())?;
    if attendance.platform_punches && chats.is_empty() {
        return Err(invalid(
            key("attendance.platform_punches"),
            "needs a chat platform ([tenants.wecom], [tenants.dingtalk] or [tenants.feishu]) to read the punches from",
        ));
    }
    let sites = t
        .sites
        .into_iter()
        .enumerate()
        .map(|(j, s)| resolve_site(&key(&format!("sites[{j}]")), s))
        .collect::<Result<Vec<_>, _>>()?;
    let shifts = resolve_shifts(&key("shifts"), t.shifts)?;
    let known = |name: &Option<String>| {
        name.as_ref()
            .is_none_or(|n| shifts.iter().any(|s| &s.name == n))
    };
    if !known(&attendance.shift) {
        return Err(invalid(
            key("attendance.shift"),
            "names no shift of [[tenants.shifts]]",
        ));
    }
    for (j, site) in sites.iter().enumerate() {
        if !known(&site.shift) {
            return Err(invalid(
                key(&format!("sites[{j}].shift")),
                "names no shift of [[tenants.shifts]]",
            ));
        }
    }
    let hr = resolve_hr(&key("hr"), t.hr.unwrap_or_default())?;
    let risk = resolve_risk(&key("risk"), t.risk.unwrap_or_default())?;
    let policy = t.policy.unwrap_or_default();
    if policy.rungs.is_empty() {
        return Err(invalid(key("policy.rungs"), "needs at least one rung"));
    }
    let notice = t.notice.unwrap_or_default();
    let notice = NoticeConfig {
        rule: notice.rule.filter(|r| !r.trim().is_empty()),
        rule_version: notice
            .rule_version
            .unwrap_or_else(|| policy.version.clone()),
        hr_contact: notice.hr_contact.unwrap_or_default(),
    };
    let sms = t
        .sms
        .map(|raw| resolve_sms(&key("sms"), raw, env))
        .transpose()?;
    let email = t
        .email
        .map(|raw| resolve_email(&key("email"), raw, env))
        .transpose()?;
    let window = t
        .departure
        .unwrap_or_default()
        .evidence_window_minutes
        .unwrap_or(10);
    if !(1..=24 * 60).contains(&window) {
        return Err(invalid(
            key("departure.evidence_window_minutes"),
            "must be between 1 and 1440",
        ));
    }
    let departure = DepartureConfig {
        evidence_window: chrono::Duration::minutes(window),
    };
    let witness_emails = t.evidence.unwrap_or_default().witness_emails;
    for address in &witness_emails {
        let plausible = address.split('@').count() == 2
            && !address.starts_with('@')
            && !address.ends_with('@')
            && !address.chars().any(char::is_whitespace);
        if !plausible {
            return Err(invalid(
                key("evidence.witness_emails"),
                format!("`{address}` is not an email address"),
            ));
        }
    }
    if !witness_emails.is_empty() && email.is_none() {
        return Err(invalid(
            key("evidence.witness_emails"),
            "needs a mail server: add [tenants.email]",
        ));
    }
    Ok(TenantConfig {
        name: t.name.unwrap_or_else(|| id.clone()),
        id,
        timezone,
        wecom,
        dingtalk,
        feishu,
        attendance,
        sites,
        policy,
        notice,
        sms,
        email,
        departure,
        witness_emails,
        shifts,
        hr,
        risk,
    })
}

fn resolve_risk(prefix: &str, raw: RawRisk) -> Result<RiskConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let d = RiskConfig::default();
    let window_days = raw.window_days.unwrap_or(d.window_days);
    if !(1..=366).contains(&window_days) {
        return Err(invalid(key("window_days"), "must be between 1 and 366"));
    }
    let weight = |name: &str, v: Option<i64>, default: i64| {
        let v = v.unwrap_or(default);
        if (0..=1000).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(key(name), "must be between 0 and 1000"))
        }
    };
    let threshold = raw.threshold.unwrap_or(d.threshold);
    if !(1..=1_000_000).contains(&threshold) {
        return Err(invalid(key("threshold"), "must be between 1 and 1000000"));
    }
    Ok(RiskConfig {
        window_days,
        late: weight("late", raw.late, d.late)?,
        early: weight("early", raw.early, d.early)?,
        missed_day: weight("missed_day", raw.missed_day, d.missed_day)?,
        open_case: weight("open_case", raw.open_case, d.open_case)?,
        punishment: weight("punishment", raw.punishment, d.punishment)?,
        threshold,
    })
}

fn resolve_shifts(prefix: &str, raw: Vec<RawShift>) -> Result<Vec<Shift>, ConfigError> {
    let mut shifts: Vec<Shift> = Vec::with_capacity(raw.len());
    for (j, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("{prefix}[{j}].{k}");
        let name = r
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| invalid(key("name"), "is missing"))?;
        if shifts.iter().any(|s| s.name == name) {
            return Err(invalid(key("name"), format!("`{name}` is named twice")));
        }
        let time = |k: &str, v: Option<String>| {
            let v = v.ok_or_else(|| invalid(key(k), "is missing"))?;
            NaiveTime::parse_from_str(&v, "%H:%M")
                .map_err(|_| invalid(key(k), format!("`{v}` is not a time like 08:30")))
        };
        let start = time("start", r.start)?;
        let end = time("end", r.end)?;
        if start == end {
            return Err(invalid(key("end"), "equals start: a shift needs a length"));
        }
        let grace = r.grace_minutes.unwrap_or(0);
        if !(0..=240).contains(&grace) {
            return Err(invalid(key("grace_minutes"), "must be between 0 and 240"));
        }
        shifts.push(Shift {
            name,
            start,
            end,
            grace: chrono::Duration::minutes(grace),
        });
    }
    Ok(shifts)
}

fn resolve_hr(prefix: &str, raw: RawHr) -> Result<HrConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let d = HrConfig::default();
    let remind = raw.contract_remind_days.unwrap_or(d.contract_remind_days);
    if !(1..=365).contains(&remind) {
        return Err(invalid(
            key("contract_remind_days"),
            "must be between 1 and 365",
        ));
    }
    let snooze = raw.contract_snooze_days.unwrap_or(d.contract_snooze_days);
    if !(1..=90).contains(&snooze) {
        return Err(invalid(
            key("contract_snooze_days"),
            "must be between 1 and 90",
        ));
    }
    let follow_up = raw.follow_up_days.unwrap_or(d.follow_up_days);
    if !(1..=365).contains(&follow_up) {
        return Err(invalid(key("follow_up_days"), "must be between 1 and 365"));
    }
    Ok(HrConfig {
        contract_remind_days: remind,
        contract_snooze_days: snooze,
        follow_up_days: follow_up,
    })
}

/// What a tenant id may be: ASCII letters, digits, `-` and `_` (it appears
/// in URLs and file names).
pub fn is_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The check-in keywords when a tenant names none.
pub const DEFAULT_KEYWORDS: &[&str] = &["打卡", "签到", "到岗", "上班"];

/// The check-out keywords when a tenant names none.
pub const DEFAULT_CHECKOUT_KEYWORDS: &[&str] = &["下班", "签退", "收工"];

fn resolve_attendance(prefix: &str, a: RawAttendance) -> Result<AttendanceConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let keywords = a
        .keywords
        .unwrap_or_else(|| DEFAULT_KEYWORDS.iter().map(|k| (*k).to_owned()).collect());
    if keywords.iter().any(|k| k.trim().is_empty()) {
        return Err(invalid(key("keywords"), "holds an empty keyword"));
    }
    let rest_text = a.rest_days.unwrap_or_else(|| "sat,sun".to_owned());
    let rest_days = RestDays::parse(&rest_text)
        .map_err(|e| invalid(key("rest_days"), format!("`{rest_text}`: {e}")))?;
    let grace_minutes = a.grace_minutes.unwrap_or(120);
    if !(0..=24 * 60).contains(&grace_minutes) {
        return Err(invalid(key("grace_minutes"), "must be between 0 and 1440"));
    }
    let scan_text = a.scan_at.unwrap_or_else(|| "10:00".to_owned());
    let scan_at = match scan_text.as_str() {
        "off" => None,
        text => Some(NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| {
            invalid(
                key("scan_at"),
                format!("`{scan_text}` is not a time like 10:00, nor `off`"),
            )
        })?),
    };
    let mut calendar = HolidayCalendar::shipped()
        .map_err(|e| invalid(key("holidays"), format!("shipped data: {e}")))?;
    for (j, path) in a.holidays.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(
                key(&format!("holidays[{j}]")),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let year = HolidayYear::parse(&path.display().to_string(), &text)
            .map_err(|e| invalid(key(&format!("holidays[{j}]")), e.to_string()))?;
        calendar.set_year(year);
    }
    let checkout_keywords = a.checkout_keywords.unwrap_or_else(|| {
        DEFAULT_CHECKOUT_KEYWORDS
            .iter()
            .map(|k| (*k).to_owned())
            .collect()
    });
    if checkout_keywords.iter().any(|k| k.trim().is_empty()) {
        return Err(invalid(key("checkout_keywords"), "holds an empty keyword"));
    }
    Ok(AttendanceConfig {
        keywords,
        rest_days,
        grace: chrono::Duration::minutes(grace_minutes),
        scan_at,
        calendar,
        platform_punches: a.platform_punches.unwrap_or(false),
        shift: a.shift.filter(|s| !s.trim().is_empty()),
        checkout_keywords,
    })
}

fn resolve_site(prefix: &str, s: RawSite) -> Result<Site, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let name = s
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid(key("name"), "is missing"))?;
    let latitude = s
        .latitude
        .filter(|v| (-90.0..=90.0).contains(v))
        .ok_or_else(|| invalid(key("latitude"), "is missing or not between -90 and 90"))?;
    let longitude = s
        .longitude
        .filter(|v| (-180.0..=180.0).contains(v))
        .ok_or_else(|| invalid(key("longitude"), "is missing or not between -180 and 180"))?;
    let radius_m = s
        .radius_m
        .filter(|v| *v > 0.0)
        .ok_or_else(|| invalid(key("radius_m"), "is missing or not positive"))?;
    Ok(Site {
        name,
        latitude,
        longitude,
        radius_m,
        shift: s.shift.filter(|n| !n.trim().is_empty()),
    })
}

fn resolve_wecom(prefix: &str, w: RawWecom, env: &dyn Env) -> Result<WecomConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let corp_id = w
        .corp_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(key("corp_id"), "is missing"))?;
    let agent_id = w
        .agent_id
        .ok_or_else(|| invalid(key("agent_id"), "is missing"))?;
    let secret = resolve_secret(&key("secret"), w.secret, w.secret_env, w.secret_file, env)?;
    let token = resolve_secret(&key("token"), w.token, w.token_env, w.token_file, env)?;
    let encoding_aes_key = resolve_secret(
        &key("encoding_aes_key"),
        w.encoding_aes_key,
        w.encoding_aes_key_env,
        w.encoding_aes_key_file,
        env,
    )?;
    check_aes_key(&key("encoding_aes_key"), &encoding_aes_key)?;
    let api_base = resolve_base(&key("api_base"), w.api_base, "https://qyapi.weixin.qq.com")?;
    Ok(WecomConfig {
        corp_id,
        agent_id,
        secret,
        token,
        encoding_aes_key,
        api_base,
    })
}

/// An http(s) base URL, without a trailing `/`.
fn resolve_base(key: &str, given: Option<String>, default: &str) -> Result<String, ConfigError> {
    let base = given.unwrap_or_else(|| default.to_owned());
    let parsed = reqwest::Url::parse(&base)
        .map_err(|e| invalid(key, format!("`{base}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(key, "must be an http or https URL"));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// Whether an AES key is the 43 base64 characters WeCom and DingTalk give.
fn check_aes_key(key: &str, value: &Secret) -> Result<(), ConfigError> {
    decode_aes_key(value.expose()).map(|_| ()).map_err(|e| {
        invalid(
            key,
            match e {
                AesKeyError::Length(n) => format!("must be 43 characters, got {n}"),
                AesKeyError::Encoding => {
                    "is not base64 (expected 43 characters of A-Z a-z 0-9 + /)".to_owned()
                }
            },
        )
    })
}

fn resolve_dingtalk(
    prefix: &str,
    d: RawDingtalk,
    env: &dyn Env,
) -> Result<DingtalkConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let app_key = d
        .app_key
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(key("app_key"), "is missing"))?;
    let app_secret = resolve_secret(
        &key("app_secret"),
        d.app_secret,
        d.app_secret_env,
        d.app_secret_file,
        env,
    )?;
    let agent_id = d
        .agent_id
        .ok_or_else(|| invalid(key("agent_id"), "is missing"))?;
    let mode = match d.mode.as_deref().unwrap_or("stream") {
        "stream" => DingtalkMode::Stream,
        "http" => DingtalkMode::Http,
        other => {
            return Err(invalid(
                key("mode"),
                format!("`{other}` is neither \"stream\" nor \"http\""),
            ));
        }
    };
    let given = |v: &Option<String>, e: &Option<String>, f: &Option<PathBuf>| {
        v.is_some() || e.is_some() || f.is_some()
    };
    let (token, aes_key) = match mode {
        DingtalkMode::Http => {
            let token = resolve_secret(&key("token"), d.token, d.token_env, d.token_file, env)
                .map_err(|e| match e {
                    ConfigError::Invalid { key, reason } => {
                        invalid(key, format!("{reason}; HTTP mode needs it"))
                    }
                    e => e,
                })?;
            let aes_key = resolve_secret(
                &key("aes_key"),
                d.aes_key,
                d.aes_key_env,
                d.aes_key_file,
                env,
            )
            .map_err(|e| match e {
                ConfigError::Invalid { key, reason } => {
                    invalid(key, format!("{reason}; HTTP mode needs it"))
                }
                e => e,
            })?;
            check_aes_key(&key("aes_key"), &aes_key)?;
            (Some(token), Some(aes_key))
        }
        DingtalkMode::Stream => {
            // Said rather than ignored: a key that does nothing misleads.
            for (name, set) in [
                ("token", given(&d.token, &d.token_env, &d.token_file)),
                (
                    "aes_key",
                    given(&d.aes_key, &d.aes_key_env, &d.aes_key_file),
                ),
            ] {
                if set {
                    return Err(invalid(
                        key(name),
                        "is only used in HTTP mode (mode = \"http\"); Stream mode needs none",
                    ));
                }
            }
            (None, None)
        }
    };
    let robot_code = d
        .robot_code
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| app_key.clone());
    let card_template_id = d.card_template_id.filter(|s| !s.trim().is_empty());
    let work_notices = match d.texts.as_deref().unwrap_or("robot") {
        "robot" => false,
        "work_notice" => true,
        other => {
            return Err(invalid(
                key("texts"),
                format!("`{other}` is neither \"robot\" nor \"work_notice\""),
            ));
        }
    };
    Ok(DingtalkConfig {
        app_key,
        app_secret,
        agent_id,
        robot_code,
        mode,
        token,
        aes_key,
        card_template_id,
        work_notices,
        api_base: resolve_base(&key("api_base"), d.api_base, "https://oapi.dingtalk.com")?,
        api_base_v1: resolve_base(
            &key("api_base_v1"),
            d.api_base_v1,
            "https://api.dingtalk.com",
        )?,
    })
}

fn resolve_feishu(prefix: &str, f: RawFeishu, env: &dyn Env) -> Result<FeishuConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let app_id = f
        .app_id
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid(key("app_id"), "is missing"))?;
    let app_secret = resolve_secret(
        &key("app_secret"),
        f.app_secret,
        f.app_secret_env,
        f.app_secret_file,
        env,
    )?;
    let verification_token = resolve_secret(
        &key("verification_token"),
        f.verification_token,
        f.verification_token_env,
        f.verification_token_file,
        env,
    )?;
    let encrypt_key = match (&f.encrypt_key, &f.encrypt_key_env, &f.encrypt_key_file) {
        (None, None, None) => None,
        _ => Some(resolve_secret(
            &key("encrypt_key"),
            f.encrypt_key,
            f.encrypt_key_env,
            f.encrypt_key_file,
            env,
        )?),
    };
    let id_type = match f.id_type.as_deref().unwrap_or("user_id") {
        "user_id" => FeishuIdType::UserId,
        "open_id" => FeishuIdType::OpenId,
        other => {
            return Err(invalid(
                key("id_type"),
                format!("`{other}` is neither \"user_id\" nor \"open_id\""),
            ));
        }
    };
    Ok(FeishuConfig {
        app_id,
        app_secret,
        encrypt_key,
        verification_token,
        id_type,
        api_base: resolve_base(&key("api_base"), f.api_base, "https://open.feishu.cn")?,
    })
}

pub(crate) fn resolve_secret(
    key: &str,
    inline: Option<String>,
    env_name: Option<String>,
    file: Option<PathBuf>,
    env: &dyn Env,
) -> Result<Secret, ConfigError> {
    let value = match (inline, env_name, file) {
        (Some(v), None, None) => v,
        (None, Some(var), None) => env.var(&var).ok_or_else(|| {
            invalid(
                format!("{key}_env"),
                format!("environment variable {var} is not set"),
            )
        })?,
        (None, None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| {
                invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
            .trim()
            .to_owned(),
        (None, None, None) => {
            return Err(invalid(
                key,
                format!("is missing (give `{key}`, `{key}_env` or `{key}_file`)"),
            ));
        }
        _ => {
            return Err(invalid(
                key,
                "give only one of the inline value, `_env` and `_file`",
            ));
        }
    };
    if value.is_empty() {
        return Err(invalid(key, "is empty"));
    }
    Ok(Secret(value))
}

// ---------------------------------------------------------------------------
// SMS (the sender: outbox::sms)
// ---------------------------------------------------------------------------

/// Aliyun's SMS endpoint (the same for every region).
pub const ALIYUN_DEFAULT_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com/";
/// The region Aliyun documents for SMS.
pub const ALIYUN_DEFAULT_REGION: &str = "cn-hangzhou";

/// The `[tenants.sms]` table as written; [`resolve_sms`] checks it.
#[derive(Debug, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum RawSmsConfig {
    Aliyun(RawAliyunSms),
    Webhook(RawWebhookSms),
}

/// `provider = "aliyun"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAliyunSms {
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<String>,
    pub access_key_secret_env: Option<String>,
    pub access_key_secret_file: Option<std::path::PathBuf>,
    pub sign_name: Option<String>,
    pub template_code: Option<String>,
    pub endpoint: Option<String>,
    pub region_id: Option<String>,
}

/// `provider = "webhook"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhookSms {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<std::path::PathBuf>,
}

/// A checked SMS configuration (its `Debug` never shows a secret).
#[derive(Debug, Clone)]
pub enum SmsConfig {
    Aliyun(AliyunSmsConfig),
    Webhook(WebhookSmsConfig),
}

#[derive(Debug, Clone)]
pub struct AliyunSmsConfig {
    pub endpoint: String,
    pub region_id: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub sign_name: String,
    pub template_code: String,
}

#[derive(Debug, Clone)]
pub struct WebhookSmsConfig {
    pub url: String,
    pub secret: Secret,
}

fn required(key: String, value: Option<String>) -> Result<String, ConfigError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(key, "is missing"))
}

pub(crate) fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(key, format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(key, "must be an http or https URL"));
    }
    Ok(())
}

/// Whether `host` is this machine (a stand-in or a local relay), where a
/// connection without TLS leaves nothing on the network.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// [`http_url`] for an endpoint that carries personal data or credentials
/// (an SMS gateway: phone numbers, the notice's text, a signing secret):
/// https, unless it is this machine.
pub(crate) fn private_url(key: &str, url: &str) -> Result<(), ConfigError> {
    http_url(key, url)?;
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(key, e.to_string()))?;
    if parsed.scheme() == "http" && !parsed.host_str().is_some_and(is_loopback) {
        return Err(invalid(
            key,
            "must be https (phone numbers and the notice travel over it); http only to this machine",
        ));
    }
    Ok(())
}

/// Checks a `[tenants.sms]` table; errors name the full key under `prefix`
/// (e.g. `tenants[0].sms.access_key_secret`).
pub fn resolve_sms(
    prefix: &str,
    raw: RawSmsConfig,
    env: &dyn Env,
) -> Result<SmsConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    match raw {
        RawSmsConfig::Aliyun(a) => {
            let endpoint = a
                .endpoint
                .unwrap_or_else(|| ALIYUN_DEFAULT_ENDPOINT.to_owned());
            private_url(&key("endpoint"), &endpoint)?;
            let region_id = a
                .region_id
                .unwrap_or_else(|| ALIYUN_DEFAULT_REGION.to_owned());
            if region_id.trim().is_empty() {
                return Err(invalid(key("region_id"), "is empty"));
            }
            let access_key_id = required(key("access_key_id"), a.access_key_id)?;
            let access_key_secret = resolve_secret(
                &key("access_key_secret"),
                a.access_key_secret,
                a.access_key_secret_env,
                a.access_key_secret_file,
                env,
            )?;
            let sign_name = required(key("sign_name"), a.sign_name)?;
            let template_code = required(key("template_code"), a.template_code)?;
            Ok(SmsConfig::Aliyun(AliyunSmsConfig {
                endpoint,
                region_id,
                access_key_id,
                access_key_secret,
                sign_name,
                template_code,
            }))
        }
        RawSmsConfig::Webhook(w) => {
            let url = required(key("url"), w.url)?;
            private_url(&key("url"), &url)?;
            let secret =
                resolve_secret(&key("secret"), w.secret, w.secret_env, w.secret_file, env)?;
            Ok(SmsConfig::Webhook(WebhookSmsConfig { url, secret }))
        }
    }
}

// ---------------------------------------------------------------------------
// Email (the sender: outbox::email)
// ---------------------------------------------------------------------------

/// How long one whole SMTP exchange may take when the config says nothing.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required: a server
    /// that does not offer it is refused (default port 587).
    StartTls,
    /// TLS from the first byte, "SMTPS" (default port 465).
    Tls,
    /// No encryption at all (default port 25): only for a relay on the same
    /// host or a test sink; credentials and notices travel in clear text.
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// The `[tenants.email]` table as written; [`resolve_email`] checks it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmailConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    pub security: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The sender mailbox, e.g. `人事部 <hr@example.com>`.
    pub from: Option<String>,
    /// Seconds one whole SMTP exchange may take (default 30).
    pub timeout_secs: Option<u64>,
    /// A PEM file of extra CA certificates to trust (a company relay with
    /// its own CA), on top of the system's.
    pub ca_file: Option<PathBuf>,
}

/// A checked email configuration (its `Debug` never shows the password).
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: Mailbox,
    pub timeout: Duration,
    /// Extra trusted CA certificates, PEM.
    pub ca_pem: Option<Vec<u8>>,
}

/// Checks a `[tenants.email]` table; errors name the full key under `prefix`
/// (e.g. `tenants[0].email.from`).
pub fn resolve_email(
    prefix: &str,
    raw: RawEmailConfig,
    env: &dyn Env,
) -> Result<EmailConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let host = raw
        .host
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| invalid(key("host"), "is missing"))?;
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') && !host.starts_with('[')
    {
        return Err(invalid(
            key("host"),
            format!("`{host}` is not a host name (give the port in `port`)"),
        ));
    }
    let security = match raw.security.as_deref().unwrap_or("starttls") {
        "starttls" => SmtpSecurity::StartTls,
        "tls" => SmtpSecurity::Tls,
        "none" => SmtpSecurity::None,
        other => {
            return Err(invalid(
                key("security"),
                format!("`{other}` is not one of starttls, tls, none"),
            ));
        }
    };
    let port = match raw.port {
        Some(0) => return Err(invalid(key("port"), "must not be 0")),
        Some(p) => p,
        None => security.default_port(),
    };
    let has_password =
        raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some();
    let (username, password) = match (raw.username, has_password) {
        (None, false) => (None, None),
        (Some(u), true) if !u.trim().is_empty() => {
            let p = resolve_secret(
                &key("password"),
                raw.password,
                raw.password_env,
                raw.password_file,
                env,
            )?;
            (Some(u), Some(p))
        }
        (Some(_), true) => return Err(invalid(key("username"), "is empty")),
        (Some(_), false) => {
            return Err(invalid(
                key("password"),
                "is missing (a username needs `password`, `password_env` or `password_file`)",
            ));
        }
        (None, true) => {
            return Err(invalid(
                key("username"),
                "is missing (a password needs one)",
            ));
        }
    };
    if password.is_some() && security == SmtpSecurity::None && !is_loopback(&host) {
        return Err(invalid(
            key("security"),
            "is \"none\" with a password: it would cross the network in clear; use \"starttls\" or \"tls\" (\"none\" only to this machine)",
        ));
    }
    let from_text = raw
        .from
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| invalid(key("from"), "is missing"))?;
    let from: Mailbox = from_text.parse().map_err(|e| {
        invalid(
            key("from"),
            format!("`{from_text}` is not a mailbox like `人事部 <hr@example.com>`: {e}"),
        )
    })?;
    let timeout = match raw.timeout_secs {
        Some(0) => return Err(invalid(key("timeout_secs"), "must be at least 1")),
        Some(s) => Duration::from_secs(s),
        None => DEFAULT_SMTP_TIMEOUT,
    };
    let ca_pem = raw
        .ca_file
        .map(|path| {
            let pem = std::fs::read(&path).map_err(|e| {
                invalid(
                    key("ca_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Certificate::from_pem(&pem).map_err(|e| {
                invalid(
                    key("ca_file"),
                    format!("{} holds no usable PEM certificate: {e}", path.display()),
                )
            })?;
            Ok::<_, ConfigError>(pem)
        })
        .transpose()?;
    Ok(EmailConfig {
        host,
        port,
        security,
        username,
        password,
        from,
        timeout,
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn tenant(extra: &str) -> String {
        format!(
            "[[tenants]]\nid = \"acme\"\n{extra}\n[tenants.wecom]\ncorp_id = \"ww1\"\nagent_id = 1\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"{KEY}\"\n"
        )
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::parse("", &[]).unwrap();
        assert_eq!(c.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.replay_window_secs, 600);
        assert!(c.tenants.is_empty());
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n[database]\nurl = \"sqlite://a.db\"\n";
        let env = [
            ("ROLLCALL_LISTEN", "127.0.0.1:2"),
            ("ROLLCALL_DATABASE_URL", "postgres://x@h/db"),
        ];
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(c.server.listen.port(), 2);
        assert_eq!(c.database.url, "postgres://x@h/db");
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = format!(
            "[[tenants]]\nid = \"acme\"\n[tenants.wecom]\ncorp_id = \"ww1\"\nagent_id = 1\nsecret_file = \"{}\"\ntoken_env = \"TOK\"\nencoding_aes_key = \"{KEY}\"\n",
            file.display()
        );
        let c = Config::parse(&text, &[("TOK", "from-env")]).unwrap();
        let w = c.tenants[0].wecom.as_ref().unwrap();
        assert_eq!(w.secret.expose(), "from-file");
        assert_eq!(w.token.expose(), "from-env");
        assert!(
            !format!("{c:?}").contains("from-env"),
            "secrets must not appear in Debug"
        );
    }

    #[rstest]
    #[case::missing_id("[[tenants]]\nname = \"x\"\n", "tenants[0].id")]
    #[case::bad_zone(&tenant("timezone = \"Mars/Base\""), "tenants[0].timezone")]
    #[case::short_key(&tenant("").replace(KEY, "abc"), "tenants[0].wecom.encoding_aes_key")]
    #[case::key_not_base64(&tenant("").replace(KEY, &"!".repeat(43)), "tenants[0].wecom.encoding_aes_key")]
    #[case::missing_token(&tenant("").replace("token = \"t\"\n", ""), "tenants[0].wecom.token")]
    #[case::unset_env(&tenant("").replace("token = \"t\"", "token_env = \"NOPE\""), "tenants[0].wecom.token_env")]
    #[case::two_sources(&tenant("").replace("token = \"t\"", "token = \"t\"\ntoken_env = \"X\""), "tenants[0].wecom.token")]
    #[case::duplicate(&format!("{}{}", tenant(""), tenant("")), "tenants[1].id")]
    #[case::same_app(&format!("{}{}", tenant(""), tenant("").replace("id = \"acme\"", "id = \"other\"")), "tenants[1].wecom")]
    #[case::bad_listen("[server]\nlisten = \"nowhere\"\n", "server.listen")]
    #[case::bad_db("[database]\nurl = \"mysql://x\"\n", "database.url")]
    #[case::replay_window_too_short(
        "[server]\nreplay_window_secs = 5\n",
        "server.replay_window_secs"
    )]
    #[case::replay_window_too_long(
        "[server]\nreplay_window_secs = 86400\n",
        "server.replay_window_secs"
    )]
    #[case::bad_api_base(&tenant("").replace("encoding_aes_key", "api_base = \"ftp://x\"\nencoding_aes_key"), "tenants[0].wecom.api_base")]
    #[case::witness_not_an_address(&format!("{}[tenants.evidence]\nwitness_emails = [\"notary at example.cn\"]\n", tenant("")), "tenants[0].evidence.witness_emails")]
    #[case::witness_without_mail(&format!("{}[tenants.evidence]\nwitness_emails = [\"notary@example.cn\"]\n", tenant("")), "tenants[0].evidence.witness_emails")]
    #[case::bad_scan_at(&format!("{}[tenants.attendance]\nscan_at = \"never\"\n", tenant("")), "tenants[0].attendance.scan_at")]
    #[case::no_evidence_window(&format!("{}[tenants.departure]\nevidence_window_minutes = 0\n", tenant("")), "tenants[0].departure.evidence_window_minutes")]
    fn bad_config_names_the_key(#[case] text: &str, #[case] key: &str) {
        let err = Config::parse(text, &[]).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }

    #[rstest]
    #[case::default("", Some("10:00"))]
    #[case::set("scan_at = \"07:30\"\n", Some("07:30"))]
    #[case::off("scan_at = \"off\"\n", None)]
    fn the_daily_scan_runs_at_its_time_or_is_off(
        #[case] attendance: &str,
        #[case] expected: Option<&str>,
    ) {
        let text = format!("{}[tenants.attendance]\n{attendance}", tenant(""));
        let c = Config::parse(&text, &[]).unwrap();
        assert_eq!(
            c.tenants[0].attendance.scan_at,
            expected.map(|t| NaiveTime::parse_from_str(t, "%H:%M").unwrap())
        );
    }

    #[test]
    fn a_replay_window_from_the_environment_is_kept_in_range_too() {
        let err = Config::parse("", &[("ROLLCALL_REPLAY_WINDOW_SECS", "315360000")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ROLLCALL_REPLAY_WINDOW_SECS`"), "{err}");
        let c = Config::parse("", &[("ROLLCALL_REPLAY_WINDOW_SECS", "3600")]).unwrap();
        assert_eq!(c.server.replay_window_secs, 3600);
    }

    fn feishu(extra: &str) -> String {
        format!(
            "[[tenants]]\nid = \"acme\"\n[tenants.feishu]\napp_id = \"cli_a\"\napp_secret = \"s\"\nverification_token = \"v\"\n{extra}"
        )
    }

    #[test]
    fn a_feishu_tenant_takes_callbacks_by_user_id_at_feishu() {
        let c = Config::parse(&feishu(""), &[]).unwrap();
        let f = c.tenants[0].feishu.as_ref().unwrap();
        assert_eq!(f.app_id, "cli_a");
        assert_eq!(f.verification_token.expose(), "v");
        assert!(f.encrypt_key.is_none());
        assert_eq!(f.id_type, FeishuIdType::UserId);
        assert_eq!(f.api_base, "https://open.feishu.cn");
        assert_eq!(
            c.tenants[0].events_arrive(),
            Some(EventsArrive::Callback("feishu"))
        );
        let lark = feishu(
            "encrypt_key = \"k\"\nid_type = \"open_id\"\napi_base = \"https://open.larksuite.com\"\n",
        );
        let c = Config::parse(&lark, &[]).unwrap();
        let f = c.tenants[0].feishu.as_ref().unwrap();
        assert_eq!(f.encrypt_key.as_ref().unwrap().expose(), "k");
        assert_eq!(f.id_type, FeishuIdType::OpenId);
        assert_eq!(f.api_base, "https://open.larksuite.com");
    }

    #[rstest::rstest]
    #[case::no_app_id(&feishu("").replace("app_id = \"cli_a\"\n", ""), "tenants[0].feishu.app_id", "missing")]
    #[case::no_secret(&feishu("").replace("app_secret = \"s\"\n", ""), "tenants[0].feishu.app_secret", "missing")]
    #[case::no_token(&feishu("").replace("verification_token = \"v\"\n", ""), "tenants[0].feishu.verification_token", "missing")]
    #[case::empty_key(&feishu("encrypt_key = \"\"\n"), "tenants[0].feishu.encrypt_key", "empty")]
    #[case::bad_id_type(&feishu("id_type = \"union_id\"\n"), "tenants[0].feishu.id_type", "union_id")]
    #[case::bad_base(&feishu("api_base = \"ftp://x\"\n"), "tenants[0].feishu.api_base", "http or https")]
    #[case::two_platforms(&format!("{}[tenants.dingtalk]\napp_key = \"d\"\napp_secret = \"s\"\nagent_id = 7\n", feishu("")), "tenants[0].feishu", "one chat platform")]
    fn bad_feishu_config_says_what_is_wrong(
        #[case] text: &str,
        #[case] key: &str,
        #[case] reason: &str,
    ) {
        let err = Config::parse(text, &[]).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
        assert!(err.contains(reason), "{err}");
    }

    fn dingtalk(extra: &str) -> String {
        format!(
            "[[tenants]]\nid = \"acme\"\n[tenants.dingtalk]\napp_key = \"dingabc\"\napp_secret = \"s\"\nagent_id = 7\n{extra}"
        )
    }

    #[test]
    fn a_dingtalk_tenant_defaults_to_stream_mode_and_the_apps_robot() {
        let c = Config::parse(&dingtalk(""), &[]).unwrap();
        let d = c.tenants[0].dingtalk.as_ref().unwrap();
        assert!(c.tenants[0].wecom.is_none());
        assert_eq!(d.mode, DingtalkMode::Stream);
        assert_eq!(d.robot_code, "dingabc");
        assert_eq!(d.agent_id, 7);
        assert_eq!(d.app_secret.expose(), "s");
        assert!(d.token.is_none() && d.aes_key.is_none() && d.card_template_id.is_none());
        assert_eq!(d.api_base, "https://oapi.dingtalk.com");
        assert_eq!(d.api_base_v1, "https://api.dingtalk.com");
        assert!(!d.work_notices, "texts go by the robot by default");
        let c2 = Config::parse(&dingtalk("texts = \"work_notice\"\n"), &[]).unwrap();
        assert!(c2.tenants[0].dingtalk.as_ref().unwrap().work_notices);
        assert_eq!(
            c.tenants[0].events_arrive(),
            Some(EventsArrive::Connection("dingtalk"))
        );
        let c = Config::parse(&tenant(""), &[]).unwrap();
        assert_eq!(
            c.tenants[0].events_arrive(),
            Some(EventsArrive::Callback("wecom"))
        );
    }

    #[test]
    fn a_dingtalk_tenant_in_http_mode_has_its_token_and_key() {
        let text = dingtalk(&format!(
            "mode = \"http\"\ntoken_env = \"DT_TOKEN\"\naes_key = \"{KEY}\"\nrobot_code = \"dingrobot\"\ncard_template_id = \"tpl.schema\"\napi_base = \"http://127.0.0.1:9/\"\n"
        ));
        let c = Config::parse(&text, &[("DT_TOKEN", "tok")]).unwrap();
        let d = c.tenants[0].dingtalk.as_ref().unwrap();
        assert_eq!(d.mode, DingtalkMode::Http);
        assert_eq!(d.token.as_ref().unwrap().expose(), "tok");
        assert_eq!(d.aes_key.as_ref().unwrap().expose(), KEY);
        assert_eq!(d.robot_code, "dingrobot");
        assert_eq!(d.card_template_id.as_deref(), Some("tpl.schema"));
        assert_eq!(d.api_base, "http://127.0.0.1:9");
        assert_eq!(
            c.tenants[0].events_arrive(),
            Some(EventsArrive::Callback("dingtalk"))
        );
    }

    #[rstest]
    #[case::two_platforms(&format!("{}[tenants.wecom]\ncorp_id = \"ww1\"\nagent_id = 1\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"{KEY}\"\n", dingtalk("")), "tenants[0].dingtalk", "one chat platform")]
    #[case::no_app_key(&dingtalk("").replace("app_key = \"dingabc\"\n", ""), "tenants[0].dingtalk.app_key", "missing")]
    #[case::no_secret(&dingtalk("").replace("app_secret = \"s\"\n", ""), "tenants[0].dingtalk.app_secret", "missing")]
    #[case::no_agent(&dingtalk("").replace("agent_id = 7\n", ""), "tenants[0].dingtalk.agent_id", "missing")]
    #[case::bad_mode(&dingtalk("mode = \"webhook\"\n"), "tenants[0].dingtalk.mode", "webhook")]
    #[case::bad_texts(&dingtalk("texts = \"sms\"\n"), "tenants[0].dingtalk.texts", "work_notice")]
    #[case::http_without_token(&dingtalk(&format!("mode = \"http\"\naes_key = \"{KEY}\"\n")), "tenants[0].dingtalk.token", "HTTP mode needs it")]
    #[case::http_without_key(&dingtalk("mode = \"http\"\ntoken = \"t\"\n"), "tenants[0].dingtalk.aes_key", "HTTP mode needs it")]
    #[case::http_short_key(&dingtalk("mode = \"http\"\ntoken = \"t\"\naes_key = \"abc\"\n"), "tenants[0].dingtalk.aes_key", "43 characters")]
    #[case::stream_with_token(&dingtalk("token = \"t\"\n"), "tenants[0].dingtalk.token", "only used in HTTP mode")]
    #[case::bad_api_base_v1(&dingtalk("api_base_v1 = \"ftp://x\"\n"), "tenants[0].dingtalk.api_base_v1", "http or https")]
    fn bad_dingtalk_config_names_the_key(
        #[case] text: &str,
        #[case] key: &str,
        #[case] reason: &str,
    ) {
        let err = Config::parse(text, &[]).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
        assert!(err.contains(reason), "{err}");
    }

    const SHIFTS: &str = "[[tenants.shifts]]\nname = \"白班\"\nstart = \"08:00\"\nend = \"17:00\"\ngrace_minutes = 5\n[[tenants.shifts]]\nname = \"夜班\"\nstart = \"22:00\"\nend = \"06:00\"\n";

    #[test]
    fn a_persons_shift_is_their_own_else_their_sites_else_the_tenants() {
        let text = format!(
            "[[tenants]]\nid = \"acme\"\n{SHIFTS}[[tenants.sites]]\nname = \"二号工地\"\nlatitude = 31.0\nlongitude = 121.0\nradius_m = 100\nshift = \"夜班\"\n[tenants.attendance]\nshift = \"白班\"\n"
        );
        let c = Config::parse(&text, &[]).unwrap();
        let t = &c.tenants[0];
        let name =
            |own: Option<&str>, site: Option<&str>| t.shift_for(own, site).map(|s| s.name.as_str());
        assert_eq!(name(None, None), Some("白班"));
        assert_eq!(name(None, Some("二号工地")), Some("夜班"));
        assert_eq!(name(Some("白班"), Some("二号工地")), Some("白班"));
        // A name the configuration lacks (from an import) counts as none.
        assert_eq!(name(Some("中班"), Some("二号工地")), Some("夜班"));
        assert!(t.shifts[1].overnight());
        assert_eq!(t.shifts[0].grace, chrono::Duration::minutes(5));
        // Without shifts, nobody has one.
        let plain = Config::parse("[[tenants]]\nid = \"acme\"\n", &[]).unwrap();
        assert_eq!(plain.tenants[0].shift_for(Some("白班"), None), None);
    }

    #[rstest::rstest]
    #[case::unknown_default(
        "[tenants.attendance]\nshift = \"中班\"\n",
        "tenants[0].attendance.shift"
    )]
    #[case::unknown_site(
        "[[tenants.sites]]\nname = \"a\"\nlatitude = 31.0\nlongitude = 121.0\nradius_m = 1\nshift = \"中班\"\n",
        "tenants[0].sites[0].shift"
    )]
    #[case::twice(
        "[[tenants.shifts]]\nname = \"白班\"\nstart = \"09:00\"\nend = \"18:00\"\n",
        "tenants[0].shifts[2].name"
    )]
    #[case::no_length(
        "[[tenants.shifts]]\nname = \"零\"\nstart = \"09:00\"\nend = \"09:00\"\n",
        "tenants[0].shifts[2].end"
    )]
    #[case::bad_time(
        "[[tenants.shifts]]\nname = \"x\"\nstart = \"9点\"\nend = \"18:00\"\n",
        "tenants[0].shifts[2].start"
    )]
    #[case::long_grace(
        "[[tenants.shifts]]\nname = \"x\"\nstart = \"09:00\"\nend = \"18:00\"\ngrace_minutes = 300\n",
        "tenants[0].shifts[2].grace_minutes"
    )]
    #[case::remind_days(
        "[tenants.hr]\ncontract_remind_days = 0\n",
        "tenants[0].hr.contract_remind_days"
    )]
    #[case::follow_up("[tenants.hr]\nfollow_up_days = 400\n", "tenants[0].hr.follow_up_days")]
    fn shift_and_hr_settings_are_checked(#[case] extra: &str, #[case] key: &str) {
        let text = format!("[[tenants]]\nid = \"acme\"\n{SHIFTS}{extra}");
        let err = Config::parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }

    #[test]
    fn platform_punches_need_a_platform() {
        let text = "[[tenants]]\nid = \"acme\"\n[tenants.attendance]\nplatform_punches = true\n";
        let err = Config::parse(text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`tenants[0].attendance.platform_punches`")
                && err.contains("chat platform"),
            "{err}"
        );
        let c = Config::parse(
            &tenant("[tenants.attendance]\nplatform_punches = true"),
            &[],
        )
        .unwrap();
        assert!(c.tenants[0].attendance.platform_punches);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("[server]\nlisen = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollcall.example.toml");
        let env = [
            ("ALIYUN_ACCESS_KEY_SECRET", "secret"),
            ("SMTP_PASSWORD", "password"),
        ];
        let c = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.tenants.len(), 1);
        let t = &c.tenants[0];
        // The example spells out the defaults: it must say what the code does.
        assert_eq!(t.policy, crate::cases::Policy::default());
        assert_eq!(t.sites.len(), 1);
        assert!(t.sms.is_some() && t.email.is_some());
        assert_eq!(c.delivery.member_limit, 30);
        // The commented alternatives to [tenants.wecom] are valid too.
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, rest) = text.split_once("[tenants.wecom]").unwrap();
        let (_, after) = rest.split_once("\n\n").unwrap();
        for platform in ["dingtalk", "feishu"] {
            let marker = format!("#{platform} ");
            let table: String = after
                .lines()
                .filter_map(|l| l.strip_prefix(&marker))
                .map(|l| format!("{l}\n"))
                .collect();
            let env = [
                ("ALIYUN_ACCESS_KEY_SECRET", "secret"),
                ("SMTP_PASSWORD", "password"),
                ("DINGTALK_APP_SECRET", "s"),
                ("FEISHU_APP_SECRET", "s"),
                ("FEISHU_ENCRYPT_KEY", "k"),
                ("FEISHU_VERIFICATION_TOKEN", "v"),
            ];
            let c = Config::parse(&format!("{head}{table}\n{after}"), &env)
                .unwrap_or_else(|e| panic!("{platform}: {e}"));
            assert_eq!(c.tenants[0].platform(), Some(platform));
        }
    }
}
