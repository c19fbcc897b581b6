//! SMTP with lettre's async connection on sockets we open ourselves, so `TCP_NODELAY` is set.
//! lettre 0.11.23 never sets it, and each message then waits for the peer's delayed ACK
//! (tens of messages per second per connection instead of thousands: BENCHMARKS.md).
//! STARTTLS, implicit TLS and AUTH work on this path. Every send is bounded by a timeout
//! (lettre's own covers only connecting). Idle connections are kept for reuse. A connection
//! that saw an error is dropped.
//!
//! Failures are classified by phase. Before the message body is handed over, nothing was
//! delivered: the failure is transient or permanent by its reply code. After it (connection
//! cut, timeout, no reply to the final dot), the server may or may not have the message
//! (RFC 1047), so the outcome is `Unknown`.

use super::{Accepted, FailureClass, Gate, SendError};
use super::{SmtpSettings, TlsMode};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use secrecy::{ExposeSecret, SecretString};
// `AsyncNetworkStream` is public but deprecated ("not meant to be made public"); it is the
// only way to run lettre's TLS upgrade on a socket we opened (implicit TLS with NODELAY).
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

pub struct SmtpMailer {
    /// Where and how to connect.
    settings: SmtpSettings,
    /// The AUTH password (with `settings.username`).
    password: Option<SecretString>,
    /// TLS parameters (server name, trusted roots), built once.
    tls: Option<TlsParameters>,
    /// Our EHLO name.
    hello: ClientId,
    /// Connections ready for reuse.
    idle: Mutex<Vec<Session>>,
    /// Bounds parallel sessions to `connections`.
    sessions: Semaphore,
}

impl SmtpMailer {
    pub fn new(s: &SmtpSettings, password: Option<SecretString>) -> anyhow::Result<Self> {
        let tls = match s.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Tls => {
                let name = s.tls_name.clone().unwrap_or_else(|| s.host.clone());
                let mut builder = TlsParameters::builder(name);
                if let Some(ca) = &s.ca_file {
                    let pem =
                        std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read ca_file {}: {e}", ca.display()))?;
                    builder = builder.add_root_certificate(Certificate::from_pem(&pem)?);
                }
                Some(builder.build_rustls()?)
            }
        };
        // lettre's default: the host name (hostname crate), or an address literal.
        let hello = ClientId::default();
        Ok(Self {
            settings: s.clone(),
            password,
            tls,
            hello,
            idle: Mutex::new(Vec::new()),
            sessions: Semaphore::new(s.connections as usize),
        })
    }

    pub fn sessions(&self) -> usize {
        self.settings.connections as usize
    }

    pub fn describe(&self) -> String {
        format!(
            "smtp {}:{} ({:?}, {} sessions)",
            self.settings.host, self.settings.port, self.settings.tls, self.settings.connections
        )
    }

    async fn connect(&self) -> Result<Session, SendError> {
        let s = &self.settings;
        let io = |e: std::io::Error| SendError {
            class: FailureClass::Transient,
            detail: format!("cannot connect to {}:{}: {e}", s.host, s.port),
        };
        let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port)).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        self.handshake(tcp).await.map_err(|e| classify(&e, false, &s.quota_patterns))
    }

    /// Greeting, TLS and AUTH on an open socket.
    #[allow(deprecated)]
    async fn handshake(&self, tcp: tokio::net::TcpStream) -> Result<Session, lettre::transport::smtp::Error> {
        let s = &self.settings;
        let mut conn = match (s.tls, &self.tls) {
            (TlsMode::Tls, Some(params)) => {
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream.upgrade_tls(params.clone()).await?;
                AsyncSmtpConnection::connect_with_transport(Box::new(TlsStream(stream.compat())), &self.hello).await?
            }
            (TlsMode::Starttls, Some(params)) => {
                let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
                // Refuses (an error) when the server does not offer STARTTLS: never fall back to plain text.
                conn.starttls(params.clone(), &self.hello).await?;
                conn
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?,
        };
        // lettre's `ServerInfo` keeps only the extensions lettre uses, and PIPELINING is not
        // one: ask again (before AUTH, which a new EHLO could reset) and read the reply ourselves.
        let ehlo = conn.command(Ehlo::new(self.hello.clone())).await?;
        let pipelining = ehlo.message().any(|line| {
            line.split_whitespace().next().is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        });
        if let (Some(user), Some(pass)) = (&s.username, &self.password) {
            let credentials = Credentials::new(user.clone(), pass.expose_secret().to_string());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await?;
        }
        Ok(Session { conn, pipelining })
    }

    /// One transaction on `conn`: the envelope, then — once `go` says yes — the content.
    /// With [`Gate::Data`], `DATA` itself waits for `go`; with [`Gate::Content`] (the row is
    /// already durably `sending`), `DATA` is issued at once and only the content waits.
    /// `body_sent` turns true just before the content goes out.
    async fn transact(
        session: &mut Session,
        message: &lettre::Message,
        go: impl std::future::Future<Output = bool>,
        gate: Gate,
        body_sent: &AtomicBool,
    ) -> Result<lettre::transport::smtp::response::Response, TxError> {
        let envelope = message.envelope();
        let bytes = message.formatted();
        let mut params = Vec::new();
        let conn = &mut session.conn;
        if !bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(envelope.from().cloned(), params);
        let rcpts: Vec<Rcpt> = envelope.to().iter().map(|to| Rcpt::new(to.clone(), vec![])).collect();
        // `DATA` now too, when it need not wait for `go`.
        let data_now = gate == Gate::Content;
        if session.pipelining {
            // RFC 2920: the envelope (and `DATA`, which may end a group) in one write, then the
            // replies in order. Any refusal fails the transaction and the connection is dropped,
            // so replies still outstanding need no reading.
            let mut group = mail.to_string();
            rcpts.iter().for_each(|r| group.push_str(&r.to_string()));
            if data_now {
                group.push_str(&Data.to_string());
            }
            conn.command(group).await?;
            for _ in 0..rcpts.len() + usize::from(data_now) {
                conn.read_response().await?;
            }
        } else {
            conn.command(mail).await?;
            for rcpt in rcpts {
                conn.command(rcpt).await?;
            }
            if data_now {
                conn.command(Data).await?;
            }
        }
        if data_now {
            if !go.await {
                // Mid-DATA nothing can be reset: the caller drops the connection without the
                // final dot, so the server discards what it has (RFC 5321 §4.1.1.4).
                return Err(TxError::Abandoned);
            }
        } else {
            if !go.await {
                // Nothing was delivered; RSET keeps the session usable for the next message.
                conn.command(Rset).await?;
                return Err(TxError::Withdrawn);
            }
            conn.command(Data).await?;
        }
        body_sent.store(true, Ordering::SeqCst);
        // Content and final dot in one write (lettre writes them separately): one segment
        // and one wake-up of the server per message instead of two. lettre formats text, so
        // the content is UTF-8; anything else goes through lettre's own writer.
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(conn.command(Content(text)).await?),
            Err(_) => Ok(conn.message(&bytes).await?),
        }
    }

    pub async fn send(
        &self,
        message: &lettre::Message,
        go: impl std::future::Future<Output = bool>,
        gate: Gate,
    ) -> Result<Accepted, SendError> {
        let _session = self
            .sessions
            .acquire()
            .await
            .map_err(|_| SendError { class: FailureClass::Transient, detail: "mailer closed".into() })?;
        let body_sent = AtomicBool::new(false);
        let attempt = async {
            let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut conn = match reused {
                Some(c) if !c.conn.has_broken() => c,
                _ => self.connect().await?,
            };
            match Self::transact(&mut conn, message, go, gate, &body_sent).await {
                Ok(resp) => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                    Ok(resp)
                }
                Err(TxError::Withdrawn) => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                    Err(SendError::withdrawn())
                }
                // Dropped without QUIT: mid-DATA a QUIT would be read as content.
                Err(TxError::Abandoned) => Err(SendError::withdrawn()),
                Err(TxError::Smtp(e)) => {
                    // A rejected transaction leaves the session usable after RSET; a cut one does not.
                    // Simplest correct choice: drop the connection either way.
                    if !conn.conn.has_broken() {
                        conn.conn.abort().await;
                    }
                    Err(classify(&e, body_sent.load(Ordering::SeqCst), &self.settings.quota_patterns))
                }
            }
        };
        match tokio::time::timeout(self.settings.timeout, attempt).await {
            Ok(Ok(resp)) => {
                Ok(Accepted { reply: format!("{} {}", resp.code(), resp.message().collect::<Vec<_>>().join(" ")) })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError {
                class: if body_sent.load(Ordering::SeqCst) { FailureClass::Unknown } else { FailureClass::Transient },
                detail: format!("no reply within {:?}", self.settings.timeout),
            }),
        }
    }
}

/// An open SMTP connection and what its server offers beyond what lettre tracks.
struct Session {
    /// The connection (greeted, TLS and AUTH done).
    conn: AsyncSmtpConnection,
    /// The server announced PIPELINING (RFC 2920): the envelope goes out in one write.
    pipelining: bool,
}

/// How one transaction ended without a reply to the content.
enum TxError {
    /// The server or the connection failed.
    Smtp(lettre::transport::smtp::Error),
    /// The go-ahead said no; the envelope was reset.
    Withdrawn,
    /// The go-ahead said no after `DATA`; the connection must be dropped without the final dot.
    Abandoned,
}

/// A message's content as the `DATA` phase sends it: dot-stuffed (RFC 5321 §4.5.2, as lettre's
/// own codec does it) and followed by the final dot, written by `AsyncSmtpConnection::command`
/// in one piece.
struct Content<'a>(&'a str);

impl std::fmt::Display for Content<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&dot_stuff(self.0))?;
        f.write_str("\r\n.\r\n")
    }
}

/// Doubles a dot that starts a line (after CRLF, or at the very start).
fn dot_stuff(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.starts_with('.') && !text.contains("\r\n.") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    if text.starts_with('.') {
        out.push('.');
    }
    out.push_str(&text.replace("\r\n.", "\r\n.."));
    std::borrow::Cow::Owned(out)
}

impl From<lettre::transport::smtp::Error> for TxError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        TxError::Smtp(e)
    }
}

fn classify(e: &lettre::transport::smtp::Error, body_sent: bool, quota: &[String]) -> SendError {
    let detail = e.to_string();
    // A refusal for the relay's own limit (4xx or 5xx) is neither transient nor permanent.
    let over_quota = e.status().is_some()
        && super::quota::split_detail(&detail)
            .is_some_and(|(code, text)| super::quota::classify(code, text, quota).is_some());
    let class = if over_quota {
        FailureClass::Quota
    } else if e.is_permanent() {
        FailureClass::Permanent
    } else if e.is_transient() {
        FailureClass::Transient
    } else if body_sent {
        // No reply to the final dot: the server may or may not have queued the message.
        FailureClass::Unknown
    } else {
        FailureClass::Transient
    };
    SendError { class, detail }
}

/// An implicit-TLS stream (lettre's TLS-upgraded stream seen through tokio's I/O traits),
/// handed to `connect_with_transport` so it runs on our NODELAY socket.
#[derive(Debug)]
#[allow(deprecated)]
struct TlsStream(Compat<AsyncNetworkStream>);

impl AsyncRead for TlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn dot_stuffing_doubles_the_dot_that_starts_a_line_and_nothing_else() {
        assert_eq!(dot_stuff("plain\r\ntext. and more."), "plain\r\ntext. and more.");
        assert_eq!(dot_stuff(".a\r\n.b\r\n..c\r\nd.e\r\n.\r\n."), "..a\r\n..b\r\n...c\r\nd.e\r\n..\r\n..");
        // A bare LF does not end a line on the wire (lettre's codec agrees).
        assert_eq!(dot_stuff("a\n.b"), "a\n.b");
    }
}
