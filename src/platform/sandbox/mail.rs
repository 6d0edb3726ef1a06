//! The sandbox's mail server: plain SMTP (no TLS, no AUTH) on 127.0.0.1,
//! enough for [`Mailer`](crate::outbox::email::Mailer) with
//! `security = "none"`. It records each accepted message and can refuse
//! chosen recipients the way a real server refuses an unknown mailbox.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The longest command line taken (RFC 5321 asks for 512; extensions add).
const MAX_LINE: usize = 4096;
/// The largest message taken, as announced with `SIZE`.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// A connection silent this long is closed (RFC 5321 suggests 5 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const HOST: &str = "sandbox.rollcall.test";

/// A message the sandbox accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRecord {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as received, dot-stuffing undone.
    pub data: Vec<u8>,
    /// The `Message-ID` header's value, with its angle brackets.
    pub message_id: Option<String>,
    /// The id given in the `250 … queued as` answer (`sandbox-N`).
    pub queue_id: String,
}

#[derive(Default)]
struct Inner {
    messages: Vec<MailRecord>,
    /// Lower-cased addresses refused at `RCPT TO`.
    rejected: HashSet<String>,
    next: u64,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    // A panic elsewhere while holding the lock leaves the data usable.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running sandbox SMTP server on 127.0.0.1.
pub struct SandboxMail {
    pub addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl SandboxMail {
    /// Starts on a free port.
    pub async fn start() -> std::io::Result<SandboxMail> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let state = shared.clone();
        let server = tokio::spawn(async move {
            // Sessions live in the set, so stopping the server ends them too.
            let mut sessions = JoinSet::new();
            loop {
                while sessions.try_join_next().is_some() {}
                match listener.accept().await {
                    Ok((socket, _)) => {
                        sessions.spawn(session(socket, state.clone()));
                    }
                    // Out of file descriptors and the like: wait, go on.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(SandboxMail {
            addr,
            shared,
            server,
        })
    }

    /// The `port` to configure (`host = "127.0.0.1"`, `security = "none"`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<MailRecord> {
        lock(&self.shared).messages.clone()
    }

    /// Refuses `addr` (case-insensitive) at `RCPT TO` from now on with
    /// `550 5.1.1`, as a server does for a mailbox that does not exist.
    pub fn reject_recipient(&self, addr: &str) {
        lock(&self.shared)
            .rejected
            .insert(addr.trim().to_lowercase());
    }
}

impl Drop for SandboxMail {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One line, up to and including `\n`; `None` at end of input. A line longer
/// than `max` is an error (the connection is dropped).
async fn read_line<R: AsyncBufRead + Unpin>(
    io: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = tokio::time::timeout(IDLE_TIMEOUT, io.fill_buf())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if available.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        io.consume(taken);
        if line.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
        if done {
            return Ok(Some(line));
        }
    }
}

/// The address in `FROM:<a@b> SIZE=1` / `TO:<a@b>` after the verb, if the
/// argument starts with `prefix` (case-insensitive).
fn path_argument(args: &str, prefix: &str) -> Option<String> {
    let head = args.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = args[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// The `Message-ID` header's value (unfolded, trimmed) from a message.
pub fn message_id_header(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut current: Option<String> = None;
    let mut found: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(value) = current.as_mut() {
                value.push_str(line);
            }
            continue;
        }
        if let Some(value) = current.take() {
            found = Some(value);
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("message-id")
        {
            current = Some(value.to_owned());
        }
    }
    found
        .or(current)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(socket: TcpStream, shared: Shared) {
    // Errors only end this connection.
    let _ = converse(socket, shared).await;
}

async fn converse(socket: TcpStream, shared: Shared) -> std::io::Result<()> {
    let mut io = BufReader::new(socket);
    async fn say(io: &mut BufReader<TcpStream>, reply: &str) -> std::io::Result<()> {
        io.get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
        io.get_mut().flush().await
    }
    say(&mut io, &format!("220 {HOST} ESMTP rollcall sandbox")).await?;
    let mut tx = Transaction::default();
    let mut greeted = false;
    loop {
        let Some(raw) = read_line(&mut io, MAX_LINE).await? else {
            return Ok(());
        };
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                greeted = true;
                tx = Transaction::default();
                let reply = format!(
                    "250-{HOST}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE {MAX_MESSAGE_BYTES}"
                );
                say(&mut io, &reply).await?;
            }
            "HELO" => {
                greeted = true;
                tx = Transaction::default();
                say(&mut io, &format!("250 {HOST}")).await?;
            }
            "MAIL" => {
                if !greeted {
                    say(&mut io, "503 5.5.1 Send EHLO first").await?;
                } else if tx.from.is_some() {
                    say(&mut io, "503 5.5.1 Nested MAIL command").await?;
                } else if let Some(from) = path_argument(args, "FROM:") {
                    tx.from = Some(from);
                    say(&mut io, "250 2.1.0 Ok").await?;
                } else {
                    say(&mut io, "501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                }
            }
            "RCPT" => {
                if tx.from.is_none() {
                    say(&mut io, "503 5.5.1 Need MAIL first").await?;
                } else if let Some(to) = path_argument(args, "TO:").filter(|t| !t.is_empty()) {
                    let rejected = lock(&shared).rejected.contains(&to.to_lowercase());
                    if rejected {
                        let reply =
                            format!("550 5.1.1 <{to}>: Recipient address rejected: User unknown");
                        say(&mut io, &reply).await?;
                    } else {
                        tx.to.push(to);
                        say(&mut io, "250 2.1.5 Ok").await?;
                    }
                } else {
                    say(&mut io, "501 5.5.4 Syntax: RCPT TO:<address>").await?;
                }
            }
            "DATA" => {
                let Some(from) = tx.from.clone().filter(|_| !tx.to.is_empty()) else {
                    say(&mut io, "503 5.5.1 Need RCPT first").await?;
                    continue;
                };
                say(&mut io, "354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = Vec::new();
                let mut too_big = false;
                loop {
                    let Some(raw) = read_line(&mut io, MAX_LINE).await? else {
                        // Cut off mid-message: nothing is delivered.
                        return Ok(());
                    };
                    if raw == b".\r\n" || raw == b".\n" {
                        break;
                    }
                    // Undo dot-stuffing.
                    let unstuffed = raw.strip_prefix(b".").unwrap_or(&raw);
                    if data.len() + unstuffed.len() > MAX_MESSAGE_BYTES {
                        too_big = true;
                    } else {
                        data.extend_from_slice(unstuffed);
                    }
                }
                let to = std::mem::take(&mut tx.to);
                tx = Transaction::default();
                if too_big {
                    say(&mut io, "552 5.3.4 Message size exceeds fixed limit").await?;
                    continue;
                }
                let queue_id = {
                    let mut inner = lock(&shared);
                    inner.next += 1;
                    let queue_id = format!("sandbox-{}", inner.next);
                    inner.messages.push(MailRecord {
                        from,
                        to,
                        message_id: message_id_header(&data),
                        data,
                        queue_id: queue_id.clone(),
                    });
                    queue_id
                };
                say(&mut io, &format!("250 2.0.0 Ok: queued as {queue_id}")).await?;
            }
            "RSET" => {
                tx = Transaction::default();
                say(&mut io, "250 2.0.0 Ok").await?;
            }
            "NOOP" => say(&mut io, "250 2.0.0 Ok").await?,
            "QUIT" => {
                say(&mut io, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            "STARTTLS" | "AUTH" => say(&mut io, "502 5.5.1 Not offered here").await?,
            _ => say(&mut io, "500 5.5.2 Command not recognized").await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_from_mail_and_rcpt_arguments() {
        assert_eq!(
            path_argument("FROM:<hr@corp.example> BODY=8BITMIME", "FROM:").as_deref(),
            Some("hr@corp.example")
        );
        assert_eq!(
            path_argument("from: <hr@corp.example>", "FROM:").as_deref(),
            Some("hr@corp.example")
        );
        assert_eq!(path_argument("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_argument("TO:<a@b>", "FROM:"), None);
        assert_eq!(path_argument("FROM:a@b", "FROM:"), None);
        assert_eq!(path_argument("FROM:<a@b", "FROM:"), None);
        assert_eq!(path_argument("F", "FROM:"), None);
        // A multi-byte character where the prefix would end must not panic.
        assert_eq!(path_argument("FRO张:<a@b>", "FROM:"), None);
    }

    #[test]
    fn message_id_is_found_in_the_header_only() {
        let mail = b"From: a@b\r\nMessage-ID:\r\n <x.1@corp.example>\r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(
            message_id_header(mail).as_deref(),
            Some("<x.1@corp.example>")
        );
        let last = b"Subject: s\r\nmessage-id: <y@z>\r\n";
        assert_eq!(message_id_header(last).as_deref(), Some("<y@z>"));
        assert_eq!(
            message_id_header(b"Subject: s\r\n\r\nMessage-ID: <body@x>\r\n"),
            None
        );
        assert_eq!(message_id_header(b"\xff\xfe:\r\n"), None);
    }
}
