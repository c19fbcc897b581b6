//! Amounts of money: a decimal amount (never a float) in an ISO 4217 currency. Pure.

use rust_decimal::Decimal;

/// An ISO 4217 alphabetic currency code (`EUR`, `CHF`, `USD`): three ASCII letters, kept in
/// upper case. Any three letters are accepted: the code is compared, never converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The euro, the default currency of a customer that names none.
    pub const EUR: Currency = Currency(*b"EUR");

    /// Reads a code: three ASCII letters, either case (`eur` → `EUR`).
    ///
    /// # Errors
    /// Anything else; the message names the text.
    pub fn parse(s: &str) -> Result<Currency, String> {
        let b = s.as_bytes();
        match b {
            [x, y, z] if b.iter().all(u8::is_ascii_alphabetic) => {
                Ok(Currency([x.to_ascii_uppercase(), y.to_ascii_uppercase(), z.to_ascii_uppercase()]))
            }
            _ => Err(format!("`{s}` is not a currency code (three letters, ISO 4217, e.g. EUR)")),
        }
    }

    /// The code, e.g. `EUR`.
    pub fn as_str(&self) -> &str {
        // Three ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Money {
    /// The amount, exactly as given (`1234.50` keeps its scale); serialised as a string.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
}

impl std::fmt::Display for Money {
    /// `1234.50 EUR`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_letters_in_upper_case() {
        assert_eq!(Currency::parse("eur").unwrap(), Currency::EUR);
        assert_eq!(Currency::parse("CHF").unwrap().to_string(), "CHF");
        for bad in ["", "EU", "EURO", "E1R", "€", "ÄUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn money_keeps_its_scale_and_serialises_the_amount_as_a_string() {
        let m = Money { amount: "1234.50".parse().unwrap(), currency: Currency::EUR };
        assert_eq!(m.to_string(), "1234.50 EUR");
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"amount":"1234.50","currency":"EUR"}"#);
    }
}
