//! The `mk-binary-cache-publish` command (`mk-binary-cache publish`):
//! argument parsing and exit codes only. Built with the `publish` feature.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use mk_binary_cache::ops::publish::{self, Location, Options, ProcessEnvironment, sweep};
use mk_binary_cache::support::error_line::error_line;

/// Uploads a flat-file Nix binary cache, byte for byte, to S3-compatible
/// object storage, in an order that is safe for readers at every moment:
/// NARs and other files first, then each narinfo after those of its
/// references, then `store-paths`. Files already there are skipped; a run
/// that is interrupted is completed by the next.
///
/// Credentials are found as the AWS tools find them: the URL's profile,
/// else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else the profile
/// AWS_PROFILE names (or `default`) in ~/.aws/credentials and ~/.aws/config.
#[derive(Parser)]
#[command(
    name = "mk-binary-cache-publish",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The flat-file cache to upload (a mkBinaryCache output, or a
    /// `build --to` directory).
    #[arg(value_name = "CACHE", required = true)]
    cache: Option<PathBuf>,
    /// Where to: `s3://BUCKET[/PREFIX]?region=R&endpoint=https://HOST[:PORT]&profile=P`,
    /// the URL Nix uses for the same bucket (also `addressing-style=auto|path|virtual`,
    /// `storage-class=CLASS`).
    #[arg(value_name = "URL", required = true)]
    url: Option<String>,
    /// Replace narinfos in the bucket that differ from the cache's (by
    /// default that is an error, and nothing is uploaded).
    #[arg(long)]
    force: bool,
    /// Files uploaded at once; each has at most two requests in flight.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Files larger than this many MiB go up in parts of this size (5 to 4096).
    #[arg(long, value_name = "MiB", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(5..=4096))]
    part_size: u16,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Prune a published cache (`mk-binary-cache prune s3://…`): delete what
    /// neither `store-paths` nor the revisions its pins retain keep, by mark,
    /// wait and sweep, safe while others publish to it. An object goes only
    /// if it was unreachable when a run marked it and still is at a run
    /// after the grace period; so run it regularly (daily, say).
    Prune(PruneArgs),
}

#[derive(clap::Args)]
struct PruneArgs {
    /// The bucket: `s3://BUCKET[/PREFIX]?…`, as for publishing.
    #[arg(value_name = "URL")]
    url: String,
    /// How long an object must stay unreachable after it is marked before
    /// it is deleted, in seconds (default: a day). Publishes that take
    /// longer than this, less a minute, are not protected.
    #[arg(long, value_name = "SECONDS", default_value_t = sweep::DEFAULT_GRACE.as_secs())]
    grace: u64,
    /// A sweep stops after this many seconds (the rest waits for the next
    /// run); a publish that finds what it needs marked waits this long.
    #[arg(long, value_name = "SECONDS", default_value_t = sweep::DEFAULT_SWEEP_WITHIN.as_secs())]
    sweep_within: u64,
    /// Say what would be deleted and marked, in objects and bytes, and the
    /// requests it would take; write and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Prune even if no root is listed in store-paths or a pin (which
    /// deletes every path).
    #[arg(long)]
    allow_no_roots: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let location = Location::parse(&args.url)?;
    for warning in &location.warnings {
        eprintln!("mk-binary-cache-publish: warning: {warning}");
    }
    let credentials =
        publish::credentials::resolve(location.profile.as_deref(), &ProcessEnvironment)?;
    let options = sweep::Options {
        grace: Duration::from_secs(args.grace),
        sweep_within: Duration::from_secs(args.sweep_within),
        dry_run: args.dry_run,
        allow_no_roots: args.allow_no_roots,
        ..sweep::Options::default()
    };
    let start = Instant::now();
    let report = publish::prune_bucket(&location, credentials, &options)?;
    if !args.quiet {
        for (name, kept, dropped) in &report.pins {
            println!("pin {name}: retains revisions {kept:?}, drops {dropped:?}");
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
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Prune(args)) = cli.command {
        return prune(args);
    }
    let (Some(cache), Some(url)) = (cli.cache, cli.url) else {
        anyhow::bail!("give CACHE and URL (see --help)");
    };
    let location = Location::parse(&url)?;
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
