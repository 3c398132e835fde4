//! The `mk-binary-cache` command: argument parsing and exit codes only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mk_binary_cache::compression::Compression;
use mk_binary_cache::progress::{Progress, Style};
use mk_binary_cache::{attrs, build, cache};

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
    /// Write or update a cache in DIR with the closure of PATHS, outside a
    /// Nix build. Paths already in the cache are skipped; a run that is
    /// interrupted leaves a valid cache, and the next run completes it.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The cache directory, created if missing.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Store paths, paths inside them, or symlinks to them (`./result`):
    /// the cache gets their closure from the local store, and `store-paths`
    /// lists them. With --closure-json, the roots to list (default: the
    /// paths of the closure that no other path refers to).
    #[arg(value_name = "PATHS")]
    paths: Vec<PathBuf>,
    /// Read the closure from FILE instead of asking Nix: `nix path-info
    /// --json --recursive` output, or an `exportReferencesGraph` list.
    #[arg(long, value_name = "FILE")]
    closure_json: Option<PathBuf>,
    /// zstd, xz or none.
    #[arg(long, default_value = "zstd", value_parser = parse_compression)]
    compression: Compression,
    /// The compressor's level (default: zstd 3, xz 6).
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
    /// Write a `<hash>.ls` listing next to each narinfo, as `nix copy` does
    /// with write-nar-listing=true.
    #[arg(long)]
    write_nar_listing: bool,
    /// Index `lib/debug/.build-id` files under `debuginfo/`, as `nix copy`
    /// does with index-debug-info=true.
    #[arg(long)]
    index_debug_info: bool,
    /// `Priority:` in a new cache's nix-cache-info (an existing one must agree).
    #[arg(long, value_name = "N")]
    priority: Option<u64>,
    /// `WantMassQuery:` in a new cache's nix-cache-info (an existing one must agree).
    #[arg(long, value_name = "BOOL")]
    want_mass_query: Option<bool>,
    /// Worker threads (default: every core); the output does not depend on it.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn parse_compression(name: &str) -> Result<Compression, String> {
    name.parse().map_err(|e| format!("{e}"))
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let store_dir = std::env::var("NIX_STORE_DIR").unwrap_or_else(|_| "/nix/store".to_owned());
    let input = match &args.closure_json {
        Some(file) => build::from_closure_file(file, &args.paths, &store_dir)?,
        None => build::from_local_store(&args.paths, &store_dir)?,
    };
    let level = match args.compression_level {
        Some(level) => args.compression.check_level(level)?,
        None => args.compression.default_level(),
    };
    let options = cache::Options {
        compression: args.compression,
        level,
        jobs: args
            .jobs
            .unwrap_or_else(|| attrs::jobs_from_cores(None))
            .max(1),
        store_dir,
        priority: args.priority,
        want_mass_query: args.want_mass_query,
        root_paths: input.roots,
        write_nar_listing: args.write_nar_listing,
        index_debug_info: args.index_debug_info,
    };
    let style = if args.quiet {
        Style::Quiet
    } else {
        Style::for_stderr()
    };
    let progress = Progress::with_style(style);
    let updated = cache::update_cache(&args.to, &input.closure, &options, &progress)
        .with_context(|| format!("writing the cache to '{}'", args.to.display()))?;
    progress.finish("cached", &updated.written);
    Ok(())
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
        Command::Build(args) => build(args),
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
