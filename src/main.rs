use clap::Parser;

/// mimalloc: plan loading is allocation-heavy (BENCHMARKS.md has the share glibc malloc took).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    contactplan::cli::main(contactplan::cli::Cli::parse())
}
