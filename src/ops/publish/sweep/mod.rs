//! `prune s3://…`: shrinking a published bucket to what its roots and pins
//! retain, safely while others publish to it: mark, wait, sweep.
//!
//! The bucket is the only state the publishers and pruners share, so it is
//! the coordinator. One run:
//!
//! 1. Learns the bucket's time: it writes `prune-marks/clock` and reads
//!    back when the bucket says it was written. Every age below is by the
//!    bucket's clock, never the local one.
//! 2. Lists the cache's prefix once (in pages) and reads `nix-cache-info`
//!    (refusing a bucket without one), `store-paths`, the pins and every
//!    narinfo.
//! 3. Finds what is live: the closure of the roots (`store-paths`, minus the
//!    roots only the revisions a pin's policy drops name, plus those of the
//!    retained revisions), each live narinfo's NAR and listing. Everything
//!    else among narinfos, `.ls` listings and `nar/` objects is a
//!    candidate; nothing else is ever touched.
//! 4. Sweeps: an object named in a mark whose grace period (written in the
//!    mark) has passed is deleted if it is still a candidate and was not
//!    written again since the mark was. An object that a narinfo in the
//!    bucket which stays names (its NAR, its references' narinfos) is kept
//!    whatever the marks say, so no narinfo ever loses what it names.
//!    Narinfos go first, a path's before those of its references, in
//!    `DeleteObjects` batches; then listings; then NARs. The sweep stops if
//!    it runs longer than the mark's `SweepWithin`; the rest waits for the
//!    next run. Swept marks are deleted.
//! 5. Marks: the candidates that no mark names yet are written to new
//!    marks, `prune-marks/<time>-<pid>-<n>` ([`mark`]), with the grace
//!    period and the sweep time bound.
//! 6. Last, the revisions each pin's policy drops leave its file, and the
//!    roots only they name leave `store-paths` (before them), each by
//!    compare-and-swap on a fresh read (`super::roots`), so a prune never
//!    loses a root or a revision a concurrent publish adds.
//!
//! Memory grows with the bucket by about a hundred bytes per object, none
//! of it a string per object: the listing is a [`table::Table`], the
//! narinfos' references numbers into it ([`table::Narinfos`]), marks are
//! read one at a time, and deletions named a batch at a time.
//!
//! A publish (`super::publish`) reads the marks right after its listing
//! and again at least every half [`REFRESH`] until its roots are up, and
//! before its narinfos and its roots go up; every object it
//! relies on (one it skipped because the bucket has it, or uploaded
//! earlier) that a mark names, it writes again, which makes it newer than
//! the mark and so never swept by it; if the mark's grace has (nearly)
//! passed, it waits `SweepWithin` for a sweep under way to end and writes
//! again whatever that sweep deleted. The docs (`doc/commands.md`) give the
//! argument for why no interleaving loses a narinfo's NAR or references.

mod mark;
mod table;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::bucket::Bucket;
use super::plan::File;
use super::{PublishError, too_large_error};
use crate::cache::STORE_PATHS;
use crate::format::cache_info::{self, CacheInfo};
use crate::format::narinfo::{self, NarInfo};
use crate::format::pin::{self, Pin};
use crate::format::store_path::{self, DEFAULT_STORE_DIR, StorePath};
use table::{Id, Narinfos, Table};

use mark::CLOCK;
pub use mark::{MARKS, MAX_KEYS, Mark};

/// A publish reads the marks again at least this often while it uploads
/// narinfos; a grace period must be longer.
pub const REFRESH: Duration = Duration::from_secs(60);

/// The default grace period: a day.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The default bound on a sweep's duration.
pub const DEFAULT_SWEEP_WITHIN: Duration = Duration::from_secs(10 * 60);

/// The most keys one `DeleteObjects` request takes.
const DELETE_BATCH: usize = 1000;

/// How a prune of a bucket runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long an object must stay unreachable after it is marked.
    pub grace: Duration,
    /// A sweep stops after this long; publishers wait this long for one.
    pub sweep_within: Duration,
    /// Say what would go; write and delete nothing.
    pub dry_run: bool,
    /// Prune a bucket whose pins and `store-paths` name no root (which
    /// deletes everything).
    pub allow_no_roots: bool,
    /// Narinfos read at once.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: DEFAULT_GRACE,
            sweep_within: DEFAULT_SWEEP_WITHIN,
            dry_run: false,
            allow_no_roots: false,
            jobs: 16,
        }
    }
}

/// What a prune of a bucket did (would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub dry_run: bool,
    /// Objects listed under the prefix.
    pub objects: usize,
    /// Live paths (narinfos) kept.
    pub live_paths: usize,
    /// Objects deleted (that would be, with `dry_run`: those whose mark
    /// is ripe).
    pub deleted: usize,
    pub deleted_bytes: u64,
    /// Candidates newly marked (that would be).
    pub marked: usize,
    pub marked_bytes: u64,
    /// Candidates a mark still waits on.
    pub waiting: usize,
    /// Requests sent (that would be sent).
    pub requests: usize,
    /// Per pin: (name, retained revisions, dropped revisions).
    pub pins: Vec<(String, Vec<u64>, Vec<u64>)>,
    /// What left (would leave) the pin files and `store-paths`.
    pub root_files: super::roots::Dropped,
}

/// What a prune needs of a bucket: [`Bucket`] is the real one; a test may
/// hand a synthetic one. Names are relative to the cache's prefix. The
/// root files are read and written through [`super::roots::RootFiles`].
pub trait Objects: super::roots::RootFiles {
    /// The cache's URL, for messages.
    fn url(&self) -> String;

    /// Every object under `sub` (a folder of the cache, or "" for all), in
    /// pages, each handed to `each` (name, size, when the bucket last wrote
    /// it in seconds since 1970) as it comes.
    fn list_each(
        &self,
        sub: &str,
        each: impl FnMut(String, u64, i64),
    ) -> impl Future<Output = Result<(), PublishError>>;

    fn get(&self, name: &str) -> impl Future<Output = Result<Vec<u8>, PublishError>>;

    fn put_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), PublishError>>;

    /// When the bucket last wrote `name`, by its clock; None if it is not
    /// there.
    fn modified(&self, name: &str) -> impl Future<Output = Result<Option<i64>, PublishError>>;

    /// Deletes `names` (at most [`DELETE_BATCH`]) in one `DeleteObjects`
    /// request; one already gone is no error.
    fn delete_batch(&self, names: &[String]) -> impl Future<Output = Result<(), PublishError>>;
}

impl Objects for Bucket {
    fn url(&self) -> String {
        self.location.to_string()
    }

    async fn list_each(
        &self,
        sub: &str,
        each: impl FnMut(String, u64, i64),
    ) -> Result<(), PublishError> {
        Bucket::list_each(self, sub, each).await
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, PublishError> {
        Bucket::get(self, name).await
    }

    async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), PublishError> {
        Bucket::put_bytes(self, name, bytes).await
    }

    async fn modified(&self, name: &str) -> Result<Option<i64>, PublishError> {
        Bucket::modified(self, name).await
    }

    async fn delete_batch(&self, names: &[String]) -> Result<(), PublishError> {
        Bucket::delete_all(self, names).await.map(|_| ())
    }
}

/// Prunes the cache at `objects`; see the module documentation.
///
/// Memory: the listing is held as a [`Table`] (the names in one buffer,
/// a few numbers per object), the narinfos as numbers of the objects they
/// name, marks are read one at a time and written [`MAX_KEYS`] names at a
/// time, and deletions are named a batch at a time; nothing holds a string
/// per object.
pub async fn prune(objects: &impl Objects, opts: &Options) -> Result<Report, PublishError> {
    let started = Instant::now();
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let url = objects.url();

    // 1. The bucket's time.
    let now = if opts.dry_run {
        None
    } else {
        objects
            .put_bytes(CLOCK, std::process::id().to_string().into_bytes())
            .await?;
        report.requests += 2;
        objects.modified(CLOCK).await?
    };

    // 2. One listing.
    let mut table = Table::default();
    let mut mark_names = Vec::new();
    let mut root_files = Vec::new();
    let mut has_info = false;
    objects
        .list_each("", |name, size, modified| {
            report.objects += 1;
            if table.push(&name, size, modified) {
                return;
            }
            if let Some(mark) = name.strip_prefix(&format!("{MARKS}/"))
                && name != CLOCK
                && !mark.contains('/')
            {
                mark_names.push((name, modified));
            } else if let Some(pin) = name.strip_prefix(&format!("{}/", pin::DIR))
                && pin::check_name(pin).is_ok()
            {
                root_files.push(name);
            } else if name == STORE_PATHS {
                root_files.push(name);
            } else if name == cache_info::FILE_NAME {
                has_info = true;
            }
        })
        .await?;
    table.finish();
    report.requests += report.objects.div_ceil(1000).max(1);
    // A dry run has no clock of its own: the newest object is the closest
    // the bucket tells without a write.
    let now = now.unwrap_or_else(|| {
        table
            .newest()
            .into_iter()
            .chain(mark_names.iter().map(|(_, t)| *t))
            .max()
            .unwrap_or(0)
    });

    // nix-cache-info first: a bucket without one is not a cache.
    if !has_info {
        return Err(PublishError::NotACacheBucket(url));
    }
    let info_bytes = objects.get(cache_info::FILE_NAME).await?;
    report.requests += 1;
    let info: CacheInfo =
        String::from_utf8_lossy(&info_bytes)
            .parse()
            .map_err(|e| PublishError::Cache {
                path: format!("{url}/{}", cache_info::FILE_NAME).into(),
                message: format!("{e}"),
            })?;
    let store_dir = info
        .store_dir
        .unwrap_or_else(|| DEFAULT_STORE_DIR.to_owned());

    // The roots: store-paths and the pins.
    let mut store_paths = Vec::new();
    let mut pins = Vec::new();
    for name in &root_files {
        let bytes = objects.get(name).await?;
        report.requests += 1;
        if name == STORE_PATHS {
            store_paths = super::roots::parse_store_paths(&url, &store_dir, &bytes)?;
        } else {
            let pin = Pin::parse(&String::from_utf8_lossy(&bytes), &store_dir).map_err(|e| {
                PublishError::Cache {
                    path: format!("{url}/{name}").into(),
                    message: e.to_string(),
                }
            })?;
            pins.push(pin);
        }
    }
    let pin_now = now.max(0) as u64;
    let retained = crate::ops::pins::files::retained_roots(&pins, pin_now);
    let dropped = crate::ops::pins::files::dropped_roots(&pins, pin_now);
    report.pins = pins
        .iter()
        .map(|p| {
            let (kept, gone) = p.split(pin_now);
            (
                p.name.clone(),
                kept.iter().map(|r| r.number).collect(),
                gone.iter().map(|r| r.number).collect(),
            )
        })
        .collect();
    let mut roots: Vec<StorePath> = store_paths
        .into_iter()
        .filter(|r| !dropped.contains(r))
        .collect();
    store_path::append_new(&mut roots, retained);
    if roots.is_empty() && !opts.allow_no_roots {
        return Err(PublishError::NoRoots(url));
    }

    // Every narinfo, read: what it refers to, and its NAR.
    let mut narinfos = Narinfos::new(&table);
    report.requests += narinfos.len();
    let ids: Vec<Id> = (0..narinfos.len()).map(|k| narinfos.id(k)).collect();
    let mut reads = futures::stream::iter(ids.iter().enumerate().map(|(k, &id)| {
        let name = table.name(id);
        async move { (k, name, objects.get(name).await) }
    }))
    .buffer_unordered(opts.jobs.max(1));
    while let Some((k, name, bytes)) = reads.next().await {
        let bytes = bytes?;
        if bytes.len() as u64 > narinfo::MAX_SIZE {
            return Err(too_large_error(&url, name, bytes.len() as u64, "narinfo"));
        }
        // A narinfo that does not parse names nothing we can tell: it is
        // kept if reachable, and protects nothing.
        if let Ok(info) = NarInfo::parse(&String::from_utf8_lossy(&bytes), &store_dir) {
            narinfos.read(
                &table,
                k,
                info.references.iter().map(|r| r.hash_part()),
                &info.url,
            );
        }
    }
    drop(reads);
    drop(ids);

    // 3. What is live.
    let roots: Vec<Id> = roots
        .iter()
        .filter_map(|r| table.narinfo(r.hash_part()))
        .collect();
    report.live_paths = narinfos.mark_live(&mut table, roots);

    // 4. Sweep the ripe marks: read one at a time, each name looked up in
    // the table and the mark's text dropped.
    let mut ripe = Vec::new();
    for (name, time) in &mark_names {
        let bytes = objects.get(name).await?;
        report.requests += 1;
        let Some(mut mark) = Mark::parse(name, *time, String::from_utf8_lossy(&bytes).into_owned())
        else {
            continue;
        };
        let is_ripe = mark.ripe(now);
        for key in mark.keys() {
            if let Some(id) = table.find(key) {
                table.named_by_mark(id, mark.time, is_ripe);
            }
        }
        if is_ripe {
            mark.forget_keys();
            ripe.push(mark);
        }
    }
    narinfos.protect(&mut table);
    let order = narinfos
        .deletion_order(&table)
        .map_err(|hashes| PublishError::BucketCycle(url.clone(), hashes.join(", ")))?;
    drop(narinfos);
    let budget = ripe
        .iter()
        .map(|m| Duration::from_secs(m.sweep_within))
        .min()
        .unwrap_or(opts.sweep_within);
    // A dry run counts every batch as deleted; a real one stops when the
    // marks' sweep bound has passed, and the rest waits for the next run.
    let mut swept_all = true;
    'sweep: for stage in &order {
        for batch in stage.chunks(DELETE_BATCH) {
            if !opts.dry_run {
                if started.elapsed() > budget {
                    swept_all = false;
                    break 'sweep;
                }
                let names: Vec<String> =
                    batch.iter().map(|&id| table.name(id).to_owned()).collect();
                objects.delete_batch(&names).await?;
            }
            report.requests += 1;
            report.deleted += batch.len();
            for &id in batch {
                report.deleted_bytes += table.size(id);
                table.set_gone(id);
            }
        }
    }
    // A swept mark stays for another grace period: a publish that listed
    // the bucket before the sweep learns from it what to upload again (see
    // the module documentation).
    if swept_all && !opts.dry_run {
        let spent: Vec<String> = ripe
            .iter()
            .filter(|m| m.spent(now))
            .map(|m| m.name.clone())
            .collect();
        for batch in spent.chunks(DELETE_BATCH) {
            report.requests += 1;
            objects.delete_batch(batch).await?;
        }
    }
    drop(order);

    // 5. Mark what no mark names yet, MAX_KEYS names to a mark.
    let ripe_waits = !swept_all;
    let unmarked =
        |id: Id| table.is_candidate(id) && !table.is_gone(id) && !table.is_waiting(id, ripe_waits);
    report.waiting = table
        .ids()
        .filter(|&id| {
            table.is_candidate(id) && !table.is_gone(id) && table.is_waiting(id, ripe_waits)
        })
        .count();
    let mut new_marks = table.ids().filter(|&id| unmarked(id)).peekable();
    let mut written = 0;
    while new_marks.peek().is_some() {
        let chunk: Vec<Id> = new_marks.by_ref().take(MAX_KEYS).collect();
        report.marked += chunk.len();
        report.marked_bytes += chunk.iter().map(|&id| table.size(id)).sum::<u64>();
        report.requests += 1;
        if !opts.dry_run {
            let text = Mark::text(
                opts.grace.as_secs(),
                opts.sweep_within.as_secs(),
                chunk.iter().map(|&id| table.name(id)),
            );
            objects
                .put_bytes(&Mark::object_name(now, written), text.into_bytes())
                .await?;
        }
        written += 1;
    }

    // 6. What the policies drop leaves the pin files and store-paths.
    report.root_files = super::roots::drop_revisions(
        objects,
        &url,
        &store_dir,
        &root_files,
        pin_now,
        opts.dry_run,
    )
    .await?;
    report.requests += report.root_files.requests;
    Ok(report)
}

/// What a publish relies on: a file of the cache, or a narinfo's bytes.
pub(super) enum Relied<'a> {
    File(&'a File),
    Bytes(&'a [u8]),
}

/// The marks a publish has read, and what it wrote again for them.
#[derive(Default)]
pub(super) struct KeepAlive {
    seen: HashSet<String>,
    /// When the marks were last read.
    pub(super) checked: Option<Instant>,
    /// Objects written again.
    pub(super) rewritten: usize,
}

impl KeepAlive {
    /// Whether the marks should be read again before more narinfos go up.
    pub(super) fn due(&self) -> bool {
        self.checked.is_none_or(|t| t.elapsed() >= REFRESH / 2)
    }

    /// Reads the marks not seen yet and writes again every object of
    /// `relied` they name, so that no sweep deletes it; if a mark is ripe
    /// (a sweep may be under way with an older listing), waits for such a
    /// sweep to end and writes again what it deleted.
    pub(super) async fn check(
        &mut self,
        bucket: &Bucket,
        relied: &BTreeMap<&str, Relied<'_>>,
    ) -> Result<(), PublishError> {
        self.checked = Some(Instant::now());
        let mut names = Vec::new();
        bucket
            .list_each(MARKS, |name, _, modified| {
                if name != CLOCK && !self.seen.contains(&name) {
                    names.push((name, modified));
                }
            })
            .await?;
        let mut named: Vec<(&str, &Relied<'_>)> = Vec::new();
        let mut marks = Vec::new();
        for (name, time) in names {
            let bytes = match bucket.get(&name).await {
                Ok(bytes) => bytes,
                // Swept since it was listed: what it named is gone or kept.
                Err(_) if bucket.modified(&name).await?.is_none() => continue,
                Err(e) => return Err(e),
            };
            self.seen.insert(name.clone());
            if let Some(mut mark) =
                Mark::parse(&name, time, String::from_utf8_lossy(&bytes).into_owned())
            {
                for key in mark.keys() {
                    if let Some((k, r)) = relied.get_key_value(key) {
                        named.push((k, r));
                    }
                }
                mark.forget_keys();
                marks.push(mark);
            }
        }
        if named.is_empty() {
            return Ok(());
        }
        for (name, relied) in &named {
            rewrite(bucket, name, relied).await?;
        }
        self.rewritten += named.len();
        // The bucket's time now: when it wrote the first of them again.
        let now = bucket.modified(named[0].0).await?.unwrap_or(i64::MAX);
        let wait = marks
            .iter()
            .filter(|m| m.ripe(now))
            .map(|m| m.sweep_within)
            .max();
        if let Some(wait) = wait {
            tokio::time::sleep(Duration::from_secs(wait + 1)).await;
            for (name, relied) in &named {
                if bucket.modified(name).await?.is_none() {
                    rewrite(bucket, name, relied).await?;
                }
            }
        }
        Ok(())
    }
}

async fn rewrite(bucket: &Bucket, name: &str, relied: &Relied<'_>) -> Result<(), PublishError> {
    match relied {
        Relied::File(file) => bucket.put_file(file).await,
        Relied::Bytes(bytes) => bucket.put_bytes(name, bytes.to_vec()).await,
    }
}
