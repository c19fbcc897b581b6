//! The validated, compact in-memory model of customers, contacts and rules. Nothing here
//! knows about TOML, files or spans: `validate` turns raw input into these types.

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use std::sync::Arc;

pub use super::names::Rank;
pub use crate::calendar::{LeapDay, MonthDay};

/// Longest e-mail address (RFC 5321 §4.5.3.1.3: a path of 256 octets, less the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest person's name, given or family name (characters).
pub const MAX_NAME_CHARS: usize = 128;
/// Longest company name (characters).
pub const MAX_COMPANY_CHARS: usize = 200;
/// Longest `title` (characters).
pub const MAX_TITLE_CHARS: usize = 64;
/// Longest `salutation` (characters).
pub const MAX_SALUTATION_CHARS: usize = 200;
/// Longest contact `phone` (characters).
pub const MAX_PHONE_CHARS: usize = 40;
/// Longest contact `role` (characters).
pub const MAX_ROLE_CHARS: usize = 100;
/// Longest single entry of a customer's `notes` or `goals` (characters).
pub const MAX_NOTE_CHARS: usize = 500;
/// Most entries of a customer's `notes` or `goals`.
pub const MAX_NOTES: usize = 20;

/// `s` with control characters written as escapes (`\n`, `\u{1b}`), for messages.
pub fn shown(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Why a text that reaches an e-mail header or a template cannot be used: a control character
/// (a line break, tab, NUL, ESC, DEL, a C1 control, or the Unicode line and paragraph
/// separators), or more than `max` characters. `None` when it is fine.
pub fn text_problem(s: &str, max: usize) -> Option<String> {
    if let Some(c) = s.chars().find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        let name = match c {
            '\0' => " (NUL)",
            '\t' => " (a tab)",
            '\n' => " (a line break, LF)",
            '\r' => " (a carriage return, CR)",
            '\u{1b}' => " (ESC)",
            '\u{7f}' => " (DEL)",
            '\u{2028}' | '\u{2029}' => " (a Unicode line or paragraph separator)",
            _ => "",
        };
        return Some(format!("contains the control character U+{:04X}{name}", c as u32));
    }
    let n = s.chars().count();
    (n > max).then(|| format!("is {n} characters long (at most {max})"))
}

/// A syntactically valid email address (one `@`, a dotted domain, no spaces or controls).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(Box<str>);

impl Email {
    /// Checks `s` as written (no trimming, no normalisation) and keeps it verbatim.
    ///
    /// # Errors
    /// A sentence for the diagnostic when `s` has no `@` or more than one, a local part that is
    /// empty or longer than 64 bytes, whitespace, control characters or any of `<>(),;:"[]\`, or a
    /// domain without a dot or with an empty label or one that starts or ends with `-`, a
    /// label longer than 63 bytes, an address longer than 254 bytes, or any character that is
    /// not ASCII (such an address needs SMTPUTF8, which the daemon does not use).
    pub fn parse(s: &str) -> Result<Email, String> {
        let shown = shown(s);
        let bad = |why: &str| Err(format!("`{shown}` is not a valid email address: {why}"));
        if s.len() > MAX_EMAIL_LEN {
            return bad("it is longer than 254 characters");
        }
        if s.chars().any(char::is_control) {
            return bad("it contains a control character");
        }
        if !s.is_ascii() {
            return bad("it contains characters that are not ASCII (write the domain in its xn-- form)");
        }
        let Some((local, domain)) = s.rsplit_once('@') else { return bad("it has no @") };
        if local.is_empty() || local.len() > 64 {
            return bad("the part before @ must have 1 to 64 characters");
        }
        let forbidden = |b: u8| b <= b' ' || b == 0x7f || b"<>(),;:\"[]\\".contains(&b);
        if s.bytes().any(forbidden) {
            return bad("it contains spaces or special characters");
        }
        if local.contains('@') {
            return bad("it has more than one @");
        }
        let bad_label = |l: &str| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-');
        if !domain.contains('.') || domain.split('.').any(bad_label) {
            return bad("the domain must look like example.com");
        }
        Ok(Email(s.into()))
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `@`: what logs may show at info level.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// German (`de`).
    De,
    /// English (`en`).
    En,
}

impl Language {
    /// The codes [`Language::parse`] accepts.
    pub const ALL: [&'static str; 2] = ["de", "en"];
    /// The language for a code (`de`, `en`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Language> {
        match s {
            "de" => Some(Language::De),
            "en" => Some(Language::En),
            _ => None,
        }
    }
    /// The code in plans and template variant names (`de`, `en`).
    pub fn code(self) -> &'static str {
        match self {
            Language::De => "de",
            Language::En => "en",
        }
    }
}

/// Form of address: German *Sie* (formal) or *du* (informal); English formal/first name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    /// German *Sie*; English title and last name (`formal`).
    Formal,
    /// German *du*; English first name (`informal`).
    Informal,
}

impl Tone {
    /// The tone for `formal` or `informal`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Tone> {
        match s {
            "formal" => Some(Tone::Formal),
            "informal" => Some(Tone::Informal),
            _ => None,
        }
    }
    /// The word in plans and template variant names (`formal`, `informal`).
    pub fn code(self) -> &'static str {
        match self {
            Tone::Formal => "formal",
            Tone::Informal => "informal",
        }
    }
}

/// Grammatical gender for the salutation; `None` gives a neutral greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gender {
    /// "Frau", "Ms".
    Female,
    /// "Herr", "Mr".
    Male,
    /// Not given, `other` or `diverse`: a neutral salutation.
    None,
}

/// Customer life-cycle phase: rules may be limited to phases (`phases = [...]`), and
/// `on = "phase"` rules react to a change of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `initiation`.
    Initiation,
    /// `growth`.
    Growth,
    /// `maturity`.
    Maturity,
    /// `degeneration`.
    Degeneration,
}

impl Phase {
    /// The phase for its word in plans; `None` for anything else.
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "initiation" => Some(Phase::Initiation),
            "growth" => Some(Phase::Growth),
            "maturity" => Some(Phase::Maturity),
            "degeneration" => Some(Phase::Degeneration),
            _ => None,
        }
    }

    /// Every phase, in life-cycle order.
    pub const ALL: [Phase; 4] = [Phase::Initiation, Phase::Growth, Phase::Maturity, Phase::Degeneration];

    /// The word in plans (`phase = "growth"`).
    pub fn code(self) -> &'static str {
        match self {
            Phase::Initiation => "initiation",
            Phase::Growth => "growth",
            Phase::Maturity => "maturity",
            Phase::Degeneration => "degeneration",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A contact person at the customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// Stable identifier within the customer; part of outbox keys, so renaming resends.
    pub id: Box<str>,
    /// Full name as written (`name`): the display name in `To:`.
    pub name: Box<str>,
    /// Given name: `given_name`, or split from `name`; `None` when it cannot be told for
    /// certain (greetings that need it are then neutral).
    pub given_name: Option<Box<str>>,
    /// Family name with its particles (`von der Heide`): `family_name`, or split from `name`;
    /// `None` when it cannot be told for certain.
    pub family_name: Option<Box<str>>,
    /// The name without academic titles and degrees, for neutral greetings ("Guten Tag Karin von
    /// der Heide,").
    pub plain_name: Box<str>,
    /// Academic title as written (`title`, e.g. "Dr."); for templates.
    pub title: Option<Box<str>>,
    /// The highest academic rank in `title` and `name`: the only one greeted.
    pub rank: Option<Rank>,
    /// `salutation`: the whole greeting line as written, instead of the computed one.
    pub salutation: Option<Box<str>>,
    /// For "Frau"/"Herr", "Ms"/"Mr".
    pub gender: Gender,
    /// Where emails to this contact go.
    pub email: Email,
    /// Birthday, year optional.
    pub birthday: Option<MonthDay>,
    /// Sie/du.
    pub tone: Tone,
    /// Overrides the customer's language.
    pub language: Option<Language>,
    /// Overrides the customer's zone (a contact in another office).
    pub timezone: Option<Tz>,
    /// Telephone number as written (`phone`: digits, spaces, `+ ( ) / - .`), for briefs.
    pub phone: Option<Box<str>>,
    /// The person's role at the customer (`role`, e.g. "Head of Purchasing"), for briefs.
    pub role: Option<Box<str>>,
}

/// Whether `s` is an id as plans allow them (customer ids, contact ids, rule names, and the ids
/// of events such as orders' milestones in outbox keys): 1–128 ASCII letters, digits, `-`, `_`
/// or `.`, starting with a letter or digit — so no id holds an outbox key's separators `/`
/// and `:`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether `s` is an event kind as `event = "…"` and `contactplan event --kind` take it: one
/// lowercase word of 1–64 characters (`a`–`z`, digits, `-`, `_`), starting with a letter.
pub fn is_event_kind(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What a rule reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Each contact's birthday.
    Birthday,
    /// Round dates of `customer.since`: listed years and/or every N years.
    Anniversary {
        /// The anniversaries listed (`years = [1, 5, 10, 25]`), in years since `since` (year 0).
        years: Box<[u32]>,
        /// Also every Nth year (`every_years`).
        every_years: Option<u32>,
    },
    /// Order milestones: the Nth order and revenue thresholds, counted from the orders stored
    /// for the customer.
    Orders(OrderMilestones),
    /// The primary contact changed (a handover), or the salesperson (`owner`) did: the new
    /// owner gets the same brief.
    Handover,
    /// The customer's phase changed (to `to`, when the rule names one: `to_phase`).
    Phase {
        /// Only changes into this phase (`to_phase`); `None`: every change.
        to: Option<Phase>,
    },
    /// A recurring crontab schedule in the customer's zone.
    Every {
        /// The schedule, interned per load (rules with one expression share it).
        cron: Arc<crate::calendar::Crontab>,
    },
    /// A fixed date: yearly (`--12-01`) or once (`2026-12-01`).
    Date(MonthDay),
    /// A custom event recorded for the customer (`contactplan event`, `Store::record_event`)
    /// whose kind is `event` (a lowercase word such as `complaint`).
    Event {
        /// The event kind this rule reacts to (`event = "complaint"`).
        event: Box<str>,
        /// A second recipient of the task (`cc`), e.g. the sales manager.
        cc: Option<Email>,
    },
    /// No order for a while: `days`, or `factor` × the customer's median order interval (at
    /// least 3 orders; else `days`, if given). Once per quiet spell.
    Inactivity {
        /// Days without an order (`days`).
        days: Option<u32>,
        /// Multiple of the median interval between orders (`factor`).
        factor: Option<f64>,
    },
    /// The relationship ends (`[customer] ended`): sent on that day.
    End,
}

impl Trigger {
    /// The rule's `on`.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Birthday => TriggerKind::Birthday,
            Trigger::Anniversary { .. } => TriggerKind::Anniversary,
            Trigger::Orders(_) => TriggerKind::Orders,
            Trigger::Handover => TriggerKind::Handover,
            Trigger::Phase { .. } => TriggerKind::Phase,
            Trigger::Every { .. } => TriggerKind::Every,
            Trigger::Date(_) => TriggerKind::Date,
            Trigger::Event { .. } => TriggerKind::Event,
            Trigger::Inactivity { .. } => TriggerKind::Inactivity,
            Trigger::End => TriggerKind::End,
        }
    }
}

/// The thresholds of an `on = "orders"` rule. Each fires at most once per customer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderMilestones {
    /// Order counts that are occasions (`counts = [10, 100, 1000]`), ascending, unique.
    pub counts: Box<[u64]>,
    /// Also every Nth order (`every_count = 500`).
    pub every_count: Option<u64>,
    /// Revenue thresholds in whole units of the customer's currency (`revenue = [100000,
    /// 1000000]`), ascending, unique.
    pub revenue: Box<[u64]>,
    /// What one change (one import, one API call) that passes several thresholds sends.
    pub on_multiple: OnMultiple,
}

/// What a change that passes several thresholds of one rule at once sends (`on_multiple`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMultiple {
    /// Only the highest threshold; the others are recorded as `suppressed` with the reason
    /// (the default).
    #[default]
    Highest,
    /// One message per threshold.
    Each,
}

impl OnMultiple {
    /// The word in plans (`on_multiple = "…"`).
    pub fn code(self) -> &'static str {
        match self {
            OnMultiple::Highest => "highest",
            OnMultiple::Each => "each",
        }
    }

    /// The policy a word names.
    pub fn parse(s: &str) -> Option<OnMultiple> {
        [OnMultiple::Highest, OnMultiple::Each].into_iter().find(|p| p.code() == s)
    }
}

/// What a rule's `on` names: the kind of its [`Trigger`], without the trigger's data.
/// Serialised as its [`code`](TriggerKind::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// `birthday`.
    Birthday,
    /// `anniversary`.
    Anniversary,
    /// `orders`.
    Orders,
    /// `handover`.
    Handover,
    /// `phase`.
    Phase,
    /// `every` (crontab).
    Every,
    /// `date`.
    Date,
    /// `event` (a custom event such as a complaint).
    Event,
    /// `inactivity` (no order for a while).
    Inactivity,
    /// `end` (the relationship ends).
    End,
    /// Not a rule kind: the built-in task about a contact whose address was refused as unknown
    /// (outbox rows and metrics only; `on` does not take it).
    Departure,
}

impl TriggerKind {
    /// Every kind `on` takes, in the order the README lists them.
    pub const ALL: [TriggerKind; 10] = [
        TriggerKind::Birthday,
        TriggerKind::Anniversary,
        TriggerKind::Orders,
        TriggerKind::Handover,
        TriggerKind::Phase,
        TriggerKind::Every,
        TriggerKind::Date,
        TriggerKind::Event,
        TriggerKind::Inactivity,
        TriggerKind::End,
    ];

    /// The kind `on = "…"` names, if any (never [`TriggerKind::Departure`]).
    pub fn parse_rule(s: &str) -> Option<TriggerKind> {
        Self::ALL.into_iter().find(|k| k.code() == s)
    }

    /// The kind an outbox row's `kind` column names (the rule kinds and `departure`).
    pub fn parse(s: &str) -> Option<TriggerKind> {
        Self::ALL.into_iter().chain([TriggerKind::Departure]).find(|k| k.code() == s)
    }

    /// The word in plans (`on = "birthday"`), outbox rows and metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            TriggerKind::Birthday => "birthday",
            TriggerKind::Anniversary => "anniversary",
            TriggerKind::Orders => "orders",
            TriggerKind::Handover => "handover",
            TriggerKind::Phase => "phase",
            TriggerKind::Every => "every",
            TriggerKind::Date => "date",
            TriggerKind::Event => "event",
            TriggerKind::Inactivity => "inactivity",
            TriggerKind::End => "end",
            TriggerKind::Departure => "departure",
        }
    }
}

impl std::fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Email to the recipients, or a task (an email) to the customer's salesperson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// An email to the recipients (`send = "email"`, the default).
    Email,
    /// A reminder email to the salesperson (`send = "task"`).
    Task,
}

impl Action {
    /// The word in plans (`send = "…"`), the outbox and the agenda.
    pub fn code(self) -> &'static str {
        match self {
            Action::Email => "email",
            Action::Task => "task",
        }
    }

    /// The action a word names.
    pub fn parse(s: &str) -> Option<Action> {
        [Action::Email, Action::Task].into_iter().find(|a| a.code() == s)
    }
}

/// Who the occasion concerns: all contacts, the primary contact, or the salesperson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every contact of the customer (`to = "contacts"`).
    Contacts,
    /// The primary contact (`to = "primary"`).
    Primary,
    /// The salesperson only (`to = "owner"`).
    Owner,
    /// Handover rules only: the new primary contact (`to = "new"`).
    New,
    /// Handover rules only: the previous primary contact, while still in the plan
    /// (`to = "departed"`).
    Departed,
}

impl Target {
    /// The word in plans (`to = "…"`).
    pub fn code(self) -> &'static str {
        match self {
            Target::Contacts => "contacts",
            Target::Primary => "primary",
            Target::Owner => "owner",
            Target::New => "new",
            Target::Departed => "departed",
        }
    }
}

/// Lead time before the occasion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lead {
    /// No lead time: sent on the occasion's own day.
    #[default]
    None,
    /// Calendar days.
    Days(u32),
    /// Open days of the rule's business calendar (every day is open when none is configured).
    BusinessDays(u32),
}

/// What to do when a send's outcome cannot be known (crash or cut connection after DATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeliveryPolicy {
    /// Resend with the same Message-ID (a duplicate is possible, a loss is not). Default.
    #[default]
    AtLeastOnce,
    /// Never resend; mark the row `unknown` and tell ops.
    AtMostOnce,
}

impl DeliveryPolicy {
    /// The policy a plan's `delivery = "…"` or an outbox column names.
    pub fn parse(s: &str) -> Option<DeliveryPolicy> {
        [DeliveryPolicy::AtLeastOnce, DeliveryPolicy::AtMostOnce].into_iter().find(|p| p.code() == s)
    }

    /// The word in outbox rows (`at_least_once`, `at_most_once`).
    pub fn code(self) -> &'static str {
        match self {
            DeliveryPolicy::AtLeastOnce => "at_least_once",
            DeliveryPolicy::AtMostOnce => "at_most_once",
        }
    }
}

/// One occasion rule, from a playbook or a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique per customer; part of outbox keys.
    pub name: Box<str>,
    /// What the rule reacts to (`on` and its keys).
    pub trigger: Trigger,
    /// Email to the recipients or a task for the salesperson (`send`).
    pub action: Action,
    /// Whom the occasion concerns (`to`).
    pub target: Target,
    /// Template folder name under `templates/`.
    pub template: Box<str>,
    /// Local send time.
    pub at: NaiveTime,
    /// Lead time before the occasion (`before`); crontab rules ignore it.
    pub before: Lead,
    /// What Feb 29 occasions do in common years (`leap_day`).
    pub leap_day: LeapDay,
    /// What to do when a send's outcome cannot be known.
    pub delivery: DeliveryPolicy,
    /// How long after its due time an occurrence may still be sent; `None` = the default
    /// (end of the recipient's local day; for `every` rules also the next firing).
    pub deadline: Option<chrono::TimeDelta>,
    /// Business-calendar and send-window keys set on the rule; unset keys come from the
    /// customer (see `calendar::business` for the precedence).
    pub calendar: crate::calendar::Settings,
    /// `phases`: only customers in one of these phases; `None`: every phase.
    pub phases: Option<Box<[Phase]>>,
    /// `priority` (default 0): when more is due than the relay takes, rows whose deadlines
    /// fall in the same hour are claimed higher priority first.
    pub priority: i64,
    /// `spread` (default none): a dated rule's sends are spread per recipient over this many
    /// (open) days from the send day, by a hash of the outbox key; the key stays nominal.
    pub spread: Lead,
}

impl Rule {
    /// Whether the rule applies to a customer in `phase` (`phases`).
    pub fn applies_in(&self, phase: Phase) -> bool {
        self.phases.as_ref().is_none_or(|p| p.contains(&phase))
    }

    /// The phases the rule is limited to, for messages (`growth, maturity`).
    pub fn phases_text(&self) -> String {
        self.phases.as_ref().map_or_else(String::new, |p| p.iter().map(|x| x.code()).collect::<Vec<_>>().join(", "))
    }
}

/// A customer with everything needed to compute and render its occasions: what its plan says
/// about the relationship ([`Profile`]) and its effective rules, each shared on its own. A
/// playbook edit changes the rules of every customer that uses the playbook and nothing else:
/// the reload then builds each new customer from its served profile and one rule list that
/// every customer with the same rules shares (see `validate::RuleCache`), so 100,000
/// customers are not held twice while the new ones are validated.
///
/// The profile's fields read through the customer (`customer.name`, `customer.contacts`: it
/// dereferences to its [`Profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Everything but the rules; shared with the customer's previous version when a reload
    /// leaves it as it was.
    pub profile: Arc<Profile>,
    /// Effective rules (playbook merged with the plan's own); shared with the playbook when
    /// the plan changes nothing, and among the customers of one load whose rules are the same,
    /// so 100,000 customers do not hold 100,000 copies.
    pub rules: Arc<[Arc<Rule>]>,
}

impl std::ops::Deref for Customer {
    type Target = Profile;
    fn deref(&self) -> &Profile {
        &self.profile
    }
}

/// What a plan says about one customer besides its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Stable identifier; part of outbox keys.
    pub id: Box<str>,
    /// Display name (`customer.name` in templates).
    pub name: Box<str>,
    /// Start of the relationship (year 0 of anniversaries).
    pub since: NaiveDate,
    /// `ended`: the last day of the relationship; nothing is computed or sent after it (but an
    /// `on = "end"` rule's message on that day).
    pub ended: Option<NaiveDate>,
    /// The responsible salesperson; receives tasks.
    pub owner: Email,
    /// IANA zone (tzdata) for the customer's contacts that name none; the daemon's `timezone` when
    /// the plan names none.
    pub timezone: Tz,
    /// Language for contacts that name none.
    pub language: Language,
    /// The currency of its revenue thresholds (`currency`, default EUR); orders in other
    /// currencies are counted but not added to its revenue.
    pub currency: crate::money::Currency,
    /// Life-cycle phase.
    pub phase: Phase,
    /// `notes`: what the salesperson should know (briefs), each entry one line.
    pub notes: Box<[Box<str>]>,
    /// `goals`: what the relationship aims at (briefs), each entry one line.
    pub goals: Box<[Box<str>]>,
    /// The contacts, in plan order; never empty. Shared with the customer's previous version
    /// when a reload leaves them as they were (while something else of the profile changed).
    pub contacts: Arc<[Contact]>,
    /// Index into `contacts` of the one primary contact.
    pub primary: usize,
    /// The plan file, for messages.
    pub source: Arc<std::path::Path>,
    /// Business calendar and send window: the customer's keys over the daemon's `[calendar]`
    /// defaults (rules may override single keys).
    pub calendar: crate::calendar::Settings,
}

impl Customer {
    /// The effective rule with this name, if any.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name).map(|r| &**r)
    }
}

impl Profile {
    /// The primary contact. Validation guarantees `primary` indexes `contacts`, so this does not
    /// panic on a loaded plan.
    pub fn primary_contact(&self) -> &Contact {
        &self.contacts[self.primary]
    }

    /// The contact with this id, if any.
    pub fn contact(&self, id: &str) -> Option<&Contact> {
        self.contacts.iter().find(|c| &*c.id == id)
    }

    /// Zone for a contact: contact → customer (the customer's was defaulted at load).
    pub fn zone_of(&self, contact: Option<&Contact>) -> Tz {
        contact.and_then(|c| c.timezone).unwrap_or(self.timezone)
    }

    /// The effective business calendar of one of this customer's rules.
    pub fn calendar_for<'a>(&'a self, rule: &'a Rule) -> crate::calendar::Calendar<'a> {
        crate::calendar::Calendar::new(&rule.calendar, &self.calendar)
    }

    /// Whether the relationship has ended by `now` (its local day is after `ended`).
    pub fn ended_by(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.ended.is_some_and(|e| now.with_timezone(&self.timezone).date_naive() > e)
    }

    /// Why nothing more is sent: "the relationship ended on 2026-12-31".
    pub fn ended_reason(&self) -> String {
        self.ended.map_or_else(String::new, |e| format!("the relationship ended on {e}"))
    }

    /// Language for a contact: contact → customer.
    pub fn language_of(&self, contact: Option<&Contact>) -> Language {
        contact.and_then(|c| c.language).unwrap_or(self.language)
    }
}

/// All valid customers, sorted by id (looked up by binary search). Each customer is shared
/// (`Arc`): a reload that changes one plan builds the next `Plans` from the same customers
/// plus the changed one, so 100,000 unchanged customers are neither copied nor validated again.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    /// Valid customers, sorted by id, ids unique.
    pub customers: Vec<Arc<Customer>>,
}

impl Plans {
    /// Sorts `customers` by id if needed. Ids must be unique: the loader reports and drops
    /// duplicates before this (with a duplicate, `get` finds one of them).
    pub fn new(customers: Vec<Customer>) -> Plans {
        Plans::shared(customers.into_iter().map(Arc::new).collect())
    }

    /// [`Plans::new`] for customers that are already shared.
    pub fn shared(mut customers: Vec<Arc<Customer>>) -> Plans {
        if !customers.is_sorted_by(|a, b| a.id <= b.id) {
            customers.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Plans { customers }
    }

    /// The customer with this id, if any.
    pub fn get(&self, id: &str) -> Option<&Customer> {
        self.get_shared(id).map(|c| &**c)
    }

    /// The customer with this id, if any, as shared.
    pub fn get_shared(&self, id: &str) -> Option<&Arc<Customer>> {
        self.customers.binary_search_by(|c| (*c.id).cmp(id)).ok().map(|i| &self.customers[i])
    }

    /// Number of customers.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    /// Whether there are no customers.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }
}

/// What plan validation needs to know about templates: which exist (for `template = "…"`),
/// and whether one has a variant for a recipient's language and tone. Implemented by the
/// render catalogue (`render::TemplateCatalog`, which owns the fallback policy); plan knows
/// nothing else about rendering.
pub trait Templates: Sync {
    /// The templates directory, for hints.
    fn dir(&self) -> &std::path::Path;
    /// Whether a template folder of that name exists.
    fn has_template(&self, name: &str) -> bool;
    /// Every template name, sorted.
    fn names(&self) -> Vec<&str>;
    /// Whether `name` can render for this customer, language and tone (`None`: tone-neutral,
    /// tasks), counting the customer's own overrides.
    fn has_variant(&self, customer: &str, name: &str, language: Language, tone: Option<Tone>) -> bool;
}
