//! `contactplan man` and `contactplan completions <shell>`: the man page and shell completions,
//! generated from this very CLI definition (clap_mangen, clap_complete), so they never drift.
//! The Debian package ships their output (see `packaging/build-deb`).

use clap::CommandFactory;
use std::process::ExitCode;

/// Print the man page (roff) on stdout.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  contactplan man > contactplan.1 && man ./contactplan.1\n  contactplan man | gzip -9 > /usr/share/man/man1/contactplan.1.gz"
)]
pub struct ManArgs {}

/// Print a shell completion script on stdout.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  contactplan completions bash > /usr/share/bash-completion/completions/contactplan\n  contactplan completions zsh > /usr/share/zsh/vendor-completions/_contactplan\n  contactplan completions fish > /usr/share/fish/vendor_completions.d/contactplan.fish"
)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn man(_args: ManArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_mangen::Man::new(super::Cli::command()).render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "contactplan", &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}
