//! Salutations in the recipient's language and tone. Pure functions.
//!
//! Greetings are built from the parts validation worked out (`plan::names`): the family name
//! with its particles, the given name, and the highest academic rank. German follows DIN 5008
//! and the usual guides (pitfalls.md, "Names and salutations"): "Sehr geehrte Frau Dr. Müller,",
//! "Sehr geehrter Herr Professor Weber," (only the highest title, Professor written out,
//! `Dipl.-Ing.` not greeted). English uses British style without full stops ("Dear Ms Smith,",
//! "Dear Dr Smith,"). When a part is unknown, or the gender is not given, the greeting is
//! neutral and names the person in full ("Guten Tag Karin von der Heide,", "Dear Sam Lee,").

use crate::plan::names::Rank;
use crate::plan::{Contact, Gender, Language, Tone};

/// Given name for templates (`contact.first_name`): the given name, or the first word of the
/// name when it cannot be told.
pub fn first_name(c: &Contact) -> &str {
    c.given_name.as_deref().unwrap_or_else(|| c.plain_name.split_whitespace().next().unwrap_or(&c.plain_name))
}

/// Family name for templates (`contact.last_name`): the family name with its particles, or the
/// last word of the name when it cannot be told.
pub fn last_name(c: &Contact) -> &str {
    c.family_name.as_deref().unwrap_or_else(|| c.plain_name.split_whitespace().last().unwrap_or(&c.plain_name))
}

/// The greeting line for a contact, e.g. "Sehr geehrte Frau Dr. Müller," or "Hi Anna,"; the
/// contact's `salutation` when it has one.
pub fn for_contact(c: &Contact, language: Language) -> String {
    if let Some(s) = &c.salutation {
        return s.to_string();
    }
    let family = c.family_name.as_deref();
    let given = c.given_name.as_deref();
    let full = &*c.plain_name;
    match (language, c.tone) {
        (Language::De, Tone::Formal) => match (c.gender, family) {
            (Gender::Female, Some(f)) => {
                let t = match c.rank {
                    Some(Rank::Professor) => "Professorin ",
                    Some(Rank::Doctor) => "Dr. ",
                    None => "",
                };
                format!("Sehr geehrte Frau {t}{f},")
            }
            (Gender::Male, Some(f)) => {
                let t = match c.rank {
                    Some(Rank::Professor) => "Professor ",
                    Some(Rank::Doctor) => "Dr. ",
                    None => "",
                };
                format!("Sehr geehrter Herr {t}{f},")
            }
            _ => {
                let t = match c.rank {
                    Some(Rank::Professor) => "Prof. ",
                    Some(Rank::Doctor) => "Dr. ",
                    None => "",
                };
                format!("Guten Tag {t}{full},")
            }
        },
        (Language::De, Tone::Informal) => match (c.gender, given) {
            (Gender::Female, Some(g)) => format!("Liebe {g},"),
            (Gender::Male, Some(g)) => format!("Lieber {g},"),
            (Gender::None, Some(g)) => format!("Hallo {g},"),
            (_, None) => format!("Hallo {full},"),
        },
        // English: an academic title replaces Ms/Mr ("Dear Dr Smith").
        (Language::En, Tone::Formal) => match (c.rank, c.gender, family) {
            (Some(Rank::Professor), _, Some(f)) => format!("Dear Professor {f},"),
            (Some(Rank::Doctor), _, Some(f)) => format!("Dear Dr {f},"),
            (None, Gender::Female, Some(f)) => format!("Dear Ms {f},"),
            (None, Gender::Male, Some(f)) => format!("Dear Mr {f},"),
            _ => format!("Dear {full},"),
        },
        (Language::En, Tone::Informal) => format!("Hi {},", given.unwrap_or(full)),
    }
}

/// The greeting line for the salesperson in task emails.
pub fn for_owner(language: Language) -> &'static str {
    match language {
        Language::De => "Hallo,",
        Language::En => "Hello,",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Context, Templates};
    use std::path::Path;

    struct AnyTemplate;
    impl Templates for AnyTemplate {
        fn dir(&self) -> &Path {
            Path::new("templates")
        }
        fn has_template(&self, _: &str) -> bool {
            true
        }
        fn names(&self) -> Vec<&str> {
            vec![]
        }
        fn has_variant(&self, _: &str, _: &str, _: Language, _: Option<Tone>) -> bool {
            true
        }
    }

    /// The contact as validation builds it from these plan lines (`name = "…"` and any other
    /// contact keys), with the validation's warnings.
    fn contact(keys: &str) -> (Contact, Vec<String>) {
        let text = format!(
            "[customer]\nid = \"c\"\nname = \"C\"\nsince = 2020-01-01\nowner = \"o@example.com\"\nlanguage = \"de\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nemail = \"p@example.com\"\nprimary = true\n{keys}\n"
        );
        let playbooks = Default::default();
        let calendar = crate::calendar::Settings::default();
        let crontabs = crate::calendar::CrontabCache::default();
        let ctx = Context {
            playbooks: &playbooks,
            broken: &[],
            templates: &AnyTemplate,
            default_tz: chrono_tz::UTC,
            default_calendar: &calendar,
            crontabs: &crontabs,
            rules: &crate::plan::RuleCache::default(),
        };
        let (customer, diags) = crate::plan::plan_text(Path::new("p.toml"), &text, &ctx);
        let Some(customer) = customer else { panic!("{text}\n{diags:?}") };
        (customer.contacts[0].clone(), diags.iter().map(|d| d.message.clone()).collect())
    }

    /// (contact keys, language, greeting, whether `check` warns about the name).
    #[rustfmt::skip]
    const CASES: &[(&str, Language, &str, bool)] = &[
        // The four cases of issue 14, verbatim.
        ("name = \"Karin von der Heide\"\ngender = \"female\"\ntone = \"formal\"", Language::De, "Sehr geehrte Frau von der Heide,", false),
        ("name = \"Hannes Brauer jun.\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Sehr geehrter Herr Brauer,", false),
        ("name = \"Weiß, Anna\"\ngender = \"female\"\ntone = \"informal\"", Language::De, "Liebe Anna,", false),
        ("name = \"Pieter van Dijk\"\ngender = \"male\"\ntone = \"formal\"", Language::En, "Dear Mr van Dijk,", false),
        // Titles: the highest only, Professor written out, Dipl.-Ing. not greeted.
        ("name = \"Anna Müller\"\ntitle = \"Dr.\"\ngender = \"female\"\ntone = \"formal\"", Language::De, "Sehr geehrte Frau Dr. Müller,", false),
        ("name = \"Prof. Dr. Dr. Hans Weber\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Sehr geehrter Herr Professor Weber,", false),
        ("name = \"Eva Roth\"\ntitle = \"Prof. Dr.-Ing.\"\ngender = \"female\"\ntone = \"formal\"", Language::De, "Sehr geehrte Frau Professorin Roth,", false),
        ("name = \"Dipl.-Ing. Uwe Berg\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Sehr geehrter Herr Berg,", false),
        ("name = \"Dr. Karin von der Heide\"\ntone = \"formal\"", Language::De, "Guten Tag Dr. Karin von der Heide,", false),
        ("name = \"John Smith\"\ntitle = \"Dr.\"\ngender = \"male\"\ntone = \"formal\"", Language::En, "Dear Dr Smith,", false),
        ("name = \"Prof. Jane Doe\"\ngender = \"female\"\ntone = \"formal\"", Language::En, "Dear Professor Doe,", false),
        ("name = \"John Smith PhD\"\ntone = \"formal\"", Language::En, "Dear Dr Smith,", false),
        // Particles and double names.
        ("name = \"Johannes van den Bosch\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Sehr geehrter Herr van den Bosch,", false),
        ("name = \"von der Heide, Karin\"\ngender = \"female\"\ntone = \"informal\"", Language::De, "Liebe Karin,", false),
        ("name = \"Hans-Peter Müller-Lüdenscheidt\"\ngender = \"male\"\ntone = \"informal\"", Language::De, "Lieber Hans-Peter,", false),
        ("name = \"Hans Peter Müller\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Guten Tag Hans Peter Müller,", true),
        ("name = \"Hans Peter Müller\"\ngiven_name = \"Hans Peter\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Sehr geehrter Herr Müller,", false),
        ("name = \"María García López\"\nfamily_name = \"García López\"\ngender = \"female\"\ntone = \"informal\"", Language::En, "Hi María,", false),
        ("name = \"Pieter Van Dijk\"\ngender = \"male\"\ntone = \"formal\"", Language::En, "Dear Pieter Van Dijk,", true),
        // Suffixes.
        ("name = \"John Smith Jr.\"\ngender = \"male\"\ntone = \"formal\"", Language::En, "Dear Mr Smith,", false),
        ("name = \"Brauer, Hannes, sen.\"\ngender = \"male\"\ntone = \"informal\"", Language::De, "Lieber Hannes,", false),
        // Missing data: no gender, one word, nobility.
        ("name = \"Alex Kim\"\ntone = \"formal\"", Language::De, "Guten Tag Alex Kim,", false),
        ("name = \"Alex Kim\"\ntone = \"informal\"", Language::De, "Hallo Alex,", false),
        ("name = \"Sam Lee\"\ntone = \"formal\"", Language::En, "Dear Sam Lee,", false),
        ("name = \"Jane Smith\"\ngender = \"female\"\ntone = \"formal\"", Language::En, "Dear Ms Smith,", false),
        ("name = \"Jane Smith\"\ngender = \"female\"\ntone = \"informal\"", Language::En, "Hi Jane,", false),
        ("name = \"Müller\"\ngender = \"female\"\ntone = \"formal\"", Language::De, "Guten Tag Müller,", true),
        ("name = \"Jörg\"\ngender = \"male\"\ntone = \"informal\"", Language::De, "Hallo Jörg,", true),
        ("name = \"Otto Graf Lambsdorff\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Guten Tag Otto Graf Lambsdorff,", true),
        ("name = \"Otto Graf Lambsdorff\"\nsalutation = \"Sehr geehrter Graf Lambsdorff,\"\ngender = \"male\"\ntone = \"formal\"", Language::De, "Sehr geehrter Graf Lambsdorff,", false),
        ("name = \"山田 太郎\"\nfamily_name = \"山田\"\ngiven_name = \"太郎\"\ngender = \"male\"\ntone = \"formal\"", Language::En, "Dear Mr 山田,", false),
    ];

    #[test]
    fn greetings_from_structured_names() {
        let mut wrong = Vec::new();
        for &(keys, language, want, warns) in CASES {
            let (c, warnings) = contact(keys);
            let got = for_contact(&c, language);
            let warned = warnings.iter().any(|w| w.starts_with("cannot tell"));
            if got != want || warned != warns {
                wrong.push(format!("{keys:?}: {got:?} (warning: {warned}), want {want:?} (warning: {warns})"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
