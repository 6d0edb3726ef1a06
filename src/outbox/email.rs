//! Email over SMTP (lettre, rustls with ring). One connection per message,
//! with the SMTP steps driven here so that a refusal at `RCPT TO` (this
//! address cannot receive) is told apart from every other refusal.

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use sha2::{Digest, Sha256};

use crate::config::{EmailConfig, SmtpSecurity};
use crate::platform::PlatformError;

/// One email to one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    /// The recipient address (`name@example.com`).
    pub to: String,
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// Our idempotency key; it starts the Message-ID.
    pub out_id: String,
}

/// What the server accepted, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailReceipt {
    /// The Message-ID header we set, with its angle brackets.
    pub message_id: String,
    /// The server's answer to the message data: code and lines
    /// (`250 2.0.0 Ok: queued as 4F2A1`).
    pub server_reply: String,
    /// The RFC 5322 message exactly as sent.
    pub message: Vec<u8>,
}

/// Sends notices by email for one tenant.
pub struct Mailer {
    config: EmailConfig,
    /// Built once; an error here (a broken CA file, no system roots) fails
    /// every send with the reason.
    tls: Result<Option<TlsParameters>, String>,
    hello: ClientId,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Which SMTP step failed, to know what a refusal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Auth,
    MailFrom,
    RcptTo,
    Data,
}

fn classify(step: Step, e: &SmtpError, to: &str) -> PlatformError {
    let what = format!("smtp {step:?}: {e}");
    let code = e.status().map(|c| c.to_string());
    if e.is_transient() || e.is_timeout() || e.is_transport_shutdown() {
        return PlatformError::Retryable(what);
    }
    if e.is_permanent() {
        if step == Step::RcptTo && matches!(code.as_deref(), Some("550" | "551" | "553")) {
            return PlatformError::Undeliverable {
                user: to.to_owned(),
                reason: what,
            };
        }
        return PlatformError::Permanent(what);
    }
    if e.is_client() || e.is_tls() || is_certificate_error(e) {
        // A server without STARTTLS, a certificate we do not trust, a message
        // the server cannot take: retrying will not change it.
        return PlatformError::Permanent(what);
    }
    // Network errors, garbled or cut answers.
    PlatformError::Retryable(what)
}

/// A server certificate we do not trust is reported as a connection error;
/// find it in the error's sources (possibly inside an `io::Error`).
fn is_certificate_error(e: &SmtpError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        let rustls_error = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            rustls_error,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        source = err.source();
    }
    false
}

fn describe(response: &Response) -> String {
    let lines: Vec<&str> = response.message().collect();
    format!("{} {}", response.code(), lines.join("\n"))
}

/// Keeps what is safe in a Message-ID's left part.
fn sanitize_id(out_id: &str) -> String {
    let cleaned: String = out_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "notice".to_owned()
    } else {
        cleaned
    }
}

impl Mailer {
    /// A mailer for this configuration.
    pub fn new(config: EmailConfig) -> Mailer {
        crate::tls::install_crypto_provider();
        let tls = match config.security {
            SmtpSecurity::None => Ok(None),
            SmtpSecurity::StartTls | SmtpSecurity::Tls => {
                let mut builder = TlsParameters::builder(config.host.clone());
                if let Some(pem) = &config.ca_pem {
                    match Certificate::from_pem(pem) {
                        Ok(cert) => builder = builder.add_root_certificate(cert),
                        Err(e) => {
                            return Mailer::broken(config, format!("ca_file: {e}"));
                        }
                    }
                }
                builder
                    .build_rustls()
                    .map(Some)
                    .map_err(|e| format!("TLS set-up failed: {e}"))
            }
        };
        let hello = ClientId::Domain(config.from.email.domain().to_owned());
        Mailer { config, tls, hello }
    }

    fn broken(config: EmailConfig, reason: String) -> Mailer {
        let hello = ClientId::Domain(config.from.email.domain().to_owned());
        Mailer {
            config,
            tls: Err(reason),
            hello,
        }
    }

    /// The Message-ID for a notice: `<{out_id}.{hash}@{domain of from}>`,
    /// where `hash` is the first 16 hex digits of SHA-256(out_id). A pure
    /// function of the out_id, so a notice retried after a crash carries the
    /// same Message-ID and receivers can drop the duplicate; the hash keeps
    /// out_ids apart that [`sanitize_id`] would make equal.
    fn message_id(&self, out_id: &str) -> String {
        let digest = Sha256::digest(out_id.as_bytes());
        format!(
            "<{}.{}@{}>",
            sanitize_id(out_id),
            &hex::encode(digest)[..16],
            self.config.from.email.domain()
        )
    }

    /// Sends one message. The whole exchange is bounded by the configured
    /// timeout.
    pub async fn send(&self, msg: &EmailMessage) -> Result<EmailReceipt, PlatformError> {
        let to: Address = msg
            .to
            .trim()
            .parse()
            .map_err(|e| PlatformError::Undeliverable {
                user: msg.to.clone(),
                reason: format!("not an email address: {e}"),
            })?;
        let message_id = self.message_id(&msg.out_id);
        let message = Message::builder()
            .from(self.config.from.clone())
            .to(Mailbox::new(None, to.clone()))
            .subject(msg.subject.clone())
            .message_id(Some(message_id.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(msg.text.clone())
            .map_err(|e| PlatformError::Permanent(format!("message cannot be built: {e}")))?;
        let bytes = message.formatted();
        let exchange = self.exchange(message.envelope(), &bytes, &msg.to);
        let reply = tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| {
                PlatformError::Retryable(format!(
                    "smtp: no answer within {} s",
                    self.config.timeout.as_secs()
                ))
            })??;
        Ok(EmailReceipt {
            message_id,
            server_reply: describe(&reply),
            message: bytes,
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, PlatformError> {
        let tls = self
            .tls
            .as_ref()
            .map_err(|e| PlatformError::Permanent(e.clone()))?;
        let address = (self.config.host.as_str(), self.config.port);
        let implicit = match self.config.security {
            SmtpSecurity::Tls => tls.clone(),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            address,
            Some(self.config.timeout),
            &self.hello,
            implicit,
            None,
        )
        .await
        .map_err(|e| classify(Step::Connect, &e, ""))?;
        if self.config.security == SmtpSecurity::StartTls {
            let Some(params) = tls.clone() else {
                return Err(PlatformError::Permanent("smtp: no TLS parameters".into()));
            };
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(PlatformError::Permanent(
                    "smtp: the server does not offer STARTTLS (set security = \"tls\" or, for a local relay, \"none\")"
                        .into(),
                ));
            }
            conn.starttls(params, &self.hello)
                .await
                .map_err(|e| classify(Step::Connect, &e, ""))?;
        }
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            let credentials = Credentials::new(user.clone(), password.expose().to_owned());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|e| classify(Step::Auth, &e, ""))?;
        }
        Ok(conn)
    }

    async fn exchange(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        to: &str,
    ) -> Result<Response, PlatformError> {
        let mut conn = self.connect().await?;
        match Self::transact(&mut conn, envelope, bytes, to).await {
            Ok(reply) => {
                // The message is accepted; a failed QUIT changes nothing.
                let _ = conn.quit().await;
                Ok(reply)
            }
            Err(e) => {
                conn.abort().await;
                Err(e)
            }
        }
    }

    async fn transact(
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        bytes: &[u8],
        to: &str,
    ) -> Result<Response, PlatformError> {
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a: &Address| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(PlatformError::Permanent(
                    "smtp: non-ASCII address but the server lacks SMTPUTF8".into(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !bytes.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(PlatformError::Permanent(
                    "smtp: 8-bit message but the server lacks 8BITMIME".into(),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), options))
            .await
            .map_err(|e| classify(Step::MailFrom, &e, to))?;
        for recipient in envelope.to() {
            conn.command(Rcpt::new(recipient.clone(), vec![]))
                .await
                .map_err(|e| classify(Step::RcptTo, &e, to))?;
        }
        conn.command(Data)
            .await
            .map_err(|e| classify(Step::Data, &e, to))?;
        conn.message(bytes)
            .await
            .map_err(|e| classify(Step::Data, &e, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        ConfigError, DEFAULT_SMTP_TIMEOUT, RawEmailConfig, Secret, invalid, resolve_email,
    };
    use rstest::rstest;

    fn parse(text: &str) -> Result<EmailConfig, ConfigError> {
        let raw: RawEmailConfig =
            toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        resolve_email("tenants[0].email", raw, &[("SMTP_PW", "pw-from-env")])
    }

    #[rstest]
    #[case::remote("host = \"smtp.example.com\"\n", false)]
    #[case::loopback("host = \"127.0.0.1\"\n", true)]
    #[case::localhost("host = \"localhost\"\n", true)]
    #[case::ipv6_loopback("host = \"[::1]\"\n", true)]
    fn a_password_never_crosses_the_network_in_clear(#[case] host: &str, #[case] ok: bool) {
        let text = format!(
            "{host}from = \"hr@corp.example\"\nsecurity = \"none\"\nusername = \"hr\"\npassword = \"pw\"\n"
        );
        match parse(&text) {
            Ok(_) => assert!(ok, "{host}"),
            Err(e) => {
                assert!(!ok, "{host}: {e}");
                assert!(e.to_string().contains("security"), "{e}");
            }
        }
        // Without a password, or with TLS, any host.
        let no_password = format!("{host}from = \"hr@corp.example\"\nsecurity = \"none\"\n");
        assert!(parse(&no_password).is_ok());
        let tls = format!(
            "{host}from = \"hr@corp.example\"\nsecurity = \"tls\"\nusername = \"hr\"\npassword = \"pw\"\n"
        );
        assert!(parse(&tls).is_ok());
    }

    #[rstest]
    #[case("", SmtpSecurity::StartTls, 587)]
    #[case("security = \"tls\"\n", SmtpSecurity::Tls, 465)]
    #[case("security = \"none\"\n", SmtpSecurity::None, 25)]
    #[case("security = \"none\"\nport = 2525\n", SmtpSecurity::None, 2525)]
    fn ports_follow_security(
        #[case] extra: &str,
        #[case] security: SmtpSecurity,
        #[case] port: u16,
    ) {
        let c = parse(&format!(
            "host = \"smtp.example.com\"\nfrom = \"人事部 <hr@example.com>\"\n{extra}"
        ))
        .unwrap();
        assert_eq!((c.security, c.port), (security, port));
        assert_eq!(c.from.name.as_deref(), Some("人事部"));
        assert_eq!(c.timeout, DEFAULT_SMTP_TIMEOUT);
    }

    #[test]
    fn password_from_env_is_not_printed() {
        let c = parse(
            "host = \"smtp.example.com\"\nfrom = \"hr@example.com\"\nusername = \"hr\"\npassword_env = \"SMTP_PW\"\n",
        )
        .unwrap();
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("pw-from-env"));
        assert!(!format!("{c:?}").contains("pw-from-env"));
    }

    #[rstest]
    #[case::no_host("from = \"hr@example.com\"\n", "tenants[0].email.host")]
    #[case::host_with_port(
        "host = \"smtp.example.com:25\"\nfrom = \"hr@example.com\"\n",
        "tenants[0].email.host"
    )]
    #[case::no_from("host = \"h\"\n", "tenants[0].email.from")]
    #[case::bad_from(
        "host = \"h\"\nfrom = \"人事部 hr at example\"\n",
        "tenants[0].email.from"
    )]
    #[case::bad_security(
        "host = \"h\"\nfrom = \"hr@example.com\"\nsecurity = \"ssl\"\n",
        "tenants[0].email.security"
    )]
    #[case::user_without_password(
        "host = \"h\"\nfrom = \"hr@example.com\"\nusername = \"u\"\n",
        "tenants[0].email.password"
    )]
    #[case::password_without_user(
        "host = \"h\"\nfrom = \"hr@example.com\"\npassword = \"p\"\n",
        "tenants[0].email.username"
    )]
    #[case::unset_env(
        "host = \"h\"\nfrom = \"hr@example.com\"\nusername = \"u\"\npassword_env = \"NOPE\"\n",
        "tenants[0].email.password_env"
    )]
    #[case::zero_timeout(
        "host = \"h\"\nfrom = \"hr@example.com\"\ntimeout_secs = 0\n",
        "tenants[0].email.timeout_secs"
    )]
    #[case::missing_ca(
        "host = \"h\"\nfrom = \"hr@example.com\"\nca_file = \"/nonexistent/ca.pem\"\n",
        "tenants[0].email.ca_file"
    )]
    fn bad_email_config_names_the_key(#[case] text: &str, #[case] key: &str) {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<RawEmailConfig>("host = \"h\"\nhots = \"x\"\n").is_err());
    }

    #[test]
    fn message_ids_start_with_the_out_id_and_end_with_the_from_domain() {
        let c = parse("host = \"h\"\nfrom = \"人事部 <hr@corp.example>\"\nsecurity = \"none\"\n")
            .unwrap();
        let m = Mailer::new(c);
        let a = m.message_id("case 42/step<1>");
        assert!(a.starts_with("<case-42-step-1-."), "{a}");
        assert!(a.ends_with("@corp.example>"), "{a}");
        // python3: hashlib.sha256(b"case 42/step<1>").hexdigest()[:16]
        assert_eq!(a, "<case-42-step-1-.cdad6124717e8a4b@corp.example>");
        // A retry (even from a fresh mailer, after a crash) gets the same id.
        assert_eq!(a, m.message_id("case 42/step<1>"));
        let again = Mailer::new(
            parse("host = \"h\"\nfrom = \"hr@corp.example\"\nsecurity = \"none\"\n").unwrap(),
        );
        assert_eq!(a, again.message_id("case 42/step<1>"));
        // Another notice gets another id, even when sanitizing makes the
        // readable parts equal.
        assert_ne!(a, m.message_id("case 42/step<2>"));
        let b = m.message_id("case 42/step>1<");
        assert!(b.starts_with("<case-42-step-1-."), "{b}");
        assert_ne!(a, b);
    }
}
