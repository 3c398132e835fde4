//! The `mk-binary-cache-publish` command (`mk-binary-cache publish`):
//! argument parsing and exit codes only. Built with the `publish` feature.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use mk_binary_cache::ops::publish::{self, Location, Options, ProcessEnvironment};
use mk_binary_cache::support::error_line::error_line;

#[path = "../publish_args.rs"]
mod publish_args;

use publish_args::{EXAMPLES, LONG_ABOUT, PublishArgs};

#[derive(Parser)]
#[command(
    name = "mk-binary-cache-publish",
    version,
    about = "Upload a cache to S3-compatible object storage",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
)]
struct Cli {
    #[command(flatten)]
    args: PublishArgs,
}

fn run(cli: PublishArgs) -> anyhow::Result<()> {
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
    let report = publish::publish(&cli.cache, &location, credentials, &options)?;
    if !cli.quiet {
        println!(
            "published {} to {location} in {:.2} s: uploaded {} files ({} bytes, {} narinfos), \
             skipped {} already there ({} narinfos)",
            cli.cache.display(),
            start.elapsed().as_secs_f64(),
            report.uploaded,
            report.uploaded_bytes,
            report.narinfos_uploaded,
            report.skipped,
            report.narinfos_skipped,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache-publish: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
