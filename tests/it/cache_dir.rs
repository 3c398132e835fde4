//! The cache on disk as every operation meets it, run as a user runs them.
//!
//! What is specified here: `sign`, `publish`, `prune`, `verify` and
//! `build --to` each meet three caches that drifted from what a writer
//! leaves, and each gives an error naming the path at fault (`verify`: a
//! problem reported against it), in bounded memory, having read nothing
//! outside the cache, uploaded nothing, and left the cache as it was:
//! - a narinfo that is a symlink out of the cache, to a FIFO: opening it
//!   would block the run, so a run that ends has not opened it;
//! - a narinfo of 2 GiB (sparse, so that it costs no disk): refused by its
//!   size, never read;
//! - a `nar/` that is a symlink out of the cache, whose NARs are FIFOs.
//!
//! And what `build --to` does with an existing cache's `nix-cache-info`
//! (a setting it lacks is written into it; a different one is refused), with
//! a target that is a file, and what `prune` says while it waits for the
//! cache lock.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::build::{build_into, empty_closure, mk_binary_cache, temp_files};
use crate::common::*;
use crate::publish::{Moto, publisher};

/// More than any run here needs, and far less than reading a 2 GiB
/// narinfo whole would take.
const MAX_PEAK_KIB: u64 = 64 << 10;

/// A cache of the fixture's roots with listings, built once; each test
/// works on a copy.
fn base_cache() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempdir().keep();
        let cache = dir.join("cache");
        run(build_into(&cache, &["-q", "--write-nar-listing"]).args(&fixture().roots));
        cache
    })
}

/// A writable copy of [`base_cache`] in a new directory, which also holds
/// what the drifts put outside the cache.
fn copy_of_base() -> (tempfile::TempDir, PathBuf) {
    let work = tempdir();
    let cache = work.path().join("cache");
    run(Command::new("cp").arg("-a").arg(base_cache()).arg(&cache));
    (work, cache)
}

/// The root path whose narinfo the drifts replace: every operation reads
/// it, `build --to` because it is in the closure it is given.
fn victim() -> &'static str {
    &fixture().roots[1]
}

#[derive(Debug, Clone, Copy)]
enum Drift {
    SymlinkedNarinfo,
    HugeNarinfo,
    SymlinkedNarDir,
}

const DRIFTS: [Drift; 3] = [
    Drift::SymlinkedNarinfo,
    Drift::HugeNarinfo,
    Drift::SymlinkedNarDir,
];

fn mkfifo(path: &Path) {
    run(Command::new("mkfifo").arg(path));
}

/// Makes `cache` (in `work`) drift; returns the path an operation must name.
fn drift(drift: Drift, work: &Path, cache: &Path) -> PathBuf {
    let narinfo = cache.join(format!("{}.narinfo", hash_part(victim())));
    match drift {
        Drift::SymlinkedNarinfo => {
            let outside = work.join("outside.narinfo");
            mkfifo(&outside);
            fs::remove_file(&narinfo).unwrap();
            symlink(&outside, &narinfo).unwrap();
            narinfo
        }
        Drift::HugeNarinfo => {
            // Its first lines are still the narinfo: only its size is wrong.
            let file = fs::File::options().write(true).open(&narinfo).unwrap();
            file.set_len(2 << 30).unwrap();
            narinfo
        }
        Drift::SymlinkedNarDir => {
            let nar = cache.join("nar");
            let elsewhere = work.join("elsewhere");
            fs::rename(&nar, &elsewhere).unwrap();
            for entry in fs::read_dir(&elsewhere).unwrap() {
                let path = entry.unwrap().path();
                fs::remove_file(&path).unwrap();
                mkfifo(&path);
            }
            symlink(&elsewhere, &nar).unwrap();
            nar
        }
    }
}

/// What a snapshot knows of one entry: its kind, size, modification time
/// and inode, and a file's bytes when it is small (the 2 GiB narinfo is
/// compared by the rest).
type Snapshot = BTreeMap<PathBuf, (u32, u64, i64, u64, Option<Vec<u8>>)>;

/// Every entry under `root`, never followed.
fn snapshot(root: &Path) -> Snapshot {
    fn walk(path: &Path, rel: &Path, out: &mut Snapshot) {
        let meta = fs::symlink_metadata(path).unwrap();
        let contents = (meta.is_file() && meta.len() <= 1 << 20).then(|| fs::read(path).unwrap());
        out.insert(
            rel.to_owned(),
            (
                meta.mode(),
                meta.len(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                meta.ino(),
                contents,
            ),
        );
        if meta.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                let name = entry.unwrap().file_name();
                walk(&path.join(&name), &rel.join(&name), out);
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// What a run did: its exit code, what it printed, its peak memory.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    peak_kib: u64,
}

/// Runs `cmd`, sampling its memory; fails if it runs for more than two
/// minutes, as a run blocked opening a FIFO would.
fn run_measured(cmd: &mut Command) -> Ran {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let err_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_file.reopen().unwrap())
        .stderr(err_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} hung: it opened what a symlink out of the cache points to\n{}",
                fs::read_to_string(err_file.path()).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code: status.code().expect("killed by a signal"),
        stdout: fs::read_to_string(out_file.path()).unwrap(),
        stderr: fs::read_to_string(err_file.path()).unwrap(),
        peak_kib,
    }
}

/// Runs `op` on a copy of the base cache after each drift, and checks
/// what every operation owes it: memory under [`MAX_PEAK_KIB`], the cache
/// as it was, and `expect` of the run and the path it must name.
fn each_drift(op: impl Fn(&Path, &Path) -> Command, expect: impl Fn(Drift, &Ran, &Path)) {
    for d in DRIFTS {
        let (work, cache) = copy_of_base();
        let at_fault = drift(d, work.path(), &cache);
        let before = snapshot(work.path());
        let ran = run_measured(&mut op(work.path(), &cache));
        assert!(
            ran.peak_kib < MAX_PEAK_KIB,
            "{d:?}: the run took {} KiB of memory",
            ran.peak_kib
        );
        expect(d, &ran, &at_fault);
        assert!(
            snapshot(work.path()) == before,
            "{d:?}: the cache (or what is beside it) changed"
        );
    }
}

/// The run failed, saying which path is at fault and why.
fn assert_refused(d: Drift, ran: &Ran, at_fault: &Path) {
    assert_ne!(ran.code, 0, "{d:?}: exit 0\n{}", ran.stderr);
    let named = format!("'{}'", at_fault.display());
    assert!(
        ran.stderr.contains(&named),
        "{d:?}: {named} not named in: {}",
        ran.stderr
    );
    let why = match d {
        Drift::SymlinkedNarinfo | Drift::SymlinkedNarDir => "is a symlink",
        Drift::HugeNarinfo => "is larger than 1.0 MiB: not a narinfo",
    };
    assert!(
        ran.stderr.contains(why),
        "{d:?}: {why:?} not in: {}",
        ran.stderr
    );
}

#[test]
fn sign_refuses_a_drifted_cache_and_changes_nothing() {
    let key = fixture_file("keys/secret.key");
    each_drift(
        |_, cache| {
            let mut cmd = mk_binary_cache();
            cmd.args(["sign", "-q", "--key-file"]).arg(&key).arg(cache);
            cmd
        },
        assert_refused,
    );
}

#[test]
fn a_signed_copy_of_a_drifted_cache_is_refused_and_not_made() {
    let key = fixture_file("keys/secret.key");
    each_drift(
        |work, cache| {
            let mut cmd = mk_binary_cache();
            cmd.args(["sign", "-q", "--key-file"])
                .arg(&key)
                .arg("--out")
                .arg(work.join("signed"))
                .arg(cache);
            cmd
        },
        assert_refused,
    );
}

#[test]
fn prune_refuses_a_drifted_cache_and_removes_nothing() {
    each_drift(
        |_, cache| {
            let mut cmd = mk_binary_cache();
            cmd.args(["prune", "-q"]).arg(cache);
            cmd
        },
        assert_refused,
    );
}

#[test]
fn build_to_refuses_a_drifted_cache_and_writes_nothing() {
    each_drift(
        |_, cache| build_into(cache, &["-q", victim()]),
        assert_refused,
    );
}

#[test]
fn verify_reports_a_drifted_narinfo_or_nar_directory_against_its_path() {
    each_drift(
        |_, cache| {
            let mut cmd = mk_binary_cache();
            cmd.args(["verify", "--json"]).arg(cache);
            cmd
        },
        |d, ran, at_fault| {
            // Problems found: 1 (2 would be "could not check at all").
            assert_eq!(ran.code, 1, "{d:?}: {}", ran.stderr);
            let report: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
            let problems = report["problems"].as_array().unwrap();
            let about: Vec<(&str, &str)> = problems
                .iter()
                .map(|p| (p["path"].as_str().unwrap(), p["kind"].as_str().unwrap()))
                .collect();
            match d {
                Drift::SymlinkedNarinfo | Drift::HugeNarinfo => {
                    let file = at_fault.file_name().unwrap().to_str().unwrap();
                    let kind = match d {
                        Drift::SymlinkedNarinfo => "outside-cache",
                        _ => "bad-narinfo",
                    };
                    assert!(about.contains(&(file, kind)), "{d:?}: {about:?}");
                }
                Drift::SymlinkedNarDir => {
                    // Every NAR is behind the symlink: every path is
                    // reported, none checked.
                    for path in &fixture().closure {
                        assert!(
                            about.contains(&(path.as_str(), "outside-cache")),
                            "{d:?}: {path} not reported: {about:?}"
                        );
                    }
                }
            }
        },
    );
}

#[test]
fn publish_refuses_a_drifted_cache_and_uploads_nothing() {
    let moto = Moto::shared();
    for (i, d) in DRIFTS.iter().enumerate() {
        let bucket = moto.bucket(&format!("drifted-{i}"));
        let (work, cache) = copy_of_base();
        let at_fault = drift(*d, work.path(), &cache);
        let before = snapshot(work.path());
        let ran = run_measured(publisher().arg(&cache).arg(bucket.url()));
        assert!(
            ran.peak_kib < MAX_PEAK_KIB,
            "{d:?}: publish took {} KiB of memory",
            ran.peak_kib
        );
        assert_refused(*d, &ran, &at_fault);
        assert!(bucket.objects().is_empty(), "{d:?}: publish uploaded");
        assert!(snapshot(work.path()) == before, "{d:?}: the cache changed");
    }
}

#[test]
fn build_to_writes_a_priority_or_mass_query_the_cache_info_lacks() {
    // Ignored, the flags would leave the cache as it was with exit 0.
    let work = tempdir();
    let cache = work.path().join("cache");
    let closure = empty_closure(work.path());
    run(build_into(&cache, &["-q", "--closure-json"]).arg(&closure));
    // A line Nix ignores, which the rewrite keeps.
    let info = cache.join("nix-cache-info");
    fs::write(&info, "StoreDir: /nix/store\nX-Note: kept\n").unwrap();
    run(build_into(&cache, &["-q", "--priority", "30", "--closure-json"]).arg(&closure));
    assert_eq!(
        fs::read_to_string(&info).unwrap(),
        "StoreDir: /nix/store\nX-Note: kept\nPriority: 30\n"
    );
    run(build_into(
        &cache,
        &["-q", "--want-mass-query", "true", "--closure-json"],
    )
    .arg(&closure));
    assert_eq!(
        fs::read_to_string(&info).unwrap(),
        "StoreDir: /nix/store\nX-Note: kept\nPriority: 30\nWantMassQuery: 1\n"
    );
    assert!(temp_files(&cache).is_empty(), "{:?}", temp_files(&cache));
}

#[test]
fn build_to_refuses_a_priority_other_than_the_cache_info_says() {
    let work = tempdir();
    let cache = work.path().join("cache");
    let closure = empty_closure(work.path());
    run(build_into(&cache, &["-q", "--priority", "30", "--closure-json"]).arg(&closure));
    let before = snapshot(&cache);
    let err = run_failing(
        build_into(&cache, &["-q", "--priority", "40", "--closure-json"]).arg(&closure),
    );
    assert!(
        err.contains(&format!(
            "'{}' says Priority: 30, but this run asks for Priority: 40",
            cache.join("nix-cache-info").display()
        )),
        "{err}"
    );
    assert!(snapshot(&cache) == before, "the cache changed");
}

#[test]
fn build_to_a_file_says_it_is_not_a_directory() {
    let work = tempdir();
    let file = work.path().join("file");
    fs::write(&file, "not a cache").unwrap();
    let err =
        run_failing(build_into(&file, &["-q", "--closure-json"]).arg(empty_closure(work.path())));
    assert!(
        err.contains(&format!("'{}' is not a directory", file.display())),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a cache");
}

#[test]
fn prune_waiting_for_the_lock_says_so_once() {
    let work = tempdir();
    let cache = work.path().join("cache");
    run(&mut build_into(&cache, &["-q", victim()]));
    // Holds the lock as a running `build --to` does: shared, on nar/.
    let holder = Command::new("flock")
        .arg("--shared")
        .arg(cache.join("nar"))
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let out = mk_binary_cache()
        .args(["prune", "--dry-run"])
        .arg(&cache)
        .output()
        .unwrap();
    let mut holder = holder;
    holder.wait().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let waiting = format!(
        "waiting for another run that holds the lock of {}",
        cache.display()
    );
    assert_eq!(stderr.matches(&waiting).count(), 1, "{stderr}");
    // Without a holder, nothing is said.
    let out = mk_binary_cache()
        .args(["prune", "--dry-run"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("waiting"));
}
