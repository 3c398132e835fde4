//! The `mk-binary-cache-publish` command (`mk-binary-cache publish`):
//! argument parsing and exit codes only. Built with the `publish` feature.
//!
//! `mk-binary-cache-publish --query-upstream URL [--store-dir DIR]` uploads
//! nothing: it reads store paths on stdin, one a line, and prints those the
//! cache at URL serves, for `mk-binary-cache build --upstream`, which has no
//! network code; exit code 3 means the upstream did not answer.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use mk_binary_cache::format::store_path::{DEFAULT_STORE_DIR, StorePath};
use mk_binary_cache::input::upstream::{QUERY_UNREACHABLE, UpstreamError, Upstreams};
use mk_binary_cache::ops::publish::{self, Location, Options, ProcessEnvironment, sweep};
use mk_binary_cache::support::error_line::error_line;

#[path = "../publish_args.rs"]
mod publish_args;

use publish_args::{
    EXAMPLES, LONG_ABOUT, PRUNE_EXAMPLES, PRUNE_LONG_ABOUT, PruneArgs, PublishArgs,
};

#[derive(Parser)]
#[command(
    name = "mk-binary-cache-publish",
    version,
    about = "Upload a cache to S3-compatible object storage",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Option<PublishArgs>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Prune a published cache by mark, wait and sweep.
    #[command(long_about = PRUNE_LONG_ABOUT, after_help = PRUNE_EXAMPLES)]
    Prune(PruneArgs),
}

fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let location = Location::parse(&args.url)?;
    for warning in &location.warnings {
        eprintln!("mk-binary-cache-publish: warning: {warning}");
    }
    let credentials =
        publish::credentials::resolve(location.profile.as_deref(), &ProcessEnvironment)?;
    let options = sweep::Options {
        grace: args.grace.map_or(sweep::DEFAULT_GRACE, Duration::from_secs),
        sweep_within: args
            .sweep_within
            .map_or(sweep::DEFAULT_SWEEP_WITHIN, Duration::from_secs),
        dry_run: args.dry_run,
        allow_no_roots: args.allow_no_roots,
        ..sweep::Options::default()
    };
    let start = Instant::now();
    let report = publish::prune_bucket(&location, credentials, &options)?;
    if args.quiet {
        return Ok(());
    }
    if !args.summary {
        for (name, kept, dropped) in &report.pins {
            println!("pin {name}: retains revisions {kept:?}, drops {dropped:?}");
        }
        let remove = match report.dry_run {
            true => "would remove",
            false => "removed",
        };
        for (name, revisions) in &report.root_files.revisions {
            println!("pin {name}: {remove} revisions {revisions:?} from the bucket's pin file");
        }
        if report.root_files.roots > 0 {
            println!(
                "store-paths: {remove} {} roots that only dropped revisions name",
                report.root_files.roots
            );
        }
    }
    let (delete, mark) = match report.dry_run {
        true => ("would delete", "would mark"),
        false => ("deleted", "marked"),
    };
    println!(
        "pruned {location} in {:.2} s: {} objects, {} live paths; {delete} {} objects ({} bytes); \
         {mark} {} objects ({} bytes); {} marked earlier still waiting; {} requests",
        start.elapsed().as_secs_f64(),
        report.objects,
        report.live_paths,
        report.deleted,
        report.deleted_bytes,
        report.marked,
        report.marked_bytes,
        report.waiting,
        report.requests,
    );
    Ok(())
}

/// `--query-upstream`: what `mk-binary-cache build --upstream` asks.
#[derive(Parser)]
#[command(name = "mk-binary-cache-publish")]
struct QueryCli {
    /// Print the store paths read on stdin that the cache at URL serves.
    #[arg(long, value_name = "URL")]
    query_upstream: String,
    /// The store directory of the paths.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE_DIR)]
    store_dir: String,
}

/// The paths of stdin that `url` serves, on stdout.
fn query_upstream(url: &str, store_dir: &str) -> Result<(), UpstreamError> {
    let query_error = |message: String| UpstreamError::Query {
        url: url.to_owned(),
        message,
    };
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| query_error(format!("reading store paths from stdin: {e}")))?;
    let paths = text
        .lines()
        .map(|line| {
            StorePath::parse(line, store_dir)
                .map_err(|e| query_error(format!("stdin: '{line}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&StorePath> = paths.iter().collect();
    let answers =
        publish::upstream::serves(url, &refs, store_dir, publish::upstream::DEFAULT_JOBS)?;
    let served: String = paths
        .iter()
        .zip(answers)
        .filter(|(_, served)| *served)
        .map(|(p, _)| format!("{p}\n"))
        .collect();
    std::io::stdout()
        .write_all(served.as_bytes())
        .map_err(|e| query_error(format!("writing to stdout: {e}")))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Prune(args)) = cli.command {
        return prune(args);
    }
    let Some(cli) = cli.args else {
        anyhow::bail!("give CACHE and URL (see --help)");
    };
    let cache = cli.cache;
    let location = Location::parse(&cli.url)?;
    for warning in &location.warnings {
        eprintln!("mk-binary-cache-publish: warning: {warning}");
    }
    let credentials =
        publish::credentials::resolve(location.profile.as_deref(), &ProcessEnvironment)?;
    let options = Options {
        force: cli.force,
        jobs: cli.jobs.into(),
        part_size: usize::from(cli.part_size) << 20,
        upstreams: Upstreams::new(
            cli.upstream_key,
            &cli.upstreams,
            cli.unreachable_upstream_is_empty,
        )?,
    };
    let start = Instant::now();
    let report = publish::publish(&cache, &location, credentials, &options)?;
    for unreachable in &report.unreachable {
        eprintln!(
            "mk-binary-cache-publish: warning: {unreachable}; taken as serving nothing \
             (--unreachable-upstream-is-empty)"
        );
    }
    if !cli.quiet {
        println!(
            "published {} to {location} in {:.2} s: uploaded {} files ({} bytes, {} narinfos), \
             skipped {} already there ({} narinfos); wrote again {} a prune had marked{}",
            cache.display(),
            start.elapsed().as_secs_f64(),
            report.uploaded,
            report.uploaded_bytes,
            report.narinfos_uploaded,
            report.skipped,
            report.narinfos_skipped,
            report.kept_alive,
            report
                .upstream_summary
                .map(|s| format!("; {s}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new("--query-upstream")) {
        let query = QueryCli::parse();
        return match query_upstream(&query.query_upstream, &query.store_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mk-binary-cache-publish: error: {e}");
                match e {
                    UpstreamError::Unreachable { .. } => ExitCode::from(QUERY_UNREACHABLE as u8),
                    _ => ExitCode::FAILURE,
                }
            }
        };
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache-publish: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
