use clap::Parser;

fn main() -> std::process::ExitCode {
    contactplan::cli::main(contactplan::cli::Cli::parse())
}
