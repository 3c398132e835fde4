//! `publish`: uploads a flat-file cache, as it is, to S3-compatible object
//! storage, in an order that is safe for readers at every moment.
//!
//! Only built with the `publish` feature (the `mk-binary-cache-publish`
//! program): the network client and its async runtime never enter the
//! static builder that `mkBinaryCache` runs.
//!
//! One run:
//! 1. Read the cache: every regular file (temporary files of a running or
//!    killed `build --to` left out), each narinfo parsed for its
//!    references, `nix-cache-info` for the store directory.
//! 2. List the bucket's prefix once. A `nix-cache-info` there must name the
//!    same `StoreDir` (read: it is a few bytes); without one, ours goes up
//!    first. Each narinfo already there is compared by its ETag, the MD5 of
//!    its bytes for a single-part upload (read back only when the server
//!    gives another kind of ETag): the same is skipped, a different one is
//!    an error before anything is written, unless `force`.
//! 3. Upload in three phases, each finished before the next begins: every
//!    other file (NARs, `.ls` listings, `debuginfo/`, `log/`…) not already
//!    there with the same size (a NAR's name is the hash of its bytes; a
//!    `debuginfo/` link already there is kept whatever its size, as Nix
//!    keeps it);
//!    then the narinfos, by depth, a path only after every path it refers
//!    to; then `store-paths` and the pins, merged with the bucket's by
//!    compare-and-swap (`roots`), so that concurrent publishes and prunes
//!    lose none of each other's roots and revisions. A reader therefore
//!    never finds a narinfo whose NAR or references are missing, and a run
//!    killed at any point leaves a bucket that the next run completes.
//!
//! Files larger than one part go up as multipart uploads, streamed from disk
//! with at most two parts per file in flight; at most `jobs` files are sent
//! at once. The client library retries transient failures (timeouts,
//! connection errors, 5xx, 429) with exponential backoff.

mod bucket;
pub mod credentials;
pub mod location;
mod plan;
pub mod roots;
pub mod sweep;
pub mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use thiserror::Error;

use crate::cache::{CacheDirError, STORE_PATHS};
use crate::format::cache_info::{self, CacheInfo};
use crate::format::narinfo::{self, Sig};
use crate::format::store_path::{DEFAULT_STORE_DIR, StorePath};
use crate::input::upstream::{Candidate, Decision, UpstreamError, Upstreams};

pub use credentials::{Credentials, Environment, ProcessEnvironment};
pub use location::{Location, Warning};

use bucket::{Bucket, same_by_etag};
use plan::{File, Plan, read_plan};
use sweep::{KeepAlive, REFRESH, Relied};

/// The default size of one part of a multipart upload (S3 needs at least
/// 5 MiB for every part but the last).
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// How a publish runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replace narinfos that differ from ours instead of refusing.
    pub force: bool,
    /// Files uploaded at once (each has at most two requests in flight).
    pub jobs: usize,
    /// Files larger than this go up in parts of this size.
    pub part_size: usize,
    /// Paths these serve are not uploaded; `nix-cache-info` names them.
    pub upstreams: Upstreams,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force: false,
            jobs: 8,
            part_size: DEFAULT_PART_SIZE,
            upstreams: Upstreams::default(),
        }
    }
}

/// What a publish did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Files already in the bucket (with the same size, or for narinfos the
    /// same bytes).
    pub skipped: usize,
    pub narinfos_uploaded: usize,
    pub narinfos_skipped: usize,
    /// Objects written again because a prune had marked them (see `sweep`).
    pub kept_alive: usize,
    /// What was left out because an upstream serves it, and why.
    pub upstream_summary: Option<String>,
    /// Upstreams that did not answer, taken as serving nothing.
    pub unreachable: Vec<String>,
}

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("reading the cache {}: {message}", .path.display())]
    Cache { path: PathBuf, message: String },
    #[error("{} has no {}: it is not a flat-file binary cache", .0.display(), cache_info::FILE_NAME)]
    NotACache(PathBuf),
    #[error("reading the cache: {0}")]
    CacheDir(CacheDirError),
    #[error(
        "{url} is a cache for the store '{theirs}', and {} is for '{ours}': publish it elsewhere",
        .cache.display()
    )]
    StoreDir {
        url: String,
        theirs: String,
        ours: String,
        cache: PathBuf,
    },
    #[error(
        "{url} already has {} narinfo(s) that differ from the cache's, first {first}; \
         nothing was uploaded (--force replaces them)",
        .count
    )]
    Conflict {
        url: String,
        count: usize,
        first: String,
    },
    #[error("{what} {url}{key} ({credentials}): {source}")]
    Store {
        what: &'static str,
        url: String,
        key: String,
        credentials: String,
        source: Box<object_store::Error>,
    },
    #[error(
        "{url}/{name}: the store does not do conditional writes (If-Match, If-None-Match), \
         and the root files (store-paths, pins/) are only ever written by compare-and-swap, \
         so that concurrent publishes and prunes lose no root or revision; nothing was \
         written to it ({source})"
    )]
    NoConditionalPut {
        url: String,
        name: String,
        source: Box<object_store::Error>,
    },
    #[error(
        "{url}/{name}: the store gave no ETag with it, so it cannot be compare-and-swapped; \
         nothing was written to it"
    )]
    NoETag { url: String, name: String },
    #[error(
        "{url}/{name}: another writer changed it between each of {attempts} reads and the \
         write that followed; giving up (run again)"
    )]
    Contended {
        url: String,
        name: String,
        attempts: u32,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0} has no nix-cache-info: it is not a binary cache, and prune deletes nothing in it")]
    NotACacheBucket(String),
    #[error(
        "{0}: store-paths is missing or empty and no pin names a root, so prune would delete every path; \
         --allow-no-roots if that is what you want"
    )]
    NoRoots(String),
    #[error(
        "{0}: the narinfos of {1} refer to each other in a cycle: no order deletes them safely, \
         and prune deletes nothing"
    )]
    BucketCycle(String, String),
    #[error(
        "{url}/{name} is {size} bytes, more than a {what} can be ({})",
        narinfo::MAX_SIZE
    )]
    TooLarge {
        url: String,
        name: String,
        size: u64,
        what: &'static str,
    },
}

/// The content type Nix's own S3 uploader gives a file of a cache.
pub fn content_type(file: &str) -> &'static str {
    if file == cache_info::FILE_NAME {
        "text/x-nix-cache-info"
    } else if file.ends_with(".narinfo") {
        "text/x-nix-narinfo"
    } else if file.starts_with("nar/") {
        "application/x-nix-nar"
    } else if file.ends_with(".ls")
        || file.starts_with("debuginfo/")
        || file.starts_with("realisations/")
    {
        "application/json"
    } else if file.starts_with("log/") || file == STORE_PATHS {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

pub(crate) fn too_large_error(
    url: &str,
    name: &str,
    size: u64,
    what: &'static str,
) -> PublishError {
    PublishError::TooLarge {
        url: url.to_owned(),
        name: name.to_owned(),
        size,
        what,
    }
}

/// Prunes the published cache at `location` (`prune s3://…`): see
/// [`sweep`].
pub fn prune_bucket(
    location: &Location,
    credentials: Option<Credentials>,
    opts: &sweep::Options,
) -> Result<sweep::Report, PublishError> {
    let bucket = Bucket::open(location, credentials, DEFAULT_PART_SIZE)?;
    runtime()?.block_on(sweep::prune(&bucket, opts))
}

fn runtime() -> Result<tokio::runtime::Runtime, PublishError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(PublishError::Runtime)
}

/// Uploads the flat-file cache `cache` to `location`.
pub fn publish(
    cache: &Path,
    location: &Location,
    credentials: Option<Credentials>,
    opts: &Options,
) -> Result<Report, PublishError> {
    let mut plan = read_plan(cache)?;
    let decision = leave_out_served(&mut plan, opts)?;
    let bucket = Bucket::open(location, credentials, opts.part_size)?;
    let mut report = runtime()?.block_on(run(cache, &plan, &bucket, opts))?;
    report.upstream_summary = decision.summary();
    report.unreachable = decision.unreachable.iter().map(|e| e.to_string()).collect();
    Ok(report)
}

/// Takes out of `plan` the paths that `opts.upstreams` serve: by the
/// narinfos' `Sig:` lines, and by asking each URL.
fn leave_out_served(plan: &mut Plan, opts: &Options) -> Result<Decision, PublishError> {
    if opts.upstreams.is_empty() {
        return Ok(Decision::default());
    }
    let hashes: Vec<&String> = plan.narinfos.keys().collect();
    let candidates: Vec<Candidate> = plan
        .narinfos
        .values()
        .map(|info| Candidate {
            path: &info.store_path,
            nar_size: info.nar_size,
            // A malformed `Sig:` line is no signature.
            signers: info
                .signatures
                .iter()
                .filter_map(|sig| match sig {
                    Sig::Valid(sig) => Some(sig.key_name.as_str()),
                    Sig::Malformed { .. } => None,
                })
                .collect(),
        })
        .collect();
    let remote = |url: &str, paths: &[&StorePath]| {
        upstream::serves(url, paths, &plan.store_dir, upstream::DEFAULT_JOBS)
    };
    let decision = opts
        .upstreams
        .decide(&candidates, &plan.store_dir, &remote)?;
    let gone: BTreeSet<String> = hashes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| decision.is_left_out(*i))
        .map(|(_, h)| h.clone())
        .collect();
    plan.leave_out(&gone)?;
    Ok(decision)
}

async fn run(
    cache: &Path,
    plan: &Plan,
    bucket: &Bucket,
    opts: &Options,
) -> Result<Report, PublishError> {
    let mut report = Report::default();
    let remote = bucket.list().await?;
    let url = bucket.location.to_string();

    // The store directory first: nothing is written to a bucket of another.
    let too_large = |name: &str, size: u64, what| PublishError::TooLarge {
        url: url.clone(),
        name: name.to_string(),
        size,
        what,
    };
    let upstreams = &opts.upstreams.recorded();
    let cache_info_upload = match remote.get(cache_info::FILE_NAME) {
        Some((size, _)) if *size > narinfo::MAX_SIZE => {
            return Err(too_large(cache_info::FILE_NAME, *size, "nix-cache-info"));
        }
        Some(_) => {
            let bytes = bucket.get(cache_info::FILE_NAME).await?;
            let text = String::from_utf8_lossy(&bytes);
            let mut theirs: CacheInfo = text.parse().map_err(|e| PublishError::Cache {
                path: PathBuf::from(format!("{url}/{}", cache_info::FILE_NAME)),
                message: format!("{e}"),
            })?;
            let their_dir = theirs
                .store_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STORE_DIR.to_string());
            if their_dir != plan.store_dir {
                return Err(PublishError::StoreDir {
                    url,
                    theirs: their_dir,
                    ours: plan.store_dir.clone(),
                    cache: cache.to_path_buf(),
                });
            }
            // A bucket that now leaves paths out says so, before it does.
            let added =
                theirs.upstreams.add(&plan.info.upstreams) | theirs.upstreams.add(upstreams);
            added.then(|| theirs.to_string().into_bytes())
        }
        None => {
            let bytes = tokio::fs::read(&plan.cache_info.path)
                .await
                .map_err(|source| PublishError::Io {
                    path: plan.cache_info.path.clone(),
                    source,
                })?;
            let mut ours = plan.info.clone();
            Some(if ours.upstreams.add(upstreams) {
                ours.to_string().into_bytes()
            } else {
                bytes
            })
        }
    };

    // Narinfos: same, different, or new; differences stop the run here.
    let mut narinfo_levels: Vec<Vec<&(File, Vec<u8>)>> = Vec::new();
    let mut conflicts = Vec::new();
    for level in &plan.narinfo_levels {
        let mut todo = Vec::new();
        for entry in level {
            let (file, bytes) = entry;
            let same = match remote.get(&file.name) {
                None => false,
                Some((size, etag)) => {
                    let same = match same_by_etag(etag.as_deref(), bytes) {
                        Some(answer) => answer,
                        None if *size > narinfo::MAX_SIZE => {
                            return Err(too_large(&file.name, *size, "narinfo"));
                        }
                        None => bucket.get(&file.name).await? == *bytes,
                    };
                    if !same {
                        conflicts.push(file.name.clone());
                    }
                    same
                }
            };
            if same {
                report.skipped += 1;
                report.narinfos_skipped += 1;
            } else {
                todo.push(entry);
            }
        }
        narinfo_levels.push(todo);
    }
    if !conflicts.is_empty() && !opts.force {
        return Err(PublishError::Conflict {
            url,
            count: conflicts.len(),
            first: conflicts[0].clone(),
        });
    }

    if let Some(bytes) = cache_info_upload {
        report.uploaded += 1;
        report.uploaded_bytes += bytes.len() as u64;
        bucket.put_bytes(cache_info::FILE_NAME, bytes).await?;
    } else {
        report.skipped += 1;
    }

    // What this publish relies on, which a prune's marks must not take.
    let mut relied: BTreeMap<&str, Relied<'_>> = plan
        .files
        .iter()
        .map(|f| (f.name.as_str(), Relied::File(f)))
        .collect();
    for (file, bytes) in plan.narinfo_levels.iter().flatten() {
        relied.insert(&file.name, Relied::Bytes(bytes));
    }
    // Read the marks now, and again at least every REFRESH / 2 until the
    // roots are up (see `sweep` for why).
    let mut keep_alive = KeepAlive::default();
    keep_alive.check(bucket, &relied).await?;

    // Phase 1: everything a narinfo may name.
    let files: Vec<&File> = plan
        .files
        .iter()
        .filter(|f| match remote.get(&f.name) {
            None => true,
            // As Nix's uploader, never replace a debug-info link.
            Some(_) if f.name.starts_with("debuginfo/") => false,
            Some((size, _)) => *size != f.size,
        })
        .collect();
    report.skipped += plan.files.len() - files.len();
    report.uploaded += files.len();
    report.uploaded_bytes += files.iter().map(|f| f.size).sum::<u64>();
    let uploads = futures::stream::iter(files.into_iter().map(Ok))
        .try_for_each_concurrent(opts.jobs.max(1), |file| bucket.put_file(file));
    let mut checking = KeepAlive::default();
    let checks = async {
        loop {
            tokio::time::sleep(REFRESH / 2).await;
            checking.check(bucket, &relied).await?;
        }
    };
    tokio::select! {
        uploaded = uploads => uploaded?,
        failed = checks => return failed,
    }
    keep_alive.rewritten += checking.rewritten;

    // Phase 2: narinfos, a level only once the one below is complete; the
    // marks read again every little while (see `sweep`).
    for level in narinfo_levels {
        report.uploaded += level.len();
        report.narinfos_uploaded += level.len();
        report.uploaded_bytes += level.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        for chunk in level.chunks(256) {
            if keep_alive.due() {
                keep_alive.check(bucket, &relied).await?;
            }
            futures::stream::iter(chunk.iter().map(Ok))
                .try_for_each_concurrent(opts.jobs.max(1), |(file, bytes)| {
                    bucket.put_bytes(&file.name, bytes.clone())
                })
                .await?;
        }
    }
    keep_alive.check(bucket, &relied).await?;
    report.kept_alive = keep_alive.rewritten;

    // Phase 3: the roots, merged with those already published, each by
    // compare-and-swap: store-paths, then the pins.
    roots::publish(bucket, plan, crate::ops::pins::files::now(), &mut report).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::bucket::md5_hex;
    use super::*;

    #[test]
    fn content_types_are_those_nix_s_uploader_sets() {
        assert_eq!(content_type("nix-cache-info"), "text/x-nix-cache-info");
        assert_eq!(content_type("abc.narinfo"), "text/x-nix-narinfo");
        assert_eq!(content_type("nar/abc.nar.zst"), "application/x-nix-nar");
        assert_eq!(content_type("abc.ls"), "application/json");
        assert_eq!(content_type("debuginfo/0123"), "application/json");
        assert_eq!(content_type("log/x.drv"), "text/plain; charset=utf-8");
    }

    #[test]
    fn an_md5_etag_decides_without_reading_back() {
        let md5 = md5_hex(b"StorePath: x\n");
        assert_eq!(
            same_by_etag(Some(&format!("\"{md5}\"")), b"StorePath: x\n"),
            Some(true)
        );
        assert_eq!(
            same_by_etag(Some(&format!("\"{md5}\"")), b"other"),
            Some(false)
        );
        // A multipart ETag, or none, cannot tell.
        assert_eq!(same_by_etag(Some("\"abc-2\""), b"x"), None);
        assert_eq!(same_by_etag(None, b"x"), None);
    }
}
