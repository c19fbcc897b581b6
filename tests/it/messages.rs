//! Every message the daemon generates is well-formed, whatever the plan data: each is parsed by
//! two independent parsers, Python's `email` package under `email.policy.strict` (Debian's
//! `/usr/bin/python3`, `tests/mail/strict_parse.py`, which fails on any defect) and the
//! `mail-parser` crate (Stalwart's; it shares no code with lettre or `email-encoding`, which
//! write the messages, and decodes addresses, RFC 2047 words and dates itself). Each must show
//! exactly the expected headers, the names and subjects as written, the sender's zone in `Date:`,
//! and HTML-escaped names in the HTML part.

use crate::helpers::{Delivery, Received, spawn_app, utc};
use contactplan::mail::{self, Outgoing, Party};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Names `check` accepts that still try to break a message: quotes, markup, a long word,
/// non-Latin scripts, emoji, an encoded-word lookalike, backslashes.
const HOSTILE: &[&str] = &[
    "Anna \"Nan\" O'Brien",
    "<script>alert(1)</script> Smith",
    "Bob, \\Esq. <bob@evil.example>",
    "Maximilianalexanderfriedrichwilhelmvonundzuhohenlohelangenburgschillingsfürstwaldenburg",
    "Иван Петров",
    "山田 太郎",
    "محمد علي",
    "Anna 🎉👩‍👩‍👧 Smith",
    "=?utf-8?q?Mallory?= Evil",
    "Zoë Ångström-Øster",
];

fn plan(id: &str, language: &str, customer_name: &str) -> String {
    let mut text = format!(
        "[customer]\nid = \"{id}\"\nname = {customer_name:?}\nsince = 2016-03-14\nowner = \"owner@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"{language}\"\nphase = \"maturity\"\n"
    );
    let combos = [("formal", "female"), ("informal", "male"), ("formal", "other"), ("informal", "other")];
    for (i, name) in HOSTILE.iter().enumerate() {
        let (tone, gender) = combos[i % combos.len()];
        text.push_str(&format!(
            "\n[[contact]]\nid = \"c{i}\"\nname = {}\ngender = \"{gender}\"\nemail = \"c{i}@example.com\"\nbirthday = 1980-03-14\ntone = \"{tone}\"\nprimary = {}\n",
            toml_string(name),
            i == 0
        ));
    }
    text.push_str(
        "\n[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\n\
         \n[[occasion]]\nname = \"birthday-call\"\non = \"birthday\"\nsend = \"task\"\ntemplate = \"occasion_task\"\n\
         \n[[occasion]]\nname = \"anniversary\"\non = \"anniversary\"\nyears = [10]\ntemplate = \"anniversary\"\n\
         \n[[occasion]]\nname = \"checkin\"\non = \"every\"\ncron = \"0 9 14 3 *\"\nsend = \"task\"\ntemplate = \"checkin\"\n",
    );
    text
}

/// A TOML basic string (escapes for quotes and backslashes).
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What Python's strict parser made of each message (see `tests/mail/strict_parse.py`).
fn strict_parse(messages: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let f = dir.path().join(format!("{i}.eml"));
            std::fs::write(&f, m).unwrap();
            f
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mail/strict_parse.py");
    let out = Command::new("/usr/bin/python3").arg(script).args(&files).output().expect("/usr/bin/python3");
    assert!(out.status.success(), "email.policy.strict refused a message: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The header names of a message in order, as `mail-parser` sees them.
fn header_names(m: &mail_parser::Message) -> BTreeSet<String> {
    m.headers().iter().map(|h| h.name.as_str().to_string()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The raw header block's lines (unfolded lines are checked for length, folded ones for form).
fn header_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8(raw.to_vec()).expect("a message is ASCII");
    let end = text.find("\r\n\r\n").expect("a header block");
    text[..end].split("\r\n").map(str::to_string).collect()
}

/// Every check that holds for any generated message; returns Python's and mail-parser's view.
fn check_message(raw: &[u8], python: &serde_json::Value, customer_email: bool) {
    assert!(raw.is_ascii(), "8-bit data in a message");
    for line in header_lines(raw) {
        assert!(line.len() <= 78, "header line of {} octets: {line}", line.len());
    }
    let parsed = mail_parser::MessageParser::default().parse(raw).expect("mail-parser reads it");
    let mut expected = set(&[
        "From",
        "To",
        "Subject",
        "Message-ID",
        "Date",
        "MIME-Version",
        "Content-Type",
        "Auto-Submitted",
        "X-Auto-Response-Suppress",
    ]);
    if customer_email {
        expected.insert("Reply-To".into());
    }
    assert_eq!(header_names(&parsed), expected, "headers of\n{}", String::from_utf8_lossy(raw));
    let python_names: BTreeSet<String> =
        python["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap().to_string()).collect();
    assert_eq!(python_names, expected);
    let header = |name: &str| -> &serde_json::Value {
        python["headers"].as_array().unwrap().iter().find(|h| h[0] == name).unwrap_or_else(|| panic!("{name}"))
    };
    // Both parsers decode the same subject and names.
    assert_eq!(parsed.subject().unwrap(), header("Subject")[1].as_str().unwrap());
    let to = parsed.to().and_then(|a| a.first()).unwrap();
    assert_eq!(to.address.as_deref(), header("To")[2][0][1].as_str());
    // Python's phrase parser keeps the fold between two adjacent encoded words of one display
    // name as a space (RFC 2047 §6.2 says to ignore it, as mail-parser and mail clients do), so
    // a long name without spaces comes back with one there.
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(squeeze(to.name.as_deref().unwrap_or("")), squeeze(header("To")[2][0][0].as_str().unwrap()));
    assert_eq!(header("Auto-Submitted")[1], "auto-generated");
    assert_eq!(parsed.header_raw("X-Auto-Response-Suppress").map(str::trim), Some("OOF, AutoReply"));
    if customer_email {
        assert_eq!(header("Reply-To")[2][0][1], "owner@example.com");
        assert_eq!(
            parsed.reply_to().and_then(|a| a.first()).and_then(|a| a.address.as_deref()),
            Some("owner@example.com")
        );
    }
    // The sender's zone (Europe/Berlin, CET in March) in Date:.
    let date = parsed.date().unwrap();
    assert_eq!((date.tz_before_gmt, date.tz_hour, date.tz_minute), (false, 1, 0), "{}", date.to_rfc3339());
    assert!(header("Date")[1].as_str().unwrap().ends_with("+0100"));
    // multipart/alternative: text/plain then text/html, both UTF-8.
    let parts = python["parts"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["multipart/alternative", "text/plain", "text/html"]);
    assert_eq!(parsed.body_text(0).unwrap().trim_end(), parts[1]["content"].as_str().unwrap().trim_end());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_generated_message_parses_strictly_with_the_expected_headers() {
    let de = plan("muster-de", "de", "Müller & Söhne <GmbH> \"Test\"");
    let en = plan("harbor-en", "en", "Harbor <script>alert(1)</script> Ltd");
    // 2026-03-14 09:00 Europe/Berlin: every rule fires at once.
    let app =
        spawn_app(&[("muster-de", &de), ("harbor-en", &en)], &[], utc("2026-03-14T07:00:00Z"), Delivery::Smtp).await;
    let report = app.tick_at("2026-03-14T08:30:00Z").await;
    let per_customer = HOSTILE.len() * 2 + 2;
    assert_eq!(report.accepted as usize, 2 * per_customer, "{report:?} {:?}", app.states().await);
    let messages: Vec<Received> = app.smtp.messages();
    let python = strict_parse(&messages.iter().map(|m| m.data.clone()).collect::<Vec<_>>());
    let mut seen_names = BTreeSet::new();
    for (m, py) in messages.iter().zip(&python) {
        let customer_email = m.to[0] != "owner@example.com";
        check_message(&m.data, py, customer_email);
        let parsed = mail_parser::MessageParser::default().parse(&m.data).unwrap();
        let html = parsed.body_html(0).unwrap().to_string();
        assert!(!html.contains("<script>"), "unescaped markup in\n{html}");
        if customer_email {
            let name = parsed.to().and_then(|a| a.first()).and_then(|a| a.name.as_deref()).unwrap().to_string();
            assert!(HOSTILE.contains(&name.as_str()), "To: name {name:?} is not one of the plan's");
            seen_names.insert(name);
        }
    }
    assert_eq!(seen_names.len(), HOSTILE.len(), "every hostile name got its greeting");
}

/// `mail::build` on its own, with what `check` would refuse too: names far longer than any
/// plan may hold are folded, control characters give an error (never a panic).
#[test]
fn building_never_panics_and_folds_any_name() {
    let long = "A".repeat(5000);
    let emoji = "👩‍👩‍👧".repeat(300);
    let mixed = format!("{} {}", "Ä".repeat(500), "x".repeat(900));
    let names: Vec<&str> = HOSTILE.iter().copied().chain([long.as_str(), emoji.as_str(), mixed.as_str()]).collect();
    let mut built = Vec::new();
    for name in &names {
        let subject = format!("Alles Gute, {name}!");
        let out = Outgoing {
            from: Party { name: Some("Beispiel GmbH – Ihr Kundenteam"), address: "team@example.com" },
            to: Party { name: Some(name), address: "anna@example.com" },
            cc: None,
            reply_to: Some(Party { name: None, address: "owner@example.com" }),
            subject: &subject,
            text: &format!("Hallo {name},\n\nalles Gute!\n"),
            html: &format!("<p>Hallo {},</p>", name.replace('<', "&lt;")),
            message_id: "<0123456789abcdef@example.com>",
            date: chrono::DateTime::parse_from_rfc3339("2026-03-14T09:00:00+01:00").unwrap(),
        };
        built.push(mail::build(&out).unwrap().formatted());
    }
    let python = strict_parse(&built);
    for ((raw, py), name) in built.iter().zip(&python).zip(&names) {
        check_message(raw, py, true);
        let header = |n: &str| py["headers"].as_array().unwrap().iter().find(|h| h[0] == n).unwrap().clone();
        let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
        let to = parsed.to().and_then(|a| a.first()).and_then(|a| a.name.as_deref()).unwrap().to_string();
        assert_eq!(to, *name, "mail-parser: the name as written");
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squeeze(header("To")[2][0][0].as_str().unwrap()), squeeze(name), "Python: the name");
        assert_eq!(header("Subject")[1].as_str().unwrap(), format!("Alles Gute, {name}!"));
        assert_eq!(parsed.subject().unwrap(), format!("Alles Gute, {name}!"));
    }
    for bad in ["Eve\nExample", "Eve\r\nBcc: x@evil.example", "Eve\0", "Eve\u{1b}[31m", "Eve\u{7f}", "Eve\u{85}"] {
        let out = Outgoing {
            from: Party { name: Some("Team"), address: "team@example.com" },
            to: Party { name: Some(bad), address: "eve@example.com" },
            cc: None,
            reply_to: None,
            subject: bad,
            text: "",
            html: "",
            message_id: "<x@example.com>",
            date: chrono::DateTime::parse_from_rfc3339("2026-03-14T09:00:00+01:00").unwrap(),
        };
        let err = mail::build(&out).expect_err(bad).to_string();
        assert!(err.contains("control character"), "{err}");
    }
}

/// `preview --raw` writes what a mail client opens as an .eml file.
#[test]
fn preview_raw_is_a_message_a_mail_client_opens() {
    let out = Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .args(["preview", "--customer", "mueller-maschinenbau", "--occasion", "birthday", "--contact", "anna"])
        .args(["--date", "2026-01-01", "--raw"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with(b"From: "), "starts with a header, no mbox line");
    assert!(!out.stdout.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "CRLF line ends throughout");
    let python = strict_parse(std::slice::from_ref(&out.stdout));
    let subject = python[0]["headers"].as_array().unwrap().iter().find(|h| h[0] == "Subject").unwrap()[1].clone();
    assert!(subject.as_str().unwrap().contains("Geburtstag"), "{subject}");
}
