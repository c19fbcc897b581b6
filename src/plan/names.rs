//! Personal names as ops write them: which part is the given name, which the family name (with
//! its particles), which words are academic titles, degrees or suffixes. Pure; used when a plan
//! is validated, so that rendering only formats.
//!
//! The split is deliberately cautious: a greeting with the wrong family name does harm, a
//! neutral one ("Guten Tag Karin von der Heide,") does not. So [`parse`] only names a given and
//! a family name when the name has one of the shapes it can read with certainty, and otherwise
//! says why it cannot (`check` then warns and suggests `given_name`/`family_name`):
//! - `Given Family` (two words), or `Given … particle … Family` where the particles are written
//!   in lower case (`von`, `van der`, `de la`, `zu`, …);
//! - `Family, Given` (the family name first, then a comma), also with particles
//!   (`von der Heide, Karin` or `Heide, Karin von der`);
//! - academic titles anywhere before the name (`Prof. Dr.-Ing. habil.`, `Dr. med.`,
//!   `Dipl.-Ing.`), degrees after it (`M.A.`, `MBA`, `PhD`), suffixes at the end (`jun.`, `sen.`,
//!   `Jr.`, `III`).
//!
//! Not certain (neutral greeting): a single word, three or more words without a lower-case
//! particle (`Hans Peter Müller`: a double given name or a double family name?), a capitalised
//! particle inside the name (`Pieter Van Dijk`; also Vietnamese `Nguyen Van Anh`), words of
//! nobility (`Graf`, `Freiherr`: guides disagree on how to greet them), CJK and Hangul scripts
//! (the family name usually comes first), and words with digits or symbols.
//!
//! No crate was used: the name parsers on crates.io (`human_name` and similar) follow
//! English-language conventions (Mr/Jr, "van" as a middle name) and know neither German titles
//! (`Dipl.-Ing.`, `Dr. rer. nat.`) nor the salutation rules for them.

/// The academic rank that shows in a salutation. Only the highest counts (pitfalls.md:
/// `Prof. Dr. Dr.` is greeted as "Herr Professor"); degrees such as `Dipl.-Ing.` or `M.A.` are
/// not part of a German salutation at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// A doctorate (`Dr.`, `Dr.-Ing.`, `Dr. med.`, `PhD`): "Frau Dr. Müller", "Dear Dr Smith".
    Doctor,
    /// A professorship (`Prof.`, `Univ.-Prof.`): "Herr Professor Müller", "Dear Professor Smith".
    Professor,
}

/// A name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedName {
    /// The given name(s), when the split is certain.
    pub given: Option<String>,
    /// The family name with its particles as written (`von der Heide`), when the split is
    /// certain.
    pub family: Option<String>,
    /// The highest academic rank among the titles in the name.
    pub rank: Option<Rank>,
    /// The name without titles and degrees, in reading order (`Karin von der Heide`; suffixes
    /// kept: `Hannes Brauer jun.`): what a neutral greeting uses.
    pub display: String,
    /// The words without titles, degrees and suffixes, in reading order (`Hannes Brauer`).
    pub core: String,
    /// Why the given and family name cannot be told apart with certainty; `None` when they can.
    pub unsure: Option<&'static str>,
}

/// Lower-case words that start a family name (nobiliary and other particles).
const PARTICLES: &[&str] = &[
    "von", "van", "vom", "zu", "zum", "zur", "de", "der", "den", "des", "del", "della", "dela", "di", "da", "du",
    "dos", "das", "la", "le", "ten", "ter", "te", "'t", "af", "av", "y", "al", "el", "bin", "ibn", "bint",
];

/// Words of nobility: part of the family name since 1919, but guides disagree on the greeting.
const NOBILITY: &[&str] = &[
    "graf",
    "gräfin",
    "freiherr",
    "freifrau",
    "freiin",
    "baron",
    "baronin",
    "prinz",
    "prinzessin",
    "fürst",
    "fürstin",
    "herzog",
    "herzogin",
    "ritter",
    "edler",
    "edle",
    "markgraf",
    "landgraf",
];

/// Forms of address someone may have typed into the name; dropped (the `gender` key decides).
const ADDRESS_WORDS: &[&str] = &["herr", "frau", "hr.", "fr.", "mr", "mr.", "mrs", "mrs.", "ms", "ms.", "mx", "mx."];

/// Suffixes after the family name, not part of it in a salutation.
const SUFFIXES: &[&str] = &["jun.", "jr.", "jr", "sen.", "sr.", "sr", "junior", "senior", "d.ä.", "d.j."];
const ROMAN: &[&str] = &["II", "III", "IV", "V", "VI"];

/// What one word is, in a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// An academic title with the rank it gives (`None`: a degree that is not greeted).
    Title(Option<Rank>),
    /// A qualifier of the preceding doctorate or professorship (`med.`, `rer.`, `h.c.`).
    Qualifier,
    Suffix,
    Address,
    Name,
}

/// The rank a title word gives, if it is one; `Some(None)` for degrees that are not greeted.
fn title_word(w: &str) -> Option<Option<Rank>> {
    let l = w.to_lowercase();
    let l = l.as_str();
    if matches!(
        l,
        "prof." | "prof" | "professor" | "professorin" | "univ.-prof." | "apl." | "hon.-prof." | "jun.-prof."
    ) {
        return Some(Some(Rank::Professor));
    }
    if matches!(l, "dr." | "dr" | "dres." | "ph.d." | "phd" | "dphil" | "d.phil.") || l.starts_with("dr.-") {
        return Some(Some(Rank::Doctor));
    }
    let degree = matches!(
        l,
        "pd" | "priv.-doz."
            | "mag."
            | "ing."
            | "b.a."
            | "m.a."
            | "b.sc."
            | "m.sc."
            | "bsc"
            | "msc"
            | "mba"
            | "emba"
            | "ll.m."
            | "ll.b."
            | "m.eng."
            | "b.eng."
            | "meng"
            | "beng"
            | "m.ed."
            | "b.ed."
            | "mph"
            | "dipl."
    ) || l.starts_with("dipl.-")
        || l.starts_with("dipl-");
    degree.then_some(None)
}

/// The kind of each word of one comma-separated segment (`first`: the segment before any comma,
/// where a lone first word is never a suffix).
fn classify(words: &[&str], first: bool) -> Vec<Word> {
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let previous_is_title = matches!(out.last(), Some(Word::Title(Some(_)) | Word::Qualifier));
        let kind = if let Some(rank) = title_word(w) {
            Word::Title(rank)
        } else if previous_is_title
            && w.ends_with('.')
            && w.chars().next().is_some_and(char::is_lowercase)
            && !PARTICLES.contains(w)
        {
            Word::Qualifier
        } else if (i > 0 || !first) && (SUFFIXES.contains(&w.to_lowercase().as_str()) || ROMAN.contains(w)) {
            Word::Suffix
        } else if ADDRESS_WORDS.contains(&w.to_lowercase().as_str()) {
            Word::Address
        } else {
            Word::Name
        };
        out.push(kind);
    }
    out
}

/// The rank a `title` value gives (`"Prof. Dr."` → Professor, `"Dipl.-Ing."` → none).
pub fn rank_of_title(title: &str) -> Option<Rank> {
    let words: Vec<&str> = title.split_whitespace().collect();
    classify(&words, true).into_iter().filter_map(|w| if let Word::Title(r) = w { r } else { None }).max()
}

fn is_east_asian(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x3040..=0x30FF | 0x3130..=0x318F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// A word that can be part of a name: letters and marks, with `-`, `'`, `’` or `.` inside.
fn plausible(word: &str) -> bool {
    word.chars().any(char::is_alphabetic)
        && word.chars().all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '’' | '.') || is_mark(c))
}

/// Combining marks (a decomposed `ü` is `u` + U+0308).
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Splits a name; see the module documentation for what counts as certain.
pub fn parse(name: &str) -> ParsedName {
    let mut rank: Option<Rank> = None;
    // Segments between commas, each without its titles, degrees and address words; suffixes
    // are kept apart.
    let mut segments: Vec<Vec<&str>> = Vec::new();
    let mut suffixes: Vec<&str> = Vec::new();
    for (i, segment) in name.split(',').enumerate() {
        let words: Vec<&str> = segment.split_whitespace().collect();
        let kinds = classify(&words, i == 0);
        let mut kept = Vec::new();
        for (w, k) in words.iter().zip(kinds) {
            match k {
                Word::Title(r) => rank = rank.max(r),
                Word::Qualifier | Word::Address => {}
                // A suffix counts only at the end of its segment ("Brauer jun.", "Smith, Jr.").
                Word::Suffix => suffixes.push(w),
                Word::Name => kept.push(*w),
            }
        }
        // A segment of nothing but suffixes ("Smith, Jr."), titles or degrees ("Anna Müller,
        // M.A."), or nothing at all, is no part of the name.
        if !kept.is_empty() {
            segments.push(kept);
        }
    }
    // The words in reading order, and (given, family) when the family name came first.
    type Split<'a> = (Vec<&'a str>, Option<(Vec<&'a str>, Vec<&'a str>)>);
    let (reading, family_first): Split = match segments.as_slice() {
        [one] => (one.clone(), None),
        [family, given] if !family.is_empty() && !given.is_empty() => {
            // Particles at the end of the given-name part belong to the family name
            // ("Heide, Karin von der").
            let split = given.iter().rposition(|w| !PARTICLES.contains(w)).map_or(0, |i| i + 1);
            let (given, particles) = given.split_at(split);
            let family: Vec<&str> = particles.iter().chain(family.iter()).copied().collect();
            let reading = given.iter().chain(family.iter()).copied().collect();
            (reading, Some((given.to_vec(), family)))
        }
        _ => (segments.concat(), None),
    };
    let core = reading.join(" ");
    let display = if suffixes.is_empty() { core.clone() } else { format!("{core} {}", suffixes.join(" ")) };
    let mut parsed = ParsedName { given: None, family: None, rank, display, core, unsure: None };
    let unsure = |parsed: &mut ParsedName, why| {
        parsed.unsure = Some(why);
        parsed.clone()
    };
    if segments.len() > 2 || (segments.len() == 2 && family_first.is_none()) {
        return unsure(&mut parsed, "it has more than one comma");
    }
    if reading.is_empty() {
        return unsure(&mut parsed, "it has no name besides titles");
    }
    if name.chars().any(is_east_asian) {
        return unsure(&mut parsed, "in its script the family name often comes first");
    }
    if !reading.iter().all(|w| plausible(w)) {
        return unsure(&mut parsed, "it has words with digits or symbols");
    }
    if reading.iter().any(|w| NOBILITY.contains(&w.to_lowercase().as_str())) {
        return unsure(&mut parsed, "it has a title of nobility, and guides disagree on how to greet it");
    }
    let (given, family) = match family_first {
        Some((given, family)) => (given, family),
        None => {
            if reading.len() == 1 {
                return unsure(&mut parsed, "it is a single word");
            }
            let inner = &reading[1..reading.len() - 1];
            if inner.iter().any(|w| PARTICLES.contains(&w.to_lowercase().as_str()) && !PARTICLES.contains(w)) {
                return unsure(&mut parsed, "it has a capitalised particle inside (Van, De, …)");
            }
            match reading[1..].iter().position(|w| PARTICLES.contains(w)) {
                Some(i) if i + 1 < reading.len() - 1 || !PARTICLES.contains(&reading[reading.len() - 1]) => {
                    let (given, family) = reading.split_at(i + 1);
                    (given.to_vec(), family.to_vec())
                }
                Some(_) => return unsure(&mut parsed, "it ends with a particle"),
                None if reading.len() == 2 => (vec![reading[0]], vec![reading[1]]),
                None => {
                    return unsure(
                        &mut parsed,
                        "it has three or more words and no particle (a double given name or a double family name?)",
                    );
                }
            }
        }
    };
    if given.is_empty() || family.iter().all(|w| PARTICLES.contains(w)) {
        return unsure(&mut parsed, "it has no given or no family name");
    }
    parsed.given = Some(given.join(" "));
    parsed.family = Some(family.join(" "));
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, given, family, rank); `None` for given and family: unsure.
    type Case = (&'static str, Option<&'static str>, Option<&'static str>, Option<Rank>);
    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // The four cases of issue 14.
        ("Karin von der Heide", Some("Karin"), Some("von der Heide"), None),
        ("Hannes Brauer jun.", Some("Hannes"), Some("Brauer"), None),
        ("Weiß, Anna", Some("Anna"), Some("Weiß"), None),
        ("Pieter van Dijk", Some("Pieter"), Some("van Dijk"), None),
        // Titles: only the highest counts; degrees are dropped.
        ("Dr. Anna Müller", Some("Anna"), Some("Müller"), Some(Rank::Doctor)),
        ("Prof. Dr. Dr. Hans Meier", Some("Hans"), Some("Meier"), Some(Rank::Professor)),
        ("Prof. Dr.-Ing. habil. Eva Roth", Some("Eva"), Some("Roth"), Some(Rank::Professor)),
        ("Dr. med. dent. Jan Ohm", Some("Jan"), Some("Ohm"), Some(Rank::Doctor)),
        ("Dr. rer. nat. Lea Kraus", Some("Lea"), Some("Kraus"), Some(Rank::Doctor)),
        ("Dipl.-Ing. Uwe Berg", Some("Uwe"), Some("Berg"), None),
        ("Dipl.-Ing. Dr. techn. Uwe Berg", Some("Uwe"), Some("Berg"), Some(Rank::Doctor)),
        ("Anna Schmidt, M.A.", Some("Anna"), Some("Schmidt"), None),
        ("John Smith PhD", Some("John"), Some("Smith"), Some(Rank::Doctor)),
        ("Frau Dr. Anna Müller", Some("Anna"), Some("Müller"), Some(Rank::Doctor)),
        // Particles.
        ("Johannes van den Bosch", Some("Johannes"), Some("van den Bosch"), None),
        ("Ursula von der Leyen", Some("Ursula"), Some("von der Leyen"), None),
        ("Karl-Theodor zu Guttenberg", Some("Karl-Theodor"), Some("zu Guttenberg"), None),
        ("Maria de la Cruz", Some("Maria"), Some("de la Cruz"), None),
        ("Anna Maria von Humboldt", Some("Anna Maria"), Some("von Humboldt"), None),
        ("von der Heide, Karin", Some("Karin"), Some("von der Heide"), None),
        ("Heide, Karin von der", Some("Karin"), Some("von der Heide"), None),
        ("van Gogh, Vincent", Some("Vincent"), Some("van Gogh"), None),
        // Double names.
        ("Hans-Peter Müller-Lüdenscheidt", Some("Hans-Peter"), Some("Müller-Lüdenscheidt"), None),
        ("Heijdanus-De Boer, Jan", Some("Jan"), Some("Heijdanus-De Boer"), None),
        ("Hans Peter Müller", None, None, None),
        ("María García López", None, None, None),
        // Suffixes.
        ("Hannes Brauer sen.", Some("Hannes"), Some("Brauer"), None),
        ("John Smith Jr.", Some("John"), Some("Smith"), None),
        ("Smith, John, Jr.", Some("John"), Some("Smith"), None),
        ("Henry Ford III", Some("Henry"), Some("Ford"), None),
        // Missing or unreadable data.
        ("Müller", None, None, None),
        ("Dr. Müller", None, None, Some(Rank::Doctor)),
        ("Pieter Van Dijk", None, None, None),
        ("Nguyen Van Anh", None, None, None),
        ("Otto Graf Lambsdorff", None, None, None),
        ("山田 太郎", None, None, None),
        ("Anna 2 Müller", None, None, None),
        ("Müller, Anna, Maria", None, None, None),
        ("Anna von", None, None, None),
        ("Иван Петров", Some("Иван"), Some("Петров"), None),
        ("Zoë Ångström", Some("Zoë"), Some("Ångström"), None),
    ];

    #[test]
    fn splits_names_it_can_read_and_says_so_when_it_cannot() {
        let mut wrong = Vec::new();
        for &(name, given, family, rank) in CASES {
            let p = parse(name);
            let got = (p.given.as_deref(), p.family.as_deref(), p.rank);
            if got != (given, family, rank) || (given.is_none() != p.unsure.is_some()) {
                wrong.push(format!("{name:?}: got {got:?} ({:?}), want {:?}", p.unsure, (given, family, rank)));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn display_and_core_drop_titles() {
        let p = parse("Prof. Dr. Karin von der Heide");
        assert_eq!((p.display.as_str(), p.core.as_str()), ("Karin von der Heide", "Karin von der Heide"));
        let p = parse("Hannes Brauer jun.");
        assert_eq!((p.display.as_str(), p.core.as_str()), ("Hannes Brauer jun.", "Hannes Brauer"));
        let p = parse("Weiß, Anna");
        assert_eq!(p.display, "Anna Weiß");
    }

    #[test]
    fn titles_given_apart() {
        assert_eq!(rank_of_title("Dr."), Some(Rank::Doctor));
        assert_eq!(rank_of_title("Prof. Dr."), Some(Rank::Professor));
        assert_eq!(rank_of_title("Dipl.-Ing."), None);
        assert_eq!(rank_of_title("Dr.-Ing."), Some(Rank::Doctor));
    }
}
