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
//! 5. Marks: the candidates that no mark names yet are written to a new
//!    mark, `prune-marks/<time>-<pid>`, with the grace period and the sweep
//!    time bound.
//! 6. Last, the revisions each pin's policy drops leave its file, and the
//!    roots only they name leave `store-paths` (before them), each by
//!    compare-and-swap on a fresh read (`super::roots`), so a prune never
//!    loses a root or a revision a concurrent publish adds.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::bucket::Bucket;
use super::plan::File;
use super::{PublishError, too_large_error};
use crate::cache::STORE_PATHS;
use crate::format::cache_info::{self, CacheInfo};
use crate::format::narinfo::{self, NarInfo};
use crate::format::pin::{self, Pin};
use crate::format::store_path::{self, DEFAULT_STORE_DIR, StorePath, is_hash_part};
use crate::support::graph::{Cycle, Graph};

/// The folder of the bucket's marks.
pub const MARKS: &str = "prune-marks";

/// The object a prune writes to learn the bucket's time.
const CLOCK: &str = "prune-marks/clock";

/// A publish reads the marks again at least this often while it uploads
/// narinfos; a grace period must be longer.
pub const REFRESH: Duration = Duration::from_secs(60);

/// The default grace period: a day.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The default bound on a sweep's duration.
pub const DEFAULT_SWEEP_WITHIN: Duration = Duration::from_secs(10 * 60);

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

/// A mark: when the bucket wrote it, its terms, and the keys it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    /// By the bucket's clock, seconds since 1970.
    pub time: i64,
    pub grace: u64,
    pub sweep_within: u64,
    pub keys: Vec<String>,
}

impl Mark {
    /// The mark's text: its terms, then one key per line.
    pub fn text(grace: u64, sweep_within: u64, keys: &[String]) -> String {
        let mut text = format!("Grace: {grace}\nSweepWithin: {sweep_within}\n\n");
        for key in keys {
            text.push_str(key);
            text.push('\n');
        }
        text
    }

    /// Reads a mark's text; None if it is not one (then it is left alone).
    pub fn parse(name: &str, time: i64, text: &str) -> Option<Mark> {
        let (head, body) = text.split_once("\n\n")?;
        let mut grace = None;
        let mut sweep_within = None;
        for line in head.lines() {
            match line.split_once(": ")? {
                ("Grace", v) => grace = Some(v.parse().ok()?),
                ("SweepWithin", v) => sweep_within = Some(v.parse().ok()?),
                _ => {}
            }
        }
        Some(Mark {
            name: name.to_owned(),
            time,
            grace: grace?,
            sweep_within: sweep_within?,
            keys: body
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Whether a sweep at `now` may delete what this mark names.
    pub fn ripe(&self, now: i64) -> bool {
        now.saturating_sub(self.time) >= self.grace as i64
    }
}

/// An object of the bucket that a prune may delete: a narinfo, a listing
/// or a NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Narinfo,
    Listing,
    Nar,
}

fn kind_of(name: &str) -> Option<Kind> {
    if let Some(nar) = name.strip_prefix("nar/") {
        return (!nar.is_empty() && !nar.contains('/')).then_some(Kind::Nar);
    }
    if name.contains('/') {
        return None;
    }
    match name.rsplit_once('.') {
        Some((hash, "narinfo")) if is_hash_part(hash) => Some(Kind::Narinfo),
        Some((hash, "ls")) if is_hash_part(hash) => Some(Kind::Listing),
        _ => None,
    }
}

/// What the listing says of one object.
#[derive(Debug, Clone, Copy)]
struct Listed {
    size: u64,
    modified: i64,
}

/// A narinfo, as far as the prune needs it.
struct Node {
    references: Vec<String>,
    /// The `nar/…` object its URL names, if it names one in the cache.
    nar: Option<String>,
}

/// Prunes the cache at `bucket`'s prefix; see the module documentation.
pub(super) async fn prune(bucket: &Bucket, opts: &Options) -> Result<Report, PublishError> {
    let started = Instant::now();
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let url = bucket.location.to_string();

    // 1. The bucket's time.
    let now = if opts.dry_run {
        None
    } else {
        bucket
            .put_bytes(CLOCK, std::process::id().to_string().into_bytes())
            .await?;
        report.requests += 2;
        bucket.modified(CLOCK).await?
    };

    // 2. One listing.
    let mut listed: HashMap<String, Listed> = HashMap::new();
    let mut mark_names = Vec::new();
    let mut pin_names = Vec::new();
    let mut other_objects = 0usize;
    bucket
        .list_each("", |name, size, modified| {
            if kind_of(&name).is_some() {
                listed.insert(name, Listed { size, modified });
            } else {
                if let Some(mark) = name.strip_prefix(&format!("{MARKS}/"))
                    && name != CLOCK
                    && !mark.contains('/')
                {
                    mark_names.push((name.clone(), modified));
                } else if let Some(pin) = name.strip_prefix(&format!("{}/", pin::DIR))
                    && pin::check_name(pin).is_ok()
                {
                    pin_names.push(name.clone());
                } else if name == cache_info::FILE_NAME || name == STORE_PATHS {
                    pin_names.push(name.clone());
                }
                other_objects += 1;
            }
        })
        .await?;
    report.objects = listed.len() + other_objects;
    report.requests += report.objects.div_ceil(1000).max(1);
    // A dry run has no clock of its own: the newest object is the closest
    // the bucket tells without a write.
    let now = now.unwrap_or_else(|| {
        listed
            .values()
            .map(|l| l.modified)
            .chain(mark_names.iter().map(|(_, t)| *t))
            .max()
            .unwrap_or(0)
    });

    // nix-cache-info first: a bucket without one is not a cache.
    if !pin_names.iter().any(|n| n == cache_info::FILE_NAME) {
        return Err(PublishError::NotACacheBucket(url));
    }
    let info_bytes = bucket.get(cache_info::FILE_NAME).await?;
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
    for name in &pin_names {
        if name == cache_info::FILE_NAME {
            continue;
        }
        let bytes = bucket.get(name).await?;
        report.requests += 1;
        let text = String::from_utf8_lossy(&bytes);
        let bad = |message: String| PublishError::Cache {
            path: format!("{url}/{name}").into(),
            message,
        };
        if name == STORE_PATHS {
            for line in text.lines().filter(|l| !l.is_empty()) {
                let path = StorePath::parse(line, &store_dir)
                    .map_err(|_| bad(format!("'{line}' is not a store path in {store_dir}")))?;
                store_path::append_new(&mut store_paths, [path]);
            }
        } else {
            pins.push(Pin::parse(&text, &store_dir).map_err(|e| bad(e.to_string()))?);
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

    // Every narinfo, read.
    let narinfo_names: Vec<String> = listed
        .keys()
        .filter(|n| kind_of(n) == Some(Kind::Narinfo))
        .cloned()
        .collect();
    report.requests += narinfo_names.len();
    let mut nodes: HashMap<String, Node> = HashMap::with_capacity(narinfo_names.len());
    let mut reads = futures::stream::iter(narinfo_names.into_iter().map(|name| async move {
        let bytes = bucket.get(&name).await;
        (name, bytes)
    }))
    .buffer_unordered(opts.jobs.max(1));
    while let Some((name, bytes)) = reads.next().await {
        let bytes = bytes?;
        if bytes.len() as u64 > narinfo::MAX_SIZE {
            return Err(too_large_error(&url, &name, bytes.len() as u64, "narinfo"));
        }
        let hash = name.trim_end_matches(".narinfo").to_owned();
        // A narinfo that does not parse names nothing we can tell: it is
        // kept if reachable, and protects nothing.
        let node = match NarInfo::parse(&String::from_utf8_lossy(&bytes), &store_dir) {
            Ok(info) => Node {
                references: info
                    .references
                    .iter()
                    .map(|r| r.hash_part().to_owned())
                    .collect(),
                nar: nar_object(&info.url),
            },
            Err(_) => Node {
                references: Vec::new(),
                nar: None,
            },
        };
        nodes.insert(hash, node);
    }
    drop(reads);

    // 3. What is live.
    let mut live: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = roots.iter().map(|r| r.hash_part().to_owned()).collect();
    while let Some(hash) = todo.pop() {
        let Some(node) = nodes.get(&hash) else {
            continue;
        };
        if live.insert(hash.clone()) {
            todo.extend(node.references.iter().cloned());
        }
    }
    report.live_paths = live.len();
    let live_nars: HashSet<&str> = live
        .iter()
        .filter_map(|h| nodes[h].nar.as_deref())
        .collect();
    let is_candidate = |name: &str| match kind_of(name) {
        Some(Kind::Narinfo) => !live.contains(name.trim_end_matches(".narinfo")),
        Some(Kind::Listing) => !live.contains(name.trim_end_matches(".ls")),
        Some(Kind::Nar) => !live_nars.contains(name),
        None => false,
    };

    // 4. Sweep the ripe marks.
    let mut marks = Vec::new();
    for (name, time) in &mark_names {
        let bytes = bucket.get(name).await?;
        report.requests += 1;
        if let Some(mark) = Mark::parse(name, *time, &String::from_utf8_lossy(&bytes)) {
            marks.push(mark);
        }
    }
    let (ripe, pending): (Vec<&Mark>, Vec<&Mark>) = marks.iter().partition(|m| m.ripe(now));
    let mut doomed: HashSet<&str> = HashSet::new();
    for mark in &ripe {
        for key in &mark.keys {
            // Strictly older than the mark: the listing's times are in
            // seconds, and a write in the mark's second may follow it.
            if let Some(l) = listed.get(key)
                && l.modified < mark.time
                && is_candidate(key)
            {
                doomed.insert(key.as_str());
            }
        }
    }
    protect(&mut doomed, &listed, &nodes);
    let order = deletion_order(&doomed, &nodes)
        .map_err(|hashes| PublishError::BucketCycle(url.clone(), hashes.join(", ")))?;
    report.deleted = order.iter().map(Vec::len).sum();
    report.deleted_bytes = order.iter().flatten().map(|n| listed[n].size).sum();
    report.requests += order.iter().map(|s| s.len().div_ceil(1000)).sum::<usize>();
    let budget = ripe
        .iter()
        .map(|m| Duration::from_secs(m.sweep_within))
        .min()
        .unwrap_or(opts.sweep_within);
    let mut swept_all = true;
    if !opts.dry_run {
        for stage in &order {
            for batch in stage.chunks(1000) {
                if started.elapsed() > budget {
                    swept_all = false;
                    break;
                }
                bucket.delete_all(batch).await?;
            }
        }
        // A swept mark stays for another grace period: a publish that
        // listed the bucket before the sweep learns from it what to upload
        // again (see the module documentation).
        let spent: Vec<String> = ripe
            .iter()
            .filter(|m| now.saturating_sub(m.time) >= 2 * m.grace as i64)
            .map(|m| m.name.clone())
            .collect();
        if swept_all && !spent.is_empty() {
            report.requests += spent.len().div_ceil(1000);
            bucket.delete_all(&spent).await?;
        }
    }

    // 5. Mark what no mark names yet.
    let gone: HashSet<&str> = order.iter().flatten().map(String::as_str).collect();
    let waiting: HashSet<&str> = pending
        .iter()
        .chain(if swept_all { [].iter() } else { ripe.iter() })
        .flat_map(|m| m.keys.iter().map(String::as_str))
        .collect();
    let mut new_marks: Vec<String> = listed
        .keys()
        .filter(|n| is_candidate(n) && !gone.contains(n.as_str()) && !waiting.contains(n.as_str()))
        .cloned()
        .collect();
    new_marks.sort();
    report.waiting = listed
        .keys()
        .filter(|n| is_candidate(n) && !gone.contains(n.as_str()) && waiting.contains(n.as_str()))
        .count();
    report.marked = new_marks.len();
    report.marked_bytes = new_marks.iter().map(|n| listed[n].size).sum();
    if !new_marks.is_empty() {
        report.requests += 1;
        if !opts.dry_run {
            let text = Mark::text(
                opts.grace.as_secs(),
                opts.sweep_within.as_secs(),
                &new_marks,
            );
            let name = format!("{MARKS}/{now}-{}", std::process::id());
            bucket.put_bytes(&name, text.into_bytes()).await?;
        }
    }

    // 6. What the policies drop leaves the pin files and store-paths.
    report.root_files =
        super::roots::drop_revisions(bucket, &store_dir, &pin_names, pin_now, opts.dry_run).await?;
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
            if let Some(mark) = Mark::parse(&name, time, &String::from_utf8_lossy(&bytes)) {
                for key in &mark.keys {
                    if let Some((k, r)) = relied.get_key_value(key.as_str()) {
                        named.push((k, r));
                    }
                }
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

/// The `nar/…` object a narinfo's URL names, if it is one of the cache's.
fn nar_object(url: &str) -> Option<String> {
    let url = url.trim_start_matches("./");
    (kind_of(url) == Some(Kind::Nar)).then(|| url.to_owned())
}

/// Keeps out of `doomed` whatever a narinfo that stays in the bucket names:
/// its NAR, its listing and the narinfos of its references, transitively.
fn protect(
    doomed: &mut HashSet<&str>,
    listed: &HashMap<String, Listed>,
    nodes: &HashMap<String, Node>,
) {
    let mut todo: Vec<&str> = listed
        .keys()
        .filter(|n| kind_of(n) == Some(Kind::Narinfo) && !doomed.contains(n.as_str()))
        .map(String::as_str)
        .collect();
    let mut seen: HashSet<&str> = todo.iter().copied().collect();
    while let Some(name) = todo.pop() {
        let hash = name.trim_end_matches(".narinfo");
        let Some(node) = nodes.get(hash) else {
            continue;
        };
        if let Some(nar) = &node.nar {
            doomed.remove(nar.as_str());
        }
        if let Some((listing, _)) = listed.get_key_value(&format!("{hash}.ls")) {
            doomed.remove(listing.as_str());
        }
        for reference in &node.references {
            if let Some((key, _)) = listed.get_key_value(&narinfo::file_name(reference))
                && seen.insert(key.as_str())
            {
                doomed.remove(key.as_str());
                todo.push(key.as_str());
            }
        }
    }
}

/// The order `doomed` goes in: narinfos in levels (a path's before those of
/// the paths it refers to, the reference order of `support::graph` walked
/// down), then listings, then NARs.
///
/// Cycle policy: refuse, before anything is deleted (the hash parts on the
/// cycle are the error). No order would delete a narinfo on a cycle before
/// what it refers to, and Nix never writes one.
fn deletion_order(
    doomed: &HashSet<&str>,
    nodes: &HashMap<String, Node>,
) -> Result<Vec<Vec<String>>, Vec<String>> {
    let narinfos: Vec<&str> = doomed
        .iter()
        .copied()
        .filter(|n| kind_of(n) == Some(Kind::Narinfo))
        .map(|n| n.trim_end_matches(".narinfo"))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .collect();
    let graph = Graph::by_key(&narinfos, |i| {
        nodes.get(narinfos[i]).map_or(Vec::new(), |n| {
            n.references.iter().map(String::as_str).collect()
        })
    });
    let levels = graph.levels().map_err(|Cycle(on)| {
        on.into_iter()
            .map(|i| narinfos[i].to_owned())
            .collect::<Vec<_>>()
    })?;
    let mut stages: Vec<Vec<String>> = levels
        .groups()
        .into_iter()
        .rev()
        .map(|level| {
            level
                .into_iter()
                .map(|i| narinfo::file_name(narinfos[i]))
                .collect()
        })
        .collect();
    for kind in [Kind::Listing, Kind::Nar] {
        let mut stage: Vec<String> = doomed
            .iter()
            .filter(|n| kind_of(n) == Some(kind))
            .map(|n| n.to_string())
            .collect();
        stage.sort();
        stages.push(stage);
    }
    stages.retain(|s| !s.is_empty());
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0c4l9ivaa1z6k0bjhl5hbnivl6ysw5qn";
    const B: &str = "1b9p07z77phvv2hf6gm9f28syrdlh7bi";

    fn node(references: &[&str], nar: &str) -> Node {
        Node {
            references: references.iter().map(|r| r.to_string()).collect(),
            nar: Some(nar.to_owned()),
        }
    }

    fn listed(names: &[&str]) -> HashMap<String, Listed> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Listed {
                        size: 1,
                        modified: 0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn only_narinfos_listings_and_nars_are_ever_candidates() {
        assert_eq!(kind_of(&format!("{A}.narinfo")), Some(Kind::Narinfo));
        assert_eq!(kind_of(&format!("{A}.ls")), Some(Kind::Listing));
        assert_eq!(kind_of("nar/x.nar.zst"), Some(Kind::Nar));
        for other in [
            "nix-cache-info",
            "store-paths",
            "pins/release",
            "prune-marks/1-2",
            "debuginfo/ab.debug",
            "log/x.drv",
            "nar/sub/x.nar",
            "x.narinfo",
            "other/a.narinfo",
        ] {
            assert_eq!(kind_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_mark_reads_back_what_it_wrote_and_ripens_after_its_grace() {
        let keys = vec![format!("{A}.narinfo"), "nar/x.nar".to_owned()];
        let mark = Mark::parse("m", 100, &Mark::text(60, 5, &keys)).unwrap();
        assert_eq!(mark.keys, keys);
        assert!(!mark.ripe(159));
        assert!(mark.ripe(160));
        assert_eq!(Mark::parse("m", 0, "not a mark"), None);
    }

    #[test]
    fn what_a_narinfo_that_stays_names_is_never_deleted() {
        // B refers to A; A's narinfo is doomed, B's (newer than the mark,
        // say, from a publish under way) is not: A and its NAR stay.
        let nodes = HashMap::from([
            (A.to_owned(), node(&[], "nar/a.nar")),
            (B.to_owned(), node(&[A], "nar/b.nar")),
        ]);
        let a = format!("{A}.narinfo");
        let b = format!("{B}.narinfo");
        let all = listed(&[&a, &b, "nar/a.nar", "nar/b.nar", &format!("{A}.ls")]);
        let ls = format!("{A}.ls");
        let mut doomed: HashSet<&str> = HashSet::from([a.as_str(), "nar/a.nar", ls.as_str()]);
        protect(&mut doomed, &all, &nodes);
        assert!(doomed.is_empty(), "{doomed:?}");

        // Both doomed: both go, B's narinfo before A's, NARs last.
        let mut doomed: HashSet<&str> =
            HashSet::from([a.as_str(), b.as_str(), "nar/a.nar", "nar/b.nar"]);
        protect(&mut doomed, &all, &nodes);
        assert_eq!(
            deletion_order(&doomed, &nodes).unwrap(),
            vec![
                vec![b.clone()],
                vec![a.clone()],
                vec!["nar/a.nar".to_owned(), "nar/b.nar".to_owned()]
            ]
        );
    }
}
