//! `prune s3://…` on a bucket of a million objects, in bounded memory
//! (issue #24): the prune runs against a synthetic bucket whose listing,
//! narinfos and marks are made up as they are asked for, so that the test
//! measures the prune's memory, not the bucket's, and runs in seconds
//! rather than the hours a million uploads to the S3 server would take.
//!
//! The bucket holds 333,334 paths (a narinfo, a `.ls` listing and a NAR
//! each: 1,000,002 objects, and `nix-cache-info`, `store-paths` and the
//! marks). The paths form releases of 1,000 paths, 20 reference levels
//! deep; `store-paths` names the last path of each release of the newer
//! half, so the older half is garbage.
//! The synthetic bucket lists in pages' key order, as S3 does, counts
//! requests, and checks at every `DeleteObjects` that no narinfo left in
//! the bucket names a deleted object and that nothing live is deleted.
//!
//! The bound asserted is 160 MiB of heap for a million objects, against
//! what the prune allocated on the test's thread (`peak_alloc`); the
//! numbers each run measured are printed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use mk_binary_cache::ops::publish::PublishError;
use mk_binary_cache::ops::publish::roots::{RootFiles, Tagged};
use mk_binary_cache::ops::publish::sweep::{self, MAX_KEYS, Mark, Objects, Options, Report};

use crate::peak_alloc::peak_bytes;

const RELEASE: usize = 1000;
const RELEASES: usize = 334;
const PATHS: usize = RELEASES * RELEASE - 666;
/// The releases from this one on are live.
const LIVE_FROM: usize = RELEASES / 2;
const GRACE: u64 = 3600;
/// When the bucket wrote every object of the cache.
const WRITTEN: i64 = 1_700_000_000;
const MIB: usize = 1 << 20;
const BOUND: usize = 160 * MIB;

const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// `first`, then `n` in `width - 1` base-32 digits: sorts as `n` does.
fn digits(first: char, n: usize, width: usize) -> String {
    let mut out = vec![b'0'; width];
    out[0] = first as u8;
    let mut n = n;
    for d in out[1..].iter_mut().rev() {
        *d = NIX32[n % 32];
        n /= 32;
    }
    String::from_utf8(out).unwrap()
}

fn undigits(s: &str) -> usize {
    s.bytes().skip(1).fold(0, |n, b| {
        n * 32 + NIX32.iter().position(|&c| c == b).unwrap()
    })
}

fn hash(i: usize) -> String {
    digits('0', i, 32)
}

fn nar_hash(i: usize) -> String {
    digits('1', i, 52)
}

/// Paths of one layer of a release: a path refers to four of the layer
/// below, so a release is 20 reference levels deep, as real closures are
/// tens, not thousands.
const LAYER: usize = 50;
/// Which paths of the layer below a path refers to, by slot offset.
const SPREAD: [usize; 4] = [0, 1, 7, 20];

/// The first path of `i`'s release and the one past its last.
fn release_of(i: usize) -> (usize, usize) {
    let start = i - i % RELEASE;
    (start, (start + RELEASE).min(PATHS))
}

/// The paths `i` refers to. The last path of a release (its root) refers
/// to the rest of its layer; every other path but those of layer 0 to four
/// paths of the layer below, spread so that the root reaches its whole
/// release.
fn references(i: usize) -> Vec<usize> {
    let (start, end) = release_of(i);
    let (p, slot) = (i - start, (i - start) % LAYER);
    if i == end - 1 {
        (i - slot..i).collect()
    } else if p >= LAYER {
        let below = start + p - slot - LAYER;
        SPREAD.iter().map(|d| below + (slot + d) % LAYER).collect()
    } else {
        Vec::new()
    }
}

/// The paths that refer to `j`: the inverse of `references`, in O(1).
fn referrers(j: usize) -> Vec<usize> {
    let (start, end) = release_of(j);
    let (p, slot) = (j - start, (j - start) % LAYER);
    let above = start + p - slot + LAYER;
    let mut out: Vec<usize> = SPREAD
        .iter()
        .map(|d| above + (slot + LAYER - d) % LAYER)
        .filter(|&i| i < end - 1)
        .collect();
    if j != end - 1 && (end - 1 - start) / LAYER == p / LAYER {
        out.push(end - 1);
    }
    out.sort();
    out.dedup();
    out
}

fn is_live(i: usize) -> bool {
    i / RELEASE >= LIVE_FROM
}

/// The three objects of path `i`: its listing, narinfo and NAR, by number
/// `3i`, `3i + 1`, `3i + 2`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Object {
    Listing(usize),
    Narinfo(usize),
    Nar(usize),
}

impl Object {
    fn number(self) -> usize {
        match self {
            Object::Listing(i) => 3 * i,
            Object::Narinfo(i) => 3 * i + 1,
            Object::Nar(i) => 3 * i + 2,
        }
    }

    fn name(self) -> String {
        match self {
            Object::Listing(i) => format!("{}.ls", hash(i)),
            Object::Narinfo(i) => format!("{}.narinfo", hash(i)),
            Object::Nar(i) => format!("nar/{}.nar.zst", nar_hash(i)),
        }
    }

    fn parse(name: &str) -> Option<Object> {
        if let Some(nar) = name.strip_prefix("nar/") {
            return Some(Object::Nar(undigits(nar.strip_suffix(".nar.zst")?)));
        }
        let (h, ext) = name.split_once('.')?;
        match ext {
            "ls" => Some(Object::Listing(undigits(h))),
            "narinfo" => Some(Object::Narinfo(undigits(h))),
            _ => None,
        }
    }

    fn size(self) -> u64 {
        match self {
            Object::Listing(_) => 120,
            Object::Narinfo(_) => 500,
            Object::Nar(_) => 40_000,
        }
    }
}

fn narinfo(i: usize) -> String {
    let refs: Vec<String> = references(i)
        .into_iter()
        .map(|r| format!("{}-p{r}", hash(r)))
        .collect();
    format!(
        "StorePath: /nix/store/{}-p{i}\nURL: nar/{n}.nar.zst\nCompression: zstd\n\
         FileHash: sha256:{n}\nFileSize: 40000\nNarHash: sha256:{n}\nNarSize: 90000\n\
         References: {}\n",
        hash(i),
        refs.join(" "),
        n = nar_hash(i),
    )
}

/// A mark as the synthetic bucket keeps it: its terms and the numbers of
/// the objects it names (what the prune wrote, without its text).
struct StoredMark {
    time: i64,
    grace: u64,
    sweep_within: u64,
    objects: Vec<u32>,
}

/// The bucket. Single-threaded: the prune runs on the test's thread.
struct Synthetic {
    now: Cell<i64>,
    deleted: RefCell<Vec<bool>>,
    marks: RefCell<BTreeMap<String, StoredMark>>,
    clock: Cell<Option<i64>>,
    listings: Cell<usize>,
    gets: Cell<usize>,
    delete_requests: Cell<usize>,
    /// What went wrong, the first few.
    broken: RefCell<Vec<String>>,
}

impl Synthetic {
    fn new(now: i64) -> Synthetic {
        Synthetic {
            now: Cell::new(now),
            deleted: RefCell::new(vec![false; 3 * PATHS]),
            marks: RefCell::new(BTreeMap::new()),
            clock: Cell::new(None),
            listings: Cell::new(0),
            gets: Cell::new(0),
            delete_requests: Cell::new(0),
            broken: RefCell::new(Vec::new()),
        }
    }

    fn gone(&self, o: Object) -> bool {
        self.deleted.borrow()[o.number()]
    }

    fn complain(&self, what: String) {
        let mut broken = self.broken.borrow_mut();
        if broken.len() < 10 {
            broken.push(what);
        }
    }

    fn store_paths(&self) -> String {
        (LIVE_FROM..RELEASES)
            .map(|r| ((r + 1) * RELEASE - 1).min(PATHS - 1))
            .map(|i| format!("/nix/store/{}-p{i}\n", hash(i)))
            .collect()
    }

    /// Marks every object of the dead releases, as a run at `time` would
    /// have (in marks of at most `MAX_KEYS`).
    fn with_dead_marked(self, time: i64) -> Synthetic {
        let dead: Vec<u32> = (0..LIVE_FROM * RELEASE)
            .flat_map(|i| [Object::Listing(i), Object::Narinfo(i), Object::Nar(i)])
            .map(|o| o.number() as u32)
            .collect();
        for (n, chunk) in dead.chunks(MAX_KEYS).enumerate() {
            self.marks.borrow_mut().insert(
                format!("prune-marks/{time}-1-{n}"),
                StoredMark {
                    time,
                    grace: GRACE,
                    sweep_within: 600,
                    objects: chunk.to_vec(),
                },
            );
        }
        self
    }
}

fn not_found(name: &str) -> PublishError {
    PublishError::Cache {
        path: format!("s3://synthetic/{name}").into(),
        message: "no such object".to_owned(),
    }
}

/// The synthetic bucket has no pin, so a prune drops no revision and never
/// reads or writes a root file by compare-and-swap.
impl RootFiles for Synthetic {
    async fn get_tagged(&self, name: &str) -> Result<Tagged, PublishError> {
        panic!("a prune of a bucket without pins read {name} to change it")
    }

    async fn put_if(&self, name: &str, _: Vec<u8>, _: Option<&str>) -> Result<bool, PublishError> {
        panic!("a prune of a bucket without pins wrote {name}")
    }
}

impl Objects for Synthetic {
    fn url(&self) -> String {
        "s3://synthetic".to_owned()
    }

    async fn list_each(
        &self,
        sub: &str,
        mut each: impl FnMut(String, u64, i64),
    ) -> Result<(), PublishError> {
        assert_eq!(sub, "", "a prune lists the whole cache, once");
        self.listings.set(self.listings.get() + 1);
        // In key order, as S3 lists: `0…` hash parts, then `nar/`, then
        // `nix-cache-info`, `prune-marks/`, `store-paths`.
        for i in 0..PATHS {
            for o in [Object::Listing(i), Object::Narinfo(i)] {
                if !self.gone(o) {
                    each(o.name(), o.size(), WRITTEN);
                }
            }
        }
        for i in 0..PATHS {
            if !self.gone(Object::Nar(i)) {
                each(Object::Nar(i).name(), Object::Nar(i).size(), WRITTEN);
            }
        }
        each("nix-cache-info".to_owned(), 21, WRITTEN);
        let mut marks: Vec<(String, i64)> = self
            .marks
            .borrow()
            .iter()
            .map(|(name, m)| (name.clone(), m.time))
            .collect();
        if let Some(t) = self.clock.get() {
            marks.push(("prune-marks/clock".to_owned(), t));
        }
        marks.sort();
        for (name, time) in marks {
            each(name, 100, time);
        }
        each("store-paths".to_owned(), 100, WRITTEN);
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, PublishError> {
        self.gets.set(self.gets.get() + 1);
        if name == "nix-cache-info" {
            return Ok(b"StoreDir: /nix/store\n".to_vec());
        }
        if name == "store-paths" {
            return Ok(self.store_paths().into_bytes());
        }
        if let Some(mark) = self.marks.borrow().get(name) {
            let names: Vec<String> = mark
                .objects
                .iter()
                .map(|&n| {
                    let i = n as usize / 3;
                    [Object::Listing(i), Object::Narinfo(i), Object::Nar(i)][n as usize % 3].name()
                })
                .collect();
            return Ok(Mark::text(
                mark.grace,
                mark.sweep_within,
                names.iter().map(String::as_str),
            )
            .into_bytes());
        }
        match Object::parse(name) {
            Some(Object::Narinfo(i)) if !self.gone(Object::Narinfo(i)) => {
                Ok(narinfo(i).into_bytes())
            }
            _ => Err(not_found(name)),
        }
    }

    async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), PublishError> {
        if name == "prune-marks/clock" {
            self.clock.set(Some(self.now.get()));
            return Ok(());
        }
        let text = String::from_utf8(bytes).unwrap();
        let mark = Mark::parse(name, self.now.get(), text)
            .unwrap_or_else(|| panic!("the prune wrote {name}, which is not a mark"));
        let objects: Vec<u32> = mark
            .keys()
            .map(|k| {
                Object::parse(k)
                    .unwrap_or_else(|| panic!("marked {k}"))
                    .number() as u32
            })
            .collect();
        assert!(
            objects.len() <= MAX_KEYS,
            "{name} names {} objects",
            objects.len()
        );
        self.marks.borrow_mut().insert(
            name.to_owned(),
            StoredMark {
                time: mark.time,
                grace: mark.grace,
                sweep_within: mark.sweep_within,
                objects,
            },
        );
        Ok(())
    }

    async fn modified(&self, name: &str) -> Result<Option<i64>, PublishError> {
        assert_eq!(name, "prune-marks/clock");
        Ok(self.clock.get())
    }

    async fn delete_batch(&self, names: &[String]) -> Result<(), PublishError> {
        assert!(
            names.len() <= 1000,
            "a DeleteObjects of {} keys",
            names.len()
        );
        self.delete_requests.set(self.delete_requests.get() + 1);
        let objects: Vec<Object> = names.iter().filter_map(|n| Object::parse(n)).collect();
        for o in &objects {
            let (Object::Listing(i) | Object::Narinfo(i) | Object::Nar(i)) = *o;
            if is_live(i) {
                self.complain(format!("deleted {} of live path {i}", o.name()));
            }
            self.deleted.borrow_mut()[o.number()] = true;
        }
        // What a reader of the bucket relies on, after this request.
        for o in objects {
            match o {
                Object::Narinfo(j) => {
                    for i in referrers(j) {
                        if !self.gone(Object::Narinfo(i)) {
                            self.complain(format!("narinfo {i} is left naming deleted {j}"));
                        }
                    }
                }
                Object::Listing(i) | Object::Nar(i) => {
                    if !self.gone(Object::Narinfo(i)) {
                        self.complain(format!("narinfo {i} is left without {}", o.name()));
                    }
                }
            }
        }
        for name in names.iter().filter(|n| n.starts_with("prune-marks/")) {
            self.marks.borrow_mut().remove(name);
        }
        Ok(())
    }
}

#[test]
fn the_synthetic_releases_are_what_the_scale_tests_assume() {
    // referrers() inverts references(), in a full release and in the last,
    // short one.
    for (start, end) in [release_of(0), release_of(PATHS - 1)] {
        let mut inverse = vec![Vec::new(); end - start];
        for i in start..end {
            for r in references(i) {
                inverse[r - start].push(i);
            }
        }
        for j in start..end {
            assert_eq!(referrers(j), inverse[j - start], "referrers of {j}");
        }
        // The root reaches the whole release.
        let mut seen = vec![false; end - start];
        let mut todo = vec![end - 1];
        while let Some(i) = todo.pop() {
            if !std::mem::replace(&mut seen[i - start], true) {
                todo.extend(references(i));
            }
        }
        assert!(seen.iter().all(|&s| s), "release at {start}");
    }
    assert_eq!(undigits(&hash(PATHS - 1)), PATHS - 1);
    assert_eq!(
        Object::parse(&Object::Nar(77).name()),
        Some(Object::Nar(77))
    );
}

fn options() -> Options {
    Options {
        grace: Duration::from_secs(GRACE),
        ..Options::default()
    }
}

fn dead_objects() -> usize {
    3 * LIVE_FROM * RELEASE
}

fn run(bucket: &Synthetic, opts: &Options) -> (Report, usize) {
    let (report, peak) = peak_bytes(|| futures::executor::block_on(sweep::prune(bucket, opts)));
    let report = report.expect("prune of the synthetic bucket");
    eprintln!(
        "{} objects: peak {:.1} MiB ({:.0} bytes per object); {report:?}",
        report.objects,
        peak as f64 / MIB as f64,
        peak as f64 / report.objects as f64,
    );
    (report, peak)
}

#[test]
fn a_million_object_bucket_is_marked_in_bounded_memory_with_one_listing() {
    let bucket = Synthetic::new(WRITTEN + 100);
    let (report, peak) = run(&bucket, &options());
    assert_eq!(
        report.objects,
        3 * PATHS + 3,
        "the cache's objects and the clock"
    );
    assert_eq!(bucket.listings.get(), 1);
    assert_eq!(report.live_paths, PATHS - LIVE_FROM * RELEASE);
    assert_eq!((report.marked, report.deleted), (dead_objects(), 0));
    let marks = bucket.marks.borrow();
    assert_eq!(marks.len(), dead_objects().div_ceil(MAX_KEYS));
    let marked: usize = marks.values().map(|m| m.objects.len()).sum();
    assert_eq!(marked, dead_objects());
    // A GET per narinfo, nix-cache-info and store-paths, and nothing more.
    assert_eq!(bucket.gets.get(), PATHS + 2);
    assert!(peak < BOUND, "peak {peak} bytes, over {BOUND}");
}

#[test]
fn a_million_object_bucket_is_swept_in_bounded_memory_narinfos_first() {
    let bucket = Synthetic::new(WRITTEN + 100 + GRACE as i64 + 1).with_dead_marked(WRITTEN + 100);
    let (report, peak) = run(&bucket, &options());
    assert_eq!(bucket.broken.borrow().as_slice(), &[] as &[String]);
    assert_eq!((report.deleted, report.marked), (dead_objects(), 0));
    let deleted = bucket.deleted.borrow();
    for i in 0..PATHS {
        for o in [Object::Listing(i), Object::Narinfo(i), Object::Nar(i)] {
            assert_eq!(deleted[o.number()], !is_live(i), "{o:?}");
        }
    }
    // Batches of 1,000 keys: each reference level of narinfos (22 of
    // them), then the listings, then the NARs, round up to whole batches of
    // their own.
    let least = dead_objects().div_ceil(1000);
    let requests = bucket.delete_requests.get();
    assert!(
        (least..least + 24).contains(&requests),
        "{requests} DeleteObjects requests for {} objects",
        dead_objects()
    );
    assert!(peak < BOUND, "peak {peak} bytes, over {BOUND}");
}
