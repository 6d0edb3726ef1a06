//! A load generator: N distinct, correctly signed callbacks with fresh
//! timestamps, sent over HTTP from C connections; reports throughput and
//! latency percentiles. The tenant's platform decides what is sent: WeCom's
//! encrypted text messages, Feishu's text events (encrypted and signed when
//! the app has an Encrypt Key), or for a DingTalk tenant in HTTP mode robot
//! messages signed with the app secret (DingTalk's Stream mode has no URL
//! to load: `benches/stream.rs` measures it). Used for BENCHMARKS.md,
//! never by tests for timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::config::Config;
use crate::platform::wecom::WecomCrypto;

#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// Tenant whose credentials sign the callbacks (WeCom, Feishu, or
    /// DingTalk in HTTP mode).
    #[arg(long)]
    pub tenant: String,
    /// Base URL of the server (default: http://<server.listen>).
    #[arg(long)]
    pub url: Option<String>,
    /// Number of distinct callbacks to send.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub requests: usize,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Target rate in callbacks per second (default: as fast as possible).
    /// Latency is then measured from each callback's scheduled send time.
    #[arg(long)]
    pub rate: Option<f64>,
}

/// One signed callback ready to send.
pub struct SignedCallback {
    pub query: String,
    pub body: String,
    /// Headers that carry the signature (DingTalk's robot messages).
    pub headers: Vec<(&'static str, String)>,
}

/// A DingTalk robot text message of about 1 KB, signed with `app_secret`
/// in the `timestamp` / `sign` headers, as DingTalk would POST it.
pub fn robot_callback(
    app_secret: &str,
    robot_code: &str,
    msg_id: u64,
    from_user: &str,
    content: &str,
    now_ms: i64,
) -> SignedCallback {
    let body = serde_json::json!({
        "msgtype": "text",
        "text": { "content": content },
        "msgId": format!("msg{msg_id:x}"),
        "createAt": now_ms,
        "conversationType": "1",
        "conversationId": format!("cid{from_user}"),
        "senderId": format!("${from_user}$"),
        "senderNick": from_user,
        "senderStaffId": from_user,
        "chatbotUserId": format!("${robot_code}$"),
        "robotCode": robot_code,
        "isInAtList": true,
    })
    .to_string();
    let timestamp = now_ms.to_string();
    let sign = crate::platform::dingtalk::callbacks::robot_sign(app_secret, &timestamp);
    SignedCallback {
        query: String::new(),
        body,
        headers: vec![("timestamp", timestamp), ("sign", sign)],
    }
}

/// A Feishu `im.message.receive_v1` text event of about 1 KB from
/// `from_user` (their user id), encrypted and signed when the app has an
/// Encrypt Key (`crypto`), with the app's verification token.
pub fn feishu_callback(
    crypto: Option<&crate::platform::feishu::crypto::FeishuCrypto>,
    verification_token: &str,
    msg_id: u64,
    from_user: &str,
    content: &str,
    now: i64,
) -> SignedCallback {
    let ms = (now * 1000).to_string();
    let plaintext = serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": format!("ev{msg_id:x}"),
            "event_type": "im.message.receive_v1",
            "create_time": ms,
            "token": verification_token,
            "app_id": "cli_loadgen",
            "tenant_key": "loadgen",
        },
        "event": {
            "sender": { "sender_id": { "user_id": from_user, "open_id": format!("ou_{from_user}") }, "sender_type": "user" },
            "message": {
                "message_id": format!("om_{msg_id:x}"),
                "create_time": ms,
                "chat_type": "p2p",
                "message_type": "text",
                "content": serde_json::json!({ "text": content }).to_string(),
            },
        },
    })
    .to_string();
    let Some(crypto) = crypto else {
        return SignedCallback {
            query: String::new(),
            body: plaintext,
            headers: Vec::new(),
        };
    };
    let (headers, body) = crypto.seal(&plaintext, &now.to_string(), &format!("{msg_id:x}"));
    SignedCallback {
        query: String::new(),
        body: String::from_utf8(body).expect("JSON is UTF-8"),
        headers,
    }
}

/// A text callback of about 1 KB, as WeCom would send it to app
/// `agent_id`.
#[allow(clippy::too_many_arguments)]
pub fn text_callback(
    crypto: &WecomCrypto,
    corp_id: &str,
    agent_id: i64,
    msg_id: u64,
    from_user: &str,
    content: &str,
    now: i64,
) -> SignedCallback {
    let plaintext = format!(
        "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[{from_user}]]></FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId><AgentID>{agent_id}</AgentID></xml>"
    );
    seal(crypto, corp_id, agent_id, &plaintext, now, msg_id)
}

/// Encrypts and signs a plaintext into a POST callback.
pub fn seal(
    crypto: &WecomCrypto,
    corp_id: &str,
    agent_id: i64,
    plaintext: &str,
    now: i64,
    nonce: u64,
) -> SignedCallback {
    let encrypt = crypto.encrypt(plaintext);
    let timestamp = now.to_string();
    let nonce = nonce.to_string();
    let sig = crypto.sign(&timestamp, &nonce, &encrypt);
    SignedCallback {
        query: format!("msg_signature={sig}&timestamp={timestamp}&nonce={nonce}"),
        body: format!(
            "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{agent_id}]]></AgentID></xml>"
        ),
        headers: Vec::new(),
    }
}

/// Runs the load and prints a report.
pub async fn run(config: &Config, args: LoadgenArgs) -> anyhow::Result<()> {
    let tenant = config
        .tenant(&args.tenant)
        .with_context(|| format!("no tenant `{}`", args.tenant))?;
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    let made = Instant::now();
    let now = chrono::Utc::now();
    let run_id = u64::from(rand::random::<u32>()) << 24;
    // Padding brings the callback to about 1 KB, a realistic size.
    let padding = "工地签到 ".repeat(40);
    let user = |i: usize| format!("user{:05}", i % 5000);
    let (platform, answer, callbacks): (&str, &str, Vec<SignedCallback>) = if let Some(wecom) =
        &tenant.wecom
    {
        let crypto = WecomCrypto::new(
            wecom.token.expose(),
            wecom.encoding_aes_key.expose(),
            &wecom.corp_id,
        )?;
        let made = (0..args.requests).map(|i| {
            text_callback(
                &crypto,
                &wecom.corp_id,
                wecom.agent_id,
                run_id + i as u64,
                &user(i),
                &format!("打卡 {padding}"),
                now.timestamp(),
            )
        });
        ("wecom", "success", made.collect())
    } else if let Some(d) = tenant
        .dingtalk
        .as_ref()
        .filter(|d| d.mode == crate::config::DingtalkMode::Http)
    {
        let made = (0..args.requests).map(|i| {
            robot_callback(
                d.app_secret.expose(),
                &d.robot_code,
                run_id + i as u64,
                &user(i),
                &format!("打卡 {padding}"),
                now.timestamp_millis(),
            )
        });
        ("dingtalk", "{}", made.collect())
    } else if let Some(f) = &tenant.feishu {
        let crypto = f
            .encrypt_key
            .as_ref()
            .map(|k| crate::platform::feishu::crypto::FeishuCrypto::new(k.expose()));
        let made = (0..args.requests).map(|i| {
            feishu_callback(
                crypto.as_ref(),
                f.verification_token.expose(),
                run_id + i as u64,
                &user(i),
                &format!("打卡 {padding}"),
                now.timestamp(),
            )
        });
        ("feishu", "{}", made.collect())
    } else {
        anyhow::bail!(
            "tenant `{}` has no [tenants.wecom], [tenants.feishu] or [tenants.dingtalk] in HTTP mode: nothing to load over HTTP",
            tenant.id
        );
    };
    let url = format!(
        "{}/callback/{platform}/{}",
        base.trim_end_matches('/'),
        tenant.id
    );
    eprintln!(
        "made {} signed callbacks ({} bytes each) in {:.2?}",
        callbacks.len(),
        callbacks.first().map_or(0, |c| c.body.len()),
        made.elapsed()
    );

    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let callbacks = Arc::new(callbacks);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections.max(1) {
        let (client, callbacks, next, url) =
            (client.clone(), callbacks.clone(), next.clone(), url.clone());
        let rate = args.rate;
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(cb) = callbacks.get(i) else { break };
                let scheduled = match rate {
                    Some(r) => {
                        let at = start + Duration::from_secs_f64(i as f64 / r);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let mut request = client
                    .post(format!("{url}?{}", cb.query))
                    .body(cb.body.clone());
                for (name, value) in &cb.headers {
                    request = request.header(*name, value);
                }
                let ok = request
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success());
                let ok = match ok {
                    Some(r) => r.text().await.is_ok_and(|t| t == answer),
                    None => false,
                };
                if !ok {
                    errors += 1;
                }
                let micros = scheduled.elapsed().as_micros().max(1) as u64;
                hist.saturating_record(micros);
            }
            (hist, errors)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (h, e) = done?;
        hist.add(&h)?;
        errors += e;
    }
    let elapsed = start.elapsed();
    let n = callbacks.len();
    println!("url          {url}");
    println!("callbacks    {n} ({errors} failed)");
    println!("connections  {}", args.connections);
    if let Some(r) = args.rate {
        println!("target rate  {r:.0}/s");
    }
    println!("elapsed      {:.3} s", elapsed.as_secs_f64());
    println!(
        "throughput   {:.0} callbacks/s",
        n as f64 / elapsed.as_secs_f64()
    );
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    anyhow::ensure!(
        errors == 0,
        "{errors} callbacks were not answered {answer:?}"
    );
    Ok(())
}
