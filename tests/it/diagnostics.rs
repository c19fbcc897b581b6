//! Every diagnostic `contactplan check` can print, each pinned by a fixture and a snapshot.
//!
//! Each directory under `tests/fixtures/diagnostics/` is one case. The test copies it into a
//! temporary workspace, adds what the case does not bring (the config below, an empty
//! `plans/`, and `templates/` linked to the repository's), runs the real binary's
//! `check --config <workspace>/contactplan.toml` and compares exit status, stdout and stderr,
//! with the workspace shown as `[WS]`, to `snapshots/it__diagnostics__<case>.snap`. The first
//! line of each fixture file says what is wrong in it. A few cases need what a file cannot
//! hold; `run` prepares those by name (Latin-1 files, a missing config, unreadable systemd
//! credentials). Review or accept changes with `cargo insta review` or `INSTA_UPDATE=always`.
//!
//! Sites are named by file, function and message (line numbers move). "(3 levels)" means one
//! case per level: `calendar-customer-…` (`[customer]`), `calendar-rule-…` (`[[occasion]]`)
//! and `calendar-config-…` (the daemon config's `[calendar]`, same validation code).
//!
//! | # | site | message | fixture |
//! |---|---|---|---|
//! | 1 | plan/validate/mod.rs `toml_errors` (plan/entries.rs `parse_document`), syntax | invalid basic string … (every line's first error; stops after one inside an array) | `plan-toml-syntax`, `plan-toml-syntax-several`, `plan-toml-syntax-unclosed-array` |
//! | 2 | plan/entries.rs `unknown` (via `raw_table!`) | unknown key `e-mail` in [[contact]] (did you mean …) | `plan-unknown-field`, `playbook-toml-error`, `plan-unknown-top-level-key` |
//! | 3 | plan/entries.rs `absent` (via `raw_table!`), lenient.rs `plan` | missing key `phase` in [customer] / missing table [customer] (the rest is checked) | `plan-missing-field`, `plan-missing-field-hides-nothing`, `plan-no-customer-table`, `plan-rule-missing-name` |
//! | 4 | plan/entries.rs `field` | invalid type: string "yes", expected a boolean (the table's other keys are checked) | `plan-invalid-type`, `plan-contact-wrong-type-hides-nothing`, `plan-rule-wrong-type-hides-nothing`, `playbook-rule-wrong-type` |
//! | 4b | plan/lenient.rs `wrong_type` | [[contact]] must be an array of tables, not a table | `plan-contact-not-a-table` |
//! | 5 | plan/validate/scalars.rs `parse_tz` | unknown time zone | `plan-timezone` |
//! | 6 | plan/validate/scalars.rs `parse_email` (plan/model.rs `Email::parse`) | … is not a valid email address: … (not ASCII, too long, …) | `plan-owner-email`, `plan-contact-email`, `plan-contact-email-not-ascii` |
//! | 7 | plan/validate/scalars.rs `parse_language` | unknown language | `plan-language` |
//! | 8 | plan/validate/scalars.rs `parse_id` | invalid customer id / occasion name | `plan-customer-id`, `rule-name` |
//! | 9 | plan/validate/scalars.rs `parse_date`, string | … is not a valid birthday / date | `plan-birthday`, `rule-date` |
//! | 10 | plan/validate/scalars.rs `parse_date`, other value | … is not a valid relationship start date | `plan-since-not-a-date` |
//! | 11 | plan/validate/scalars.rs `parse_time` | … is not a local time of day | `rule-at` |
//! | 12 | plan/validate/scalars.rs `parse_lead` | … is not a lead time | `rule-before` |
//! | 13 | plan/validate/scalars.rs `calendar_settings`, `region` (3 levels) | unknown region | `calendar-customer-region`, `calendar-rule-region`, `calendar-config-region` |
//! | 14 | plan/validate/scalars.rs `calendar_settings`, `weekend` item (3 levels) | … is not a day of the week | `calendar-customer-weekend`, `calendar-rule-weekend`, `calendar-config-weekend` |
//! | 15 | plan/validate/scalars.rs `calendar_settings`, `weekend` list (3 levels) | every day of the week is closed … | `calendar-customer-weekend-every-day`, `calendar-rule-weekend-every-day`, `calendar-config-weekend-every-day` |
//! | 16 | plan/validate/scalars.rs `calendar_settings`, `closed` item (3 levels) | … is not a date (YYYY-MM-DD) or a yearly day | `calendar-customer-closed`, `calendar-rule-closed`, `calendar-config-closed` |
//! | 17 | plan/validate/scalars.rs `calendar_settings`, `blackout` item (3 levels) | period … mixes a yearly day … | `calendar-customer-blackout`, `calendar-rule-blackout`, `calendar-config-blackout` |
//! | 18 | plan/validate/scalars.rs `calendar_settings`, `on_closed` (3 levels) | unknown on_closed policy | `calendar-customer-on-closed`, `calendar-rule-on-closed`, `calendar-config-on-closed` |
//! | 19 | plan/validate/scalars.rs `calendar_settings`, `window` (3 levels) | send window … must start before it ends | `calendar-customer-window`, `calendar-rule-window`, `calendar-config-window` |
//! | 20 | plan/validate/scalars.rs `calendar_settings`, `jitter` (3 levels) | … is not a jitter spread | `calendar-customer-jitter`, `calendar-rule-jitter`, `calendar-config-jitter` |
//! | 21 | plan/validate/scalars.rs `parse_duration` | … is not a duration | `rule-deadline` |
//! | 22 | plan/validate/rule.rs `apply_keys`, `on` | unknown occasion kind | `rule-kind` |
//! | 23 | plan/validate/rule.rs `apply_keys`, `years` | years must list positive whole years | `rule-years` |
//! | 24 | plan/validate/rule.rs `apply_keys`, `every_years` | every_years must be at least 1 | `rule-every-years` |
//! | 25 | plan/validate/rule.rs `apply_keys`, `counts` | counts must list positive order counts | `rule-counts` |
//! | 25b | plan/validate/rule.rs `apply_keys`, `every_count` | every_count must be at least 1 | `rule-every-count` |
//! | 25c | plan/validate/rule.rs `apply_keys`, `revenue` | revenue must list positive amounts | `rule-revenue` |
//! | 25d | plan/validate/rule.rs `apply_keys`, `on_multiple` | unknown on_multiple policy | `rule-on-multiple` |
//! | 25e | plan/validate/customer.rs `plan`, `currency` (money.rs `Currency::parse`) | … is not a currency code | `plan-currency` |
//! | 26 | plan/validate/rule.rs `apply_keys`, `cron` | invalid cron expression … | `rule-cron` (and in a playbook: `plan-playbook-has-errors`) |
//! | 27 | plan/validate/rule.rs `apply_keys`, `send` | unknown send action | `rule-send` |
//! | 28 | plan/validate/rule.rs `apply_keys`, `to` | unknown recipient | `rule-to` |
//! | 29 | plan/validate/rule.rs `apply_keys`, `template` | unknown template | `rule-template` |
//! | 30 | plan/validate/rule.rs `apply_keys`, `leap_day` | unknown leap_day policy | `rule-leap-day` |
//! | 31 | plan/validate/rule.rs `apply_keys`, `delivery` | unknown delivery policy | `rule-delivery` |
//! | 31b | plan/validate/rule.rs `apply_keys`, `priority` | priority … is out of range | `rule-priority` |
//! | 32 | plan/validate/rule.rs `complete` | occasion … has no `on` | `rule-no-on` |
//! | 33 | plan/validate/rule.rs `complete` | occasion … has no `template` | `rule-no-template` |
//! | 34 | plan/validate/rule.rs `complete`, misplaced | … `cron` applies only to `on = "every"` rules | `rule-misplaced-key` |
//! | 35 | plan/validate/rule.rs `complete`, birthday | birthday rules concern contacts | `rule-birthday-to-owner` |
//! | 36 | plan/validate/rule.rs `complete`, anniversary | … needs `years` or `every_years` | `rule-anniversary-needs-years` |
//! | 37 | plan/validate/rule.rs `complete`, orders | … needs `counts`, `every_count` or `revenue` | `rule-orders-needs-counts` |
//! | 37b | plan/validate/rule.rs `complete`, misplaced orders keys | `counts/every_count/revenue/on_multiple` applies only to `on = "orders"` rules | `rule-orders-keys-misplaced` |
//! | 37c | plan/validate/rule.rs `complete`, warning | `before` has no effect on `on = "orders"` rules | `rule-orders-before` |
//! | 37d | plan/validate/rule.rs `complete`, misplaced | `to = "new"/"departed"` applies only to `on = "handover"` rules | `rule-handover-target-elsewhere` |
//! | 37e | plan/validate/rule.rs `apply_keys`, `phases` | unknown phase | `rule-phases` |
//! | 37f | plan/validate/rule.rs `apply_keys`, `to_phase` | unknown phase | `rule-to-phase` |
//! | 37g | plan/validate/rule.rs `complete`, misplaced | `to_phase` applies only to `on = "phase"` rules | `rule-to-phase-misplaced` |
//! | 37h | plan/validate/customer.rs `contact_phone`, `plan` (role) | phone … contains …; role is empty | `plan-contact-phone` |
//! | 37i | plan/validate/customer.rs `note_list` | notes must be a string or an array of strings; an entry of goals contains the control character | `plan-customer-notes` |
//! | 38 | plan/validate/rule.rs `complete`, every | … needs `cron` | `rule-every-needs-cron` |
//! | 39 | plan/validate/rule.rs `complete`, date | … needs `date` | `rule-date-needs-date` |
//! | 40 | plan/validate/rule.rs `complete`, warning | `before` has no effect on `on = "every"` rules | `rule-before-on-every` |
//! | 41 | plan/validate/rule.rs `playbook` | `enabled` belongs in a plan's override … | `playbook-enabled` |
//! | 42 | plan/validate/rule.rs `playbook` | occasion … is defined twice | `playbook-duplicate-rule` |
//! | 43 | plan/validate/customer.rs `plan` | customer name is empty | `plan-customer-name-empty` |
//! | 44 | plan/validate/customer.rs `plan` | unknown phase | `plan-phase` |
//! | 45 | plan/validate/customer.rs `plan` | contact id … is used twice | `plan-contact-id-twice` |
//! | 46 | plan/validate/customer.rs `plan` | unknown gender | `plan-gender` |
//! | 47 | plan/validate/customer.rs `plan` | unknown tone | `plan-tone` |
//! | 48 | plan/validate/customer.rs `plan` | contact name is empty | `plan-contact-name-empty` |
//! | 49 | plan/validate/customer.rs `plan` | no contact is marked `primary = true` | `plan-no-primary` |
//! | 50 | plan/validate/customer.rs `plan` | a second contact is marked `primary = true` | `plan-two-primary` |
//! | 51 | plan/validate/customer.rs `plan` | playbook … has errors | `plan-playbook-has-errors` |
//! | 52 | plan/validate/customer.rs `plan` | unknown playbook | `plan-unknown-playbook` |
//! | 53 | plan/validate/customer.rs `plan` | occasion … is defined twice in this plan | `plan-occasion-twice` |
//! | 54 | plan/validate/customer.rs `plan` | `enabled = false` for …, which the playbook does not define | `plan-disable-unknown-rule` |
//! | 55 | plan/validate/customer.rs `check_template_variants` | template … has no variant … | `template-variant-missing`, `template-variant-missing-task` |
//! | 56 | plan/load.rs `dir_error`, plans | cannot read directory | `plans-dir-missing` |
//! | 57 | plan/load.rs `dir_error`, playbooks | cannot read directory | `playbooks-dir-not-a-dir` |
//! | 58 | plan/load.rs `playbooks_with_last_good` | cannot read playbook | `playbook-not-utf8` |
//! | 59 | plan/load.rs `plan_file` (files.rs `read_text`) | cannot read plan: not UTF-8 / not a regular file / more than the limit | `plan-not-utf8`, `plan-fifo`, `plan-dev-zero`, `plan-too-large` |
//! | 60 | plan/load.rs `load_with_last_good` | customer id … is also used by … | `duplicate-customer-id` (\*) |
//! | 61 | render/catalog.rs `scan` | cannot read templates directory | `templates-dir-missing` |
//! | 62 | render/catalog.rs `scan` | template variant is missing … | `template-variant-incomplete` |
//! | 63 | render/mod.rs `compile` | cannot read template | `template-not-utf8` |
//! | 64 | render/mod.rs `compile` | template syntax error | `template-syntax` |
//! | 65 | config/mod.rs `Config::load` | cannot read the config file | `config-missing` |
//! | 66 | config/parse.rs `parse`, TOML syntax (plan/entries.rs `parse_document`) | invalid basic string … (every line's first error) | `config-toml-syntax` |
//! | 66b | config/parse.rs `read` (plan/entries.rs `unknown`, via `raw_table!`) | unknown key `horizon` in the config's top level / in [delivery] (did you mean …) | `config-unknown-key`, `config-unknown-key-in-table` |
//! | 66c | config/parse.rs `read`/`missing` (plan/entries.rs `absent`) | missing key `name` in [sender] / missing table [sender] | `config-missing-key`, `config-missing-sender` |
//! | 66d | config/parse.rs `read` (plan/entries.rs `field`) | invalid type: string "7", expected i64 | `config-wrong-type` |
//! | 66e | config/parse.rs `table` | [sender] must be a table, not a string | `config-table-not-a-table` |
//! | 67 | config/parse.rs `parse` | unknown time zone | `config-timezone` |
//! | 68 | config/parse.rs `parse`, `email` (sender, ops) | … is not a valid email address | `config-sender-email` |
//! | 69 | config/parse.rs `parse` | horizon_days must be between 1 and 366 | `config-horizon-days` |
//! | 69b | config/parse.rs `parse`, `ops.language` | unknown ops.language | `config-ops-language` |
//! | 70 | config/parse.rs `parse` | batch_size must be between 1 and 10000 | `config-batch-size` |
//! | 71 | config/parse.rs `parse` | http_bind … is not an address:port | `config-http-bind` |
//! | 72 | config/parse.rs `parse`, `days` | retention.outbox_days must be between … | `config-retention` |
//! | 73 | config/secrets.rs `Secrets::resolve`, `credential` | cannot read the credential `api-token` … | `config-api-token-credential` |
//! | 73b | config/secrets.rs `read_secret` | the credential `api-token` … is empty | `config-api-token-empty` |
//! | 73c | config/secrets.rs `from_env` | the environment variable … is set but empty | `config-smtp-password-env-empty` |
//! | 74 | config/parse.rs `parse`, `resolve_database_url` | database_url … is neither sqlite:// nor postgres:// | `config-database-url` |
//! | 75 | config/parse.rs `delivery` | SMTP settings given for a maildir delivery | `config-maildir-with-smtp-keys` |
//! | 76 | config/parse.rs `delivery` | maildir delivery needs `path` | `config-maildir-no-path` |
//! | 77 | config/parse.rs `delivery` | `path` applies to maildir delivery only | `config-smtp-with-path` |
//! | 78 | config/parse.rs `delivery` | smtp delivery needs `host` | `config-smtp-no-host` |
//! | 79 | config/secrets.rs `Secrets::resolve`, SMTP password | cannot read the password file / credential | `config-smtp-password-file`, `config-smtp-password-credential` |
//! | 80 | config/parse.rs `delivery` | delivery.connections must be between 1 and 64 | `config-smtp-connections` |
//! | 81 | config/parse.rs `delivery` | delivery.timeout_secs must be positive | `config-smtp-timeout` |
//! | 82 | config/parse.rs `delivery` | unknown delivery kind | `config-delivery-kind` |
//! | 83 | config/parse.rs `lease` | delivery.lease_secs must be between 3 and 3600 | `config-lease-secs` |
//! | 84 | config/parse.rs `http_limits` | http_max_connections must be between 1 and 10000 | `config-http-max-connections` |
//! | 85 | config/parse.rs `http_limits` | http_timeout_secs must be between 1 and 3600 | `config-http-timeout` |
//! | 86 | config/parse.rs `relay_limits` | delivery.max_per_second (…_minute, …_hour, …_day) must be between 1 and 1000000000 | `config-max-per-second` |
//! | 87 | config/parse.rs `relay_limits` | a delivery.quota_patterns entry must have 1 to 200 characters | `config-quota-patterns` |
//! | 86 | plan/validate/scalars.rs `check_text`, control character (plan/model.rs `text_problem`) | contact name contains the control character U+000A … | `plan-contact-name-control`, `plan-customer-name-control`, `plan-contact-keys-control` |
//! | 87 | plan/validate/scalars.rs `check_text`, length | contact name is 140 characters long (at most 128) | `plan-contact-name-too-long` |
//! | 88 | plan/validate/customer.rs `contact_names` | given_name / salutation is empty | `plan-contact-keys-empty` |
//! | 89 | plan/validate/customer.rs `warn_unsure_greeting`, warning | cannot tell the family name in … for certain | `plan-contact-name-unsure` |
//! | 90 | render/sample.rs `trial_run` (render/mod.rs `Renderer::diagnostic`), template error | template fails for customer …: undefined value / engine ran out of fuel | `template-render-undefined`, `template-render-fuel`, `template-override-broken` |
//! | 91 | render/sample.rs `trial_run`, output cap | template … produced more than 262144 bytes | `template-render-too-large` |
//! | 92 | cli/check.rs `run`, warning | template overrides for …, which no valid plan defines | `template-override-unknown-customer` |
//! | 93 | plan/validate/rule.rs `apply_keys`, `event` | … is not an event kind | `rule-event-kind` |
//! | 94 | plan/validate/rule.rs `apply_keys`, `cc` (scalars.rs `parse_email`) | … is not a valid email address | `rule-cc` |
//! | 95 | plan/validate/rule.rs `complete`, event | `cc` applies only to tasks | `rule-cc-needs-task` |
//! | 96 | plan/validate/rule.rs `complete`, event | … needs `event` | `rule-event-needs-event` |
//! | 97 | plan/validate/rule.rs `apply_keys`, `days` | days must be between 1 and 3660 | `rule-days` |
//! | 98 | plan/validate/rule.rs `apply_keys`, `factor` | … is not a factor between 1 and 20 | `rule-factor` |
//! | 99 | plan/validate/rule.rs `complete`, inactivity | … needs `days` or `factor` | `rule-inactivity-needs-days` |
//! | 100 | plan/validate/rule.rs `complete`, misplaced | `event/cc` applies only to `on = "event"` rules; `days/factor` … `on = "inactivity"` | `rule-event-keys-misplaced` |
//! | 101 | cli/check.rs `capacity_warning`, warning (capacity.rs `forecast`) | the plans do not fit the relay's limits over the next 14 days: … would miss their deadline | `check-capacity` |
//! | 102 | plan/validate/scalars.rs `parse_spread` | … is not a spread | `rule-spread` |
//! | 103 | plan/validate/rule.rs `complete`, misplaced | `spread` applies only to `on = "birthday"/"anniversary"/"date"` rules | `rule-spread-misplaced` |
//! | 101 | plan/validate/customer.rs `plan`, `ended` | the relationship cannot end … before it started; … is not a valid end date | `plan-ended`, `plan-ended-not-a-date` |
//! | 102 | config/parse.rs `smtp_auth` | unknown delivery.auth | `config-auth-unknown` |
//! | 103 | config/parse.rs `smtp_auth` | [delivery.oauth] applies to auth = "xoauth2" only | `config-oauth-without-xoauth2` |
//! | 104 | config/parse.rs `smtp_auth` | password_file applies to auth = "password" only | `config-xoauth2-with-password-file` |
//! | 105 | config/parse.rs `smtp_auth` | auth = "xoauth2" needs `username`, the mailbox that sends | `config-xoauth2-no-username` |
//! | 106 | config/parse.rs `smtp_auth` | auth = "xoauth2" with tls = "none" would send the token … unencrypted | `config-xoauth2-plaintext` |
//! | 107 | config/parse.rs `smtp_auth` | auth = "xoauth2" needs a [delivery.oauth] table | `config-xoauth2-no-oauth-table` |
//! | 108 | config/parse.rs `oauth_settings` | the OAuth client secret must not be written in the config file | `config-oauth-client-secret-in-file` |
//! | 109 | config/parse.rs `oauth_settings` | delivery.oauth.client_id is empty | `config-oauth-empty` |
//! | 110 | config/parse.rs `oauth_settings` | provider = "microsoft" needs `tenant` | `config-oauth-no-tenant` |
//! | 111 | config/parse.rs `oauth_settings` | delivery.oauth.tenant … is not a tenant id or domain | `config-oauth-tenant` |
//! | 112 | config/parse.rs `oauth_settings` | `tenant` applies to provider = "microsoft" only | `config-oauth-tenant-elsewhere` |
//! | 113 | config/parse.rs `oauth_settings` | provider = "custom" needs `token_url` and `scope` | `config-oauth-custom-incomplete`, `config-oauth-custom-no-scope` |
//! | 114 | config/parse.rs `oauth_settings` | unknown delivery.oauth.provider | `config-oauth-provider` |
//! | 115 | config/parse.rs `oauth_settings` (mail/oauth.rs `check_token_url`) | delivery.oauth.token_url … is plain http | `config-oauth-token-url` |
//! | 116 | config/secrets.rs `Secrets::resolve` | auth = "xoauth2" needs the OAuth client secret, and none was given | `config-oauth-no-secret` |
//! | 117 | config/secrets.rs `from_env` / `read_secret`, OAuth client secret | CONTACTPLAN_OAUTH_CLIENT_SECRET is set but empty / the credential `oauth-client-secret` … is empty | `config-oauth-secret-env-empty`, `config-oauth-secret-credential-empty` |
//! | 118 | render/sample.rs `trial_call_instead` | a `call_instead` variant that does not compile: its template syntax error, not also "no call_instead template" | `template-call-instead-broken` |
//!
//! Every site is reachable through `check`. (\*) The file whose path sorts first keeps the id,
//! whatever order `read_dir` lists the plans directory in (it differs between ext4 and tmpfs).
//!
//! Several problems in one run, and what hides what today (pinned as it is, not as it should be):
//!
//! | fixture | what it shows |
//! |---|---|
//! | `several-problems-in-one-plan` | time zone, weekend, phase, contact email and a rule's `at`: five errors from one plan |
//! | `several-problems-in-one-config` | time zone, sender email, horizon and delivery kind: four errors from one config |
//! | `unknown-keys-hide-nothing` | fixed: an unknown key is reported with the bad email and time zone below it (it hid them until issue 14) |
//! | `several-problems-with-unknown-keys` | unknown keys in three tables, a missing key, two wrong types, a bad zone, a bad tone and a bad `at`: all in one run. Fixed: a table with a missing key or a wrong type is still checked key by key (Bob's tone) |
//! | `every-problem-in-one-plan` | unknown keys with suggestions in every table, a wrong type in [customer] and in a contact and a rule, bad values in all of them, a duplicate contact id, a missing `email`, a misspelt `template` (not also reported missing), a rule with no `cron`: 19 errors in one run (8 before) |
//! | `every-problem-in-one-config` | unknown keys with suggestions at the top level and in [sender], [delivery], [ops] and [calendar], wrong types, bad values in every table: 17 errors in one run (1 before: serde stopped at the first unknown key) |
//! | `plan-missing-field-hides-nothing`, `plan-contact-wrong-type-hides-nothing`, `plan-rule-wrong-type-hides-nothing`, `plan-rule-missing-name` | fixed: a missing or mistyped key no longer hides the other keys of its table (nor, for [customer], the contacts and rules); a mistyped key is not also "missing" |
//! | `config-missing-key`, `config-unknown-key-in-table`, `config-wrong-type`, `config-table-not-a-table` | fixed: the config is read key by key like a plan; an unknown, missing or mistyped key no longer hides the other problems of the file |
//! | `plan-toml-syntax-several`, `config-toml-syntax` | fixed: every line's first syntax error is reported, not only the file's first; after an error inside an array or inline table the report stops (`plan-toml-syntax-unclosed-array`), and a file with syntax errors is not checked further |
//! | `hidden-rule-completeness` | fixed: a bad value no longer hides that the rule is incomplete (no `cron`), no `on` no longer hides no `template` |
//! | `hidden-template-variant` | fixed: missing template variants are checked for the valid contacts and rules even when the plan has other errors |
//! | `hidden-by-config-error` | a config error stops `check` (exit 2) before any plan is read |
//! | `hidden-by-enabled-false` | fixed: the keys of an entry with `enabled = false` are checked too (the bad `at` is reported) |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn fixtures() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/diagnostics")
}

/// The cases: one directory each, in name order.
fn cases() -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(fixtures()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// The config of a case that brings none.
const DEFAULT_CONFIG: &str = "database_url = \"sqlite://outbox.db\"\ntemplates = \"templates\"\n\n\
    [sender]\nemail = \"team@example.com\"\nname = \"Example Team\"\n\n\
    [delivery]\nkind = \"maildir\"\npath = \"maildir\"\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Rewrites a UTF-8 file in Latin-1, as an editor set to that encoding would save it.
fn save_as_latin1(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let bytes: Vec<u8> = text.chars().map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character")).collect();
    assert!(std::str::from_utf8(&bytes).is_err(), "{}: no character outside ASCII", file.display());
    std::fs::write(file, bytes).unwrap();
}

/// Runs `check` on one case in a fresh workspace; the output with the workspace and the
/// repository replaced by `[WS]` and `[REPO]`.
fn run(case: &str) -> String {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path();
    copy_dir(&fixtures().join(case), root);
    if !root.join("contactplan.toml").exists() {
        std::fs::write(root.join("contactplan.toml"), DEFAULT_CONFIG).unwrap();
    }
    std::fs::create_dir_all(root.join("plans")).unwrap();
    if !root.join("templates").exists() {
        std::os::unix::fs::symlink(Path::new(REPO).join("templates"), root.join("templates")).unwrap();
    }
    let mut config = root.join("contactplan.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactplan"));
    for var in [
        "CONTACTPLAN_DATABASE_URL",
        "CONTACTPLAN_CONFIG",
        "CONTACTPLAN_API_TOKEN",
        "CONTACTPLAN_SMTP_PASSWORD",
        "CONTACTPLAN_OAUTH_CLIENT_SECRET",
        "CREDENTIALS_DIRECTORY",
        "JOURNAL_STREAM",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    // What a fixture file cannot express.
    let credential = |cmd: &mut Command, name: &str| {
        std::fs::create_dir_all(root.join("credentials").join(name)).unwrap();
        cmd.env("CREDENTIALS_DIRECTORY", root.join("credentials"));
    };
    match case {
        "config-missing" => config = root.join("missing.toml"),
        "plan-not-utf8" => save_as_latin1(&root.join("plans/acme.toml")),
        "playbook-not-utf8" => save_as_latin1(&root.join("playbooks/standard.toml")),
        "template-not-utf8" => save_as_latin1(&root.join("templates/greeting/en/body.txt.j2")),
        "config-api-token-credential" => credential(&mut cmd, "api-token"),
        "config-smtp-password-credential" => credential(&mut cmd, "smtp-password"),
        "plan-fifo" => {
            let file = root.join("plans/acme.toml");
            std::fs::remove_file(&file).unwrap();
            let status = Command::new("mkfifo").arg(&file).status().unwrap();
            assert!(status.success(), "mkfifo");
        }
        "plan-dev-zero" => {
            let file = root.join("plans/acme.toml");
            std::fs::remove_file(&file).unwrap();
            std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        }
        "plan-too-large" => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(root.join("plans/acme.toml")).unwrap();
            let line = format!("# {}\n", "x".repeat(1021));
            for _ in 0..1024 {
                f.write_all(line.as_bytes()).unwrap();
            }
        }
        "config-api-token-empty" => {
            std::fs::create_dir_all(root.join("credentials")).unwrap();
            std::fs::write(root.join("credentials/api-token"), "\n").unwrap();
            cmd.env("CREDENTIALS_DIRECTORY", root.join("credentials"));
        }
        "config-smtp-password-env-empty" => {
            cmd.env("CONTACTPLAN_SMTP_PASSWORD", "");
        }
        "config-oauth-secret-env-empty" => {
            cmd.env("CONTACTPLAN_OAUTH_CLIENT_SECRET", "");
        }
        "config-oauth-secret-credential-empty" => {
            std::fs::create_dir_all(root.join("credentials")).unwrap();
            std::fs::write(root.join("credentials/oauth-client-secret"), "\n").unwrap();
            cmd.env("CREDENTIALS_DIRECTORY", root.join("credentials"));
        }
        _ => {}
    }
    let out = cmd.arg("check").arg("--config").arg(&config).current_dir(root).output().unwrap();
    let text = format!(
        "exit status: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        out.status.code().map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    text.replace(&root.display().to_string(), "[WS]").replace(REPO, "[REPO]")
}

#[test]
fn every_diagnostic_check_can_print() {
    let cases = cases();
    let this_file = include_str!("diagnostics.rs");
    let table = &this_file[..this_file.find("\nuse ").unwrap()];
    for case in &cases {
        assert!(table.contains(&format!("`{case}`")), "fixture `{case}` is missing from the table at the top");
    }
    // One `check` process per case, a few at a time.
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let mut outputs: Vec<(usize, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(case) = cases.get(i) else { return done };
                        done.push((i, run(case)));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    outputs.sort_by_key(|(i, _)| *i);
    let mut failed = Vec::new();
    for (i, output) in outputs {
        let case = &cases[i];
        let result = std::panic::catch_unwind(|| {
            insta::with_settings!({
                description => format!("contactplan check on tests/fixtures/diagnostics/{case}/"),
                omit_expression => true,
            }, {
                insta::assert_snapshot!(case.as_str(), output);
            });
        });
        if result.is_err() {
            failed.push(case.clone());
        }
    }
    assert!(failed.is_empty(), "{} snapshots differ: {failed:?}", failed.len());
    // No snapshot outlives its fixture.
    for entry in std::fs::read_dir(Path::new(REPO).join("tests/it/snapshots")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(case) = name.strip_prefix("it__diagnostics__").and_then(|n| n.strip_suffix(".snap")) {
            assert!(cases.iter().any(|c| c == case), "{name} has no fixture directory");
        }
    }
}
