//! Hostile daemon config text through the public `Config::parse`. Must never panic.
#![no_main]

use contactplan::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(diags) = Config::parse(Path::new("/nonexistent/contactplan.toml"), text) {
        for d in &diags {
            let _ = d.to_string();
        }
    }
});
