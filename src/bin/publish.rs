//! The `mk-binary-cache-publish` command (`mk-binary-cache publish`):
//! argument parsing and exit codes only. Built with the `publish` feature.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use mk_binary_cache::ops::publish::{self, Location, Options, ProcessEnvironment};
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
#[command(name = "mk-binary-cache-publish", version, about, long_about)]
struct Cli {
    /// The flat-file cache to upload (a mkBinaryCache output, or a
    /// `build --to` directory).
    #[arg(value_name = "CACHE")]
    cache: PathBuf,
    /// Where to: `s3://BUCKET[/PREFIX]?region=R&endpoint=https://HOST[:PORT]&profile=P`,
    /// the URL Nix uses for the same bucket (also `addressing-style=auto|path|virtual`,
    /// `storage-class=CLASS`).
    #[arg(value_name = "URL")]
    url: String,
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

fn run(cli: Cli) -> anyhow::Result<()> {
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache-publish: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
