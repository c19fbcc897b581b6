//! The process environment, read once at the edge (`Environment::from_process` in the CLI)
//! and passed down, so nothing below the CLI reads `std::env` and tests say exactly what a
//! daemon sees.

use std::collections::BTreeMap;

/// The variables the daemon looks at (name → value). Values are kept as given; what an empty
/// value means is decided by the reader (an empty secret, for one, is an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// Name → value.
    vars: BTreeMap<String, String>,
}

/// Every variable [`Environment::from_process`] captures.
pub const VARIABLES: [&str; 8] = [
    super::ENV_DATABASE_URL,
    super::ENV_SMTP_PASSWORD,
    super::ENV_OAUTH_CLIENT_SECRET,
    super::ENV_API_TOKEN,
    // systemd: `LoadCredential=` (credentials, `systemd.exec(5)`), `Type=notify` and
    // `WatchdogSec=` (`sd_notify(3)`, `sd_watchdog_enabled(3)`).
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

impl Environment {
    /// The current process's values of the variables the daemon reads (`VARIABLES`: the four
    /// `CONTACTPLAN_*` ones and systemd's `CREDENTIALS_DIRECTORY`, `NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`), those that are set and valid UTF-8.
    pub fn from_process() -> Environment {
        let vars = VARIABLES.iter().filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v))).collect();
        Environment { vars }
    }

    /// This environment with `name` set to `value` (tests, embedding).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Environment {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}
