//! Public holidays by region, computed (no data files): fixed dates, Easter-based dates and the
//! few one-off holidays, with the year each rule began. Covers Germany (`DE`), its 16 states
//! (`DE-BW` … `DE-TH`, ISO 3166-2) and four local variants for holidays that only some
//! municipalities keep. Tested against the independent `holidays` package (PyPI) for every
//! region and the years 2017–2030 (`tests/fixtures/holidays/`).
//!
//! Rules as of 2026, with their history since 2017:
//! * everywhere: Neujahr, Karfreitag, Ostermontag, Tag der Arbeit, Christi Himmelfahrt,
//!   Pfingstmontag, Tag der Deutschen Einheit, 1. and 2. Weihnachtstag; Reformationstag
//!   2017 (500th anniversary) everywhere.
//! * Heilige Drei Könige: BW, BY, ST. Fronleichnam: BW, BY, HE, NW, RP, SL (+ Catholic
//!   municipalities of SN and TH). Allerheiligen: BW, BY, NW, RP, SL. Mariä Himmelfahrt: SL
//!   (+ Catholic municipalities of BY). Augsburger Friedensfest: city of Augsburg only.
//! * Reformationstag: BB, MV, SN, ST, TH; since 2018 also HB, HH, NI, SH.
//! * Buß- und Bettag (the Wednesday before 23 November): SN.
//! * Internationaler Frauentag (8 March): BE since 2019, MV since 2023.
//! * Weltkindertag (20 September): TH since 2019.
//! * Ostersonntag and Pfingstsonntag: BB (they are Sundays, but they are public holidays).
//! * One-off (Berlin): 8 May 2020 and 2025 (end of the Second World War, 75th/80th
//!   anniversary), 17 June 2028 (75th anniversary of the 1953 uprising).

use chrono::{Datelike, NaiveDate, Weekday};

/// A public-holiday region (`region = "DE-BY"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// No public holidays (clears an inherited region).
    None,
    /// Nationwide German holidays only.
    De,
    /// A German state, by its two-letter ISO 3166-2 suffix.
    State(State),
    /// Bavaria's predominantly Catholic municipalities: adds Mariä Himmelfahrt.
    BavariaCatholic,
    /// Saxony's Catholic municipalities (Sorbian area): adds Fronleichnam.
    SaxonyCatholic,
    /// Thuringia's Catholic municipalities (Eichsfeld): adds Fronleichnam.
    ThuringiaCatholic,
    /// The city of Augsburg: Bavaria's holidays, Mariä Himmelfahrt and the Friedensfest.
    Augsburg,
}

/// The 16 German states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Baden-Württemberg.
    BW,
    /// Bayern (Bavaria).
    BY,
    /// Berlin.
    BE,
    /// Brandenburg.
    BB,
    /// Bremen.
    HB,
    /// Hamburg.
    HH,
    /// Hessen (Hesse).
    HE,
    /// Mecklenburg-Vorpommern.
    MV,
    /// Niedersachsen (Lower Saxony).
    NI,
    /// Nordrhein-Westfalen (North Rhine-Westphalia).
    NW,
    /// Rheinland-Pfalz (Rhineland-Palatinate).
    RP,
    /// Saarland.
    SL,
    /// Sachsen (Saxony).
    SN,
    /// Sachsen-Anhalt (Saxony-Anhalt).
    ST,
    /// Schleswig-Holstein.
    SH,
    /// Thüringen (Thuringia).
    TH,
}

const STATES: [(&str, State); 16] = [
    ("BW", State::BW),
    ("BY", State::BY),
    ("BE", State::BE),
    ("BB", State::BB),
    ("HB", State::HB),
    ("HH", State::HH),
    ("HE", State::HE),
    ("MV", State::MV),
    ("NI", State::NI),
    ("NW", State::NW),
    ("RP", State::RP),
    ("SL", State::SL),
    ("SN", State::SN),
    ("ST", State::ST),
    ("SH", State::SH),
    ("TH", State::TH),
];

const VARIANTS: [(&str, Region); 5] = [
    ("DE-BY-CATHOLIC", Region::BavariaCatholic),
    ("DE-SN-CATHOLIC", Region::SaxonyCatholic),
    ("DE-TH-CATHOLIC", Region::ThuringiaCatholic),
    ("DE-BY-AUGSBURG", Region::Augsburg),
    ("DE", Region::De),
];

impl Region {
    /// Every accepted code, for messages.
    pub fn codes() -> Vec<String> {
        let mut v: Vec<String> = vec!["DE".into()];
        v.extend(STATES.iter().map(|(c, _)| format!("DE-{c}")));
        v.extend(VARIANTS[..4].iter().map(|(c, _)| c.to_string()));
        v.push("none".into());
        v
    }

    /// Parses a code such as `DE-BY` (case-insensitive).
    ///
    /// # Errors
    /// A code that names no region (`DE`, `DE-XX` for the 16 states, the four local variants, or
    /// `none`).
    pub fn parse(s: &str) -> Result<Region, String> {
        let up = s.trim().to_ascii_uppercase();
        if up == "NONE" {
            return Ok(Region::None);
        }
        if let Some((_, r)) = VARIANTS.iter().find(|(c, _)| *c == up) {
            return Ok(*r);
        }
        if let Some(code) = up.strip_prefix("DE-")
            && let Some((_, st)) = STATES.iter().find(|(c, _)| *c == code)
        {
            return Ok(Region::State(*st));
        }
        Err(format!("unknown region `{s}`"))
    }

    /// The canonical code.
    pub fn code(self) -> String {
        match self {
            Region::None => "none".into(),
            Region::State(st) => {
                let c = STATES.iter().find(|(_, s)| *s == st).map_or("??", |(c, _)| c);
                format!("DE-{c}")
            }
            other => VARIANTS.iter().find(|(_, r)| *r == other).map_or("??", |(c, _)| c).to_string(),
        }
    }

    /// The state whose holidays this region keeps, if any.
    fn state(self) -> Option<State> {
        match self {
            Region::State(s) => Some(s),
            Region::BavariaCatholic | Region::Augsburg => Some(State::BY),
            Region::SaxonyCatholic => Some(State::SN),
            Region::ThuringiaCatholic => Some(State::TH),
            Region::None | Region::De => None,
        }
    }
}

/// Easter Sunday (Gregorian), by the anonymous Gregorian algorithm (Meeus/Jones/Butcher).
pub fn easter(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let (b, c) = (year.div_euclid(100), year.rem_euclid(100));
    let (d, e) = (b / 4, b % 4);
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let (i, k) = (c / 4, c % 4);
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)
}

/// The name of the public holiday on `date` in `region`, if it is one.
pub fn holiday(region: Region, date: NaiveDate) -> Option<&'static str> {
    use State::*;
    if region == Region::None {
        return None;
    }
    let year = date.year();
    let st = region.state();
    let is = |states: &[State]| st.is_some_and(|s| states.contains(&s));
    // Fixed dates.
    let fixed = match (date.month(), date.day()) {
        (1, 1) => Some("Neujahr"),
        (1, 6) if is(&[BW, BY, ST]) => Some("Heilige Drei Könige"),
        (3, 8) if (is(&[BE]) && year >= 2019) || (is(&[MV]) && year >= 2023) => Some("Internationaler Frauentag"),
        (5, 1) => Some("Tag der Arbeit"),
        (5, 8) if is(&[BE]) && (year == 2020 || year == 2025) => Some("Tag der Befreiung"),
        (6, 17) if is(&[BE]) && year == 2028 => Some("Jahrestag des Volksaufstandes vom 17. Juni 1953"),
        (8, 8) if region == Region::Augsburg => Some("Augsburger Hohes Friedensfest"),
        (8, 15) if is(&[SL]) || matches!(region, Region::BavariaCatholic | Region::Augsburg) => {
            Some("Mariä Himmelfahrt")
        }
        (9, 20) if is(&[TH]) && year >= 2019 => Some("Weltkindertag"),
        (10, 3) => Some("Tag der Deutschen Einheit"),
        (10, 31) if year == 2017 || is(&[BB, MV, SN, ST, TH]) || (is(&[HB, HH, NI, SH]) && year >= 2018) => {
            Some("Reformationstag")
        }
        (11, 1) if is(&[BW, BY, NW, RP, SL]) => Some("Allerheiligen"),
        (12, 25) => Some("1. Weihnachtstag"),
        (12, 26) => Some("2. Weihnachtstag"),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    // Buß- und Bettag: the Wednesday strictly before 23 November, i.e. 16–22 November.
    if is(&[SN]) && date.month() == 11 && (16..=22).contains(&date.day()) && date.weekday() == Weekday::Wed {
        return Some("Buß- und Bettag");
    }
    // Easter-based dates: Karfreitag (20 March at the earliest) to Fronleichnam (24 June at the
    // latest).
    if !(3..=6).contains(&date.month()) {
        return None;
    }
    let offset = (date - easter(year)?).num_days();
    match offset {
        -2 => Some("Karfreitag"),
        0 if is(&[BB]) => Some("Ostersonntag"),
        1 => Some("Ostermontag"),
        39 => Some("Christi Himmelfahrt"),
        49 if is(&[BB]) => Some("Pfingstsonntag"),
        50 => Some("Pfingstmontag"),
        60 if is(&[BW, BY, HE, NW, RP, SL]) || matches!(region, Region::SaxonyCatholic | Region::ThuringiaCatholic) => {
            Some("Fronleichnam")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_dates() {
        for (y, m, d) in [(2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28), (2038, 4, 25), (2285, 3, 22)] {
            assert_eq!(easter(y), NaiveDate::from_ymd_opt(y, m, d), "{y}");
        }
    }

    /// Every region, every day of 2017–2030, against `tests/fixtures/holidays/de.csv`, which the
    /// `holidays` package (PyPI) produced (see `generate.py` there): the same days, no more, no
    /// fewer.
    #[test]
    fn every_region_agrees_with_the_independent_holidays_package() {
        use std::collections::{BTreeMap, BTreeSet};
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/holidays/de.csv"));
        let mut expected: BTreeMap<String, BTreeSet<NaiveDate>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("region,")) {
            let mut cols = line.splitn(3, ',');
            let (region, date) = (cols.next().unwrap(), cols.next().unwrap());
            expected.entry(region.to_string()).or_default().insert(date.parse().unwrap());
        }
        let codes: Vec<String> = Region::codes().into_iter().filter(|c| c != "none").collect();
        assert_eq!(expected.keys().cloned().collect::<BTreeSet<_>>(), codes.iter().cloned().collect(), "regions");
        assert_eq!(codes.len(), 1 + 16 + 4);
        let mut checked = 0;
        for code in &codes {
            let region = Region::parse(code).unwrap();
            let mut ours = BTreeSet::new();
            let mut d = NaiveDate::from_ymd_opt(2017, 1, 1).unwrap();
            while d.year() <= 2030 {
                if holiday(region, d).is_some() {
                    ours.insert(d);
                }
                d = d.succ_opt().unwrap();
                checked += 1;
            }
            let theirs = &expected[code];
            let missing: Vec<_> = theirs.difference(&ours).collect();
            let extra: Vec<_> = ours.difference(theirs).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{code}: missing {missing:?}, extra {extra:?}");
        }
        assert!(checked > 21 * 5000);
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_are_rejected() {
        for code in Region::codes() {
            assert_eq!(Region::parse(&code).unwrap().code(), code);
        }
        assert_eq!(Region::parse("de-by").unwrap(), Region::State(State::BY));
        assert!(Region::parse("DE-XX").is_err());
        assert!(Region::parse("Bayern").is_err());
    }
}
