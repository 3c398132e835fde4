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
//!    to; then `store-paths`, merged with the bucket's. A reader therefore
//!    never finds a narinfo whose NAR or references are missing, and a run
//!    killed at any point leaves a bucket that the next run completes.
//!
//! Files larger than one part go up as multipart uploads, streamed from disk
//! with at most two parts per file in flight; at most `jobs` files are sent
//! at once. The client library retries transient failures (timeouts,
//! connection errors, 5xx, 429) with exponential backoff.

pub mod credentials;
pub mod location;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use md5::{Digest, Md5};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use thiserror::Error;
use tokio::io::AsyncReadExt;

use crate::format::cache_info::{self, CacheInfo};
use crate::format::narinfo::{self, NarInfo};
use crate::ops::write::STORE_PATHS;
use crate::format::store_path::DEFAULT_STORE_DIR;
use crate::support::files::TempNames;

pub use credentials::{Credentials, Environment, ProcessEnvironment, Resolved};
pub use location::Location;

const MAX_NARINFO_SIZE: u64 = narinfo::MAX_SIZE;

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force: false,
            jobs: 8,
            part_size: DEFAULT_PART_SIZE,
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
}

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("reading the cache {}: {message}", .path.display())]
    Cache { path: PathBuf, message: String },
    #[error("{} has no {}: it is not a flat-file binary cache", .0.display(), cache_info::FILE_NAME)]
    NotACache(PathBuf),
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
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{url}/{name} is {size} bytes, more than a {what} can be ({MAX_NARINFO_SIZE})")]
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

/// A file of the cache to upload.
#[derive(Debug, Clone)]
struct File {
    /// Relative to the cache's root, with `/`.
    name: String,
    path: PathBuf,
    size: u64,
}

/// The cache on disk, sorted into the phases of the upload.
struct Plan {
    store_dir: String,
    cache_info: File,
    /// NARs, listings, debug info, logs: anything no narinfo is.
    files: Vec<File>,
    /// Narinfos by depth: those of level 0 refer to no other path of the
    /// cache; those of level n only to paths of lower levels.
    narinfo_levels: Vec<Vec<(File, Vec<u8>)>>,
    store_paths: Option<File>,
}

fn cache_error(path: &Path, message: impl ToString) -> PublishError {
    PublishError::Cache {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn read_plan(cache: &Path) -> Result<Plan, PublishError> {
    let info_path = cache.join(cache_info::FILE_NAME);
    let info_text = match fs::read_to_string(&info_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PublishError::NotACache(cache.to_path_buf()));
        }
        Err(e) => return Err(cache_error(&info_path, e)),
    };
    let info: CacheInfo = info_text.parse().map_err(|e| cache_error(&info_path, e))?;
    let store_dir = info
        .store_dir
        .unwrap_or_else(|| DEFAULT_STORE_DIR.to_string());

    let mut all = Vec::new();
    walk(cache, "", &mut all)?;
    all.sort_by(|a, b| a.name.cmp(&b.name));

    let mut cache_info = None;
    let mut files = Vec::new();
    let mut narinfos = BTreeMap::new();
    let mut store_paths = None;
    for file in all {
        if file.name == cache_info::FILE_NAME {
            cache_info = Some(file);
        } else if file.name == STORE_PATHS {
            store_paths = Some(file);
        } else if !file.name.contains('/') && file.name.ends_with(".narinfo") {
            let bytes = read_narinfo(&file.path)?;
            let text = std::str::from_utf8(&bytes).map_err(|e| cache_error(&file.path, e))?;
            let narinfo =
                NarInfo::parse(text, &store_dir).map_err(|e| cache_error(&file.path, e))?;
            narinfos.insert(
                narinfo.store_path.hash_part().to_string(),
                (file, bytes, narinfo),
            );
        } else {
            files.push(file);
        }
    }

    let levels = levels(&narinfos).map_err(|hash| {
        cache_error(
            &cache.join(format!("{hash}.narinfo")),
            "its references form a cycle",
        )
    })?;
    let mut narinfo_levels: Vec<Vec<(File, Vec<u8>)>> = Vec::new();
    for (hash, (file, bytes, _)) in narinfos {
        let level = levels[&hash];
        if narinfo_levels.len() <= level {
            narinfo_levels.resize_with(level + 1, Vec::new);
        }
        narinfo_levels[level].push((file, bytes));
    }
    Ok(Plan {
        store_dir,
        cache_info: cache_info.expect("read above"),
        files,
        narinfo_levels,
        store_paths,
    })
}

/// The level of each narinfo: 0 without references to other paths of the
/// cache, else one more than the highest of them. Err: a path on a cycle.
fn levels(
    narinfos: &BTreeMap<String, (File, Vec<u8>, NarInfo)>,
) -> Result<HashMap<String, usize>, String> {
    let mut levels: HashMap<String, usize> = HashMap::new();
    for start in narinfos.keys() {
        // Depth-first, with an explicit stack: (hash, references pushed?).
        let mut stack = vec![(start.clone(), false)];
        let mut on_stack = BTreeSet::from([start.clone()]);
        while let Some((hash, expanded)) = stack.pop() {
            if levels.contains_key(&hash) {
                on_stack.remove(&hash);
                continue;
            }
            let refs: Vec<String> = narinfos[&hash]
                .2
                .references
                .iter()
                .map(|r| r.hash_part().to_string())
                .filter(|r| *r != hash && narinfos.contains_key(r))
                .collect();
            if expanded {
                let level = refs.iter().map(|r| levels[r] + 1).max().unwrap_or(0);
                levels.insert(hash.clone(), level);
                on_stack.remove(&hash);
                continue;
            }
            stack.push((hash.clone(), true));
            for r in refs {
                if levels.contains_key(&r) {
                    continue;
                }
                if !on_stack.insert(r.clone()) {
                    return Err(r);
                }
                stack.push((r, false));
            }
        }
    }
    Ok(levels)
}

fn read_narinfo(path: &Path) -> Result<Vec<u8>, PublishError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_NARINFO_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|e| cache_error(path, e))?;
    if bytes.len() as u64 > MAX_NARINFO_SIZE {
        return Err(cache_error(
            path,
            format!("it is larger than {MAX_NARINFO_SIZE} bytes"),
        ));
    }
    Ok(bytes)
}

/// Every regular file under `dir`, but temporary ones; a symlink or other
/// special file is an error (a cache has none).
fn walk(root: &Path, rel: &str, out: &mut Vec<File>) -> Result<(), PublishError> {
    let dir = root.join(rel);
    let entries = fs::read_dir(&dir).map_err(|e| cache_error(&dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| cache_error(&dir, e))?;
        let os_name = entry.file_name();
        if TempNames::owner(&os_name).is_some() {
            continue;
        }
        let path = entry.path();
        let name = os_name
            .to_str()
            .ok_or_else(|| cache_error(&path, "the name is not UTF-8"))?;
        let name = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| cache_error(&path, e))?;
        if meta.is_dir() {
            walk(root, &name, out)?;
        } else if meta.is_file() {
            out.push(File {
                name,
                path,
                size: meta.len(),
            });
        } else {
            return Err(cache_error(&path, "not a regular file or directory"));
        }
    }
    Ok(())
}

/// The bucket, and how to name things in messages.
struct Bucket {
    store: Arc<dyn ObjectStore>,
    location: Location,
    credentials: String,
    part_size: usize,
}

impl Bucket {
    fn open(
        location: &Location,
        resolved: Resolved,
        part_size: usize,
    ) -> Result<Bucket, PublishError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .with_region(&resolved.region)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout: Duration::from_secs(180),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300))
                    .with_allow_http(
                        location
                            .endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(endpoint) = &location.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let credentials = match &resolved.credentials {
            Some(c) => {
                builder = builder
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(token) = &c.session_token {
                    builder = builder.with_token(token);
                }
                format!("credentials from {}", c.source)
            }
            None => "credentials from the instance, container or web identity".to_string(),
        };
        let store = builder.build().map_err(|source| PublishError::Store {
            what: "opening",
            url: location.to_string(),
            key: String::new(),
            credentials: credentials.clone(),
            source: Box::new(source),
        })?;
        Ok(Bucket {
            store: Arc::new(store),
            location: location.clone(),
            credentials,
            // S3's smallest part, but for the last.
            part_size: part_size.max(5 << 20),
        })
    }

    fn key(&self, name: &str) -> Key {
        Key::from(self.location.key(name))
    }

    fn error(&self, what: &'static str, name: &str, source: object_store::Error) -> PublishError {
        PublishError::Store {
            what,
            url: self.location.to_string(),
            key: if name.is_empty() {
                String::new()
            } else {
                format!("/{name}")
            },
            credentials: self.credentials.clone(),
            source: Box::new(source),
        }
    }

    /// Every object under the prefix: name (relative to it) -> (size, ETag).
    async fn list(&self) -> Result<HashMap<String, (u64, Option<String>)>, PublishError> {
        let prefix = (!self.location.prefix.is_empty()).then(|| Key::from(&*self.location.prefix));
        let strip = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        let metas: Vec<_> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error("listing", "", e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((name, (m.size, m.e_tag)))
            })
            .collect())
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, PublishError> {
        let result = self
            .store
            .get(&self.key(name))
            .await
            .map_err(|e| self.error("reading", name, e))?;
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.error("reading", name, e))?;
        Ok(bytes.to_vec())
    }

    async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), PublishError> {
        let options = PutOptions {
            attributes: attributes(name),
            ..Default::default()
        };
        self.store
            .put_opts(&self.key(name), PutPayload::from(bytes), options)
            .await
            .map_err(|e| self.error("uploading to", name, e))?;
        Ok(())
    }

    /// Uploads a file, in parts if it is larger than one.
    async fn put_file(&self, file: &File) -> Result<(), PublishError> {
        let io = |source| PublishError::Io {
            path: file.path.clone(),
            source,
        };
        if file.size <= self.part_size as u64 {
            let bytes = tokio::fs::read(&file.path).await.map_err(io)?;
            return self.put_bytes(&file.name, bytes).await;
        }
        let options = PutMultipartOptions {
            attributes: attributes(&file.name),
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(&self.key(&file.name), options)
            .await
            .map_err(|e| self.error("starting the upload of", &file.name, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut source = tokio::fs::File::open(&file.path).await.map_err(io)?;
        let mut buffer = vec![0; 1 << 20];
        let sent = async {
            loop {
                // At most two parts of this file in flight: memory stays
                // within a few parts per file, however large the NAR.
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.error("uploading a part of", &file.name, e))?;
                let n = source.read(&mut buffer).await.map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buffer[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.error("completing the upload of", &file.name, e))?;
                Ok(())
            }
            Err(e) => {
                // An incomplete upload is invisible to readers; aborting it
                // frees its parts (a bucket lifecycle rule does it too).
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

fn attributes(name: &str) -> Attributes {
    Attributes::from_iter([(Attribute::ContentType, content_type(name))])
}

/// The MD5 of `bytes` in hex: the ETag S3 gives a single-part upload.
fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether an object with ETag `etag` holds `bytes`: Some(answer) when the
/// ETag is an MD5, None when only reading it back can tell.
fn same_by_etag(etag: Option<&str>, bytes: &[u8]) -> Option<bool> {
    let etag = etag?.trim_matches('"');
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.eq_ignore_ascii_case(&md5_hex(bytes)))
}

/// Uploads the flat-file cache `cache` to `location`.
pub fn publish(
    cache: &Path,
    location: &Location,
    resolved: Resolved,
    opts: &Options,
) -> Result<Report, PublishError> {
    let plan = read_plan(cache)?;
    let bucket = Bucket::open(location, resolved, opts.part_size)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(PublishError::Runtime)?;
    runtime.block_on(run(cache, &plan, &bucket, opts))
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
    let upload_cache_info = match remote.get(cache_info::FILE_NAME) {
        Some((size, _)) if *size > MAX_NARINFO_SIZE => {
            return Err(too_large(cache_info::FILE_NAME, *size, "nix-cache-info"));
        }
        Some(_) => {
            let bytes = bucket.get(cache_info::FILE_NAME).await?;
            let text = String::from_utf8_lossy(&bytes);
            let theirs: CacheInfo = text.parse().map_err(|e| PublishError::Cache {
                path: PathBuf::from(format!("{url}/{}", cache_info::FILE_NAME)),
                message: format!("{e}"),
            })?;
            let theirs = theirs
                .store_dir
                .unwrap_or_else(|| DEFAULT_STORE_DIR.to_string());
            if theirs != plan.store_dir {
                return Err(PublishError::StoreDir {
                    url,
                    theirs,
                    ours: plan.store_dir.clone(),
                    cache: cache.to_path_buf(),
                });
            }
            false
        }
        None => true,
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
                        None if *size > MAX_NARINFO_SIZE => {
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

    if upload_cache_info {
        let bytes = tokio::fs::read(&plan.cache_info.path)
            .await
            .map_err(|source| PublishError::Io {
                path: plan.cache_info.path.clone(),
                source,
            })?;
        report.uploaded += 1;
        report.uploaded_bytes += bytes.len() as u64;
        bucket.put_bytes(cache_info::FILE_NAME, bytes).await?;
    } else {
        report.skipped += 1;
    }

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
    futures::stream::iter(files.into_iter().map(Ok))
        .try_for_each_concurrent(opts.jobs.max(1), |file| bucket.put_file(file))
        .await?;

    // Phase 2: narinfos, a level only once the one below is complete.
    for level in narinfo_levels {
        report.uploaded += level.len();
        report.narinfos_uploaded += level.len();
        report.uploaded_bytes += level.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        futures::stream::iter(level.into_iter().map(Ok))
            .try_for_each_concurrent(opts.jobs.max(1), |(file, bytes)| {
                bucket.put_bytes(&file.name, bytes.clone())
            })
            .await?;
    }

    // Phase 3: the roots, merged with those already published.
    if let Some(file) = &plan.store_paths {
        let ours = tokio::fs::read(&file.path)
            .await
            .map_err(|source| PublishError::Io {
                path: file.path.clone(),
                source,
            })?;
        let merged = match remote.get(STORE_PATHS) {
            None => Some(ours),
            Some((_, etag)) if same_by_etag(etag.as_deref(), &ours) == Some(true) => None,
            Some(_) => {
                let theirs = bucket.get(STORE_PATHS).await?;
                merge_lines(&theirs, &ours)
            }
        };
        match merged {
            Some(bytes) => {
                report.uploaded += 1;
                report.uploaded_bytes += bytes.len() as u64;
                bucket.put_bytes(STORE_PATHS, bytes).await?;
            }
            None => report.skipped += 1,
        }
    }
    Ok(report)
}

/// `theirs` followed by the lines of `ours` it lacks; None if it lacks none.
fn merge_lines(theirs: &[u8], ours: &[u8]) -> Option<Vec<u8>> {
    let have: BTreeSet<&[u8]> = theirs.split(|&b| b == b'\n').collect();
    let missing: Vec<&[u8]> = ours
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !have.contains(l))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut merged = theirs.to_vec();
    if !merged.is_empty() && !merged.ends_with(b"\n") {
        merged.push(b'\n');
    }
    for line in missing {
        merged.extend_from_slice(line);
        merged.push(b'\n');
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn store_paths_merge_keeps_the_bucket_s_roots() {
        assert_eq!(merge_lines(b"/nix/store/a\n", b"/nix/store/a\n"), None);
        assert_eq!(
            merge_lines(b"/nix/store/a\n", b"/nix/store/b\n/nix/store/a\n").unwrap(),
            b"/nix/store/a\n/nix/store/b\n"
        );
        assert_eq!(
            merge_lines(b"", b"/nix/store/b\n").unwrap(),
            b"/nix/store/b\n"
        );
    }
}
