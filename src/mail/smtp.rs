//! SMTP via lettre's pooled async transport: STARTTLS, implicit TLS or plain, with AUTH.
//! Every send is bounded by a timeout (lettre's own covers only connecting).

use super::{Accepted, FailureClass, SendError};
use crate::config::{SmtpSettings, TlsMode};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

pub struct SmtpMailer {
    /// The pooled transport.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Bound on one whole transaction.
    timeout: Duration,
    /// host:port for logs.
    target: String,
}

impl SmtpMailer {
    pub fn new(s: &SmtpSettings) -> anyhow::Result<Self> {
        let tls = match s.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls => Tls::Required(TlsParameters::new(s.host.clone())?),
            TlsMode::Tls => Tls::Wrapper(TlsParameters::new(s.host.clone())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            .port(s.port)
            .tls(tls)
            .timeout(Some(s.timeout))
            .pool_config(PoolConfig::new().max_size(s.connections));
        if let (Some(user), Some(pass)) = (&s.username, &s.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self { transport: builder.build(), timeout: s.timeout, target: format!("{}:{}", s.host, s.port) })
    }

    pub fn describe(&self) -> String {
        format!("smtp {}", self.target)
    }

    pub async fn send(&self, message: &lettre::Message) -> Result<Accepted, SendError> {
        match tokio::time::timeout(self.timeout, self.transport.send(message.clone())).await {
            Err(_) => Err(SendError {
                class: FailureClass::Unknown,
                detail: format!("no reply from {} within {:?}", self.target, self.timeout),
            }),
            Ok(Ok(resp)) => {
                Ok(Accepted { reply: format!("{} {}", resp.code(), resp.message().collect::<Vec<_>>().join(" ")) })
            }
            Ok(Err(e)) => {
                let class = if e.is_permanent() {
                    FailureClass::Permanent
                } else if e.is_transient() || e.is_timeout() {
                    FailureClass::Transient
                } else {
                    // Connection-level errors: lettre does not say whether DATA was completed.
                    FailureClass::Transient
                };
                Err(SendError { class, detail: e.to_string() })
            }
        }
    }
}
