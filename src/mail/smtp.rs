//! SMTP with lettre's async connection on sockets we open ourselves, so `TCP_NODELAY` is set.
//! lettre 0.11.23 never sets it, and each message then waits for the peer's delayed ACK
//! (tens of messages per second per connection instead of thousands: BENCHMARKS.md).
//! STARTTLS, implicit TLS and AUTH work on this path. Every send is bounded by a timeout
//! (lettre's own covers only connecting). Idle connections are kept for reuse. A connection
//! that saw an error is dropped.
//!
//! AUTH is PLAIN/LOGIN with a password, or XOAUTH2 with an OAuth 2.0 token (`oauth.rs`). A
//! token is sent only over TLS or to a loopback relay. A token the relay refuses (535) is
//! renewed at once and the connection tried once more, so an expired or revoked token costs
//! one extra round trip, not a failed message; refused twice, the send fails transiently.
//!
//! Failures are classified by phase. Before the message body is handed over, nothing was
//! delivered: the failure is transient or permanent by its reply code. After it (connection
//! cut, timeout, no reply to the final dot), the server may or may not have the message
//! (RFC 1047), so the outcome is `Unknown`.

use super::oauth::{Token, TokenSource};
use super::{Accepted, FailureClass, Gate, SendError};
use super::{SmtpAuth, SmtpSettings, TlsMode};
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

pub struct SmtpMailer {
    /// Where and how to connect.
    settings: SmtpSettings,
    /// The AUTH password (with `settings.username`).
    password: Option<SecretString>,
    /// The token for AUTH XOAUTH2 (with `settings.username`), when `settings.auth` says so.
    oauth: Option<Arc<TokenSource>>,
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
    pub fn new(
        s: &SmtpSettings,
        password: Option<SecretString>,
        oauth: Option<Arc<TokenSource>>,
    ) -> anyhow::Result<Self> {
        if matches!(s.auth, SmtpAuth::Xoauth2(_)) && oauth.is_none() {
            anyhow::bail!("delivery.auth = \"xoauth2\" needs the OAuth client secret");
        }
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
            oauth,
            tls,
            hello,
            idle: Mutex::new(Vec::new()),
            sessions: Semaphore::new(s.connections as usize),
        })
    }

    pub fn sessions(&self) -> usize {
        self.settings.connections as usize
    }

    /// The XOAUTH2 token source, when AUTH uses one.
    pub fn oauth(&self) -> Option<&Arc<TokenSource>> {
        self.oauth.as_ref()
    }

    pub fn describe(&self) -> String {
        format!(
            "smtp {}:{} (tls = {}, {} {})",
            self.settings.host,
            self.settings.port,
            self.settings.tls.code(),
            self.settings.connections,
            if self.settings.connections == 1 { "session" } else { "sessions" }
        )
    }

    /// A new session, greeted, secured and authenticated. With XOAUTH2, a token the relay
    /// refuses is renewed once and the connection tried again.
    async fn connect(&self) -> Result<Session, SendError> {
        let Some(source) = &self.oauth else {
            return self.connect_with(None).await.map_err(|e| e.into_send_error(&self.settings.quota_patterns));
        };
        let no_token = |e: super::oauth::TokenError| SendError {
            class: FailureClass::Transient,
            detail: format!("no OAuth token for SMTP AUTH: {e}"),
        };
        let token = source.token().await.map_err(no_token)?;
        let refused = match self.connect_with(Some(&token)).await {
            Ok(session) => {
                source.accepted();
                return Ok(session);
            }
            Err(Handshake::Refused(detail)) => detail,
            Err(e) => return Err(e.into_send_error(&self.settings.quota_patterns)),
        };
        tracing::warn!(reason = %refused, "the SMTP relay refused the OAuth token; renewing it and trying again");
        let fresh = source.renew_refused(&token).await.map_err(no_token)?;
        match self.connect_with(Some(&fresh)).await {
            Ok(session) => {
                source.accepted();
                Ok(session)
            }
            Err(Handshake::Refused(detail)) => {
                source.refused(&detail);
                // Transient, not permanent: the message is fine, the credentials are not; it is
                // retried once ops fixed them (`/readyz` says so meanwhile).
                Err(SendError {
                    class: FailureClass::Transient,
                    detail: format!("the relay refused a freshly obtained OAuth token too: {detail}"),
                })
            }
            Err(e) => Err(e.into_send_error(&self.settings.quota_patterns)),
        }
    }

    async fn connect_with(&self, token: Option<&Token>) -> Result<Session, Handshake> {
        let s = &self.settings;
        let io = |e: std::io::Error| {
            Handshake::Failed(SendError {
                class: FailureClass::Transient,
                detail: format!("cannot connect to {}:{}: {e}", s.host, s.port),
            })
        };
        let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port)).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        self.handshake(tcp, token).await
    }

    /// Greeting, TLS and AUTH on an open socket.
    #[allow(deprecated)]
    async fn handshake(&self, tcp: tokio::net::TcpStream, token: Option<&Token>) -> Result<Session, Handshake> {
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
        match (&s.auth, &s.username, token) {
            (SmtpAuth::Xoauth2(_), Some(user), Some(token)) => {
                if let Err(e) = self.xoauth2(&mut conn, user, token).await {
                    conn.abort().await;
                    return Err(e);
                }
            }
            (SmtpAuth::Password, Some(user), _) => {
                if let Some(pass) = &self.password {
                    let credentials = Credentials::new(user.clone(), pass.expose_secret().to_string());
                    conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await?;
                }
            }
            _ => {}
        }
        Ok(Session { conn, pipelining, token_expires_at: token.map(|t| t.expires_at) })
    }

    /// Whether an idle session may be reused: with XOAUTH2, only while the token it
    /// authenticated with has not expired.
    fn still_authorized(&self, session: &Session) -> bool {
        match (&self.oauth, session.token_expires_at) {
            (Some(source), Some(expires_at)) => source.now() < expires_at,
            _ => true,
        }
    }

    /// `AUTH XOAUTH2` with the initial response (the SASL XOAUTH2 format of Google and
    /// Microsoft). A relay that answers a bad token with a `334` error challenge (Google: a
    /// base64 JSON status) gets the empty line it expects and then says `535`.
    async fn xoauth2(&self, conn: &mut AsyncSmtpConnection, user: &str, token: &Token) -> Result<(), Handshake> {
        let s = &self.settings;
        if s.tls == TlsMode::None && !super::oauth::is_loopback(&s.host) {
            return Err(Handshake::Failed(SendError {
                class: FailureClass::Transient,
                detail: format!(
                    "refusing to send an OAuth token to {} without TLS (set tls = \"starttls\" or \"tls\")",
                    s.host
                ),
            }));
        }
        if !conn.server_info().supports_auth_mechanism(Mechanism::Xoauth2) {
            return Err(Handshake::Failed(SendError {
                class: FailureClass::Transient,
                detail: format!("{} does not offer AUTH XOAUTH2 (check host, port and tls)", s.host),
            }));
        }
        let line = SecretString::from(format!(
            "AUTH XOAUTH2 {}\r\n",
            super::oauth::xoauth2_response(user, &token.value).expose_secret()
        ));
        let reply = |r: &lettre::transport::smtp::response::Response| {
            format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "))
        };
        match conn.command(line.expose_secret()).await {
            Ok(r) if r.has_code(235) => Ok(()),
            Ok(r) if r.has_code(334) => {
                let status = challenge_status(&r);
                match conn.command("\r\n").await {
                    Err(e) if e.is_permanent() => Err(Handshake::Refused(format!("{e} ({status})"))),
                    Err(e) => Err(Handshake::Smtp(e)),
                    Ok(r) => Err(Handshake::Refused(format!("unexpected reply {} ({status})", reply(&r)))),
                }
            }
            Ok(r) => Err(Handshake::Refused(format!("unexpected reply {}", reply(&r)))),
            Err(e) if e.is_permanent() => Err(Handshake::Refused(e.to_string())),
            Err(e) => Err(Handshake::Smtp(e)),
        }
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
                Some(c) if !c.conn.has_broken() && self.still_authorized(&c) => c,
                Some(mut c) => {
                    // Its token expired: the relay may end such a session at any moment.
                    if !c.conn.has_broken() {
                        c.conn.abort().await;
                    }
                    self.connect().await?
                }
                None => self.connect().await?,
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

/// How opening a session failed.
enum Handshake {
    /// The relay refused the XOAUTH2 token (5xx to AUTH): worth one renewal.
    Refused(String),
    /// The server or the connection failed.
    Smtp(lettre::transport::smtp::Error),
    /// Anything else, classified already.
    Failed(SendError),
}

impl Handshake {
    /// As a send error; `quota` are the configured quota texts (`[delivery] quota_patterns`).
    fn into_send_error(self, quota: &[String]) -> SendError {
        match self {
            Handshake::Refused(detail) => SendError { class: FailureClass::Transient, detail },
            Handshake::Smtp(e) => classify(&e, false, quota),
            Handshake::Failed(e) => e,
        }
    }
}

impl From<lettre::transport::smtp::Error> for Handshake {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Handshake::Smtp(e)
    }
}

/// The status in a `334` XOAUTH2 error challenge (base64 JSON such as
/// `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), printable and
/// bounded; "no status" when it is not that.
fn challenge_status(r: &lettre::transport::smtp::response::Response) -> String {
    use base64::Engine;
    let first = r.message().next().unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(first.trim()) {
        Ok(bytes) => {
            let text: String = String::from_utf8_lossy(&bytes)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(200)
                .collect();
            format!("relay says {text}")
        }
        Err(_) => "no status".into(),
    }
}

/// An open SMTP connection and what its server offers beyond what lettre tracks.
struct Session {
    /// The connection (greeted, TLS and AUTH done).
    conn: AsyncSmtpConnection,
    /// The server announced PIPELINING (RFC 2920): the envelope goes out in one write.
    pipelining: bool,
    /// XOAUTH2: when the token this session authenticated with expires.
    token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
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
