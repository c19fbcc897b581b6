//! `contactplan orders add` and `contactplan orders import`: orders into the store
//! (`Store::ingest_orders`), one by hand or a CSV file (read by `orders::csv`).
//!
//! An import reads the file twice: the first pass checks every row (so `--all-or-nothing`
//! decides before anything is written, and a file in the wrong encoding stores nothing) and
//! notes each customer's last line; the second pass stores the good rows in transactions of
//! about [`CHUNK`] orders, cut only where every customer of the chunk has had its last row, so
//! one customer's orders are never split across transactions (a file sorted by customer keeps
//! each chunk near [`CHUNK`]; an unsorted one makes chunks as large as it must).

use super::TextOrJson as Format;
use crate::clock::{Clock, SystemClock};
use crate::money::{Currency, Money};
use crate::orders::csv::{self as order_csv, Dialect, Encoding, OrderReader, Row, RowError};
use crate::orders::{DecimalMark, Order, parse_amount};
use crate::store::{Ingested, Store, UnixSecs, secs};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Orders per transaction of an import (more when one customer's rows are spread out).
pub const CHUNK: usize = 10_000;
/// Rejected rows shown in the text report (all are counted).
const SHOWN_ERRORS: usize = 100;
/// Customers not in the plans named in the warning (all are counted).
const SHOWN_UNKNOWN: usize = 5;
/// Files at least this large get a progress bar (on a terminal).
const PROGRESS_BYTES: u64 = 4 * 1024 * 1024;

/// Add orders (the business events behind `on = "orders"` milestones): one by hand or a CSV file.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Orders are stored per customer and order id: adding or importing the same order again changes nothing, and a changed date, amount or reference corrects the stored order.\n\nExamples:\n  contactplan orders add --customer acme --order A-2026-0042 --amount \"1234.50 EUR\"\n  contactplan orders import orders.csv\n  contactplan orders import export.csv --encoding windows-1252 --currency EUR"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Store one order.
    Add(AddArgs),
    /// Import orders from a CSV file (ERP or Excel export).
    Import(ImportArgs),
}

/// Store one order.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The date defaults to today in the configured time zone (`timezone`). The amount is written with a decimal point or a decimal comma; one that reads differently either way (1,234) is refused.\n\nExit status: 0 stored (or unchanged), 2 invalid input or unusable config.\n\nExamples:\n  contactplan orders add --customer acme --order A-2026-0042\n  contactplan orders add --customer acme --order A-2026-0042 --date 2026-11-30 --amount \"1234.50 EUR\"\n  contactplan orders add --customer acme --order 4711 --date 30.11.2026 --amount 1234,50 --currency EUR --reference \"PO 7781\""
)]
struct AddArgs {
    /// The customer's id, as in its plan.
    #[arg(long)]
    customer: String,
    /// The order's id (unique per customer).
    #[arg(long)]
    order: String,
    /// The order date: 2026-11-30 or 30.11.2026; default: today.
    #[arg(long)]
    date: Option<String>,
    /// The order's value: "1234.50 EUR", or a number with --currency.
    #[arg(long)]
    amount: Option<String>,
    /// The amount's currency (ISO 4217, e.g. EUR) when --amount names none.
    #[arg(long)]
    currency: Option<String>,
    /// Free text, e.g. the customer's purchase order number.
    #[arg(long)]
    reference: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Import orders from a CSV file (ERP or Excel export).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The file needs a header row naming its columns, in English or German, in any case: customer (kunde, kundennummer), order (order_id, auftrag, bestellnummer), date (datum), and optionally amount (betrag), currency (währung) and reference (referenz). An Excel `sep=;` line and up to 10 preamble lines before the header are skipped.\n\nDialect, decided per file: the delimiter is `;` or `,` (whichever the header line has more of, unless --delimiter); `;` files write amounts with a decimal comma (1.234,56), `,` files with a decimal point (1,234.56); an amount such as 1.234 that reads differently either way is rejected. Dates are 2026-11-30 or 30.11.2026. The file must be UTF-8 (with or without BOM) unless --encoding windows-1252 (German Excel without BOM).\n\nRows with problems are reported with their line, field and value; the others are imported (in transactions of whole customers), or none with --all-or-nothing. Importing the same file again changes nothing; changed rows correct the stored orders.\n\nExit status: 0 every row imported, 1 some rows rejected (the others imported), 2 nothing imported (a file problem, --all-or-nothing with a rejected row, no valid row, usage error).\n\nExamples:\n  contactplan orders import orders.csv\n  contactplan orders import export.csv --encoding windows-1252 --currency EUR\n  contactplan orders import orders.csv --all-or-nothing --format json | jq .errors"
)]
struct ImportArgs {
    /// The CSV file.
    file: PathBuf,
    /// Field delimiter; default: sniffed from the header line.
    #[arg(long, value_parser = parse_delimiter)]
    delimiter: Option<u8>,
    /// Text encoding; default: UTF-8, with an error naming the first line that is not.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    encoding: EncodingArg,
    /// Decimal mark of amounts; default: comma in `;` files, point in `,` files.
    #[arg(long, value_enum)]
    decimal: Option<DecimalArg>,
    /// Currency of amounts whose row names none (no currency column or an empty cell).
    #[arg(long, value_parser = Currency::parse)]
    currency: Option<Currency>,
    /// Import nothing when any row is rejected.
    #[arg(long)]
    all_or_nothing: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EncodingArg {
    /// UTF-8, or an error naming the first line that is not
    Auto,
    /// UTF-8 (with or without BOM)
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// Windows-1252 (also accepted as latin1, iso-8859-1)
    #[value(name = "windows-1252", aliases = ["cp1252", "latin1", "iso-8859-1"])]
    Windows1252,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DecimalArg {
    /// 1.234,56
    Comma,
    /// 1,234.56
    Point,
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        ";" | "," | "|" => Ok(s.as_bytes()[0]),
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ => Err(format!("`{s}` is not a delimiter: use ';', ',', '|' or tab")),
    }
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = match super::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match args.command {
        Command::Add(a) => add(&config, a, &SystemClock),
        Command::Import(a) => import(&config, a, &SystemClock),
    }
}

/// Today in the configured zone.
fn today(clock: &dyn Clock, config: &crate::config::Config) -> chrono::NaiveDate {
    clock.now().with_timezone(&config.default_timezone).date_naive()
}

/// Customers of `customers` that no valid plan names (sorted).
fn not_in_plans<'a>(config: &crate::config::Config, customers: impl Iterator<Item = &'a str>) -> Vec<String> {
    let ws = super::load_workspace(config);
    let plans = &ws.loaded.plans;
    let unknown: BTreeSet<&str> = customers.filter(|c| plans.get(c).is_none()).collect();
    unknown.into_iter().map(str::to_string).collect()
}

fn warn_unknown(unknown: &[String]) {
    if unknown.is_empty() {
        return;
    }
    let first: Vec<&str> = unknown.iter().take(SHOWN_UNKNOWN).map(String::as_str).collect();
    let more = if unknown.len() > SHOWN_UNKNOWN {
        format!(", … ({} more)", unknown.len() - SHOWN_UNKNOWN)
    } else {
        String::new()
    };
    eprintln!(
        "warning: {} customer(s) not in the plans (orders stored; no milestones until a valid plan names them): {}{more}",
        unknown.len(),
        first.join(", ")
    );
}

/// An amount given on the command line: a decimal point or comma, whichever reads it, and
/// refused when both read it differently (`1,234`).
fn cli_amount(amount: &str, currency: Option<&str>) -> Result<Money, String> {
    let (number, inline) = match amount.trim().rsplit_once(' ') {
        Some((n, c)) => (n.trim(), Some(c)),
        None => (amount.trim(), None),
    };
    let currency = match (inline, currency) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
            return Err(format!("--amount names {a} but --currency says {b}"));
        }
        (Some(c), _) | (None, Some(c)) => Currency::parse(c)?,
        (None, None) => {
            return Err(format!("--amount `{amount}` needs a currency: write \"{number} EUR\" or add --currency"));
        }
    };
    let amount = match (parse_amount(number, DecimalMark::Point), parse_amount(number, DecimalMark::Comma)) {
        (Ok(a), Ok(b)) if a != b => {
            return Err(format!("--amount `{number}` is ambiguous ({a} or {b}); write it with decimals, e.g. {a}.00"));
        }
        (Ok(a), _) | (_, Ok(a)) => a,
        (Err(e), Err(_)) => return Err(e),
    };
    Ok(Money { amount, currency })
}

fn add(config: &crate::config::Config, a: AddArgs, clock: &dyn Clock) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let date = match &a.date {
        Some(d) => crate::orders::parse_date(d).map_err(|e| problems.push(format!("--date: {e}"))).ok(),
        None => Some(today(clock, config)),
    };
    let amount = match &a.amount {
        Some(text) => cli_amount(text, a.currency.as_deref()).map_err(|e| problems.push(format!("--amount: {e}"))).ok(),
        None if a.currency.is_some() => {
            problems.push("--currency needs --amount".into());
            None
        }
        None => None,
    };
    let order =
        match date {
            Some(date) => match Order::new(&a.customer, &a.order, date, amount, a.reference.as_deref()) {
                Ok(o) => Some(o),
                Err(errors) => {
                    problems.extend(errors.iter().map(|e| {
                        format!("--{}: {}", if e.field == "order_id" { "order" } else { e.field }, e.problem)
                    }));
                    None
                }
            },
            None => None,
        };
    let Some(order) = order.filter(|_| problems.is_empty()) else {
        for p in problems {
            eprintln!("error: {p}");
        }
        return Ok(ExitCode::from(2));
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let done = runtime.block_on(async {
        let store = Store::connect(&config.database_url).await?;
        store.ingest_orders(std::slice::from_ref(&order), "orders add", secs(clock.now())).await
    })?;
    let unknown = not_in_plans(config, std::iter::once(order.customer.as_str()));
    let what = if done.inserted > 0 {
        "new"
    } else if done.updated > 0 {
        "updated"
    } else {
        "unchanged"
    };
    match a.format {
        Format::Json => {
            let out = serde_json::json!({
                "order": order,
                "result": what,
                "in_plans": unknown.is_empty(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            let amount = order.amount.map(|m| format!(", {m}")).unwrap_or_default();
            println!("order {} of {} ({}{amount}): {what}", order.id, order.customer, order.date);
        }
    }
    warn_unknown(&unknown);
    Ok(ExitCode::SUCCESS)
}

/// What an import did, as `--format json` prints it.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    file: String,
    delimiter: String,
    decimal: &'static str,
    encoding: &'static str,
    header_line: u64,
    /// The header's columns that were recognised: as written, and what they mean.
    columns: Vec<ColumnReport>,
    ignored_columns: Vec<String>,
    /// Data rows read.
    rows: u64,
    /// Rows imported (stored as new, updated or unchanged).
    imported: u64,
    #[serde(flatten)]
    ingested: Ingested,
    /// Transactions committed.
    transactions: u64,
    /// Rows rejected.
    rejected: u64,
    /// The first rejected rows' problems.
    errors: Vec<RowError>,
    /// Whether `errors` lists every rejected row.
    errors_complete: bool,
    /// Nothing imported because of `--all-or-nothing`.
    aborted: bool,
    /// Customers not in the plans: how many, and the first few.
    unknown_customers: usize,
    unknown_customers_first: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct ColumnReport {
    header: String,
    field: &'static str,
}

fn import(config: &crate::config::Config, a: ImportArgs, clock: &dyn Clock) -> anyhow::Result<ExitCode> {
    let options = order_csv::Options {
        delimiter: a.delimiter,
        encoding: match a.encoding {
            EncodingArg::Auto => Encoding::Auto,
            EncodingArg::Utf8 => Encoding::Utf8,
            EncodingArg::Windows1252 => Encoding::Windows1252,
        },
        decimal: a.decimal.map(|d| match d {
            DecimalArg::Comma => DecimalMark::Comma,
            DecimalArg::Point => DecimalMark::Point,
        }),
        currency: a.currency,
    };
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let bar = |what: &str| {
        if size >= PROGRESS_BYTES { super::progress(size, what) } else { indicatif::ProgressBar::hidden() }
    };
    let name = a.file.display().to_string();

    // Pass 1: check every row; note each customer's last line.
    let mut report = Report { file: name.clone(), errors_complete: true, ..Report::default() };
    let mut last_line: HashMap<String, u64> = HashMap::new();
    let checking = bar("checking");
    let checked = (|| -> Result<(), order_csv::FileError> {
        let mut reader = open(&a.file, &options)?;
        describe(&mut report, reader.dialect(), a.encoding);
        let mut n = 0u64;
        while let Some(row) = reader.next_row()? {
            report.rows += 1;
            match row {
                Row::Order(line, o) => match last_line.get_mut(&o.customer) {
                    Some(l) => *l = line,
                    None => {
                        last_line.insert(o.customer, line);
                    }
                },
                Row::Rejected(errors) => {
                    report.rejected += 1;
                    if report.rejected as usize <= SHOWN_ERRORS {
                        report.errors.extend(errors);
                    } else {
                        report.errors_complete = false;
                    }
                }
            }
            n += 1;
            if n.is_multiple_of(4096) {
                checking.set_position(reader.position());
            }
        }
        Ok(())
    })();
    checking.finish_and_clear();
    if let Err(e) = checked {
        eprintln!("error: {name}: {e}");
        return Ok(ExitCode::from(2));
    }
    let good = report.rows - report.rejected;
    if report.rejected > 0 && (a.all_or_nothing || good == 0) {
        report.aborted = a.all_or_nothing;
        return finish(report, a.format, &[], ExitCode::from(2));
    }

    // Pass 2: store the good rows, whole customers per transaction.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let source =
        format!("orders import {}", a.file.file_name().map_or(name.clone(), |f| f.to_string_lossy().into_owned()));
    let now = secs(clock.now());
    let storing = bar("importing");
    let stored = runtime.block_on(async {
        let store = Store::connect(&config.database_url).await?;
        let mut reader = open(&a.file, &options)?;
        let mut chunk: Vec<Order> = Vec::with_capacity(CHUNK);
        let mut open_until = 0u64;
        let mut n = 0u64;
        while let Some(row) = reader.next_row()? {
            let Row::Order(line, order) = row else { continue };
            open_until = open_until.max(last_line.get(&order.customer).copied().unwrap_or(line));
            chunk.push(order);
            if chunk.len() >= CHUNK && line >= open_until {
                ingest(&store, &mut chunk, &source, now, &mut report).await?;
            }
            n += 1;
            if n.is_multiple_of(4096) {
                storing.set_position(reader.position());
            }
        }
        ingest(&store, &mut chunk, &source, now, &mut report).await?;
        Ok::<_, anyhow::Error>(())
    });
    storing.finish_and_clear();
    if let Err(e) = stored {
        let i = &report.ingested;
        eprintln!(
            "error: {name}: {e:#}\nstored before the error, in {} committed transaction(s): {} new, {} updated, {} unchanged; importing the file again completes it",
            report.transactions, i.inserted, i.updated, i.unchanged
        );
        return Ok(ExitCode::from(2));
    }
    let unknown = not_in_plans(config, last_line.keys().map(String::as_str));
    report.unknown_customers = unknown.len();
    report.unknown_customers_first = unknown.iter().take(SHOWN_UNKNOWN).cloned().collect();
    let code = if report.rejected > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS };
    finish(report, a.format, &unknown, code)
}

fn open(
    path: &Path,
    options: &order_csv::Options,
) -> Result<OrderReader<std::io::BufReader<std::fs::File>>, order_csv::FileError> {
    let file = std::fs::File::open(path)?;
    OrderReader::new(std::io::BufReader::with_capacity(256 * 1024, file), options)
}

async fn ingest(
    store: &Store,
    chunk: &mut Vec<Order>,
    source: &str,
    now: UnixSecs,
    report: &mut Report,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let done = store.ingest_orders(chunk, source, now).await?;
    report.imported += chunk.len() as u64;
    report.ingested += done;
    report.transactions += 1;
    chunk.clear();
    Ok(())
}

fn describe(report: &mut Report, d: &Dialect, encoding: EncodingArg) {
    report.delimiter = match d.delimiter {
        b'\t' => "tab".into(),
        b => (b as char).to_string(),
    };
    report.decimal = match d.decimal {
        DecimalMark::Comma => "comma",
        DecimalMark::Point => "point",
    };
    report.encoding = match encoding {
        EncodingArg::Windows1252 => "windows-1252",
        _ => "utf-8",
    };
    report.header_line = d.header_line;
    report.columns = d.columns.iter().map(|(h, c)| ColumnReport { header: h.clone(), field: c.name() }).collect();
    report.ignored_columns = d.ignored.clone();
}

fn finish(report: Report, format: Format, unknown: &[String], code: ExitCode) -> anyhow::Result<ExitCode> {
    let out = match format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        Format::Text => text(&report),
    };
    std::io::stdout().lock().write_all(out.as_bytes())?;
    warn_unknown(unknown);
    Ok(code)
}

fn text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let columns: Vec<String> = r
        .columns
        .iter()
        .map(|c| {
            if c.header.eq_ignore_ascii_case(c.field) {
                c.header.clone()
            } else {
                format!("{} = {}", c.header, c.field)
            }
        })
        .collect();
    let _ = writeln!(
        o,
        "{}: delimiter '{}', decimal {}, {}, header on line {} ({})",
        r.file,
        r.delimiter,
        r.decimal,
        r.encoding,
        r.header_line,
        columns.join(", ")
    );
    if !r.ignored_columns.is_empty() {
        let _ = writeln!(o, "ignored columns: {}", r.ignored_columns.join(", "));
    }
    for e in &r.errors {
        let value = crate::diagnostics::escape_controls(&e.value);
        let _ =
            writeln!(o, "line {}: {} `{value}`: {}", e.line, e.field, crate::diagnostics::escape_controls(&e.reason));
    }
    if !r.errors_complete {
        let _ = writeln!(o, "… only the first {SHOWN_ERRORS} rejected rows are shown");
    }
    if r.aborted {
        let _ = writeln!(o, "nothing imported: {} of {} rows rejected (--all-or-nothing)", r.rejected, r.rows);
    } else if r.imported == 0 && r.rejected > 0 {
        let _ = writeln!(o, "nothing imported: all {} rows rejected", r.rows);
    } else {
        let i = &r.ingested;
        let _ = writeln!(
            o,
            "imported {} of {} rows: {} new, {} updated, {} unchanged; {} rejected",
            r.imported, r.rows, i.inserted, i.updated, i.unchanged, r.rejected
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_amounts() {
        assert_eq!(cli_amount("1234.50 EUR", None).unwrap().to_string(), "1234.50 EUR");
        assert_eq!(cli_amount("1234,50", Some("eur")).unwrap().to_string(), "1234.50 EUR");
        assert_eq!(cli_amount("1.234,50", Some("EUR")).unwrap().to_string(), "1234.50 EUR");
        assert!(cli_amount("1,234", Some("EUR")).unwrap_err().contains("ambiguous"));
        assert!(cli_amount("12", None).unwrap_err().contains("needs a currency"));
        assert!(cli_amount("12 EUR", Some("CHF")).is_err());
        assert!(cli_amount("12x", Some("CHF")).is_err());
    }
}
