//! The `mk-binary-cache` command: argument parsing and exit codes only.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use mk_binary_cache::format::cache_info::{self, MAX_PRIORITY};
use mk_binary_cache::format::compression::Compression;
use mk_binary_cache::format::pin::Retention;
use mk_binary_cache::format::signing::{PublicKey, SecretKey};
use mk_binary_cache::format::store_path::DEFAULT_STORE_DIR;
use mk_binary_cache::input::request::{self, BuildRequest};
use mk_binary_cache::input::settings::{self, Settings};
use mk_binary_cache::input::{attrs, upstream};
use mk_binary_cache::ops::pins::{self, files::PinRequest};
use mk_binary_cache::ops::{prune, sign, verify, write};
use mk_binary_cache::support::error_line::error_line;
use mk_binary_cache::support::progress::{Progress, Style, count};
use mk_binary_cache::support::{interrupt, sibling};

#[path = "publish_args.rs"]
mod publish_args;

use publish_args::PublishArgs;

/// The long help of the program itself.
const LONG_ABOUT: &str = "\
Write flat-file Nix binary caches.

Run with no arguments as the builder of a derivation with \
`__structuredAttrs = true` (as the Nix function mkBinaryCache does), it reads \
the closure and settings Nix hands the build and writes the cache to $out. \
Run by a person, it writes, signs, checks, prunes and uploads caches in \
directories: see each command's --help.";

const EXAMPLES: &str = "\
Examples:
  mk-binary-cache build --to ./cache ./result
  mk-binary-cache sign --key-file ./secret.key ./cache
  mk-binary-cache verify --trusted-key-file ./public.key ./cache
  mk-binary-cache help build";

#[derive(Parser)]
#[command(
    version,
    about = "Write flat-file Nix binary caches",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    // `help` is ours, below, so that `help --help` works like any command's.
    disable_help_subcommand = true,
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write the cache a Nix build describes (the default inside a build).
    ///
    /// What runs when the program is given no arguments inside a Nix build
    /// (NIX_ATTRS_JSON_FILE set): reads the build's structured attrs, as
    /// mkBinaryCache sets them, and writes the cache to $out.
    Builder,
    /// Write or update a cache in a directory, outside a Nix build.
    ///
    /// Writes the closure of PATHS, from the local Nix store, into CACHE.
    /// Paths already in the cache are skipped; a run that is interrupted
    /// (Ctrl-C included) leaves a valid cache, and the next run completes
    /// it. A `.drv` root stands for the derivation file and its closure, as
    /// `nix copy` has it, not for its outputs: give `./result` for those.
    #[command(after_help = BUILD_EXAMPLES)]
    Build(BuildArgs),
    /// Sign a cache's narinfos with Nix secret keys.
    ///
    /// Signs in place, or writes a signed copy with --out (for a read-only
    /// cache, such as a mkBinaryCache output in the store). Narinfos already
    /// signed by a key keep that signature.
    #[command(after_help = SIGN_EXAMPLES)]
    Sign(SignArgs),
    /// Check a cache before trusting it.
    ///
    /// Checks every narinfo, NAR file, hash, size, reference and (with
    /// trusted keys) signature. Prints one line per problem and a summary;
    /// exits with 0 if there is none, 1 if there are problems, 2 if the cache
    /// cannot be checked at all.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Record paths a cache holds as a new revision of a named pin.
    ///
    /// A pin names the roots of a release, one revision per release, with
    /// the retention policy `prune` applies (--keep-revisions, --keep-days).
    /// Given only a policy, it changes the pin's policy and records nothing.
    /// `build --to CACHE --pin NAME` records a revision as it writes it.
    #[command(after_help = PIN_EXAMPLES)]
    Pin(PinArgs),
    /// List a cache's pins, their revisions and what each holds.
    ///
    /// For each pin and revision: when it was recorded, whether its pin's
    /// policy retains it, the paths and bytes it holds, and the bytes only
    /// it holds (what a prune frees once it goes).
    #[command(after_help = PINS_EXAMPLES)]
    Pins {
        /// The cache.
        #[arg(value_name = "CACHE")]
        cache: PathBuf,
    },
    /// Shrink a cache to the closure of its roots.
    ///
    /// Removes every narinfo outside the closure of the roots (those
    /// `store-paths` lists and those of the revisions its pins retain), its
    /// listing, every NAR no kept narinfo names, and stale temporary files;
    /// pins lose the revisions their policy drops. Crash-safe: killed at any
    /// point, it leaves a valid cache; it waits for `build --to` runs into
    /// the same cache to finish. It deletes files one after another in an
    /// order that keeps the cache valid, so it has no --jobs. Given
    /// s3://BUCKET[/PREFIX]?…, it prunes the published cache by mark, wait
    /// and sweep (mk-binary-cache-publish prune).
    #[command(after_help = PRUNE_EXAMPLES)]
    Prune(PruneArgs),
    /// Upload a cache to S3-compatible object storage.
    #[command(
        long_about = format!(
            "{}\n\nThe upload is done by the program mk-binary-cache-publish, installed \
             beside this one or on PATH: {}.",
            publish_args::LONG_ABOUT,
            PUBLISHER_FROM
        ),
        after_help = publish_args::EXAMPLES
    )]
    Publish(PublishArgs),
    /// Print this help, or the help of a command.
    Help {
        /// The command whose help to print.
        #[arg(value_name = "COMMAND", value_parser = COMMANDS)]
        command: Option<String>,
    },
}

/// Where `publish`'s program comes from, where it is missing.
const PUBLISHER_FROM: &str = "the Nix package mk-binary-cache-publish, or \
`cargo build --release --features publish` in the source tree";

/// The commands `help` knows, as typed.
const COMMANDS: [&str; 9] = [
    "builder", "build", "sign", "verify", "pin", "pins", "prune", "publish", "help",
];

const BUILD_EXAMPLES: &str = "\
Examples:
  mk-binary-cache build --to ./cache ./result
  mk-binary-cache build --to ./cache --compression xz -j 4 ./result
  mk-binary-cache build --to ./cache --pin app --keep-revisions 3 ./result
  mk-binary-cache build --to ./delta --exclude-cache ./cache ./result-new
  nix path-info --json --recursive ./result > closure.json
  mk-binary-cache build --to ./cache --closure-json closure.json";

const SIGN_EXAMPLES: &str = "\
Examples:
  nix-store --generate-binary-cache-key my-cache-1 secret.key public.key
  mk-binary-cache sign --key-file ./secret.key ./cache
  mk-binary-cache sign --key-file ./secret.key --out ./signed ./result";

const VERIFY_EXAMPLES: &str = "\
Examples:
  mk-binary-cache verify ./cache
  mk-binary-cache verify --trusted-key-file ./public.key --require-sigs ./cache
  mk-binary-cache verify --json ./result > report.json";

const PIN_EXAMPLES: &str = "\
Examples:
  mk-binary-cache pin ./cache app ./result
  mk-binary-cache pin --keep-revisions 5 ./cache app ./result
  mk-binary-cache pin --keep-days 30 ./cache app";

const PINS_EXAMPLES: &str = "\
Examples:
  mk-binary-cache pins ./cache";

const PRUNE_EXAMPLES: &str = "\
Examples:
  mk-binary-cache prune --dry-run ./cache
  mk-binary-cache prune --keep ./result --keep ./result-2 ./cache
  mk-binary-cache prune --dry-run 's3://my-cache?region=eu-west-1'";

/// A pin's retention policy, as flags.
#[derive(clap::Args)]
struct RetentionArgs {
    /// Store with the pin: `prune` keeps its newest N revisions (and those
    /// --keep-days keeps).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep_revisions: Option<u64>,
    /// Store with the pin: `prune` keeps its revisions younger than DAYS
    /// days (and those --keep-revisions keeps).
    #[arg(long, value_name = "DAYS")]
    keep_days: Option<u64>,
}

impl RetentionArgs {
    /// The policy to store, if the flags set one (the pin keeps its own
    /// otherwise).
    fn retention(&self) -> Option<Retention> {
        (self.keep_revisions.is_some() || self.keep_days.is_some()).then_some(Retention {
            keep_revisions: self.keep_revisions,
            keep_days: self.keep_days,
        })
    }
}

#[derive(clap::Args)]
struct PinArgs {
    /// The cache.
    #[arg(value_name = "CACHE")]
    cache: PathBuf,
    /// The pin's name: letters, digits, '-', '_', '.', '+'.
    #[arg(value_name = "NAME")]
    name: String,
    /// The roots of the new revision (store paths, paths inside them, or
    /// symlinks to them), which the cache must hold. None: only store the
    /// policy.
    #[arg(value_name = "PATHS")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Args)]
struct PruneArgs {
    /// The cache to prune: a directory, or a published cache
    /// `s3://BUCKET[/PREFIX]?…` (see `mk-binary-cache-publish prune --help`).
    #[arg(value_name = "CACHE")]
    cache: PathBuf,
    /// s3:// only: seconds an object stays marked before it is deleted
    /// (default: a day).
    #[arg(long, value_name = "SECONDS")]
    grace: Option<u64>,
    /// s3:// only: seconds a sweep may take (default: 600).
    #[arg(long, value_name = "SECONDS")]
    sweep_within: Option<u64>,
    /// s3:// only: prune even if no root is listed (deletes every path).
    #[arg(long)]
    allow_no_roots: bool,
    /// Keep the closure of PATH (a store path, a path inside one, or a
    /// symlink to one) instead of the roots `CACHE/store-paths` lists, and
    /// make the paths given the roots it lists. Repeat for several.
    #[arg(long, value_name = "PATH")]
    keep: Vec<PathBuf>,
    /// Print what would be removed and the bytes it would free; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print only the summary, not each file removed.
    #[arg(long, short = 's')]
    summary: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The cache directory, created if missing.
    #[arg(long, value_name = "CACHE")]
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
    /// Leave out every path the flat-file cache CACHE has a narinfo for.
    /// Repeatable.
    #[arg(long, value_name = "CACHE")]
    exclude_cache: Vec<PathBuf>,
    /// Record the roots as a new revision of the pin NAME (kept by `prune`
    /// as the pin's retention policy says).
    #[arg(long, value_name = "NAME")]
    pin: Option<String>,
    #[command(flatten)]
    retention: RetentionArgs,
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
    #[arg(long, value_name = "NAME", default_value = "zstd", value_parser = parse_compression)]
    compression: Compression,
    /// The compressor's level: zstd 1 to 19 (default 3), xz 0 to 9 (default 6).
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
    /// `Priority:` in a new cache's nix-cache-info, a whole number; lower
    /// is preferred (an existing cache must agree).
    #[arg(long, value_name = "N", value_parser = parse_priority)]
    priority: Option<u64>,
    /// `WantMassQuery:` in a new cache's nix-cache-info, true or false (an
    /// existing cache must agree).
    #[arg(long, value_name = "BOOL")]
    want_mass_query: Option<bool>,
    /// Worker threads (default: every core); the output does not depend on it.
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_jobs)]
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
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_jobs)]
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
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_jobs)]
    jobs: Option<usize>,
    /// Print nothing but errors: the problems found, without the summary
    /// (the exit code tells the outcome).
    #[arg(long, short = 'q', conflicts_with = "json")]
    quiet: bool,
}

/// `--priority`: what nix-cache-info may hold, said in words when it is not.
fn parse_priority(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_PRIORITY => Ok(n),
        _ => Err(format!("expected a whole number from 0 to {MAX_PRIORITY}")),
    }
}

/// `--jobs`: at least one.
fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number of at least 1".to_owned()),
    }
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let keys = args
        .key_files
        .iter()
        .map(SecretKey::from_file)
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = settings::jobs(args.jobs);
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
        jobs: settings::jobs(args.jobs),
    };
    let style = if !args.json && !args.quiet && Style::for_stderr() == Style::Bar {
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
        if !args.quiet {
            println!("{}", report.summary(elapsed));
        }
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
    // A usage mistake is said before any work (asking Nix, or upstreams).
    let pin = match &args.pin {
        Some(name) => Some(PinRequest {
            name: name.clone(),
            retention: args.retention.retention(),
        }),
        None if args.retention.retention().is_some() => {
            anyhow::bail!("--keep-revisions and --keep-days are a pin's policy: give --pin NAME")
        }
        None => None,
    };
    let upstreams = upstream::Upstreams::new(
        args.upstream_key,
        &args.upstream,
        args.unreachable_upstream_is_empty,
    )?;
    let cache = args.to.clone();
    interrupt::on_interrupt(move |_| {
        let removed = write::remove_own_temp_files(&cache);
        if std::io::stderr().is_terminal() {
            // Over the progress bar.
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        if cache.join(cache_info::FILE_NAME).exists() {
            let _ = writeln!(
                std::io::stderr(),
                "mk-binary-cache: interrupted: '{}' is a valid cache; run the same command again to finish it",
                cache.display()
            );
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "mk-binary-cache: interrupted before anything was cached in '{}'",
                cache.display()
            );
        }
        if let Err(e) = removed {
            let _ = writeln!(
                std::io::stderr(),
                "mk-binary-cache: some temporary files of this run are left ({e}); the next run removes them"
            );
        }
    })
    .context("watching for Ctrl-C")?;
    let job = request::resolve(BuildRequest {
        paths: args.paths,
        closure_json: args.closure_json,
        exclude: args.exclude,
        exclude_cache: args.exclude_cache,
        settings: Settings {
            compression: Some(args.compression),
            compression_level: args.compression_level.map(i64::from),
            priority: args.priority,
            want_mass_query: args.want_mass_query,
            write_nar_listing: Some(args.write_nar_listing),
            index_debug_info: Some(args.index_debug_info),
        },
        jobs: args.jobs,
    })?;
    let (closure, decision) = upstream::leave_out(&upstreams, job.closure, &job.options.store_dir)?;
    let options = write::Options {
        upstreams: upstreams.recorded(),
        ..job.options
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
    if job.excluded > 0 {
        progress.message(&format!(
            "{} of {} are excluded",
            job.excluded,
            count(
                job.excluded + closure.len() + decision.skipped_paths(),
                "path",
                "paths"
            )
        ));
    }
    let updated = match &pin {
        Some(pin) => write::update_cache_pinned(
            &args.to,
            &closure,
            &options,
            pin,
            pins::files::now(),
            &progress,
        ),
        None => write::update_cache(&args.to, &closure, &options, &progress),
    }
    .with_context(|| format!("writing the cache to '{}'", args.to.display()))?;
    // A run that found every path cached said so already: no line of zeros,
    // unless it says what upstreams serve.
    if updated.written.paths > 0 || updated.skipped == 0 || skipped.is_some() {
        progress.finish_with("cached", &updated.written, skipped.as_deref());
    }
    Ok(())
}

/// `prune s3://…`: handed to mk-binary-cache-publish, which holds the
/// network code.
fn prune_bucket(args: PruneArgs) -> anyhow::Error {
    let mut forward: Vec<std::ffi::OsString> = vec!["prune".into(), args.cache.into()];
    for (flag, value) in [
        ("--grace", args.grace),
        ("--sweep-within", args.sweep_within),
    ] {
        if let Some(value) = value {
            forward.extend([flag.into(), value.to_string().into()]);
        }
    }
    for (flag, set) in [
        ("--dry-run", args.dry_run),
        ("--allow-no-roots", args.allow_no_roots),
        ("--summary", args.summary),
        ("--quiet", args.quiet),
    ] {
        if set {
            forward.push(flag.into());
        }
    }
    let error = sibling::exec("mk-binary-cache-publish", &forward);
    anyhow::anyhow!(
        "prune s3://… needs the program mk-binary-cache-publish ({error}): install {}",
        PUBLISHER_FROM
    )
}

fn prune(args: PruneArgs) -> anyhow::Result<()> {
    if args.cache.to_string_lossy().starts_with("s3://") {
        if !args.keep.is_empty() {
            anyhow::bail!(
                "--keep is for a cache directory: a bucket keeps what store-paths and its pins name"
            );
        }
        return Err(prune_bucket(args));
    }
    if args.grace.is_some() || args.sweep_within.is_some() || args.allow_no_roots {
        anyhow::bail!("--grace, --sweep-within and --allow-no-roots are for prune s3://…");
    }
    let options = prune::Options {
        keep: (!args.keep.is_empty()).then_some(args.keep),
        dry_run: args.dry_run,
    };
    let quiet = args.quiet;
    let report = prune::prune(&args.cache, &options, || {
        if !quiet {
            eprintln!(
                "mk-binary-cache: waiting for another run that holds the lock of {}…",
                args.cache.display()
            );
        }
    })
    .with_context(|| format!("pruning '{}'", args.cache.display()))?;
    if args.quiet {
        return Ok(());
    }
    for root in &report.roots_not_cached {
        eprintln!("mk-binary-cache: note: root '{root}' has no narinfo in this cache");
    }
    if !args.summary {
        for line in report.lines() {
            println!("{line}");
        }
    }
    for pin in &report.pins {
        println!("{pin}");
    }
    println!("{report}");
    Ok(())
}

fn pin(args: PinArgs) -> anyhow::Result<()> {
    let request = PinRequest {
        name: args.name,
        retention: args.retention.retention(),
    };
    let pin = pins::pin(&args.cache, &request, &args.paths)
        .with_context(|| format!("pinning in '{}'", args.cache.display()))?;
    if args.quiet {
        return Ok(());
    }
    match (args.paths.is_empty(), pin.revisions.first()) {
        (false, Some(revision)) => println!(
            "pin {}: revision {} with {} roots (keeps {})",
            pin.name,
            revision.number,
            revision.roots.len(),
            pin.retention
        ),
        _ => println!("pin {}: keeps {}", pin.name, pin.retention),
    }
    Ok(())
}

fn list_pins(cache: PathBuf) -> anyhow::Result<()> {
    let listing =
        pins::list(&cache).with_context(|| format!("listing the pins of '{}'", cache.display()))?;
    print!("{listing}");
    Ok(())
}

/// Prints the long help of the program, or of `command`.
fn help(command: Option<&str>) -> anyhow::Result<()> {
    let mut cli = Cli::command();
    // Gives each command its full usage line, `mk-binary-cache build …`.
    cli.build();
    let shown = match command {
        None => &mut cli,
        Some(name) => cli
            .find_subcommand_mut(name)
            .with_context(|| format!("no command '{name}'"))?,
    };
    shown.print_long_help()?;
    Ok(())
}

/// `publish`: the arguments were checked by parsing them; the publisher
/// gets them as they were typed.
fn publish() -> anyhow::Error {
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let error = sibling::exec("mk-binary-cache-publish", &args);
    anyhow::anyhow!(
        "publish needs the program mk-binary-cache-publish ({error}): install {}",
        PUBLISHER_FROM
    )
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
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
        Command::Pin(args) => pin(args).map(|()| ExitCode::SUCCESS),
        Command::Pins { cache } => list_pins(cache).map(|()| ExitCode::SUCCESS),
        Command::Verify(args) => verify(args),
        Command::Publish(_) => Err(publish()),
        Command::Help { command } => help(command.as_deref()).map(|()| ExitCode::SUCCESS),
    }
}

/// Whether this process runs as the builder of a Nix derivation with
/// structured attrs: then no arguments means "build", not "show the help".
fn in_nix_build() -> bool {
    std::env::var_os("NIX_ATTRS_JSON_FILE").is_some()
}

/// Every subcommand's error is printed here, by [`error_line`].
fn main() -> ExitCode {
    let command = match Cli::parse().command {
        Some(command) => command,
        None if in_nix_build() => Command::Builder,
        // A person who typed the name alone: what clap does for a missing
        // command, the help on stderr and exit 2.
        None => {
            let help = Cli::command().render_help().to_string();
            let _ = writeln!(std::io::stderr(), "{}", help.trim_end());
            return ExitCode::from(2);
        }
    };
    // For verify, exit 1 says "problems found"; failing to check at all is 2.
    let failure = match command {
        Command::Verify(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    match run(command) {
        Ok(code) => code,
        // A worker whose temporary file the interrupt removed fails: the
        // interrupt's line says what happened, and the exit is on its way.
        Err(_) if interrupt::requested() => interrupt::wait_for_exit(),
        Err(e) => {
            eprintln!("mk-binary-cache: error: {}", error_line(&e));
            failure
        }
    }
}
