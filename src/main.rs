use clap::Parser;

/// mimalloc: plan loading is allocation-heavy (≈15 % of its time went to glibc malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    contactplan::cli::main(contactplan::cli::Cli::parse())
}
