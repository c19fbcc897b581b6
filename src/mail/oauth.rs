//! OAuth 2.0 access tokens for SMTP AUTH XOAUTH2 (Microsoft 365, Google Workspace, or any
//! token endpoint): the client-credentials grant (RFC 6749 §4.4), a cached token renewed
//! before it expires, one renewal at a time however many SMTP sessions need a token.
//!
//! The HTTP client is hyper's own HTTP/1.1 connection over a socket we open (TLS with
//! tokio-rustls, the rustls stack lettre already uses, with the system's CA certificates):
//! one form POST, no redirects, a bounded answer and a bounded time.
//!
//! Renewal policy: a token with lifetime `L` is renewed `margin` before it expires, where
//! `margin = min(max(L / 5, 5 min), L / 2)`: at 80 % of a one-hour token (48 min), 5 min before
//! the end of a 20-minute one, half-way through a very short one. Until then every caller gets
//! the cached token. A failed renewal is reported at once ([`TokenEvents::renewal_failed`])
//! and retried after 10 s, 20 s, 40 s … at most 5 min, while the old token, as long as it has
//! not expired, goes on being used. A token the relay refuses (535) is renewed at once
//! ([`TokenSource::renew_refused`]), once for every session that saw it refused.
//!
//! "Now" comes from the injected [`Clock`](crate::clock::Clock); the token and the client
//! secret are held as [`SecretString`] and never logged or put into an error message.

use super::OauthSettings;
use crate::clock::SharedClock;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, Full, Limited};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Microsoft Entra ID's token endpoint, `{tenant}` replaced by the tenant id or domain.
pub const MICROSOFT_TOKEN_URL: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
/// The scope for SMTP AUTH with an application's own permission in Exchange Online.
pub const MICROSOFT_SCOPE: &str = "https://outlook.office365.com/.default";
/// Google's token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The scope Gmail wants for SMTP.
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";

/// Bound on one token request (connect, TLS, request, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the token endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Largest access token taken (Entra ID's are a few KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Lifetime assumed when the endpoint names none (`expires_in` is only RECOMMENDED).
const DEFAULT_LIFETIME: TimeDelta = TimeDelta::minutes(10);
/// Longest lifetime believed (a larger `expires_in` is cut to this).
const MAX_LIFETIME: TimeDelta = TimeDelta::days(1);
/// First pause after a failed renewal; doubled per failure up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: TimeDelta = TimeDelta::seconds(10);
/// Longest pause between renewal attempts after failures.
const MAX_RETRY_PAUSE: TimeDelta = TimeDelta::minutes(5);

/// What happens to the token, for health, metrics and logs (wired by the application; mail
/// knows nothing about them). Reasons never hold the token or the secret.
pub trait TokenEvents: Send + Sync {
    /// A new token was obtained; it expires at `expires_at`.
    fn renewed(&self, expires_at: DateTime<Utc>);
    /// Obtaining a token failed.
    fn renewal_failed(&self, reason: &str);
    /// The relay refused a freshly obtained token (SMTP AUTH XOAUTH2 failed twice).
    fn refused(&self, reason: &str);
    /// The relay accepted a token.
    fn accepted(&self);
}

/// A failed token request, with a sentence that says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// An access token and its lifetime on the daemon's clock.
#[derive(Clone)]
pub struct Token {
    /// The bearer token.
    pub value: SecretString,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// When it is renewed.
    renew_at: DateTime<Utc>,
    /// Counts the tokens obtained, so a refusal renews only the token that was refused.
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("expires_at", &self.expires_at).field("generation", &self.generation).finish()
    }
}

#[derive(Default)]
struct Cache {
    token: Option<Token>,
    generation: u64,
    /// Renewals failed in a row.
    failures: u32,
    /// No new request before this (after a failure), unless forced by a refusal.
    retry_at: Option<DateTime<Utc>>,
    /// The last failure, returned while waiting for `retry_at` without a usable token.
    last_error: Option<TokenError>,
}

/// The token for XOAUTH2: obtained, cached and renewed (see the module docs).
pub struct TokenSource {
    settings: OauthSettings,
    secret: SecretString,
    clock: SharedClock,
    endpoint: Endpoint,
    /// Held during a renewal: the single flight.
    cache: tokio::sync::Mutex<Cache>,
    events: OnceLock<Arc<dyn TokenEvents>>,
}

impl TokenSource {
    /// A source for `settings` with `secret`; nothing is requested yet.
    ///
    /// # Errors
    /// A token URL that is not `https://` (or `http://` on loopback), or no CA certificates.
    pub fn new(settings: &OauthSettings, secret: SecretString, clock: SharedClock) -> anyhow::Result<TokenSource> {
        let endpoint = Endpoint::new(&settings.token_url)?;
        Ok(TokenSource {
            settings: settings.clone(),
            secret,
            clock,
            endpoint,
            cache: tokio::sync::Mutex::new(Cache::default()),
            events: OnceLock::new(),
        })
    }

    /// Where events go (set once; later calls are ignored).
    pub fn observe(&self, events: Arc<dyn TokenEvents>) {
        let _ = self.events.set(events);
    }

    fn event(&self, f: impl FnOnce(&dyn TokenEvents)) {
        if let Some(e) = self.events.get() {
            f(e.as_ref());
        }
    }

    /// Now, on the daemon's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The provider and endpoint, for logs.
    pub fn describe(&self) -> String {
        format!("{} token endpoint {}", self.settings.provider, self.settings.token_url)
    }

    /// A token that has not expired: the cached one until it is due for renewal, else a new
    /// one. While renewals fail, the old token is returned as long as it is valid.
    ///
    /// # Errors
    /// No valid token: the endpoint failed (now, or recently and the retry pause still runs).
    pub async fn token(&self) -> Result<Token, TokenError> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        if let Some(t) = &cache.token
            && now < t.renew_at
        {
            return Ok(t.clone());
        }
        if let Some(retry_at) = cache.retry_at
            && now < retry_at
        {
            return match &cache.token {
                Some(t) if now < t.expires_at => Ok(t.clone()),
                _ => Err(cache.last_error.clone().unwrap_or_else(|| TokenError("no OAuth token yet".into()))),
            };
        }
        self.renew(&mut cache, now).await
    }

    /// The relay refused `refused`: renews at once (ignoring the retry pause), unless another
    /// session has done so since.
    ///
    /// # Errors
    /// As [`TokenSource::token`].
    pub async fn renew_refused(&self, refused: &Token) -> Result<Token, TokenError> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        if let Some(t) = &cache.token
            && t.generation != refused.generation
            && now < t.expires_at
        {
            return Ok(t.clone());
        }
        cache.token = None;
        self.renew(&mut cache, now).await
    }

    /// Renews now if the token is due (the scheduler calls it every tick, so an idle daemon
    /// keeps a valid token and a broken endpoint or secret is reported before a send needs it).
    ///
    /// # Errors
    /// As [`TokenSource::token`].
    pub async fn refresh(&self) -> Result<DateTime<Utc>, TokenError> {
        self.token().await.map(|t| t.expires_at)
    }

    /// The relay accepted a token.
    pub fn accepted(&self) {
        self.event(|e| e.accepted());
    }

    /// The relay refused a fresh token too.
    pub fn refused(&self, reason: &str) {
        tracing::error!(reason, "the SMTP relay refused a freshly obtained OAuth token");
        self.event(|e| e.refused(reason));
    }

    async fn renew(&self, cache: &mut Cache, now: DateTime<Utc>) -> Result<Token, TokenError> {
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, self.request()).await {
            Ok(r) => r,
            Err(_) => Err(TokenError(format!(
                "the {} did not answer within {} s",
                self.describe(),
                REQUEST_TIMEOUT.as_secs()
            ))),
        };
        // The clock after the request: a slow answer's lifetime starts when it arrived.
        let received = self.clock.now().max(now);
        match result {
            Ok(answer) => {
                cache.generation += 1;
                let token = Token {
                    value: answer.token,
                    expires_at: received + answer.lifetime,
                    renew_at: received + answer.lifetime - renewal_margin(answer.lifetime),
                    generation: cache.generation,
                };
                cache.token = Some(token.clone());
                cache.failures = 0;
                cache.retry_at = None;
                cache.last_error = None;
                tracing::info!(
                    provider = %self.settings.provider,
                    expires_at = %token.expires_at,
                    renew_at = %token.renew_at,
                    "obtained an OAuth access token"
                );
                self.event(|e| e.renewed(token.expires_at));
                Ok(token)
            }
            Err(e) => {
                cache.failures += 1;
                let pause = FIRST_RETRY_PAUSE * 2i32.saturating_pow(cache.failures.min(10) - 1);
                cache.retry_at = Some(received + pause.min(MAX_RETRY_PAUSE));
                cache.last_error = Some(e.clone());
                let still_valid = cache.token.as_ref().filter(|t| received < t.expires_at).cloned();
                tracing::error!(
                    error = %e,
                    failures = cache.failures,
                    old_token_valid_until = ?still_valid.as_ref().map(|t| t.expires_at),
                    "could not renew the OAuth access token"
                );
                self.event(|ev| ev.renewal_failed(&e.0));
                still_valid.ok_or(e)
            }
        }
    }

    /// One client-credentials request.
    async fn request(&self) -> Result<Answer, TokenError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("client_secret", self.secret.expose_secret())
            .append_pair("scope", &self.settings.scope)
            .finish();
        let (status, body) = self
            .endpoint
            .post_form(form)
            .await
            .map_err(|why| TokenError(format!("cannot reach the {}: {why}", self.describe())))?;
        if !(200..300).contains(&status) {
            return Err(TokenError(refusal(&self.describe(), status, &body)));
        }
        parse_answer(&body).map_err(|why| TokenError(format!("the {} answered {status}, but {why}", self.describe())))
    }
}

/// How long before its end a token of `lifetime` is renewed (see the module docs).
pub fn renewal_margin(lifetime: TimeDelta) -> TimeDelta {
    (lifetime / 5).max(TimeDelta::minutes(5)).min(lifetime / 2)
}

/// A token response: the token and its lifetime.
struct Answer {
    token: SecretString,
    lifetime: TimeDelta,
}

/// Reads a successful token response (RFC 6749 §5.1); the reason names what is wrong, never
/// the token.
fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        access_token: Option<serde_json::Value>,
        token_type: Option<serde_json::Value>,
        expires_in: Option<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|_| "its answer is not a JSON object".to_string())?;
    let token = match raw.access_token {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t,
        _ => return Err("its answer has no access_token".into()),
    };
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("its access_token is not a printable token of at most {MAX_TOKEN_BYTES} bytes"));
    }
    match raw.token_type.as_ref().and_then(|t| t.as_str()) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => return Err(format!("its token_type is `{}`, not `Bearer`", t.escape_debug())),
        None => return Err("its answer has no token_type".into()),
    }
    // A number, or (older Entra ID endpoints) a number in a string.
    let secs = match &raw.expires_in {
        None => None,
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => return Err("its expires_in is not a number of seconds".into()),
    };
    let lifetime = match secs {
        None if raw.expires_in.is_some() => return Err("its expires_in is not a number of seconds".into()),
        None => DEFAULT_LIFETIME,
        Some(s) if s <= 0 => return Err(format!("its expires_in is {s}")),
        Some(s) => TimeDelta::seconds(s).min(MAX_LIFETIME),
    };
    Ok(Answer { token: SecretString::from(token), lifetime })
}

/// The sentence for a refused token request: status, the OAuth `error` and its description
/// (RFC 6749 §5.2), and what to check.
fn refusal(endpoint: &str, status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Raw {
        error: Option<String>,
        error_description: Option<String>,
    }
    let raw: Option<Raw> = serde_json::from_slice(body).ok();
    let error = raw.as_ref().and_then(|r| r.error.clone()).unwrap_or_default();
    let description = raw.and_then(|r| r.error_description).unwrap_or_default();
    // The first line, printable, bounded (Entra ID appends trace ids on further lines).
    let description: String = description
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let hint = match error.as_str() {
        "invalid_client" | "unauthorized_client" => {
            "; check client_id and the client secret (credential oauth-client-secret or CONTACTPLAN_OAUTH_CLIENT_SECRET): it may be wrong or expired"
        }
        "invalid_scope" => "; check [delivery.oauth] scope",
        "invalid_request" if description.contains("AADSTS900023") || description.contains("AADSTS90002") => {
            "; check [delivery.oauth] tenant"
        }
        _ => "",
    };
    match (error.is_empty(), description.is_empty()) {
        (true, _) => format!("the {endpoint} refused the request with HTTP {status}{hint}"),
        (false, true) => format!("the {endpoint} refused the request with HTTP {status}: {error}{hint}"),
        (false, false) => {
            format!("the {endpoint} refused the request with HTTP {status}: {error}: {description}{hint}")
        }
    }
}

/// Whether `url` may serve tokens: `https://host…`, or `http://` on a loopback address.
///
/// # Errors
/// Why not, as a sentence.
pub fn check_token_url(url: &str) -> Result<(), String> {
    Endpoint::parse(url).map(|_| ())
}

/// Where token requests go.
struct Endpoint {
    uri: hyper::Uri,
    host: String,
    port: u16,
    /// TLS, for `https://`.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Endpoint {
    fn parse(url: &str) -> Result<(hyper::Uri, String, u16, bool), String> {
        let uri: hyper::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("`{url}` names no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if uri.path_and_query().is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/") {
            return Err(format!("`{url}` names no path (the token endpoint is a path such as /oauth2/v2.0/token)"));
        }
        match uri.scheme_str() {
            Some("https") => {
                let port = uri.port_u16().unwrap_or(443);
                Ok((uri, host, port, true))
            }
            Some("http") if is_loopback(&host) => {
                let port = uri.port_u16().unwrap_or(80);
                Ok((uri, host, port, false))
            }
            Some("http") => Err(format!(
                "`{url}` is plain http: the client secret and the tokens would cross the network unencrypted"
            )),
            _ => Err(format!("`{url}` is not an https:// URL")),
        }
    }

    fn new(url: &str) -> anyhow::Result<Endpoint> {
        let (uri, host, port, https) = Endpoint::parse(url).map_err(|why| anyhow::anyhow!("token_url: {why}"))?;
        let tls = if https { Some(tls_connector()?) } else { None };
        Ok(Endpoint { uri, host, port, tls })
    }

    /// POSTs `form` and returns the status and the answer (at most [`MAX_ANSWER_BYTES`]).
    async fn post_form(&self, form: String) -> Result<(u16, Bytes), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(connector) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|_| format!("`{}` is not a host name", self.host))?;
                let stream =
                    connector.connect(name, tcp).await.map_err(|e| format!("TLS with {} failed: {e}", self.host))?;
                self.exchange(hyper_util::rt::TokioIo::new(stream), form).await
            }
            None => self.exchange(hyper_util::rt::TokioIo::new(tcp), form).await,
        }
    }

    async fn exchange<IO>(&self, io: IO, form: String) -> Result<(u16, Bytes), String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP handshake failed: {e}"))?;
        let authority = self.uri.authority().map_or(self.host.as_str(), |a| a.as_str()).to_string();
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, concat!("contactplan/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::CONNECTION, "close")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let work = async {
            let response = sender.send_request(request).await.map_err(|e| format!("HTTP request failed: {e}"))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        // The connection is driven here, not on a task of its own.
        tokio::pin!(work);
        tokio::pin!(conn);
        tokio::select! {
            biased;
            r = &mut work => r,
            c = &mut conn => match c {
                Ok(()) => work.await,
                Err(e) => Err(format!("HTTP connection failed: {e}")),
            },
        }
    }
}

/// Loopback: `localhost` or a loopback IP address.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// TLS with the system's CA certificates (rustls, aws-lc-rs; no OpenSSL).
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        anyhow::bail!("no CA certificates found to verify the OAuth token endpoint (install ca-certificates)");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The SASL XOAUTH2 initial response, base64 (`user=…^Aauth=Bearer …^A^A`).
pub fn xoauth2_response(user: &str, token: &SecretString) -> SecretString {
    use base64::Engine;
    let raw = format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose_secret());
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_80_percent_or_5_minutes_before_whichever_is_earlier() {
        let at = |l: TimeDelta| l - renewal_margin(l);
        assert_eq!(at(TimeDelta::hours(1)), TimeDelta::minutes(48));
        assert_eq!(at(TimeDelta::minutes(20)), TimeDelta::minutes(15));
        assert_eq!(at(TimeDelta::seconds(3)), TimeDelta::milliseconds(1500));
    }

    #[test]
    fn token_urls_are_https_or_loopback_http() {
        assert!(check_token_url("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token").is_ok());
        assert!(check_token_url("http://127.0.0.1:8080/token").is_ok());
        assert!(check_token_url("http://[::1]:8080/token").is_ok());
        assert!(check_token_url("http://localhost/token").is_ok());
        assert!(check_token_url("http://login.example.com/token").unwrap_err().contains("plain http"));
        assert!(check_token_url("ftp://x/token").is_err());
        assert!(check_token_url("https://x").is_err());
        assert!(check_token_url("no url").is_err());
    }

    #[test]
    fn answers_are_read_strictly_and_errors_never_quote_the_token() {
        let ok = parse_answer(br#"{"access_token":"abc.def","token_type":"Bearer","expires_in":3599}"#).unwrap();
        assert_eq!(ok.token.expose_secret(), "abc.def");
        assert_eq!(ok.lifetime, TimeDelta::seconds(3599));
        let s = parse_answer(br#"{"access_token":"t","token_type":"bearer","expires_in":"3599"}"#).unwrap();
        assert_eq!(s.lifetime, TimeDelta::seconds(3599));
        let e = parse_answer(br#"{"access_token":"sekrit","token_type":"mac","expires_in":1}"#).err().unwrap();
        assert!(e.contains("`mac`") && !e.contains("sekrit"), "{e}");
        assert!(parse_answer(br#"{"access_token":"sekrit","token_type":"Bearer","expires_in":0}"#).is_err());
        assert!(parse_answer(b"<html>").is_err());
    }

    #[test]
    fn a_refusal_names_the_oauth_error_and_what_to_check() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1"}"#;
        let text = refusal("microsoft token endpoint X", 401, body);
        assert_eq!(
            text,
            "the microsoft token endpoint X refused the request with HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided.; check client_id and the client secret (credential oauth-client-secret or CONTACTPLAN_OAUTH_CLIENT_SECRET): it may be wrong or expired"
        );
    }

    #[test]
    fn the_xoauth2_response_is_the_sasl_format() {
        // Google's example (developers.google.com/workspace/gmail/imap/xoauth2-protocol).
        let token = SecretString::from("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
        assert_eq!(
            xoauth2_response("someuser@example.com", &token).expose_secret(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }
}
