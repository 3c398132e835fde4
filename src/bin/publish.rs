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
use std::time::Instant;

use clap::Parser;

use mk_binary_cache::format::store_path::{DEFAULT_STORE_DIR, StorePath};
use mk_binary_cache::input::upstream::{QUERY_UNREACHABLE, UpstreamError, Upstreams};
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
        upstreams: Upstreams::new(
            cli.upstream_key,
            &cli.upstreams,
            cli.unreachable_upstream_is_empty,
        )?,
    };
    let start = Instant::now();
    let report = publish::publish(&cli.cache, &location, credentials, &options)?;
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
            cli.cache.display(),
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
    match run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk-binary-cache-publish: error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
