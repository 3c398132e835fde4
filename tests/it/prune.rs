//! `mk-binary-cache prune DIR`: shrinking a cache to the closure of its roots.
//!
//! What is specified here: prune keeps the closure of the roots in
//! `store-paths` (or of `--keep`, which then replaces `store-paths`) and
//! removes every other narinfo, its listing, every NAR no kept narinfo
//! names, and stale temporary files; `--dry-run` removes nothing and says
//! what would go and the bytes; a prune killed at any point leaves a cache
//! `verify` accepts, and the next one completes; it refuses what is not a
//! cache, never deletes outside the cache through a symlink, and waits for a
//! `build --to` into the same cache; Nix substitutes the kept roots from the
//! pruned cache.
//!
//! The cache pruned is the fixture's two releases: `top` and `left.file`,
//! whose closures share `leaf` and busybox; the next release keeps only
//! `left.file`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::build::{
    assert_cache_consistent, assert_verify_accepts, build_into, closure_of, mk_binary_cache,
    store_paths_file, temp_files,
};
use crate::common::*;
use crate::e2e::substitute_attr;

/// A NAR file that an interrupted `build` left without a narinfo.
const ORPHAN_NAR: &str = "nar/0000000000000000000000000000000000000000000000000000.nar.zst";
/// Temporary files of a process that is not running (no PID is this large).
const STALE_TEMPS: [&str; 2] = [
    ".0000000000000000000000000000000a.narinfo.tmp.2147483647.0",
    "nar/.0000000000000000000000000000000a.tmp.2147483647.1",
];

fn top() -> &'static str {
    &fixture().roots[0]
}

fn left_file() -> &'static str {
    &fixture().roots[1]
}

/// A cache of both roots, with listings and the debug-info index, an
/// orphaned NAR and stale temporary files.
fn two_releases(dir: &Path) {
    run(
        build_into(dir, &["--write-nar-listing", "--index-debug-info", "-q"])
            .args(&fixture().roots),
    );
    fs::write(dir.join(ORPHAN_NAR), "the start of a NAR").unwrap();
    for temp in STALE_TEMPS {
        fs::write(dir.join(temp), "half-written").unwrap();
    }
}

fn prune(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = mk_binary_cache();
    cmd.arg("prune").arg(cache).args(args);
    cmd
}

/// The names of the files in `dir/sub`.
fn names(dir: &Path, sub: &str) -> BTreeSet<String> {
    fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Checks that `cache` holds exactly the closure of `roots`, the NARs its
/// narinfos name and a listing per narinfo, nothing else of those kinds.
fn assert_holds_exactly(cache: &Path, roots: &[&str]) {
    assert_eq!(assert_cache_consistent(cache), closure_of(roots));
    let hashes: BTreeSet<String> = narinfo_hash_parts(cache).into_iter().collect();
    let urls: BTreeSet<String> = hashes
        .iter()
        .map(|h| narinfo(&cache.join(format!("{h}.narinfo")))["URL"].clone())
        .collect();
    let nars: BTreeSet<String> = names(cache, "nar")
        .into_iter()
        .map(|n| format!("nar/{n}"))
        .collect();
    assert_eq!(nars, urls, "NAR files other than the narinfos name");
    let listings: BTreeSet<String> = names(cache, ".")
        .into_iter()
        .filter_map(|n| n.strip_suffix(".ls").map(str::to_owned))
        .collect();
    assert_eq!(listings, hashes, "listings without a narinfo");
    assert!(temp_files(cache).is_empty(), "{:?}", temp_files(cache));
    assert_verify_accepts(cache);
}

#[test]
fn keep_leaves_only_its_closure_and_becomes_store_paths() {
    let cache = tempdir();
    two_releases(cache.path());
    let out = run(&mut prune(cache.path(), &["--keep", left_file()]));
    assert_eq!(store_paths_file(cache.path()), [left_file()]);
    assert_holds_exactly(cache.path(), &[left_file()]);
    // leaf, whose debug file the index names, is in both closures.
    assert_eq!(names(cache.path(), "debuginfo").len(), 1);
    let gone = fixture().closure.len() - closure_of(&[left_file()]).len();
    assert!(out.contains(&format!("removed {} (", top())), "{out}");
    let summary = out.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "pruned: removed {gone} paths, {} NARs, {gone} listings, 0 debug-info entries, 2 temporary files; freed ",
            gone + 1
        )),
        "{summary}"
    );
}

#[test]
fn without_keep_the_roots_in_store_paths_are_kept() {
    let cache = tempdir();
    two_releases(cache.path());
    // As a release process that drops `top` from the list would leave it.
    fs::write(
        cache.path().join("store-paths"),
        format!("{}\n", left_file()),
    )
    .unwrap();
    run(&mut prune(cache.path(), &[]));
    assert_holds_exactly(cache.path(), &[left_file()]);
    assert_eq!(store_paths_file(cache.path()), [left_file()]);
}

#[test]
fn a_cache_whose_roots_hold_everything_loses_only_leftovers() {
    let cache = tempdir();
    two_releases(cache.path());
    let out = run(&mut prune(cache.path(), &["-s"]));
    assert!(
        out.starts_with(
            "pruned: removed 0 paths, 1 NAR, 0 listings, 0 debug-info entries, 2 temporary files"
        ),
        "{out}"
    );
    assert_holds_exactly(cache.path(), &[top(), left_file()]);
}

/// The total size of the files (and symlinks) under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    tree(dir)
        .keys()
        .map(|rel| fs::symlink_metadata(dir.join(rel)).unwrap())
        .filter(|m| !m.is_dir())
        .map(|m| m.len())
        .sum()
}

#[test]
fn dry_run_removes_nothing_and_says_what_would_go_and_the_bytes() {
    let cache = tempdir();
    two_releases(cache.path());
    let before = tree(cache.path());
    let size_before = bytes_under(cache.path());
    let dry = run(&mut prune(
        cache.path(),
        &["--dry-run", "--keep", left_file()],
    ));
    assert!(tree(cache.path()) == before, "a dry run changed the cache");

    let real = run(&mut prune(cache.path(), &["--keep", left_file()]));
    let freed = size_before - bytes_under(cache.path()) - store_paths_shrink(&before, cache.path());
    // The same files, in the same order, and the bytes that really went.
    let would: Vec<String> = dry
        .lines()
        .map(|l| l.replacen("would remove", "removed", 1))
        .collect();
    let went: Vec<String> = real.lines().map(str::to_owned).collect();
    assert_eq!(would[..would.len() - 1], went[..went.len() - 1]);
    let summary = dry.lines().last().unwrap();
    assert!(summary.contains(&format!("({freed} bytes)")), "{summary}");
}

// A dry run changes nothing, not even the `nar/` a real prune makes to lock.
#[test]
fn a_dry_run_on_a_cache_without_a_nar_directory_creates_nothing() {
    let cache = tempdir();
    two_releases(cache.path());
    fs::remove_dir_all(cache.path().join("nar")).unwrap();
    let before = tree(cache.path());
    run(&mut prune(
        cache.path(),
        &["--dry-run", "--keep", left_file()],
    ));
    assert!(tree(cache.path()) == before, "a dry run changed the cache");
}

/// How much smaller `store-paths` got when --keep rewrote it: those bytes
/// are not freed by removing a file.
fn store_paths_shrink(
    before: &std::collections::BTreeMap<std::path::PathBuf, Node>,
    cache: &Path,
) -> u64 {
    let Node::File { contents, .. } = &before[Path::new("store-paths")] else {
        panic!("store-paths is not a file");
    };
    contents.len() as u64 - fs::metadata(cache.join("store-paths")).unwrap().len()
}

/// Runs `prune --keep left.file` on `cache` under strace, which kills it
/// with SIGKILL as it enters its `n`th unlink (before that file goes).
fn prune_killed_at_unlink(cache: &Path, n: usize) {
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=unlink,unlinkat",
    ])
    .arg("-e")
    .arg(format!("inject=unlink,unlinkat:signal=KILL:when={n}"))
    .arg(env!("CARGO_BIN_EXE_mk-binary-cache"))
    .arg("prune")
    .arg(cache)
    .args(["--keep", left_file()])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run strace ({e}): the kill test needs it (apt-get install strace)")
    });
    assert_eq!(status.signal(), Some(libc::SIGKILL), "not killed: {status}");
}

#[test]
fn a_prune_killed_at_any_point_leaves_a_valid_cache_and_the_next_completes() {
    let work = tempdir();
    let template = work.path().join("template");
    two_releases(&template);
    // Each file goes with one unlink, in the order a dry run lists them.
    let plan = run(&mut prune(&template, &["--dry-run", "--keep", left_file()]));
    let plan: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("would remove "))
        .collect();
    let file = |line: &str| match line.rsplit_once(" (") {
        Some((_, narinfo)) => narinfo.trim_end_matches(')').to_owned(),
        None => line.to_owned(),
    };
    assert!(plan.len() > 10, "{plan:?}");
    for n in 1..=plan.len() {
        let cache = work.path().join(format!("killed-at-{n}"));
        run(Command::new("cp").arg("-a").arg(&template).arg(&cache));
        prune_killed_at_unlink(&cache, n);
        // Exactly the files before the n-th are gone.
        for (i, line) in plan.iter().enumerate() {
            let exists = cache.join(file(line)).symlink_metadata().is_ok();
            assert_eq!(exists, i + 1 >= n, "killed at {n}: {line}");
        }
        assert_verify_accepts(&cache);
        assert_eq!(store_paths_file(&cache), [left_file()], "killed at {n}");
        // store-paths already names the kept roots: a plain prune finishes.
        run(&mut prune(&cache, &["-q"]));
        assert_holds_exactly(&cache, &[left_file()]);
        fs::remove_dir_all(&cache).unwrap();
    }
}

#[test]
fn a_directory_that_is_not_a_cache_is_refused() {
    let dir = tempdir();
    fs::create_dir(dir.path().join("nar")).unwrap();
    fs::write(dir.path().join("nar/a.nar"), "mine").unwrap();
    fs::write(dir.path().join("store-paths"), "").unwrap();
    let stderr = run_failing(&mut prune(dir.path(), &[]));
    assert!(
        stderr.contains("is not a binary cache: it has no nix-cache-info"),
        "{stderr}"
    );
    assert!(dir.path().join("nar/a.nar").exists());
}

#[test]
fn a_symlinked_nar_goes_as_a_link_and_what_it_points_to_stays() {
    let cache = tempdir();
    let outside = tempdir();
    two_releases(cache.path());
    let precious = outside.path().join("precious.nar.zst");
    fs::write(&precious, "not the cache's").unwrap();
    let link = cache
        .path()
        .join("nar/1111111111111111111111111111111111111111111111111111.nar.zst");
    symlink(&precious, &link).unwrap();
    run(&mut prune(cache.path(), &["--keep", left_file()]));
    assert!(link.symlink_metadata().is_err(), "the link is still there");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "not the cache's");
    assert_holds_exactly(cache.path(), &[left_file()]);
}

#[test]
fn a_symlinked_nar_directory_is_refused_and_nothing_goes() {
    let cache = tempdir();
    let outside = tempdir();
    two_releases(cache.path());
    let nar = outside.path().join("nar");
    fs::rename(cache.path().join("nar"), &nar).unwrap();
    symlink(&nar, cache.path().join("nar")).unwrap();
    let (before, nars) = (tree(cache.path()), tree(&nar));
    let stderr = run_failing(&mut prune(cache.path(), &["--keep", left_file()]));
    assert!(
        stderr.contains("nar' is a symlink: what it points to is outside the cache"),
        "{stderr}"
    );
    assert!(tree(cache.path()) == before && tree(&nar) == nars);
}

#[test]
fn keep_refuses_a_path_the_cache_lacks() {
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", left_file()]));
    let before = tree(cache.path());
    let stderr = run_failing(&mut prune(cache.path(), &["--keep", top()]));
    assert!(
        stderr.contains(&format!(
            "--keep '{}': the cache has no narinfo for it",
            top()
        )),
        "{stderr}"
    );
    assert!(tree(cache.path()) == before);
}

#[test]
fn prune_waits_for_a_build_into_the_same_cache() {
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", left_file()]));
    // A slow build of `top` (xz, one thread) …
    let mut build = build_into(cache.path(), &["--compression", "xz", "--jobs", "1", top()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while temp_files(cache.path()).is_empty() {
        assert!(
            build.try_wait().unwrap().is_none(),
            "the build ended too soon"
        );
        assert!(Instant::now() < deadline, "the build made no progress");
        thread::sleep(Duration::from_millis(2));
    }
    // … is writing NARs, and `top` is not in store-paths yet: a prune now
    // would remove what it wrote. It must wait until the build is done.
    let pruning = prune(cache.path(), &["-s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    let mut pruning = pruning;
    if build.try_wait().unwrap().is_none() {
        assert!(pruning.try_wait().unwrap().is_none(), "prune did not wait");
    }
    assert!(build.wait().unwrap().success());
    let out = pruning.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.starts_with("pruned: removed 0 paths, 0 NARs"),
        "{summary}"
    );
    assert_eq!(store_paths_file(cache.path()), [left_file(), top()]);
    assert_eq!(
        assert_cache_consistent(cache.path()),
        fixture().closure.iter().cloned().collect()
    );
    assert_verify_accepts(cache.path());
}

#[test]
fn a_fresh_store_substitutes_the_kept_roots_from_the_pruned_cache() {
    let cache = tempdir();
    two_releases(cache.path());
    run(&mut prune(cache.path(), &["-q", "--keep", left_file()]));
    let url = format!("file://{}", cache.path().display());
    // --max-jobs 0: Nix may not build, so everything comes from the cache.
    let store = tempdir();
    run(&mut substitute_attr(store.path(), &url, "left.file"));
    let held = run(nix_cmd("nix-store")
        .arg("--store")
        .arg(store.path())
        .args(["-qR", left_file()]));
    let held: BTreeSet<String> = held.lines().map(str::to_owned).collect();
    assert_eq!(held, closure_of(&[left_file()]));
    // What was pruned is gone from the cache: `top` cannot be had.
    let stderr = run_failing(&mut substitute_attr(store.path(), &url, "top"));
    assert!(
        stderr.contains("unable to start any build; either increase '--max-jobs'"),
        "{stderr}"
    );
}

#[test]
fn a_delta_cache_keeps_its_narinfos_and_notes_its_excluded_root() {
    let cache = tempdir();
    let args = ["-q", "--exclude", left_file(), top(), left_file()];
    run(&mut build_into(cache.path(), &args));
    let before = tree(cache.path());
    let out = prune(cache.path(), &["-s"]).output().unwrap();
    assert!(out.status.success());
    // References to excluded paths lead outside the cache: nothing to keep
    // there, and nothing wrong.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("pruned: removed 0 paths, 0 NARs"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "root '{}' has no narinfo in this cache",
            left_file()
        )),
        "{stderr}"
    );
    assert!(tree(cache.path()) == before);
}

#[test]
fn a_cache_without_roots_is_refused_unless_keep_names_them() {
    // `nix copy` writes no store-paths.
    let cache = crate::build::nix_copy_to("compression=zstd", &[left_file().to_owned()]);
    let before = tree(cache.path());
    let stderr = run_failing(&mut prune(cache.path(), &[]));
    assert!(
        stderr.contains("store-paths' is missing or empty: give the paths to keep with --keep"),
        "{stderr}"
    );
    assert!(tree(cache.path()) == before);
    run(&mut prune(cache.path(), &["-q", "--keep", left_file()]));
    assert_eq!(store_paths_file(cache.path()), [left_file()]);
    assert_verify_accepts(cache.path());
}
