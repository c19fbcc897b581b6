//! SMTP with lettre's async connection on sockets we open ourselves, so `TCP_NODELAY` is set.
//! lettre 0.11.23 never sets it, and each message then waits for the peer's delayed ACK:
//! 23 msg/s per connection against smtp-sink, versus thousands with it set.
//! STARTTLS, implicit TLS and AUTH work on this path. Every send is bounded by a timeout
//! (lettre's own covers only connecting). Idle connections are kept for reuse. A connection
//! that saw an error is dropped.
//!
//! Failures are classified by phase. Before the message body is handed over, nothing was
//! delivered: the failure is transient or permanent by its reply code. After it (connection
//! cut, timeout, no reply to the final dot), the server may or may not have the message
//! (RFC 1047), so the outcome is `Unknown`.

use super::{Accepted, FailureClass, SendError};
use crate::config::{SmtpSettings, TlsMode};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
// `AsyncNetworkStream` is public but deprecated ("not meant to be made public"); it is the
// only way to run lettre's TLS upgrade on a socket we opened (implicit TLS with NODELAY).
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
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
    /// TLS parameters (server name, trusted roots), built once.
    tls: Option<TlsParameters>,
    /// Our EHLO name.
    hello: ClientId,
    /// Connections ready for reuse.
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    /// Bounds parallel sessions to `connections`.
    sessions: Semaphore,
}

impl SmtpMailer {
    pub fn new(s: &SmtpSettings) -> anyhow::Result<Self> {
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

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let s = &self.settings;
        let io = |e: std::io::Error| SendError {
            class: FailureClass::Transient,
            detail: format!("cannot connect to {}:{}: {e}", s.host, s.port),
        };
        let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port)).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        self.handshake(tcp).await.map_err(|e| classify(&e, false))
    }

    /// Greeting, TLS and AUTH on an open socket.
    #[allow(deprecated)]
    async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
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
        if let (Some(user), Some(pass)) = (&s.username, &s.password) {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &Credentials::new(user.clone(), pass.clone())).await?;
        }
        Ok(conn)
    }

    /// One transaction on `conn`: the envelope, then — once `go` says yes — the content.
    /// `body_sent` turns true just before the content goes out.
    async fn transact(
        conn: &mut AsyncSmtpConnection,
        message: &lettre::Message,
        go: impl std::future::Future<Output = bool>,
        body_sent: &AtomicBool,
    ) -> Result<lettre::transport::smtp::response::Response, TxError> {
        let envelope = message.envelope();
        let bytes = message.formatted();
        let mut params = Vec::new();
        if !bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), params)).await?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), vec![])).await?;
        }
        if !go.await {
            // Nothing was delivered; RSET keeps the session usable for the next message.
            conn.command(Rset).await?;
            return Err(TxError::Withdrawn);
        }
        conn.command(Data).await?;
        body_sent.store(true, Ordering::SeqCst);
        Ok(conn.message(&bytes).await?)
    }

    pub async fn send(
        &self,
        message: &lettre::Message,
        go: impl std::future::Future<Output = bool>,
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
                Some(c) if !c.has_broken() => c,
                _ => self.connect().await?,
            };
            match Self::transact(&mut conn, message, go, &body_sent).await {
                Ok(resp) => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                    Ok(resp)
                }
                Err(TxError::Withdrawn) => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                    Err(SendError::withdrawn())
                }
                Err(TxError::Smtp(e)) => {
                    // A rejected transaction leaves the session usable after RSET; a cut one does not.
                    // Simplest correct choice: drop the connection either way.
                    if !conn.has_broken() {
                        conn.abort().await;
                    }
                    Err(classify(&e, body_sent.load(Ordering::SeqCst)))
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

/// How one transaction ended without a reply to the content.
enum TxError {
    /// The server or the connection failed.
    Smtp(lettre::transport::smtp::Error),
    /// The go-ahead said no; the envelope was reset.
    Withdrawn,
}

impl From<lettre::transport::smtp::Error> for TxError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        TxError::Smtp(e)
    }
}

fn classify(e: &lettre::transport::smtp::Error, body_sent: bool) -> SendError {
    let class = if e.is_permanent() {
        FailureClass::Permanent
    } else if e.is_transient() {
        FailureClass::Transient
    } else if body_sent {
        // No reply to the final dot: the server may or may not have queued the message.
        FailureClass::Unknown
    } else {
        FailureClass::Transient
    };
    SendError { class, detail: e.to_string() }
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
