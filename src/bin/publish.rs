//! The `mk-binary-cache-publish` command (`mk-binary-cache publish`):
//! argument parsing and exit codes only. Built with the `publish` feature.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

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
    };
    let start = Instant::now();
    let report = publish::publish(&cache, &location, credentials, &options)?;
    if !cli.quiet {
        println!(
            "published {} to {location} in {:.2} s: uploaded {} files ({} bytes, {} narinfos), \
             skipped {} already there ({} narinfos); wrote again {} a prune had marked",
            cache.display(),
            start.elapsed().as_secs_f64(),
            report.uploaded,
            report.uploaded_bytes,
            report.narinfos_uploaded,
            report.skipped,
            report.narinfos_skipped,
            report.kept_alive,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache-publish: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
