//! Secrets, resolved in a step of their own after the config is parsed: the SMTP password, the
//! OAuth client secret (XOAUTH2) and the API token. Each comes from an environment variable,
//! then a systemd credential
//! (`LoadCredential=`, `systemd.exec(5)`: a file in `$CREDENTIALS_DIRECTORY`), then (SMTP
//! password only) `[delivery] password_file`. They never appear in the config file, are held
//! as [`SecretString`] (zeroed when dropped, `Debug` redacted) and are never logged.
//!
//! A secret that is present but empty is an error naming its source, never "no secret": an
//! empty `api-token` credential (what `install -m 0600 /dev/stdin …` makes from an empty
//! stdin) must not leave `/metrics` open while looking protected.

use super::{Config, ENV_API_TOKEN, ENV_OAUTH_CLIENT_SECRET, ENV_SMTP_PASSWORD, Environment};
use crate::diagnostics::Diagnostic;
use secrecy::SecretString;
use std::path::Path;

/// The secrets the daemon was given.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// SMTP AUTH password (with `[delivery] username`).
    pub smtp_password: Option<SecretString>,
    /// OAuth 2.0 client secret (with `[delivery] auth = "xoauth2"`); required then.
    pub oauth_client_secret: Option<SecretString>,
    /// Bearer token that `/metrics` and `/status` require; `None`: those endpoints are open
    /// (the listener is on loopback by default).
    pub api_token: Option<SecretString>,
}

impl Secrets {
    /// The API token alone, for commands that read and send nothing (`status` asks the
    /// daemon's `/status` with it): they must not need the SMTP password or the OAuth client
    /// secret, which an operator's shell usually does not have.
    ///
    /// # Errors
    /// The token is present but empty or unreadable (naming its source).
    pub fn resolve_api_token(config: &Config, env: &Environment) -> Result<Secrets, Vec<Diagnostic>> {
        let api_token =
            api_token(env).map_err(|why| vec![Diagnostic::whole_file(&config.path, why).hint(API_TOKEN_HINT)])?;
        Ok(Secrets { api_token, ..Secrets::default() })
    }

    /// Reads every secret from its sources (see the module docs).
    ///
    /// # Errors
    /// One diagnostic per secret that is present but empty or unreadable, naming its source.
    pub fn resolve(config: &Config, env: &Environment) -> Result<Secrets, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut take = |found: Result<Option<SecretString>, String>, hint: &str| {
            found.unwrap_or_else(|why| {
                errors.push(Diagnostic::whole_file(&config.path, why).hint(hint.to_string()));
                None
            })
        };
        let api_token = take(api_token(env), API_TOKEN_HINT);
        let smtp_password = take(
            from_env(env, ENV_SMTP_PASSWORD).and_then(|p| match p {
                Some(p) => Ok(Some(p)),
                None => match credential(env, "smtp-password")? {
                    Some(p) => Ok(Some(p)),
                    None => config.smtp_password_file.as_deref().map(|f| read_secret(f, "password file")).transpose(),
                },
            }),
            "check the SMTP password's source: CONTACTPLAN_SMTP_PASSWORD, the credential smtp-password, or delivery.password_file",
        );
        let oauth_client_secret = take(
            from_env(env, ENV_OAUTH_CLIENT_SECRET)
                .and_then(|s| s.map_or_else(|| credential(env, "oauth-client-secret"), |s| Ok(Some(s)))),
            "check CONTACTPLAN_OAUTH_CLIENT_SECRET or the unit's LoadCredential=oauth-client-secret; an empty secret is refused, not taken as \"no secret\"",
        );
        let xoauth2 = matches!(
            &config.delivery,
            crate::mail::Transport::Smtp(s) if matches!(s.auth, crate::mail::SmtpAuth::Xoauth2(_))
        );
        if xoauth2 && oauth_client_secret.is_none() && errors.is_empty() {
            errors.push(
                Diagnostic::whole_file(&config.path, "auth = \"xoauth2\" needs the OAuth client secret, and none was given")
                    .hint("pass it as the systemd credential oauth-client-secret (LoadCredential=oauth-client-secret) or in CONTACTPLAN_OAUTH_CLIENT_SECRET; it is never read from the config file"),
            );
        }
        if errors.is_empty() { Ok(Secrets { smtp_password, oauth_client_secret, api_token }) } else { Err(errors) }
    }
}

/// Where a bad API token is fixed.
const API_TOKEN_HINT: &str = "check CONTACTPLAN_API_TOKEN or the unit's LoadCredential=api-token; an empty token is refused, not taken as \"no token\"";

/// The API token: the environment variable, else the systemd credential `api-token`.
fn api_token(env: &Environment) -> Result<Option<SecretString>, String> {
    from_env(env, ENV_API_TOKEN).and_then(|t| t.map_or_else(|| credential(env, "api-token"), |t| Ok(Some(t))))
}

/// A secret from an environment variable; set but empty is an error.
fn from_env(env: &Environment, name: &str) -> Result<Option<SecretString>, String> {
    match env.get(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(format!("the environment variable {name} is set but empty")),
        Some(v) => Ok(Some(SecretString::from(v.to_string()))),
    }
}

/// A systemd credential (`LoadCredential=NAME:…`) from `$CREDENTIALS_DIRECTORY`; `None` when
/// not passed in.
fn credential(env: &Environment, name: &str) -> Result<Option<SecretString>, String> {
    let Some(dir) = env.get("CREDENTIALS_DIRECTORY") else { return Ok(None) };
    let file = Path::new(dir).join(name);
    if !file.exists() {
        return Ok(None);
    }
    read_secret(&file, &format!("credential `{name}`")).map(Some)
}

/// A secret file's content without its trailing newline; empty (or only whitespace) is an error.
fn read_secret(file: &Path, what: &str) -> Result<SecretString, String> {
    let text = crate::files::read_text(file, crate::files::MAX_SECRET_BYTES)
        .map_err(|e| format!("cannot read the {what} {}: {e}", file.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.trim().is_empty() {
        return Err(format!("the {what} {} is empty", file.display()));
    }
    Ok(SecretString::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const MINIMAL: &str =
        "[sender]\nemail = \"team@example.com\"\nname = \"x\"\n[delivery]\nkind = \"maildir\"\npath = \"m\"\n";

    fn config() -> Config {
        Config::parse(Path::new("/etc/contactplan/contactplan.toml"), MINIMAL).unwrap()
    }

    #[test]
    fn secrets_come_from_env_then_credentials_and_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), "tok-from-credential\n").unwrap();
        let env = Environment::default().with("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap());
        let s = Secrets::resolve(&config(), &env).unwrap();
        assert_eq!(s.api_token.as_ref().unwrap().expose_secret(), "tok-from-credential");
        assert!(!format!("{s:?}").contains("tok-from"), "{s:?}");
        let s = Secrets::resolve(&config(), &env.with(ENV_API_TOKEN, "tok-env")).unwrap();
        assert_eq!(s.api_token.unwrap().expose_secret(), "tok-env", "the environment wins");
        assert!(Secrets::resolve(&config(), &Environment::default()).unwrap().api_token.is_none());
    }

    #[test]
    fn a_secret_that_is_present_but_empty_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), "\n").unwrap();
        let env = Environment::default().with("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap());
        let errs = Secrets::resolve(&config(), &env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].message.contains("credential `api-token`") && errs[0].message.ends_with("is empty"),
            "{errs:?}"
        );
        let errs = Secrets::resolve(&config(), &Environment::default().with(ENV_SMTP_PASSWORD, "")).unwrap_err();
        assert!(errs[0].message.contains("CONTACTPLAN_SMTP_PASSWORD is set but empty"), "{errs:?}");
    }
}
