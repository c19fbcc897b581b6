//! Salutations and dates in the recipient's language and tone. Pure functions.

use crate::plan::{Contact, Gender, Language, Tone};
use chrono::{Datelike, NaiveDate};

/// Given name: the first word of the name.
pub fn first_name(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

/// Family name: the last word of the name.
pub fn last_name(name: &str) -> &str {
    name.split_whitespace().last().unwrap_or(name)
}

/// The greeting line for a contact, e.g. "Sehr geehrte Frau Dr. Müller," or "Hi Anna,".
pub fn for_contact(contact: &Contact, language: Language) -> String {
    let name = &*contact.name;
    let title = contact.title.as_deref().filter(|t| !t.is_empty());
    let titled = |surname: &str| match title {
        Some(t) => format!("{t} {surname}"),
        None => surname.to_string(),
    };
    match (language, contact.tone, contact.gender) {
        (Language::De, Tone::Formal, Gender::Female) => format!("Sehr geehrte Frau {},", titled(last_name(name))),
        (Language::De, Tone::Formal, Gender::Male) => format!("Sehr geehrter Herr {},", titled(last_name(name))),
        (Language::De, Tone::Formal, Gender::None) => format!("Guten Tag {},", titled(name)),
        (Language::De, Tone::Informal, Gender::Female) => format!("Liebe {},", first_name(name)),
        (Language::De, Tone::Informal, Gender::Male) => format!("Lieber {},", first_name(name)),
        (Language::De, Tone::Informal, Gender::None) => format!("Hallo {},", first_name(name)),
        // English: an academic title replaces Ms/Mr ("Dear Dr Smith").
        (Language::En, Tone::Formal, g) => match (title, g) {
            (Some(t), _) => format!("Dear {} {},", t.trim_end_matches('.'), last_name(name)),
            (None, Gender::Female) => format!("Dear Ms {},", last_name(name)),
            (None, Gender::Male) => format!("Dear Mr {},", last_name(name)),
            (None, Gender::None) => format!("Dear {name},"),
        },
        (Language::En, Tone::Informal, _) => format!("Hi {},", first_name(name)),
    }
}

/// The greeting line for the salesperson in task emails.
pub fn for_owner(language: Language) -> &'static str {
    match language {
        Language::De => "Hallo,",
        Language::En => "Hello,",
    }
}

const MONATE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// "5. März 2026" / "5 March 2026".
pub fn date(d: NaiveDate, language: Language) -> String {
    let m = d.month0() as usize;
    match language {
        Language::De => format!("{}. {} {}", d.day(), MONATE[m], d.year()),
        Language::En => format!("{} {} {}", d.day(), MONTHS[m], d.year()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Email;

    fn contact(name: &str, title: Option<&str>, gender: Gender, tone: Tone) -> Contact {
        Contact {
            id: "c".into(),
            name: name.into(),
            title: title.map(Into::into),
            gender,
            email: Email::parse("a@example.de").unwrap(),
            birthday: None,
            tone,
            language: None,
            timezone: None,
        }
    }

    #[test]
    fn german_and_english_salutations() {
        use Gender::{Female, Male};
        use Language::*;
        use Tone::*;
        let cases = [
            (contact("Anna Müller", Some("Dr."), Female, Formal), De, "Sehr geehrte Frau Dr. Müller,"),
            (contact("Jörg Weiß", None, Male, Formal), De, "Sehr geehrter Herr Weiß,"),
            (contact("Alex Kim", None, Gender::None, Formal), De, "Guten Tag Alex Kim,"),
            (contact("Anna Müller", None, Female, Informal), De, "Liebe Anna,"),
            (contact("Jörg Weiß", None, Male, Informal), De, "Lieber Jörg,"),
            (contact("Alex Kim", None, Gender::None, Informal), De, "Hallo Alex,"),
            (contact("Jane Smith", None, Female, Formal), En, "Dear Ms Smith,"),
            (contact("John Smith", Some("Dr."), Male, Formal), En, "Dear Dr Smith,"),
            (contact("Sam Lee", None, Gender::None, Formal), En, "Dear Sam Lee,"),
            (contact("Jane Smith", None, Female, Informal), En, "Hi Jane,"),
        ];
        for (c, lang, want) in cases {
            assert_eq!(for_contact(&c, lang), want);
        }
    }

    #[test]
    fn localised_dates() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
        assert_eq!(date(d, Language::De), "5. März 2026");
        assert_eq!(date(d, Language::En), "5 March 2026");
    }
}
