//! Order files as ops have them (ERP and Excel exports), read into validated [`Order`]s. Pure:
//! the only I/O is the `BufRead` it is given.
//!
//! The dialect is decided once per file, never per value (pitfalls: "CSV order imports"):
//! - the header row is located explicitly: an optional Excel `sep=;` line and up to
//!   [`MAX_PREAMBLE`] preamble lines may come before it; it is the first line naming a customer
//!   and an order column. Column names are matched case-insensitively, in English or German
//!   ([`Column::of_header`]);
//! - the delimiter is `--delimiter`, else the `sep=` line, else whichever of `;` and `,` the
//!   header line has more of;
//! - the encoding is UTF-8 (a leading BOM is skipped) or Windows-1252; `auto` insists on valid
//!   UTF-8 and names the line that is not, suggesting `--encoding windows-1252` (1252 decoding
//!   never fails, so it cannot be guessed safely);
//! - the decimal mark follows the delimiter (`;` files: decimal comma, `1.234,56`; `,` files:
//!   decimal point, `1,234.56`) unless given. An amount with a single thousands group and no
//!   decimals (`1.234` in a comma file) could be read either way and is rejected;
//! - dates are ISO (`2026-11-30`) or German (`30.11.2026`), with a four-digit year from
//!   [`MIN_YEAR`] to [`MAX_YEAR`].
//!
//! Rows come out one at a time ([`OrderReader::next_row`]) with their line number in the file,
//! as an order or as the problems of that row (field, value as written, reason), so a caller
//! can stream a large file.

use super::{DecimalMark, Order, parse_amount, parse_date};
use crate::money::{Currency, Money};
use chrono::Datelike;
use std::io::{BufRead, Read};

/// Lines before the header row that are skipped (bank and ERP preambles).
pub const MAX_PREAMBLE: usize = 10;
/// Longest header or preamble line read, in bytes.
const MAX_HEADER_LINE: u64 = 64 * 1024;
/// Earliest order year accepted.
pub const MIN_YEAR: i32 = 1900;
/// Latest order year accepted.
pub const MAX_YEAR: i32 = 2100;

/// How the file's bytes are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8, or an error naming the first line that is not.
    #[default]
    Auto,
    /// UTF-8 (with or without BOM).
    Utf8,
    /// Windows-1252 (what German Excel writes without a BOM).
    Windows1252,
}

/// What the caller decided about a file (the command-line options).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The field delimiter; `None`: a `sep=` line, else sniffed from the header line.
    pub delimiter: Option<u8>,
    /// The encoding.
    pub encoding: Encoding,
    /// The decimal mark; `None`: comma for `;` files, point otherwise.
    pub decimal: Option<DecimalMark>,
    /// The currency of amounts that name none (no currency column, or an empty cell).
    pub currency: Option<Currency>,
}

/// What was decided for a file, to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    /// The delimiter.
    pub delimiter: u8,
    /// The decimal mark.
    pub decimal: DecimalMark,
    /// The header row's line number (1-based).
    pub header_line: u64,
    /// The header's columns that were recognised, as written, with what they mean.
    pub columns: Vec<(String, Column)>,
    /// Header columns that mean nothing to the import (ignored).
    pub ignored: Vec<String>,
}

/// A column the import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// The customer's id (required).
    Customer,
    /// The order id (required).
    Order,
    /// The order date (required).
    Date,
    /// The amount, optionally with its currency (`1.234,56 EUR`).
    Amount,
    /// The amount's currency.
    Currency,
    /// Free text.
    Reference,
}

impl Column {
    const ALL: [Column; 6] =
        [Column::Customer, Column::Order, Column::Date, Column::Amount, Column::Currency, Column::Reference];

    /// The field name in messages (`customer`, `order`, `date`, `amount`, `currency`,
    /// `reference`).
    pub fn name(self) -> &'static str {
        match self {
            Column::Customer => "customer",
            Column::Order => "order",
            Column::Date => "date",
            Column::Amount => "amount",
            Column::Currency => "currency",
            Column::Reference => "reference",
        }
    }

    /// The header names this column accepts (compared in lower case, without spaces, `_`, `-`,
    /// `.` and `#`).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Column::Customer => {
                &["customer", "customerid", "customerno", "kunde", "kundennummer", "kundennr", "kundenid"]
            }
            Column::Order => &[
                "order",
                "orderid",
                "orderno",
                "ordernumber",
                "auftrag",
                "auftragsnummer",
                "auftragsnr",
                "bestellung",
                "bestellnummer",
                "bestellnr",
            ],
            Column::Date => &["date", "orderdate", "datum", "auftragsdatum", "bestelldatum"],
            Column::Amount => &["amount", "total", "value", "betrag", "summe", "wert", "auftragswert", "bestellwert"],
            Column::Currency => &["currency", "währung", "waehrung"],
            Column::Reference => &["reference", "ref", "referenz", "bestellreferenz"],
        }
    }

    /// The column a header cell names, if any.
    pub fn of_header(cell: &str) -> Option<Column> {
        let key: String = cell
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-' | '.' | '#'))
            .flat_map(char::to_lowercase)
            .collect();
        Column::ALL.into_iter().find(|c| c.aliases().contains(&key.as_str()))
    }
}

/// A problem that stops the whole file (nothing of it should be imported).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// The header row is missing or unusable.
    #[error("{0}")]
    Header(String),
    /// A line is not valid UTF-8.
    #[error(
        "line {line} is not valid UTF-8; if the file comes from Excel or a Windows program, try --encoding windows-1252"
    )]
    NotUtf8 {
        /// The line.
        line: u64,
    },
    /// The file says it is UTF-8 (a BOM) but `--encoding windows-1252` was given.
    #[error(
        "the file starts with a UTF-8 byte order mark, but --encoding windows-1252 was given; use --encoding utf-8"
    )]
    BomButWindows1252,
    /// The CSV structure is broken beyond one row.
    #[error("line {line}: {message}")]
    Csv {
        /// Where.
        line: u64,
        /// What.
        message: String,
    },
}

/// One problem of one row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// The line the row starts on (1-based, counting every line of the file).
    pub line: u64,
    /// The field (`customer`, `order`, `date`, `amount`, `currency`, `reference`, or `row`).
    pub field: &'static str,
    /// The value as written (for `row`: the whole row, shortened).
    pub value: String,
    /// Why it is rejected.
    pub reason: String,
}

/// One row read: an order, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// A valid order, with its line.
    Order(u64, Order),
    /// Every problem of a rejected row (at least one).
    Rejected(Vec<RowError>),
}

/// Reads orders from a CSV file, one row at a time.
pub struct OrderReader<R: Read> {
    csv: ::csv::Reader<R>,
    record: ::csv::ByteRecord,
    /// Column index of each [`Column`] (in `Column::ALL` order).
    at: [Option<usize>; 6],
    width: usize,
    encoding: Encoding,
    currency: Option<Currency>,
    /// Lines before the CSV reader's first line.
    line_offset: u64,
    dialect: Dialect,
}

impl<R: BufRead> OrderReader<R> {
    /// Reads up to the header row and decides the dialect.
    ///
    /// # Errors
    /// No header row (customer and order columns) within the first lines, a column named twice,
    /// an encoding problem in these lines, or reading failed.
    pub fn new(mut input: R, options: &Options) -> Result<OrderReader<R>, FileError> {
        let mut delimiter = options.delimiter;
        let mut line_no = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut input).take(MAX_HEADER_LINE).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(FileError::Header(if line_no == 0 {
                    "the file is empty: expected a header row (e.g. customer;order;date;amount;currency)".into()
                } else {
                    no_header(line_no, options.delimiter)
                }));
            }
            line_no += 1;
            let mut bytes: &[u8] = &line;
            if line_no == 1
                && let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF")
            {
                if options.encoding == Encoding::Windows1252 {
                    return Err(FileError::BomButWindows1252);
                }
                bytes = rest;
            }
            let text = decode(bytes, options.encoding).ok_or(FileError::NotUtf8 { line: line_no })?;
            let text = text.trim_end_matches(['\r', '\n']);
            if let Some(sep) = text.strip_prefix("sep=")
                && line_no == 1
            {
                if delimiter.is_none()
                    && let [d] = sep.as_bytes()
                {
                    delimiter = Some(*d);
                }
                continue;
            }
            let d = delimiter.unwrap_or_else(|| sniff(text));
            let cells = split_line(text.as_bytes(), d);
            let mut at = [None; 6];
            let mut columns = Vec::new();
            let mut ignored = Vec::new();
            for (i, cell) in cells.iter().enumerate() {
                match Column::of_header(cell) {
                    Some(c) => {
                        let slot = &mut at[c as usize];
                        if slot.is_some() {
                            return Err(FileError::Header(format!(
                                "line {line_no}: two columns mean {} (the second is `{}`)",
                                c.name(),
                                cell.trim()
                            )));
                        }
                        *slot = Some(i);
                        columns.push((cell.trim().to_string(), c));
                    }
                    None if !cell.trim().is_empty() => ignored.push(cell.trim().to_string()),
                    None => {}
                }
            }
            if at[Column::Customer as usize].is_none() || at[Column::Order as usize].is_none() {
                if line_no as usize > MAX_PREAMBLE {
                    return Err(FileError::Header(no_header(line_no, options.delimiter)));
                }
                continue;
            }
            if at[Column::Date as usize].is_none() {
                return Err(FileError::Header(format!(
                    "line {line_no}: the header has no date column ({}; found: {})",
                    aliases(Column::Date),
                    cells.iter().map(|c| c.trim()).collect::<Vec<_>>().join(", ")
                )));
            }
            let decimal = options.decimal.unwrap_or(if d == b';' { DecimalMark::Comma } else { DecimalMark::Point });
            // Lines end at `\n` (a `\r` before it is trimmed with the cell): csv 1.4 counts
            // lines of CRLF files one behind, and the line numbers are what users look up.
            let csv = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .delimiter(d)
                .terminator(::csv::Terminator::Any(b'\n'))
                .flexible(true)
                .from_reader(input);
            return Ok(OrderReader {
                csv,
                record: ::csv::ByteRecord::new(),
                at,
                width: cells.len(),
                encoding: options.encoding,
                currency: options.currency,
                line_offset: line_no,
                dialect: Dialect { delimiter: d, decimal, header_line: line_no, columns, ignored },
            });
        }
    }
}

fn aliases(c: Column) -> String {
    c.aliases().join(", ")
}

fn no_header(lines: u64, delimiter: Option<u8>) -> String {
    let given = match delimiter {
        Some(d) => format!(" separated by '{}' (as --delimiter says)", d as char),
        None => String::new(),
    };
    format!(
        "no header row in the first {lines} line(s): expected a line naming a customer column ({}) and an order column ({}){given}",
        aliases(Column::Customer),
        aliases(Column::Order)
    )
}

/// `1.23457E+15`: what Excel shows, and may save, for a long number (an id) it took for a
/// number; the digits are lost.
fn scientific(s: &str) -> bool {
    let Some((mantissa, exponent)) = s.split_once(['E', 'e']) else { return false };
    let Some(exponent) = exponent.strip_prefix('+') else { return false };
    let (int, frac) = mantissa.split_once([',', '.']).unwrap_or((mantissa, "0"));
    [int, frac, exponent].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `;` when the line has more of them than `,` (outside quotes), else `,`.
fn sniff(line: &str) -> u8 {
    let (mut semi, mut comma, mut quoted) = (0, 0, false);
    for b in line.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => semi += 1,
            b',' if !quoted => comma += 1,
            _ => {}
        }
    }
    if semi > comma { b';' } else { b',' }
}

/// The cells of one line (the header), as the csv crate reads them.
fn split_line(line: &[u8], delimiter: u8) -> Vec<String> {
    let mut r = ::csv::ReaderBuilder::new().has_headers(false).delimiter(delimiter).flexible(true).from_reader(line);
    let mut rec = ::csv::StringRecord::new();
    match r.read_record(&mut rec) {
        Ok(true) => rec.iter().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The text of `bytes`; `None`: not UTF-8 where UTF-8 is required.
fn decode(bytes: &[u8], encoding: Encoding) -> Option<std::borrow::Cow<'_, str>> {
    match encoding {
        Encoding::Auto | Encoding::Utf8 => std::str::from_utf8(bytes).ok().map(std::borrow::Cow::Borrowed),
        // Single-byte: decoding per field is exact, and never fails.
        Encoding::Windows1252 => Some(encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0),
    }
}

impl<R: Read> OrderReader<R> {
    /// What was decided for the file.
    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// Bytes of the input consumed so far after the header (for progress).
    pub fn position(&self) -> u64 {
        self.csv.position().byte()
    }

    /// The next row; `Ok(None)` at the end.
    ///
    /// # Errors
    /// Reading failed, or (`auto`, `utf-8`) a line is not valid UTF-8.
    pub fn next_row(&mut self) -> Result<Option<Row>, FileError> {
        loop {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                // Blank lines, and lines of empty cells (`;;;;` from spreadsheets), are no rows.
                Ok(true) if self.record.iter().all(|f| f.trim_ascii().is_empty()) => continue,
                Ok(true) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line()) + self.line_offset;
                    return match e.into_kind() {
                        ::csv::ErrorKind::Io(io) => Err(FileError::Io(io)),
                        other => Err(FileError::Csv { line, message: format!("{other:?}") }),
                    };
                }
            }
        }
        let line = self.record.position().map_or(0, |p| p.line()) + self.line_offset;
        let mut cells: Vec<std::borrow::Cow<'_, str>> = Vec::with_capacity(self.record.len());
        for field in self.record.iter() {
            cells.push(decode(field, self.encoding).ok_or(FileError::NotUtf8 { line })?);
        }
        if cells.len() != self.width
            && !(cells.len() > self.width && cells[self.width..].iter().all(|c| c.trim().is_empty()))
        {
            let shown: Vec<&str> = cells.iter().map(|c| c.trim_end_matches('\r')).collect();
            let d = self.dialect.delimiter as char;
            let hint = if cells.len() > self.width && d == ',' {
                " (an unquoted decimal comma? quote the amount or use ';' as the delimiter)"
            } else {
                ""
            };
            return Ok(Some(Row::Rejected(vec![RowError {
                line,
                field: "row",
                value: short(&shown.join(&d.to_string())),
                reason: format!("has {} fields, the header has {}{hint}", cells.len(), self.width),
            }])));
        }
        let cell = |c: Column| self.at[c as usize].and_then(|i| cells.get(i)).map_or("", |s| s.as_ref()).trim();
        Ok(Some(order_of(line, &cell, self.dialect.decimal, self.currency)))
    }
}

/// At most 80 characters of `s` (for values in messages).
fn short(s: &str) -> String {
    if s.chars().count() > 80 { format!("{}…", s.chars().take(80).collect::<String>()) } else { s.to_string() }
}

/// One row's cells → an order, or every problem.
fn order_of<'c>(line: u64, cell: &dyn Fn(Column) -> &'c str, mark: DecimalMark, default: Option<Currency>) -> Row {
    let mut errors = Vec::new();
    let reject = |errors: &mut Vec<RowError>, c: Column, reason: String| {
        errors.push(RowError { line, field: c.name(), value: short(cell(c)), reason });
    };
    let date = match cell(Column::Date) {
        "" => {
            reject(&mut errors, Column::Date, "is empty".into());
            None
        }
        text => match parse_date(text) {
            Ok(d) if (MIN_YEAR..=MAX_YEAR).contains(&d.year()) => Some(d),
            Ok(d) => {
                let why = format!("`{d}` is not a plausible order date (years {MIN_YEAR}–{MAX_YEAR})");
                reject(&mut errors, Column::Date, why);
                None
            }
            Err(e) => {
                reject(&mut errors, Column::Date, e);
                None
            }
        },
    };
    let amount = match amount_of(cell(Column::Amount), cell(Column::Currency), mark, default) {
        Ok(a) => a,
        Err((c, reason)) => {
            reject(&mut errors, c, reason);
            None
        }
    };
    if scientific(cell(Column::Order)) {
        let why = "looks like a number in scientific notation, as Excel shows long ids it took for numbers (the digits are lost): export the column as text";
        reject(&mut errors, Column::Order, why.into());
    }
    let reference = Some(cell(Column::Reference)).filter(|r| !r.is_empty());
    // The other fields are checked whatever else is wrong, so one run shows everything (the
    // date does not matter to their checks).
    let checked_date = date.unwrap_or_default();
    match Order::new(cell(Column::Customer), cell(Column::Order), checked_date, amount, reference) {
        Ok(o) if errors.is_empty() => return Row::Order(line, o),
        Ok(_) => {}
        Err(field_errors) => {
            for e in field_errors {
                let c = match e.field {
                    "customer" => Column::Customer,
                    "amount" => Column::Amount,
                    "reference" => Column::Reference,
                    _ => Column::Order,
                };
                reject(&mut errors, c, e.problem);
            }
        }
    }
    errors.sort_by_key(|e| Column::ALL.iter().position(|c| c.name() == e.field));
    Row::Rejected(errors)
}

/// The amount of a row: empty → none; a currency may follow or precede it (`1.234,56 EUR`,
/// `€ 12,50`), else the currency column, else the default.
fn amount_of(
    text: &str,
    currency_cell: &str,
    mark: DecimalMark,
    default: Option<Currency>,
) -> Result<Option<Money>, (Column, String)> {
    if text.is_empty() {
        return Ok(None);
    }
    let (number, inline) = split_currency(text);
    let column = match currency_cell {
        "" => None,
        c => Some(Currency::parse(c).map_err(|e| (Column::Currency, e))?),
    };
    let inline = match inline {
        Some(c) => Some(Currency::parse(c).map_err(|e| (Column::Amount, e))?),
        None => None,
    };
    let currency = match (inline, column) {
        (Some(a), Some(b)) if a != b => {
            return Err((Column::Amount, format!("names {a}, but the currency column says {b}")));
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => default.ok_or_else(|| {
            (
                Column::Amount,
                format!(
                    "`{text}` has no currency: add a currency column, write e.g. `{number} EUR`, or pass --currency"
                ),
            )
        })?,
    };
    let (dec, group) = match mark {
        DecimalMark::Comma => (',', '.'),
        DecimalMark::Point => ('.', ','),
    };
    if !number.contains(dec) && number.matches(group).count() == 1 {
        let other = match mark {
            DecimalMark::Comma => "point",
            DecimalMark::Point => "comma",
        };
        return Err((
            Column::Amount,
            format!(
                "`{number}` is ambiguous: this file uses a decimal {} ('{dec}'), so '{group}' separates thousands, but it may be meant as a decimal {other}; write it with decimals (e.g. `{number}{dec}00`) or without the '{group}'",
                if dec == ',' { "comma" } else { "point" }
            ),
        ));
    }
    let amount = parse_amount(number, mark).map_err(|e| (Column::Amount, e))?;
    Ok(Some(Money { amount, currency }))
}

/// `1.234,56 EUR` → (`1.234,56`, `EUR`); `€12,50` → (`12,50`, `EUR`).
fn split_currency(text: &str) -> (&str, Option<&str>) {
    let t = text.trim();
    if let Some(n) = t.strip_suffix('€').or_else(|| t.strip_prefix('€')) {
        return (n.trim(), Some("EUR"));
    }
    if let Some((n, c)) = t.rsplit_once(' ')
        && c.len() == 3
        && c.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return (n.trim(), Some(c));
    }
    if let Some((c, n)) = t.split_once(' ')
        && c.len() == 3
        && c.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return (n.trim(), Some(c));
    }
    (t, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], options: Options) -> (Dialect, Vec<Row>) {
        let mut r = OrderReader::new(bytes, &options).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = r.next_row().unwrap() {
            rows.push(row);
        }
        (r.dialect().clone(), rows)
    }

    fn orders(rows: &[Row]) -> Vec<(u64, &Order)> {
        rows.iter().filter_map(|r| if let Row::Order(l, o) = r { Some((*l, o)) } else { None }).collect()
    }

    fn errors(rows: &[Row]) -> Vec<(u64, &'static str, String)> {
        rows.iter()
            .filter_map(|r| if let Row::Rejected(e) = r { Some(e) } else { None })
            .flatten()
            .map(|e| (e.line, e.field, e.value.clone()))
            .collect()
    }

    #[test]
    fn english_comma_file_with_bom_and_decimal_point() {
        let file = "\u{feff}Customer,Order ID,Date,Amount,Currency,Reference\nacme,A-1,2026-11-30,\"1,234.50\",eur,PO 7\nacme,A-2,30.11.2026,99,EUR,\n";
        let (d, rows) = read(file.as_bytes(), Options::default());
        assert_eq!((d.delimiter, d.decimal, d.header_line), (b',', DecimalMark::Point, 1));
        let o = orders(&rows);
        assert_eq!(o.len(), 2, "{rows:?}");
        assert_eq!(o[0].0, 2);
        assert_eq!(o[0].1.amount.unwrap().to_string(), "1234.50 EUR");
        assert_eq!(o[0].1.reference.as_deref(), Some("PO 7"));
        assert_eq!(o[1].1.reference, None);
    }

    #[test]
    fn german_semicolon_file_in_windows_1252() {
        let mut file =
            b"sep=;\nExport vom 30.11.2026\nKundennummer;Bestellnummer;Datum;Betrag;W\xE4hrung;Referenz\n".to_vec();
        file.extend_from_slice(b"acme;4711;01.02.2026;1.234,56;EUR;Gr\xFC\xDFe M\xFCller\n");
        let (d, rows) = read(&file, Options { encoding: Encoding::Windows1252, ..Options::default() });
        assert_eq!((d.delimiter, d.decimal, d.header_line, d.columns.len()), (b';', DecimalMark::Comma, 3, 6));
        let o = orders(&rows);
        assert_eq!(o[0].0, 4);
        assert_eq!(o[0].1.amount.unwrap().to_string(), "1234.56 EUR");
        assert_eq!(o[0].1.reference.as_deref(), Some("Grüße Müller"));
        // The same bytes without --encoding: an error naming the line and the option.
        let e = OrderReader::new(&file[..], &Options::default()).err().unwrap().to_string();
        assert!(e.contains("line 3 is not valid UTF-8") && e.contains("--encoding windows-1252"), "{e}");
    }

    #[test]
    fn bad_rows_name_line_field_and_value() {
        let file = "kunde;auftrag;datum;betrag\nacme;1;2026-01-01;12,5x\nacme;;31.02.2026;1.234\nac/me;3;01.01.26;\nacme;4;2026-01-01;5,00;x;y\nacme;5;2026-01-01;7,00\n";
        let (_, rows) = read(file.as_bytes(), Options { currency: Some(Currency::EUR), ..Options::default() });
        assert_eq!(orders(&rows).iter().map(|(l, _)| *l).collect::<Vec<_>>(), [6]);
        let e = errors(&rows);
        assert_eq!(
            e,
            [
                (2, "amount", "12,5x".to_string()),
                (3, "order", "".to_string()),
                (3, "date", "31.02.2026".to_string()),
                (3, "amount", "1.234".to_string()),
                (4, "customer", "ac/me".to_string()),
                (4, "date", "01.01.26".to_string()),
                (5, "row", "acme;4;2026-01-01;5,00;x;y".to_string()),
            ]
        );
    }

    #[test]
    fn crlf_lines_and_blank_lines_keep_their_numbers() {
        let file =
            "customer;order;date;reference\r\n\r\na;1;2026-01-01;\"x\r\ny\"\r\n;;;\r\nb;2;x;\r\nc;3;2026-01-01;\r\n";
        let (_, rows) = read(file.as_bytes(), Options::default());
        assert_eq!(orders(&rows)[0].0, 7, "{rows:?}");
        assert_eq!(errors(&rows).iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), [(3, "reference"), (6, "date")]);
    }

    #[test]
    fn currencies_inline_column_default_and_missing() {
        let file = "customer,order,date,amount,currency\na,1,2026-01-01,12.50 CHF,\na,2,2026-01-01,12.50,\na,3,2026-01-01,€12.50,USD\na,4,2026-01-01,,\n";
        let (_, rows) = read(file.as_bytes(), Options::default());
        let o = orders(&rows);
        assert_eq!(o.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2, 5]);
        assert_eq!(o[0].1.amount.unwrap().to_string(), "12.50 CHF");
        assert_eq!(o[1].1.amount, None);
        let e = errors(&rows);
        assert_eq!(e.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), [(3, "amount"), (4, "amount")]);
        let (_, rows) = read(file.as_bytes(), Options { currency: Some(Currency::EUR), ..Options::default() });
        assert_eq!(orders(&rows).len(), 3);
    }

    #[test]
    fn ids_excel_turned_into_scientific_notation_are_rejected() {
        for (id, sci) in [
            ("1.23457E+15", true),
            ("4,7E+12", true),
            ("1E+15", true),
            ("1E5", false),
            ("E5", false),
            ("A-1E+5", false),
            ("4711", false),
        ] {
            assert_eq!(scientific(id), sci, "{id}");
        }
    }

    #[test]
    fn header_problems_are_file_errors() {
        for (file, want) in [
            ("", "empty"),
            ("a,b,c\n1,2,3\n", "no header row"),
            ("customer,order,amount\n", "no date column"),
            ("kunde;customer;order;date\n", "two columns mean customer"),
        ] {
            let e = OrderReader::new(file.as_bytes(), &Options::default()).err().unwrap().to_string();
            assert!(e.contains(want), "{file:?}: {e}");
        }
    }

    #[test]
    fn a_file_of_any_bytes_never_panics() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut file = b"customer;order;date;amount;currency\n".to_vec();
            for _ in 0..(rng % 200) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                file.push(b";,\n\"0123456789.-\xE2EUR acme\xFC"[(rng % 26) as usize]);
            }
            for encoding in [Encoding::Auto, Encoding::Windows1252] {
                if let Ok(mut r) = OrderReader::new(&file[..], &Options { encoding, ..Options::default() }) {
                    while let Ok(Some(_)) = r.next_row() {}
                }
            }
        }
    }
}
