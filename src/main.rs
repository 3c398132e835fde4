//! The `mk-binary-cache` command: argument parsing and exit codes only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mk_binary_cache::format::cache_info::MAX_PRIORITY;
use mk_binary_cache::format::compression::Compression;
use mk_binary_cache::format::signing::{PublicKey, SecretKey};
use mk_binary_cache::format::store_path::DEFAULT_STORE_DIR;
use mk_binary_cache::input::{attrs, exclude, local_store, upstream};
use mk_binary_cache::ops::{prune, sign, verify, write};
use mk_binary_cache::support::error_line::error_line;
use mk_binary_cache::support::progress::{Progress, Style};
use mk_binary_cache::support::sibling;

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
    /// Sign the narinfos of a cache with Nix secret keys, in place, or into
    /// a signed copy with --out (for a read-only cache, such as a
    /// mkBinaryCache output in the store).
    Sign(SignArgs),
    /// Check a flat-file cache before trusting it: every narinfo, NAR file,
    /// hash, size, reference and (with trusted keys) signature. Prints one
    /// line per problem and a summary; exits with 0 if there is none, 1 if
    /// there are problems, 2 if the cache cannot be checked at all.
    Verify(VerifyArgs),
    /// Shrink a cache to the closure of its roots: remove every other
    /// narinfo, its listing, every NAR no kept narinfo names, and stale
    /// temporary files. Crash-safe: killed at any point, it leaves a valid
    /// cache; waits for `build --to` runs into the same cache to finish.
    Prune(PruneArgs),
    /// Upload a cache to S3-compatible object storage, in an order safe for
    /// readers: `publish CACHE s3://BUCKET[/PREFIX]?endpoint=…&region=…`.
    /// Runs `mk-binary-cache-publish` (installed beside this program, or in
    /// PATH), which holds the network code; see `mk-binary-cache-publish
    /// --help`.
    #[command(disable_help_flag = true)]
    Publish {
        /// Arguments of mk-binary-cache-publish.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct PruneArgs {
    /// The cache to prune.
    #[arg(value_name = "DIR")]
    cache: PathBuf,
    /// Keep the closure of these paths (store paths, paths inside them, or
    /// symlinks to them) instead of the roots `DIR/store-paths` lists, and
    /// make them the roots `store-paths` lists. Repeatable.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    keep: Vec<PathBuf>,
    /// Print what would be removed and the bytes it would free; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print only the summary.
    #[arg(long, short = 'q')]
    quiet: bool,
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
    /// --json --recursive` output of any Nix version and --json-format, or an
    /// `exportReferencesGraph` list.
    #[arg(long, value_name = "FILE")]
    closure_json: Option<PathBuf>,
    /// Leave out the closure of PATH (from the local store), for consumers
    /// that already have it: a delta cache. Its narinfos still name every
    /// reference. Repeatable.
    #[arg(long, value_name = "PATH")]
    exclude: Vec<PathBuf>,
    /// Leave out every path the flat-file cache DIR has a narinfo for.
    /// Repeatable.
    #[arg(long, value_name = "DIR")]
    exclude_cache: Vec<PathBuf>,
    /// Leave out every path the local store has a signature for by key NAME
    /// (e.g. cache.nixos.org-1): its cache serves it. No network access.
    /// nix-cache-info then names the key (`UpstreamKey:`). Repeatable.
    #[arg(long, value_name = "NAME")]
    upstream_key: Vec<String>,
    /// Leave out every path the cache at URL (file://, http://, https://,
    /// s3://) serves a narinfo for; nix-cache-info then names it
    /// (`Upstream:`). Over the network, asked by mk-binary-cache-publish.
    /// Repeatable.
    #[arg(long, value_name = "URL")]
    upstream: Vec<String>,
    /// Take an --upstream that does not answer (network failure, timeout,
    /// server error, after retries) as serving nothing, instead of failing.
    #[arg(long)]
    unreachable_upstream_is_empty: bool,
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
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(..=MAX_PRIORITY))]
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

#[derive(clap::Args)]
struct SignArgs {
    /// A secret key file, as `nix-store --generate-binary-cache-key` writes
    /// it. Repeat to sign with several keys.
    #[arg(long = "key-file", value_name = "SECRET", required = true)]
    key_files: Vec<PathBuf>,
    /// Write a signed copy of CACHE to DIR, which must not exist or be
    /// empty, and leave CACHE as it is. NAR files are hard-linked into the
    /// copy, or reflinked, or, failing both, copied.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The cache to sign.
    #[arg(value_name = "CACHE")]
    cache: PathBuf,
    /// Worker threads (default: every core).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The cache to check: a directory.
    #[arg(value_name = "CACHE")]
    cache: PathBuf,
    /// The store directory the cache must be for.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE_DIR)]
    store_dir: String,
    /// A public key whose signatures are checked, as in Nix's
    /// trusted-public-keys. Repeatable.
    #[arg(long = "trusted-key", value_name = "NAME:BASE64")]
    trusted_keys: Vec<PublicKey>,
    /// A file of public keys (NAME:BASE64, separated by white space), such
    /// as the public key file `nix-store --generate-binary-cache-key` writes.
    /// Repeatable.
    #[arg(long = "trusted-key-file", value_name = "FILE")]
    trusted_key_files: Vec<PathBuf>,
    /// Make a path without a valid signature by a trusted key a problem.
    #[arg(long)]
    require_sigs: bool,
    /// The cache is a delta cache (`exclude`, `build --exclude`): a
    /// reference with no narinfo in it is not a problem. A cache whose
    /// nix-cache-info names upstreams (`build --upstream`) is taken as one.
    #[arg(long)]
    delta: bool,
    /// Print one JSON document (problems with path, kind and message, and
    /// counts) instead of lines.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: every core).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

fn jobs_or_all_cores(jobs: Option<usize>) -> usize {
    jobs.unwrap_or_else(|| attrs::jobs_from_cores(None)).max(1)
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let keys = args
        .key_files
        .iter()
        .map(SecretKey::from_file)
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = jobs_or_all_cores(args.jobs);
    let (summary, wrote) = match &args.out {
        Some(out) => {
            let summary = sign::sign_copy(&args.cache, out, &keys, jobs)
                .with_context(|| format!("writing a signed copy of '{}'", args.cache.display()))?;
            (summary, out)
        }
        None => {
            let summary = sign::sign_in_place(&args.cache, &keys, jobs)
                .with_context(|| format!("signing '{}' in place", args.cache.display()))?;
            (summary, &args.cache)
        }
    };
    if !args.quiet {
        eprintln!("signed {}: {summary}", wrote.display());
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut trusted_keys = args.trusted_keys;
    for file in &args.trusted_key_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading trusted key file '{}'", file.display()))?;
        for key in text.split_whitespace() {
            trusted_keys.push(
                key.parse()
                    .with_context(|| format!("trusted key file '{}'", file.display()))?,
            );
        }
    }
    let options = verify::Options {
        store_dir: args.store_dir,
        trusted_keys,
        require_sigs: args.require_sigs,
        delta: args.delta,
        jobs: jobs_or_all_cores(args.jobs),
    };
    let style = if !args.json && Style::for_stderr() == Style::Bar {
        Style::Bar
    } else {
        Style::Quiet
    };
    let progress = Progress::with_style(style);
    let report = verify::verify(&args.cache, &options, &progress)
        .with_context(|| format!("verifying '{}'", args.cache.display()))?;
    let elapsed = progress.elapsed();
    drop(progress);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
        println!("{}", report.summary(elapsed));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_compression(name: &str) -> Result<Compression, String> {
    name.parse().map_err(|e| format!("{e}"))
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let store_dir = std::env::var("NIX_STORE_DIR").unwrap_or_else(|_| DEFAULT_STORE_DIR.to_owned());
    let input = match &args.closure_json {
        Some(file) => local_store::from_closure_file(file, &args.paths, &store_dir)?,
        None => local_store::from_local_store(&args.paths, &store_dir)?,
    };
    let mut exclusion = exclude::Exclusion::default();
    exclusion.add_local_closure(&args.exclude, &store_dir)?;
    for dir in &args.exclude_cache {
        exclusion.add_cache(dir)?;
    }
    let upstreams = upstream::Upstreams::new(
        args.upstream_key,
        &args.upstream,
        args.unreachable_upstream_is_empty,
    )?;
    let whole = input.closure.len();
    let closure = exclusion.apply(input.closure);
    let (closure, decision) = upstream::leave_out(&upstreams, closure, &store_dir)?;
    let level = match args.compression_level {
        Some(level) => args.compression.check_level(level)?,
        None => args.compression.default_level(),
    };
    let options = write::Options {
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
        upstreams: upstreams.recorded(),
    };
    let style = if args.quiet {
        Style::Quiet
    } else {
        Style::for_stderr()
    };
    let progress = Progress::with_style(style);
    for unreachable in &decision.unreachable {
        eprintln!(
            "mk-binary-cache: warning: {unreachable}; taken as serving nothing \
             (--unreachable-upstream-is-empty)"
        );
    }
    let skipped = decision.summary();
    let excluded = whole - closure.len() - decision.skipped_paths();
    if excluded > 0 {
        progress.message(&format!("{excluded} of {whole} paths are excluded"));
    }
    let updated = write::update_cache(&args.to, &closure, &options, &progress)
        .with_context(|| format!("writing the cache to '{}'", args.to.display()))?;
    progress.finish_with("cached", &updated.written, skipped.as_deref());
    Ok(())
}

fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let options = prune::Options {
        keep: (!args.keep.is_empty()).then_some(args.keep),
        dry_run: args.dry_run,
    };
    let report = prune::prune(&args.cache, &options)
        .with_context(|| format!("pruning '{}'", args.cache.display()))?;
    for root in &report.roots_not_cached {
        eprintln!("mk-binary-cache: note: root '{root}' has no narinfo in this cache");
    }
    if !args.quiet {
        for line in report.lines() {
            println!("{line}");
        }
    }
    println!("{report}");
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Builder) {
        Command::Builder => {
            let job = attrs::from_environment()?;
            let progress = Progress::new(false);
            let totals = write::write_cache(&job.out, &job.closure, &job.options, &progress)
                .with_context(|| format!("writing the cache to '{}'", job.out.display()))?;
            progress.finish("cached", &totals);
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => build(args).map(|()| ExitCode::SUCCESS),
        Command::Sign(args) => sign(args).map(|()| ExitCode::SUCCESS),
        Command::Prune(args) => prune(args).map(|()| ExitCode::SUCCESS),
        Command::Verify(args) => verify(args),
        Command::Publish { args } => Err(anyhow::Error::new(sibling::exec(
            "mk-binary-cache-publish",
            &args,
        ))
        .context("publish needs mk-binary-cache-publish (cargo build --features publish)")),
    }
}

/// Every subcommand's error is printed here, by [`error_line`].
fn main() -> ExitCode {
    let cli = Cli::parse();
    // For verify, exit 1 says "problems found"; failing to check at all is 2.
    let failure = match cli.command {
        Some(Command::Verify(_)) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mk-binary-cache: error: {}", error_line(&e));
            failure
        }
    }
}
