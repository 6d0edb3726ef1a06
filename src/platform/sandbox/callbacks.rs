//! The callback side of the sandbox: plays the WeCom servers that push a
//! member's messages and card clicks to an app's callback URL.
//!
//! What WeCom does, and so what this does: the plaintext XML is encrypted
//! (AES-256-CBC, 16 random bytes ‖ u32 BE length ‖ message ‖ corp id, PKCS#7
//! to 32 bytes), signed (`msg_signature` = SHA-1 of the sorted token,
//! timestamp, nonce and ciphertext) and POSTed as
//! `<xml><ToUserName/><Encrypt/><AgentID/></xml>` to
//! `URL?msg_signature=&timestamp=&nonce=`. "企业微信服务器在五秒内收不到响应会断掉连接，
//! 并且重新发起请求，总共重试三次": without an answer within 5 s the request is
//! abandoned and sent again, three retries at most, the same message (same
//! MsgId, same CreateTime) each time. WeCom documents only the timeout; the
//! sandbox also treats an answer other than HTTP 200 with an empty body,
//! `success` or an encrypted passive reply as a failure and retries it, which
//! is the stricter reading for the app under test.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::platform::wecom::{CryptoError, WecomCrypto};

/// How long WeCom waits for an answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after the first attempt.
pub const DEFAULT_RETRIES: u32 = 3;

/// The high half of a sender's MsgIds: random per process, then one more
/// for each sender, so two senders in one process (a test that starts the
/// app twice on one database) never make the same MsgId, not even by chance.
fn next_id_prefix() -> u64 {
    static BASE: OnceLock<u32> = OnceLock::new();
    static SENDERS: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(rand::random::<u32>);
    let n = SENDERS.fetch_add(1, Ordering::Relaxed);
    // 31 bits above a 32-bit counter: a positive i64 like WeCom's.
    u64::from(base.wrapping_add(n) & 0x7fff_ffff) << 32
}

/// What became of one callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The key rollcall deduplicates on (see `InboundEvent::msg_key`).
    pub msg_key: String,
    /// The MsgId, for messages (events have none).
    pub msg_id: Option<String>,
    /// Attempts made, 1 to retries + 1.
    pub attempts: u32,
    /// The HTTP status of the last answer; `None` if the last attempt got
    /// none (timeout, refused connection).
    pub status: Option<u16>,
    /// The body of the last answer (empty without one).
    pub body: String,
    /// Whether an attempt was answered as WeCom expects.
    pub delivered: bool,
    /// The decrypted XML that was sent.
    pub plaintext: String,
}

/// Pushes signed, encrypted callbacks to one app's callback URL.
pub struct CallbackSender {
    http: reqwest::Client,
    url: String,
    crypto: WecomCrypto,
    corp_id: String,
    agent_id: i64,
    timeout: Duration,
    retries: u32,
    /// MsgId = prefix ‖ counter: unique per sender, unlikely to meet
    /// another sender's.
    id_prefix: u64,
    counter: AtomicU64,
}

impl std::fmt::Debug for CallbackSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSender")
            .field("url", &self.url)
            .field("corp_id", &self.corp_id)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// Wraps text in CDATA, splitting any `]]>` inside it.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

impl CallbackSender {
    /// A sender for the app whose callback URL (without query) is `url`,
    /// with that app's Token, EncodingAESKey, corp id and agent id.
    pub fn new(
        url: &str,
        token: &str,
        encoding_aes_key: &str,
        corp_id: &str,
        agent_id: i64,
    ) -> Result<CallbackSender, CryptoError> {
        // reqwest panics without a rustls provider; do not rely on some
        // other part of the process having installed one first.
        crate::tls::install_crypto_provider();
        Ok(CallbackSender {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            crypto: WecomCrypto::new(token, encoding_aes_key, corp_id)?,
            corp_id: corp_id.to_owned(),
            agent_id,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            id_prefix: next_id_prefix(),
            counter: AtomicU64::new(0),
        })
    }

    /// Waits `timeout` for each answer instead of WeCom's 5 s.
    pub fn with_timeout(mut self, timeout: Duration) -> CallbackSender {
        self.timeout = timeout;
        self
    }

    /// Retries this many times instead of WeCom's 3.
    pub fn with_retries(mut self, retries: u32) -> CallbackSender {
        self.retries = retries;
        self
    }

    /// A fresh MsgId.
    pub fn next_msg_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        (self.id_prefix | (n & 0xffff_ffff)).to_string()
    }

    fn message(&self, from: &str, create_time: i64, msg_type: &str, fields: &str) -> String {
        format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{create_time}</CreateTime><MsgType>{}</MsgType>{fields}<AgentID>{}</AgentID></xml>",
            cdata(&self.corp_id),
            cdata(from),
            cdata(msg_type),
            self.agent_id
        )
    }

    /// A text message.
    pub async fn text(&self, from: &str, content: &str, create_time: i64) -> Delivery {
        let id = self.next_msg_id();
        let fields = format!("<Content>{}</Content><MsgId>{id}</MsgId>", cdata(content));
        let xml = self.message(from, create_time, "text", &fields);
        self.deliver(&xml, format!("msg:{id}"), Some(id)).await
    }

    /// A location message (`Location_X` is the latitude, `Location_Y` the
    /// longitude, as WeCom names them).
    pub async fn location(
        &self,
        from: &str,
        latitude: f64,
        longitude: f64,
        label: &str,
        create_time: i64,
    ) -> Delivery {
        let id = self.next_msg_id();
        let fields = format!(
            "<Location_X>{latitude}</Location_X><Location_Y>{longitude}</Location_Y><Scale>15</Scale><Label>{}</Label><MsgId>{id}</MsgId>",
            cdata(label)
        );
        let xml = self.message(from, create_time, "location", &fields);
        self.deliver(&xml, format!("msg:{id}"), Some(id)).await
    }

    /// An image message; `media_id` is what `media/get` serves.
    pub async fn image(&self, from: &str, media_id: &str, create_time: i64) -> Delivery {
        let id = self.next_msg_id();
        // Never a real host: the app must fetch the picture with media/get.
        let pic_url = format!("https://pic.sandbox.invalid/{media_id}");
        let fields = format!(
            "<PicUrl>{}</PicUrl><MediaId>{}</MediaId><MsgId>{id}</MsgId>",
            cdata(&pic_url),
            cdata(media_id)
        );
        let xml = self.message(from, create_time, "image", &fields);
        self.deliver(&xml, format!("msg:{id}"), Some(id)).await
    }

    /// A file message; `media_id` is what `media/get` serves.
    pub async fn file(
        &self,
        from: &str,
        media_id: &str,
        file_name: &str,
        create_time: i64,
    ) -> Delivery {
        let id = self.next_msg_id();
        let fields = format!(
            "<MediaId>{}</MediaId><FileName>{}</FileName><MsgId>{id}</MsgId>",
            cdata(media_id),
            cdata(file_name)
        );
        let xml = self.message(from, create_time, "file", &fields);
        self.deliver(&xml, format!("msg:{id}"), Some(id)).await
    }

    /// A video message (its thumbnail is another media id).
    pub async fn video(
        &self,
        from: &str,
        media_id: &str,
        thumb_media_id: &str,
        create_time: i64,
    ) -> Delivery {
        let id = self.next_msg_id();
        let fields = format!(
            "<MediaId>{}</MediaId><ThumbMediaId>{}</ThumbMediaId><MsgId>{id}</MsgId>",
            cdata(media_id),
            cdata(thumb_media_id)
        );
        let xml = self.message(from, create_time, "video", &fields);
        self.deliver(&xml, format!("msg:{id}"), Some(id)).await
    }

    /// A voice message in `format` (WeCom: amr).
    pub async fn voice(
        &self,
        from: &str,
        media_id: &str,
        format: &str,
        create_time: i64,
    ) -> Delivery {
        let id = self.next_msg_id();
        let fields = format!(
            "<MediaId>{}</MediaId><Format>{}</Format><MsgId>{id}</MsgId>",
            cdata(media_id),
            cdata(format)
        );
        let xml = self.message(from, create_time, "voice", &fields);
        self.deliver(&xml, format!("msg:{id}"), Some(id)).await
    }

    /// A button press on a `button_interaction` template card
    /// (`template_card_event`); `response_code` is the single-use code for
    /// `update_template_card` that WeCom puts in the callback.
    pub async fn card_button(
        &self,
        from: &str,
        task_id: &str,
        event_key: &str,
        response_code: &str,
        create_time: i64,
    ) -> Delivery {
        let fields = format!(
            "<Event>{}</Event><EventKey>{}</EventKey><TaskId>{}</TaskId><CardType>{}</CardType><ResponseCode>{}</ResponseCode>",
            cdata("template_card_event"),
            cdata(event_key),
            cdata(task_id),
            cdata("button_interaction"),
            cdata(response_code)
        );
        let xml = self.message(from, create_time, "event", &fields);
        let key = format!("event:{from}:{create_time}:template_card_event:{event_key}:{task_id}");
        self.deliver(&xml, key, None).await
    }

    /// Encrypts, signs and POSTs `plaintext`, retrying like WeCom.
    pub async fn deliver(
        &self,
        plaintext: &str,
        msg_key: String,
        msg_id: Option<String>,
    ) -> Delivery {
        let encrypt = self.crypto.encrypt(plaintext);
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce = rand::random::<u32>().to_string();
        let signature = self.crypto.sign(&timestamp, &nonce, &encrypt);
        let body = format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt><AgentID>{}</AgentID></xml>",
            cdata(&self.corp_id),
            cdata(&encrypt),
            cdata(&self.agent_id.to_string())
        );
        let query = [
            ("msg_signature", signature.as_str()),
            ("timestamp", timestamp.as_str()),
            ("nonce", nonce.as_str()),
        ];
        let mut delivery = Delivery {
            msg_key,
            msg_id,
            attempts: 0,
            status: None,
            body: String::new(),
            delivered: false,
            plaintext: plaintext.to_owned(),
        };
        while delivery.attempts <= self.retries {
            delivery.attempts += 1;
            let attempt = self
                .http
                .post(&self.url)
                .query(&query)
                .header(reqwest::header::CONTENT_TYPE, "text/xml")
                .body(body.clone())
                .timeout(self.timeout)
                .send()
                .await;
            let (status, answer) = match attempt {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(text) => (Some(status), text),
                        // The answer did not arrive in full within the timeout.
                        Err(_) => (None, String::new()),
                    }
                }
                Err(_) => (None, String::new()),
            };
            delivery.status = status;
            delivery.delivered = status == Some(200) && accepted(&answer);
            delivery.body = answer;
            if delivery.delivered {
                break;
            }
            tracing::debug!(attempt = delivery.attempts, ?status, key = %delivery.msg_key, "callback not acknowledged");
        }
        delivery
    }
}

/// The answers WeCom takes as handled: nothing, `success`, or a passive reply.
fn accepted(body: &str) -> bool {
    let body = body.trim();
    body.is_empty() || body == "success" || body.starts_with("<xml>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_are_unique_numbers() {
        let s = CallbackSender::new(
            "http://127.0.0.1:9/cb",
            "tok",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "corp",
            1,
        )
        .unwrap();
        let a = s.next_msg_id();
        let b = s.next_msg_id();
        assert_ne!(a, b);
        assert!(a.parse::<i64>().is_ok_and(|n| n > 0), "{a}");
    }

    #[test]
    fn two_senders_never_share_a_msg_id() {
        let sender = || {
            CallbackSender::new(
                "http://127.0.0.1:9/cb",
                "tok",
                "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
                "corp",
                1,
            )
            .unwrap()
        };
        let (a, b) = (sender(), sender());
        let prefix = |id: String| id.parse::<u64>().unwrap() >> 32;
        assert_ne!(prefix(a.next_msg_id()), prefix(b.next_msg_id()));
        // Both start their counters at 1: only the prefix tells them apart.
        assert_eq!(
            a.next_msg_id().parse::<u64>().unwrap() & 0xffff_ffff,
            b.next_msg_id().parse::<u64>().unwrap() & 0xffff_ffff
        );
    }

    #[test]
    fn cdata_survives_its_terminator() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
    }

    #[test]
    fn built_messages_parse_as_wecom_callbacks() {
        let s = CallbackSender::new(
            "http://127.0.0.1:9/cb",
            "tok",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "corp",
            1000002,
        )
        .unwrap();
        let xml = s.message(
            "zhangsan",
            5,
            "text",
            "<Content><![CDATA[打卡 ]]]]><![CDATA[>]]></Content><MsgId>9</MsgId>",
        );
        let ev = crate::platform::wecom::parse_message(&xml).unwrap();
        assert_eq!(ev.text(), Some("打卡 ]]>"));
        let file = s.message(
            "wangmin",
            5,
            "file",
            "<MediaId><![CDATA[m1]]></MediaId><FileName><![CDATA[说明.pdf]]></FileName><MsgId>10</MsgId>",
        );
        let ev = crate::platform::wecom::parse_message(&file).unwrap();
        assert_eq!(ev.kind.name(), "file");
        assert_eq!(ev.attachment(), Some("m1"));
        assert_eq!((ev.sender.as_str(), ev.sent_at), ("wangmin", 5));
        assert!(
            file.contains("<ToUserName><![CDATA[corp]]></ToUserName>")
                && file.contains("<AgentID>1000002</AgentID>"),
            "{file}"
        );
    }
}
