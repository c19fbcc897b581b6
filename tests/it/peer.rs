//! `Peer`: a real SMTP server in a child process (aiosmtpd, `tests/smtp/peer.py`, run with
//! Debian's `/usr/bin/python3` and its `python3-aiosmtpd`), listening on 127.0.0.1 with
//! optional STARTTLS / implicit TLS, AUTH and injected faults. What it accepted (250) and
//! what it cut off after DATA are read back as JSON lines.

use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How the peer behaves. `Default` is a plain, always-accepting server.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Offer STARTTLS with a self-signed certificate for `localhost` / 127.0.0.1.
    pub tls: bool,
    /// With `tls`: refuse MAIL (530) until STARTTLS.
    pub require_starttls: bool,
    /// TLS from the first byte (port-465 style), same self-signed certificate.
    pub implicit_tls: bool,
    /// Require AUTH (PLAIN / LOGIN) with exactly these credentials: 530 before AUTH, 535 for
    /// wrong ones. AUTH is only offered over TLS unless `auth_plaintext_ok`.
    pub auth: Option<(String, String)>,
    /// Allow AUTH on a plaintext connection.
    pub auth_plaintext_ok: bool,
    /// Require AUTH XOAUTH2 for this user with a bearer token listed in this file (one per
    /// line, re-read at every AUTH: the test keeps the currently valid tokens there). A refused
    /// token gets Google's `334 <status>` and then `535 5.7.8`. See [`Peer::xoauth2_attempts`].
    pub xoauth2: Option<(String, PathBuf)>,
    /// For this long after start, close every new connection at once (server down).
    pub refuse_for_secs: Option<u64>,
    /// The first N connections get `421 4.3.2` at greeting and are closed.
    pub greet_421: u32,
    /// Every K-th message (counted at end of DATA) gets `451 4.3.0`; 0 = never.
    pub defer_every: u32,
    /// 1-based DATA numbers whose message is read whole, written to `dropped()`, and then the
    /// connection is cut (RST) without a reply.
    pub drop_after_data: Vec<u32>,
    /// 1-based DATA numbers whose message is read whole, written to `dropped()`, and then
    /// never answered (the connection stays open until the client goes away).
    pub stall_after_data: Vec<u32>,
    /// RCPT addresses containing any of these get `550 5.1.1`.
    pub reject_rcpt: Vec<String>,
    /// Announce PIPELINING in the EHLO reply (RFC 2920).
    pub pipelining: bool,
    /// Record each message's content (`Record::content`).
    pub record_content: bool,
}

/// One message as the peer saw it at end of DATA.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    /// The `Message-ID` header as sent (with angle brackets); empty if there was none.
    pub message_id: String,
    /// Accepted recipients (RCPTs refused with 550 are not listed).
    pub rcpt: Vec<String>,
    pub mail_from: String,
    /// Size of the message data in bytes.
    pub size: u64,
    /// 1-based DATA sequence number across the peer's whole run (deferred and dropped
    /// messages use up numbers too).
    pub seq: u64,
    /// More commands had arrived together with `MAIL FROM` (the client pipelined).
    #[serde(default)]
    pub pipelined: bool,
    /// The message as received (dot-unstuffed), with `PeerOptions::record_content`; else empty.
    #[serde(default)]
    pub content: String,
    /// `XOAUTH2:<user>` when the session authenticated with XOAUTH2; else empty.
    #[serde(default)]
    pub auth: String,
}

/// One AUTH XOAUTH2 attempt as the peer judged it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Xoauth2Attempt {
    pub user: String,
    pub ok: bool,
}

/// A running peer; dropping it stops the server (SIGTERM, then SIGKILL) and removes `dir`.
pub struct Peer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    tls: bool,
    xoauth2_log: Option<PathBuf>,
}

impl Peer {
    /// Starts the server on a free loopback port and waits (≤15 s) until it listens. Panics
    /// with the server's stderr if it does not come up.
    pub fn start(opts: PeerOptions) -> Peer {
        let dir = tempfile::tempdir().expect("temp dir for the SMTP peer");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/peer.py");
        let d = dir.path();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .arg("--ready-file")
            .arg(d.join("port"))
            .arg("--record")
            .arg(d.join("records.jsonl"))
            .arg("--dropped")
            .arg(d.join("dropped.jsonl"));
        let tls = opts.tls || opts.implicit_tls;
        if tls {
            cmd.arg("--self-signed").arg(d.join("tls"));
        }
        if opts.implicit_tls {
            cmd.arg("--implicit-tls");
        }
        if opts.require_starttls {
            cmd.arg("--require-starttls");
        }
        if let Some((user, pass)) = &opts.auth {
            cmd.arg("--auth").arg(format!("{user}:{pass}"));
        }
        if opts.auth_plaintext_ok {
            cmd.arg("--auth-plaintext-ok");
        }
        if let Some((user, tokens)) = &opts.xoauth2 {
            cmd.arg("--xoauth2").arg(format!("{user}:{}", tokens.display()));
        }
        if let Some(secs) = opts.refuse_for_secs {
            cmd.arg("--refuse-for").arg(secs.to_string());
        }
        if opts.greet_421 > 0 {
            cmd.arg("--greet-421").arg(opts.greet_421.to_string());
        }
        if opts.defer_every > 0 {
            cmd.arg("--defer-every").arg(opts.defer_every.to_string());
        }
        if !opts.drop_after_data.is_empty() {
            let list: Vec<String> = opts.drop_after_data.iter().map(u32::to_string).collect();
            cmd.arg("--drop-after-data").arg(list.join(","));
        }
        if !opts.stall_after_data.is_empty() {
            let list: Vec<String> = opts.stall_after_data.iter().map(u32::to_string).collect();
            cmd.arg("--stall-after-data").arg(list.join(","));
        }
        for sub in &opts.reject_rcpt {
            cmd.arg("--reject-rcpt").arg(sub);
        }
        if opts.pipelining {
            cmd.arg("--pipelining");
        }
        if opts.record_content {
            cmd.arg("--record-content");
        }
        let stderr = fs::File::create(d.join("stderr.log")).expect("peer stderr log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {PYTHON} {}: {e} (is python3-aiosmtpd installed?)", script.display())
        });
        let xoauth2_log = opts.xoauth2.as_ref().map(|(_, tokens)| PathBuf::from(format!("{}.log", tokens.display())));
        let mut peer = Peer { port: 0, dir, child, tls, xoauth2_log };
        peer.port = peer.wait_ready();
        peer
    }

    fn wait_ready(&mut self) -> u16 {
        let ready = self.dir.path().join("port");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&ready)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                return port;
            }
            if let Some(status) = self.child.try_wait().expect("poll SMTP peer") {
                panic!("SMTP peer exited ({status}) before listening:\n{}", self.stderr());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("SMTP peer not listening after {READY_TIMEOUT:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages accepted with 250, in acceptance order.
    pub fn records(&self) -> Vec<Record> {
        read_records(&self.dir.path().join("records.jsonl"))
    }

    /// Messages read whole and then cut off without a reply (`drop_after_data`).
    pub fn dropped(&self) -> Vec<Record> {
        read_records(&self.dir.path().join("dropped.jsonl"))
    }

    /// Every AUTH XOAUTH2 attempt so far, in order (with `PeerOptions::xoauth2`).
    pub fn xoauth2_attempts(&self) -> Vec<Xoauth2Attempt> {
        let Some(path) = &self.xoauth2_log else { return Vec::new() };
        match fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|l| l.ends_with('}'))
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad attempt {l:?}: {e}")))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }

    /// The self-signed certificate (PEM) to trust; only with `tls` or `implicit_tls`.
    pub fn cert_path(&self) -> PathBuf {
        assert!(self.tls, "the SMTP peer was started without TLS");
        self.dir.path().join("tls/cert.pem")
    }

    /// TLS parameters for server name "localhost" that trust only this peer's certificate.
    pub fn tls_parameters(&self) -> TlsParameters {
        let pem = fs::read(self.cert_path()).expect("peer certificate");
        TlsParameters::builder("localhost".into())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(&pem).expect("peer certificate parses"))
            .build()
            .expect("TLS parameters")
    }

    /// What the server wrote to stderr so far (errors only).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

fn read_records(path: &Path) -> Vec<Record> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    // Each line is written and flushed whole; a torn last line (read mid-write) is skipped.
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
        .collect()
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM via kill(1) (procps), as std only sends SIGKILL; without it, SIGKILL at once.
            let termed = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let deadline = if termed { Instant::now() + STOP_GRACE } else { Instant::now() };
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() >= deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::Tls;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    fn message(id: &str) -> Message {
        Message::builder()
            .from("Sender <sender@example.com>".parse().unwrap())
            .to("Customer <customer@example.org>".parse().unwrap())
            .subject("Hallo")
            .message_id(Some(id.to_string()))
            .header(ContentType::TEXT_PLAIN)
            .body("Grüße\n".to_string())
            .unwrap()
    }

    fn transport(peer: &Peer, tls: Tls) -> lettre::transport::smtp::AsyncSmtpTransportBuilder {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(peer.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)))
    }

    #[tokio::test]
    async fn peer_records_a_plain_send_with_its_message_id() {
        let peer = Peer::start(PeerOptions { reject_rcpt: vec!["nobody@".into()], ..Default::default() });
        let smtp = transport(&peer, Tls::None).build();
        smtp.send(message("<one@contactplan.test>")).await.expect("plain send");
        let refused = Message::builder()
            .from("sender@example.com".parse().unwrap())
            .to("nobody@example.org".parse().unwrap())
            .body(String::from("x"))
            .unwrap();
        let err = smtp.send(refused).await.expect_err("550 at RCPT");
        assert!(err.is_permanent(), "{err}");

        let recs = peer.records();
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0].message_id, "<one@contactplan.test>");
        assert_eq!(recs[0].mail_from, "sender@example.com");
        assert_eq!(recs[0].rcpt, vec!["customer@example.org".to_string()]);
        assert_eq!(recs[0].seq, 1);
        assert!(recs[0].size > 0);
        assert!(peer.dropped().is_empty());
    }

    #[tokio::test]
    async fn peer_speaks_starttls_and_auth_and_refuses_a_wrong_password() {
        let peer = Peer::start(PeerOptions {
            tls: true,
            require_starttls: true,
            auth: Some(("mailer".into(), "s3cret".into())),
            ..Default::default()
        });
        let good = transport(&peer, Tls::Required(peer.tls_parameters()))
            .credentials(Credentials::new("mailer".into(), "s3cret".into()))
            .build();
        good.send(message("<tls@contactplan.test>")).await.expect("STARTTLS + AUTH send");

        let bad = transport(&peer, Tls::Required(peer.tls_parameters()))
            .credentials(Credentials::new("mailer".into(), "wrong".into()))
            .build();
        let err = bad.send(message("<bad@contactplan.test>")).await.expect_err("535");
        assert!(err.is_permanent(), "{err}");

        let anonymous = transport(&peer, Tls::Required(peer.tls_parameters())).build();
        let err = anonymous.send(message("<anon@contactplan.test>")).await.expect_err("530");
        assert!(err.is_permanent(), "{err}");

        let ids: Vec<String> = peer.records().into_iter().map(|r| r.message_id).collect();
        assert_eq!(ids, vec!["<tls@contactplan.test>".to_string()]);
    }

    #[tokio::test]
    async fn peer_drops_the_connection_after_data_and_keeps_the_message() {
        let peer = Peer::start(PeerOptions {
            implicit_tls: true,
            greet_421: 1,
            drop_after_data: vec![1],
            ..Default::default()
        });
        let smtp = transport(&peer, Tls::Wrapper(peer.tls_parameters())).build();
        let err = smtp.send(message("<greet@contactplan.test>")).await.expect_err("421 greeting");
        assert!(err.is_transient(), "{err}");
        let err = smtp.send(message("<cut@contactplan.test>")).await.expect_err("cut after DATA");
        assert!(!err.is_permanent(), "{err}");
        smtp.send(message("<after@contactplan.test>")).await.expect("next send is accepted");

        let dropped = peer.dropped();
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert_eq!(dropped[0].message_id, "<cut@contactplan.test>");
        assert_eq!(dropped[0].seq, 1);
        let recs = peer.records();
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0].message_id, "<after@contactplan.test>");
        assert_eq!(recs[0].seq, 2);
    }
}
