//! The `mk-binary-cache-publish` command (`mk-binary-cache publish`):
//! argument parsing and exit codes only. Built with the `publish` feature.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use std::io::{Read, Write};

use mk_binary_cache::format::store_path::{DEFAULT_STORE_DIR, StorePath};
use mk_binary_cache::input::upstream::{QUERY_UNREACHABLE, UpstreamError, Upstreams};
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
///
/// With --query-upstream URL it uploads nothing: it reads store paths on
/// stdin, one a line, and prints those the cache at URL serves (for
/// `mk-binary-cache build --upstream`, which has no network code); exit
/// code 3 means the upstream did not answer.
#[derive(Parser)]
#[command(name = "mk-binary-cache-publish", version, about, long_about)]
struct Cli {
    /// The flat-file cache to upload (a mkBinaryCache output, or a
    /// `build --to` directory).
    #[arg(value_name = "CACHE", required_unless_present = "query_upstream")]
    cache: Option<PathBuf>,
    /// Where to: `s3://BUCKET[/PREFIX]?region=R&endpoint=https://HOST[:PORT]&profile=P`,
    /// the URL Nix uses for the same bucket (also `addressing-style=auto|path|virtual`,
    /// `storage-class=CLASS`).
    #[arg(value_name = "URL", required_unless_present = "query_upstream")]
    url: Option<String>,
    /// Do not upload a path whose narinfo has a signature by key NAME (e.g.
    /// cache.nixos.org-1): its cache serves it. Repeatable.
    #[arg(long, value_name = "NAME")]
    upstream_key: Vec<String>,
    /// Do not upload a path whose narinfo the cache at URL (file://,
    /// http://, https://, s3://) serves. Repeatable.
    #[arg(long = "upstream", value_name = "URL")]
    upstreams: Vec<String>,
    /// Take an --upstream that does not answer (network failure, timeout,
    /// server error, after retries) as serving nothing, instead of failing.
    #[arg(long)]
    unreachable_upstream_is_empty: bool,
    /// Print the store paths read on stdin that the cache at URL serves.
    #[arg(long, value_name = "URL", conflicts_with_all = ["cache", "url"])]
    query_upstream: Option<String>,
    /// With --query-upstream: the store directory of the paths.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE_DIR, requires = "query_upstream")]
    store_dir: String,
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

/// `--query-upstream URL`: the paths of stdin that URL serves, on stdout.
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
    let (Some(cache), Some(url)) = (cli.cache, cli.url) else {
        unreachable!("clap requires CACHE and URL without --query-upstream");
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
             skipped {} already there ({} narinfos){}",
            cache.display(),
            start.elapsed().as_secs_f64(),
            report.uploaded,
            report.uploaded_bytes,
            report.narinfos_uploaded,
            report.skipped,
            report.narinfos_skipped,
            report
                .upstream_summary
                .map(|s| format!("; {s}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(url) = &cli.query_upstream {
        return match query_upstream(url, &cli.store_dir) {
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache-publish: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
