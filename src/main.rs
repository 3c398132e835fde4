//! The `mk-binary-cache` command: argument parsing and exit codes only.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mk_binary_cache::{attrs, cache, progress::Progress};

/// Writes flat-file Nix binary caches.
///
/// Run with no arguments as the builder of a derivation with
/// `__structuredAttrs = true` (as `mkBinaryCache` does): it reads the closure
/// and settings Nix hands the build and writes the cache to `$out`.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write the cache described by the build's structured attrs (the default).
    Builder,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Builder) {
        Command::Builder => {
            let job = attrs::from_environment()?;
            let progress = Progress::new(false);
            let totals = cache::write_cache(&job.out, &job.closure, &job.options, &progress)
                .with_context(|| format!("writing the cache to '{}'", job.out.display()))?;
            progress.finish("cached", &totals);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
