//! `mk-binary-cache build --to DIR PATHS…`: writing and updating a cache
//! outside a Nix build, from the local store or a closure file.
//!
//! What is specified here: the cache equals what `nix copy` writes; a second
//! run only adds what is missing; a run killed part-way leaves a cache that
//! Nix can use and `verify` accepts, and the next run completes; runs at once do not corrupt the
//! cache; an existing cache of another kind is refused; progress in a log is
//! one line per path and a summary.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mk_binary_cache::format::narinfo::NarInfo;

use crate::common::*;
use crate::e2e::{assert_store_holds_fixture, substitute_fixture};

/// The `mk-binary-cache` program of this build.
pub(crate) fn mk_binary_cache() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mk-binary-cache"));
    // `build` runs `nix path-info`: it must see the project's Nix settings.
    hermetic_nix(&mut cmd).env_remove("NIX_STORE_DIR");
    cmd
}

/// `mk-binary-cache build --to <cache> <args…>`.
pub(crate) fn build_into<S: AsRef<std::ffi::OsStr>>(cache: &Path, args: &[S]) -> Command {
    let mut cmd = mk_binary_cache();
    cmd.args(["build", "--to"]).arg(cache).args(args);
    cmd
}

/// What `nix copy --to file://<dir>?<params>` writes for `paths`, in a new
/// temporary directory.
pub(crate) fn nix_copy_to(params: &str, paths: &[String]) -> tempfile::TempDir {
    let dir = tempdir();
    let url = format!("file://{}?{params}", dir.path().display());
    run(nix_new(&["copy", "--option", "substituters", "", "--to", &url]).args(paths));
    dir
}

/// Temporary files a run leaves behind only when it is killed.
pub(crate) fn temp_files(cache: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [
        cache.to_path_buf(),
        cache.join("nar"),
        cache.join("debuginfo"),
    ] {
        for entry in fs::read_dir(&dir).into_iter().flatten() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp.") {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Checks what Nix relies on, for every narinfo in `cache`: its NAR file
/// exists, has the FileHash and FileSize recorded (as `nix-hash` computes
/// them; Nix itself never checks them), and unpacks to the NAR of the store
/// path (NarHash and NarSize as in Nix's database); every reference has a
/// narinfo. Returns the store paths the cache holds.
pub(crate) fn assert_cache_consistent(cache: &Path) -> BTreeSet<String> {
    assert_eq!(
        fs::read_to_string(cache.join("nix-cache-info"))
            .unwrap()
            .lines()
            .next(),
        Some("StoreDir: /nix/store")
    );
    let mut held = BTreeSet::new();
    let mut referenced = BTreeSet::new();
    for hash in narinfo_hash_parts(cache) {
        let file = cache.join(format!("{hash}.narinfo"));
        let text = fs::read_to_string(&file).unwrap();
        let info = NarInfo::parse(&text, "/nix/store")
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let path = info.store_path.to_string();
        let nar = cache.join(&info.url);
        let bytes = fs::read(&nar).unwrap_or_else(|e| panic!("{path}: {}: {e}", nar.display()));
        assert_eq!(
            Some(bytes.len() as u64),
            info.file_size,
            "FileSize of {path}"
        );
        assert_eq!(
            info.file_hash.map(|h| h.to_string()),
            Some(file_hash(&nar)),
            "FileHash of {path}"
        );
        let unpacked = decompress(&info.compression, &bytes);
        assert!(unpacked == dump(&path), "the NAR of {path} is not its dump");
        let db_hash = run(nix_cmd("nix-store").args(["-q", "--hash", &path]));
        assert_eq!(
            info.nar_hash.to_string(),
            db_hash.trim(),
            "NarHash of {path}"
        );
        assert_eq!(info.nar_size, unpacked.len() as u64, "NarSize of {path}");
        referenced.extend(info.references.iter().map(|r| r.to_string()));
        held.insert(path);
    }
    let dangling: Vec<_> = referenced.difference(&held).collect();
    assert!(
        dangling.is_empty(),
        "references without a narinfo: {dangling:?}"
    );
    held
}

/// `mk-binary-cache verify` finds no problem in `cache`.
pub(crate) fn assert_verify_accepts(cache: &Path) {
    let mut cmd = mk_binary_cache();
    cmd.arg("verify").arg(cache);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "verify rejects {}:\n{}{}",
        cache.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn store_paths_file(cache: &Path) -> Vec<String> {
    fs::read_to_string(cache.join("store-paths"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) fn closure_of(paths: &[&str]) -> BTreeSet<String> {
    run(nix_cmd("nix-store").arg("-qR").args(paths))
        .lines()
        .map(str::to_string)
        .collect()
}

fn fixture_closure() -> BTreeSet<String> {
    fixture().closure.iter().cloned().collect()
}

#[test]
fn uncompressed_cache_equals_nix_copy_file_for_file() {
    // Outside a build the deriver is known too, so every narinfo is Nix's text.
    let roots = &fixture().roots;
    let reference = nix_copy_to("compression=none", roots);
    let ours = tempdir();
    run(build_into(ours.path(), &["--compression", "none"]).args(roots));
    for path in &fixture().closure {
        let name = format!("{}.narinfo", hash_part(path));
        assert_eq!(
            fs::read_to_string(ours.path().join(&name)).unwrap(),
            fs::read_to_string(reference.path().join(&name)).unwrap(),
            "narinfo of {path}"
        );
    }
    let files = |dir: &Path| -> BTreeSet<String> {
        fs::read_dir(dir.join("nar"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(files(ours.path()), files(reference.path()));
    assert_eq!(
        fs::read_to_string(ours.path().join("nix-cache-info")).unwrap(),
        "StoreDir: /nix/store\n"
    );
    assert_eq!(store_paths_file(ours.path()), *roots);
}

#[test]
fn cache_substitutes_every_path_into_a_fresh_store() {
    let cache = tempdir();
    run(&mut build_into(cache.path(), &fixture().roots));
    assert_eq!(assert_cache_consistent(cache.path()), fixture_closure());
    assert_verify_accepts(cache.path());
    let store = substitute_fixture(cache.path());
    assert_store_holds_fixture(store.path());
}

#[test]
fn a_second_run_adds_only_the_missing_paths_and_unions_store_paths() {
    let fixture = fixture();
    let (top, file) = (&fixture.roots[0], &fixture.roots[1]);
    let cache = tempdir();
    run(&mut build_into(cache.path(), &[file]));
    let first: BTreeSet<String> = closure_of(&[file]);
    assert_eq!(assert_cache_consistent(cache.path()), first);
    let narinfo = cache.path().join(format!("{}.narinfo", hash_part(file)));
    let before = fs::metadata(&narinfo).unwrap().modified().unwrap();

    let out = mk_output(build_into(cache.path(), &[top, file]).stderr(Stdio::piped()));
    let expected = format!(
        "{} of {} paths are already in the cache",
        first.len(),
        fixture.closure.len()
    );
    assert!(out.contains(&expected), "{out}");
    let written = fixture.closure.len() - first.len();
    assert!(
        out.contains(&format!("cached {written} paths in ")),
        "{out}"
    );
    assert_eq!(
        fs::metadata(&narinfo).unwrap().modified().unwrap(),
        before,
        "a cached path was written again"
    );
    assert_eq!(assert_cache_consistent(cache.path()), fixture_closure());
    assert_eq!(store_paths_file(cache.path()), [file.clone(), top.clone()]);
    assert!(temp_files(cache.path()).is_empty());
}

/// Runs a command that must succeed; returns its standard error.
fn mk_output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "`{}` failed:\n{stderr}", show(cmd));
    stderr
}

#[test]
fn progress_in_a_log_is_one_line_per_path_and_a_summary() {
    let cache = tempdir();
    let stderr = mk_output(build_into(cache.path(), &fixture().roots).stderr(Stdio::piped()));
    let lines: Vec<&str> = stderr.lines().collect();
    let (summary, per_path) = lines.split_last().unwrap();
    let mut named: Vec<&str> = per_path
        .iter()
        .map(|line| {
            let rest = line
                .strip_prefix("cached ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            let (name, sizes) = rest.split_once(": NAR ").unwrap();
            let (nar, file) = sizes.split_once(" -> zstd ").unwrap();
            for size in [nar, file] {
                assert!(size.ends_with('B'), "{line:?}");
            }
            name
        })
        .collect();
    named.sort();
    let mut expected: Vec<&str> = fixture()
        .closure
        .iter()
        .map(|p| &basename(p)[33..])
        .collect();
    expected.sort();
    assert_eq!(named, expected);
    let n = fixture().closure.len();
    assert!(
        summary.starts_with(&format!("cached {n} paths in "))
            && summary.contains(" s: NAR ")
            && summary.ends_with("/s)"),
        "{summary:?}"
    );
}

#[test]
fn progress_on_a_terminal_is_a_bar_redrawn_in_place_then_the_summary() {
    // `script` (util-linux) runs the build on a pseudo-terminal.
    let cache = tempdir();
    let command = format!(
        "{} build --to {} {}",
        env!("CARGO_BIN_EXE_mk-binary-cache"),
        cache.path().display(),
        fixture().roots.join(" ")
    );
    let shown = run(hermetic_nix(
        Command::new("script")
            .args(["--quiet", "--flush", "--return", "--command", &command])
            .arg("/dev/null"),
    )
    .env_remove("NIX_STORE_DIR"));
    let frames: Vec<&str> = shown.split("\r\x1b[2K").collect();
    let bars: Vec<&&str> = frames.iter().filter(|f| f.starts_with('[')).collect();
    assert!(!bars.is_empty(), "no bar was drawn: {shown:?}");
    for bar in &bars {
        assert!(
            bar.contains(" paths  ") && bar.ends_with(" left"),
            "{bar:?}"
        );
    }
    assert!(
        !shown.contains("cached leaf:"),
        "per-path lines on a terminal: {shown:?}"
    );
    let n = fixture().closure.len();
    let last = frames.last().unwrap();
    assert!(
        last.starts_with(&format!("cached {n} paths in ")),
        "the summary does not replace the bar: {last:?}"
    );
}

/// Starts a build of the fixture with xz on one thread (slow enough to be
/// caught part-way) and kills it with SIGKILL once `ready` holds, checking
/// that it was still running then.
fn kill_build_when(cache: &Path, ready: impl Fn(&Path) -> bool) {
    let mut child = build_into(cache, &["--compression", "xz", "--jobs", "1"])
        .args(&fixture().roots)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(cache) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the build made no progress");
        thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the build ended before it was killed ({status})"
    );
}

/// Runs a build of `closure` (xz, one thread) into `cache`, killing it with
/// SIGKILL as it renames its `n`th narinfo into place. Narinfos are
/// committed together at the end of a run this small, so a kill cannot be
/// timed from outside: a first run into a copy of the cache tells which of
/// its renames that is.
fn kill_build_at_narinfo(cache: &Path, closure: &Path, n: usize) {
    let args = ["--compression", "xz", "--jobs", "1"];
    let copy = cache.with_extension("copy");
    run(Command::new("cp").arg("-a").arg(cache).arg(&copy));
    let (code, trace) = build_traced(&copy, closure, &args, "rename", None);
    assert_eq!(code, 0, "the build failed");
    fs::remove_dir_all(&copy).unwrap();
    let at = trace
        .lines()
        .enumerate()
        .filter(|(_, l)| renamed_to(l).is_some_and(|to| to.ends_with(".narinfo")))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("fewer than {n} narinfos renamed:\n{trace}"))
        .0;
    let kill = format!("signal=KILL:when={}", at + 1);
    let (code, _) = build_traced(cache, closure, &args, "rename", Some(&kill));
    assert_eq!(code, 128 + libc::SIGKILL, "not killed at narinfo {n}");
}

fn narinfo_count(cache: &Path) -> usize {
    fs::read_dir(cache)
        .map(|d| {
            d.filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".narinfo")
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_run_killed_part_way_leaves_a_usable_cache_that_the_next_run_completes() {
    let cache = tempdir();
    // Killed while the first (largest) NAR is being compressed …
    kill_build_when(cache.path(), |c| {
        fs::read_dir(c.join("nar")).is_ok_and(|mut d| d.next().is_some())
    });
    assert_eq!(narinfo_count(cache.path()), 0);
    assert!(
        !temp_files(cache.path()).is_empty(),
        "no NAR was in progress"
    );
    assert!(assert_cache_consistent(cache.path()).is_empty());
    assert_verify_accepts(cache.path());

    // … then by later runs, each as it renames a narinfo into place.
    let work = tempdir();
    let closure = closure_json(&work.path().join("closure.json"), &fixture().roots);
    let mut held = BTreeSet::new();
    for published in [1, 1, 2] {
        let before = narinfo_count(cache.path());
        kill_build_at_narinfo(cache.path(), &closure, published + 1);
        assert_eq!(narinfo_count(cache.path()), before + published);
        held = assert_cache_consistent(cache.path());
        assert_verify_accepts(cache.path());
    }
    // Nix can already copy what the cache holds.
    let store = tempdir();
    copy_out_of_cache(cache.path(), store.path(), &held);

    run(build_into(cache.path(), &["--compression", "xz"]).args(&fixture().roots));
    assert_eq!(assert_cache_consistent(cache.path()), fixture_closure());
    assert_verify_accepts(cache.path());
    assert_eq!(
        temp_files(cache.path()),
        Vec::<PathBuf>::new(),
        "stale temporary files were left"
    );
    assert_eq!(store_paths_file(cache.path()), fixture().roots);
    let store = substitute_fixture(cache.path());
    assert_store_holds_fixture(store.path());
}

#[test]
fn two_runs_into_one_cache_at_once_do_not_corrupt_it() {
    let fixture = fixture();
    let cache = tempdir();
    // Both closures hold leaf and busybox: the runs race on them.
    let children: Vec<_> = fixture
        .roots
        .iter()
        .map(|root| {
            build_into(cache.path(), &["--jobs", "1", root])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(assert_cache_consistent(cache.path()), fixture_closure());
    assert_verify_accepts(cache.path());
    let listed: BTreeSet<String> = store_paths_file(cache.path()).into_iter().collect();
    assert_eq!(listed, fixture.roots.iter().cloned().collect());
    assert!(temp_files(cache.path()).is_empty());
}

#[test]
fn closure_json_from_nix_path_info_gives_the_same_cache() {
    let fixture = fixture();
    let file = tempdir();
    let closure_json = closure_json(&file.path().join("closure.json"), &fixture.roots);

    let from_file = tempdir();
    run(build_into(from_file.path(), &["--compression", "none"])
        .arg("--closure-json")
        .arg(&closure_json));
    let from_store = tempdir();
    run(build_into(from_store.path(), &["--compression", "none"]).args(&fixture.roots));
    assert_eq!(tree(from_file.path()), tree(from_store.path()));
}

/// An empty closure file: a cache without Nix.
pub(crate) fn empty_closure(dir: &Path) -> PathBuf {
    let file = dir.join("empty.json");
    fs::write(&file, "[]").unwrap();
    file
}

#[test]
fn a_new_cache_gets_the_settings_and_every_directory() {
    let work = tempdir();
    let cache = work.path().join("new/cache");
    run(
        build_into(&cache, &["--priority", "30", "--want-mass-query", "true"])
            .arg("--closure-json")
            .arg(empty_closure(work.path())),
    );
    assert_eq!(
        fs::read_to_string(cache.join("nix-cache-info")).unwrap(),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
    );
    for dir in ["nar", "log", "realisations", "build-trace-v2", "debuginfo"] {
        assert!(cache.join(dir).is_dir(), "{dir}/");
    }
    assert_eq!(fs::read_to_string(cache.join("store-paths")).unwrap(), "");
}

#[test]
fn an_existing_cache_with_other_settings_is_refused_and_left_alone() {
    let work = tempdir();
    let empty = empty_closure(work.path());
    let cases = [
        (
            "StoreDir: /gnu/store\n",
            vec![],
            "says StoreDir: /gnu/store, but this run asks for StoreDir: /nix/store",
        ),
        (
            "StoreDir: /nix/store\nPriority: 40\n",
            vec!["--priority", "30"],
            "says Priority: 40, but this run asks for Priority: 30",
        ),
        (
            "StoreDir: /nix/store\nWantMassQuery: 1\n",
            vec!["--want-mass-query", "false"],
            "says WantMassQuery: 1, but this run asks for WantMassQuery: 0",
        ),
    ];
    for (info, flags, message) in cases {
        let cache = tempdir();
        fs::write(cache.path().join("nix-cache-info"), info).unwrap();
        let stderr = run_failing(
            build_into(cache.path(), &flags)
                .arg("--closure-json")
                .arg(&empty),
        );
        assert!(stderr.contains(message), "{stderr}");
        let left: Vec<_> = fs::read_dir(cache.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the cache was changed");
    }
}

#[test]
fn a_directory_that_is_not_a_cache_is_refused() {
    let work = tempdir();
    let dir = tempdir();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let stderr =
        run_failing(build_into(dir.path(), &["--closure-json"]).arg(empty_closure(work.path())));
    assert!(
        stderr.contains("is not empty and has no nix-cache-info"),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_path_not_in_the_store_is_refused_before_anything_is_written() {
    let work = tempdir();
    let cache = work.path().join("cache");
    let stderr = run_failing(&mut build_into(&cache, &[work.path()]));
    assert!(
        stderr.contains("is not inside the store directory '/nix/store'"),
        "{stderr}"
    );
    assert!(!cache.exists());
}

/// Adds to the store a closure of `builtins.toFile` paths, `mids × per`
/// leaves under `mids` middle paths under one root (three levels of
/// references), and writes its `nix path-info --json --recursive` to
/// `dir`; returns that file and the closure's size. Runs given the file
/// start no Nix of their own, so that strace sees only `mk-binary-cache`.
fn text_closure(dir: &Path, tag: &str, mids: usize, per: usize) -> (PathBuf, usize) {
    let expr = format!(
        r#"let
             leaf = i: builtins.toFile "group-commit-leaf-${{toString i}}" "leaf ${{toString i}}\n";
             mid = m: builtins.toFile "group-commit-{tag}-mid-${{toString m}}"
               (builtins.concatStringsSep "\n" (builtins.genList (j: leaf (m * {per} + j)) {per}));
           in builtins.toFile "group-commit-{tag}-root"
             (builtins.concatStringsSep "\n" (builtins.genList mid {mids}))"#
    );
    let root = run(nix_cmd("nix-instantiate").args([
        "--eval",
        "--read-write-mode",
        "--json",
        "-E",
        &expr,
    ]));
    let root: String = serde_json::from_str(&root).unwrap();
    let file = closure_json(
        &dir.join(format!("{tag}.json")),
        std::slice::from_ref(&root),
    );
    let paths = closure_of(&[&root]).len();
    assert_eq!(paths, 1 + mids + mids * per);
    (file, paths)
}

/// Writes to `file` the closure of `roots` as `nix path-info --json
/// --recursive` gives it; returns the file's path.
fn closure_json(file: &Path, roots: &[String]) -> PathBuf {
    let json = run(nix_new(&["path-info", "--json", "--recursive"]).args(roots));
    fs::write(file, json).unwrap();
    file.to_owned()
}

/// `build -q --to cache --closure-json closure <args>` under strace, which
/// traces `calls` (and, with `inject`, acts on them; strace counts the
/// calls of each thread and system call apart, so a test that kills at the
/// n-th call runs one thread and names one call); returns the exit status and the trace, one line per call, file
/// descriptors shown with their paths.
fn build_traced(
    cache: &Path,
    closure: &Path,
    args: &[&str],
    calls: &str,
    inject: Option<&str>,
) -> (i32, String) {
    let work = tempdir();
    let trace = work.path().join("trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", &format!("trace={calls}")]);
    if let Some(inject) = inject {
        cmd.args(["-e", &format!("inject={calls}:{inject}")]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_mk-binary-cache"))
        .args(["build", "-q", "--to"])
        .arg(cache)
        .arg("--closure-json")
        .arg(closure)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    hermetic_nix(&mut cmd);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run strace ({e}): the sync tests need it (apt-get install strace)")
    });
    let code = status.code().or(status.signal().map(|s| 128 + s)).unwrap();
    (code, fs::read_to_string(&trace).unwrap())
}

/// The calls in a trace (a call another thread interrupted is one call).
fn calls_in(trace: &str) -> usize {
    trace.lines().filter(|l| !l.contains(" resumed>")).count()
}

const SYNCS: &str = "fsync,fdatasync,syncfs,sync";

#[test]
fn updating_a_cache_syncs_a_number_of_times_that_does_not_grow_with_its_paths() {
    // One syncfs per batch of narinfos, and a directory fsync per level of
    // references in it, rather than fsyncs for each NAR and narinfo.
    let work = tempdir();
    let mut counts = Vec::new();
    for (tag, mids, per) in [("fifty", 4, 11), ("four-hundred", 8, 50)] {
        let (closure, paths) = text_closure(work.path(), tag, mids, per);
        let cache = work.path().join(tag);
        let (code, trace) = build_traced(&cache, &closure, &[], SYNCS, None);
        assert_eq!(code, 0, "the build failed");
        assert_eq!(assert_cache_consistent(&cache).len(), paths);
        counts.push((paths, calls_in(&trace)));
    }
    for &(paths, syncs) in &counts {
        assert!(syncs <= 20, "{paths} paths took {syncs} syncs: {counts:?}");
    }
}

#[test]
fn a_run_killed_at_any_sync_or_rename_leaves_a_consistent_cache_that_the_next_completes() {
    // SIGKILL as the run enters each of its syncs and renames in turn: what
    // is in the cache then is closed under references, and every narinfo's
    // NAR is complete (FileHash, NarHash); the next run completes the cache.
    let work = tempdir();
    let (closure, paths) = text_closure(work.path(), "killed", 3, 3);
    // strace counts each system call apart (NARs go with `renameat2`,
    // narinfos with `rename`).
    for calls in ["syncfs", "fsync", "rename", "renameat2"] {
        let one_thread = ["--jobs", "1"];
        let (_, trace) = build_traced(&work.path().join(calls), &closure, &one_thread, calls, None);
        let total = calls_in(&trace);
        assert!(total > 0, "the run made no {calls} call");
        for n in 1..=total {
            let cache = work.path().join(format!("{calls}-killed-at-{n}"));
            let kill = format!("signal=KILL:when={n}");
            let (code, _) = build_traced(&cache, &closure, &one_thread, calls, Some(&kill));
            assert_eq!(code, 128 + libc::SIGKILL, "not killed at {calls} {n}");
            // Killed before `nix-cache-info` was in place: nothing else is.
            if cache.join("nix-cache-info").exists() {
                assert_cache_consistent(&cache);
                assert_verify_accepts(&cache);
            } else {
                assert_eq!(narinfo_count(&cache), 0, "{calls} {n}");
            }
            run(build_into(&cache, &["-q", "--closure-json"]).arg(&closure));
            assert_eq!(assert_cache_consistent(&cache).len(), paths, "{calls} {n}");
            assert_verify_accepts(&cache);
            assert!(
                temp_files(&cache).is_empty(),
                "{calls} {n}: stale temporary files"
            );
            fs::remove_dir_all(&cache).unwrap();
        }
    }
}

/// One call of a trace: the lines where it began and ended (apart when
/// another thread's calls came in between), its name and its arguments.
struct Call<'t> {
    began: usize,
    ended: usize,
    name: &'t str,
    args: &'t str,
}

/// The calls of a `strace -f` trace, in the order they began.
fn calls_of(trace: &str) -> Vec<Call<'_>> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: Vec<(&str, usize)> = Vec::new();
    for (line_no, line) in trace.lines().enumerate() {
        let (pid, rest) = line.split_once(' ').unwrap();
        let rest = rest.trim_start();
        if rest.starts_with("<... ") {
            let at = open.iter().position(|(p, _)| *p == pid).unwrap();
            calls[open.remove(at).1].ended = line_no;
            continue;
        }
        let (name, args) = rest.split_once('(').unwrap();
        if rest.ends_with("<unfinished ...>") {
            open.push((pid, calls.len()));
        }
        calls.push(Call {
            began: line_no,
            ended: line_no,
            name,
            args,
        });
    }
    calls
}

/// The destination of a rename call: its second quoted path.
fn renamed_to(args: &str) -> Option<&str> {
    args.split('"').nth(3)
}

#[test]
fn narinfos_are_renamed_after_a_syncfs_and_after_their_references_are_durable() {
    // What makes the cache survive a power loss, read from the order of the
    // calls: a narinfo is renamed into place after a syncfs that began when
    // its NAR was in place, and after an fsync of the cache directory that began when the narinfos of
    // its references were renamed.
    let work = tempdir();
    let (closure, paths) = text_closure(work.path(), "ordered", 4, 11);
    let cache = work.path().join("cache");
    let calls = "syncfs,fsync,rename,renameat,renameat2";
    let (code, trace) = build_traced(&cache, &closure, &[], calls, None);
    assert_eq!(code, 0, "the build failed");
    let calls = calls_of(&trace);
    let renamed = |dest: &Path| {
        let dest = dest.to_str().unwrap();
        calls
            .iter()
            .find(|c| c.name.starts_with("rename") && renamed_to(c.args) == Some(dest))
            .unwrap_or_else(|| panic!("{dest} was not renamed into place"))
    };
    let cache_dir = format!("<{}>", cache.display());
    let synced_between = |before: &Call, after: &Call, sync: &dyn Fn(&Call) -> bool| {
        calls
            .iter()
            .any(|c| sync(c) && before.ended < c.began && c.ended < after.began)
    };
    let mut checked = 0;
    for hash in narinfo_hash_parts(&cache) {
        let file = cache.join(format!("{hash}.narinfo"));
        let info = NarInfo::parse(&fs::read_to_string(&file).unwrap(), "/nix/store").unwrap();
        let narinfo = renamed(&file);
        let nar = renamed(&cache.join(&info.url));
        assert!(
            synced_between(nar, narinfo, &|c| c.name == "syncfs"),
            "{hash}.narinfo was renamed with no syncfs after its NAR's rename"
        );
        for reference in info.references.iter().filter(|r| **r != info.store_path) {
            let reference = renamed(&cache.join(format!("{}.narinfo", reference.hash_part())));
            assert!(
                synced_between(reference, narinfo, &|c| {
                    c.name == "fsync" && c.args.contains(&cache_dir)
                }),
                "{hash}.narinfo was renamed before the rename of its reference {:?} was durable",
                renamed_to(reference.args).unwrap()
            );
        }
        checked += 1;
    }
    assert_eq!(checked, paths);
}

#[test]
fn a_nar_a_power_loss_left_empty_under_its_name_is_replaced_by_the_next_run() {
    // NARs are renamed into place unsynced; after a power loss one can be
    // empty under its final name, with no narinfo yet. The next run must
    // not take that file for the NAR it would write.
    let work = tempdir();
    let (closure, paths) = text_closure(work.path(), "emptied", 2, 3);
    let cache = work.path().join("cache");
    run(build_into(&cache, &["-q", "--closure-json"]).arg(&closure));
    for hash in narinfo_hash_parts(&cache) {
        let file = cache.join(format!("{hash}.narinfo"));
        let info = NarInfo::parse(&fs::read_to_string(&file).unwrap(), "/nix/store").unwrap();
        fs::write(cache.join(&info.url), "").unwrap();
        fs::remove_file(file).unwrap();
    }
    run(build_into(&cache, &["-q", "--closure-json"]).arg(&closure));
    assert_eq!(assert_cache_consistent(&cache).len(), paths);
}

#[test]
fn nars_on_a_filesystem_of_their_own_are_synced_before_their_narinfos() {
    // `nar/` may be a mount of its own (or a symlink to one): a sync of
    // the cache directory's filesystem alone would leave the NARs
    // undurable under durable narinfos.
    let work = tempdir();
    let (closure, paths) = text_closure(work.path(), "mounted", 2, 3);
    let cache = work.path().join("cache");
    let empty = work.path().join("empty.json");
    fs::write(&empty, "[]").unwrap();
    run(build_into(&cache, &["--closure-json"]).arg(&empty));
    let _mount = crate::faults::Mount::tmpfs(&cache.join("nar"), "size=4m");
    let (code, trace) = build_traced(&cache, &closure, &[], "syncfs", None);
    assert_eq!(code, 0, "the build failed");
    assert_eq!(assert_cache_consistent(&cache).len(), paths);
    let synced: BTreeSet<PathBuf> = trace
        .lines()
        .filter_map(|l| {
            let (_, fd) = l.split_once("syncfs(")?;
            let (_, path) = fd.split_once('<')?;
            Some(PathBuf::from(path.split_once('>')?.0))
        })
        .collect();
    assert!(synced.contains(&cache.join("nar")), "{trace}");
    assert!(synced.contains(&cache), "{trace}");
}

/// The content size each frame of a zstd file announces (`None`: it does
/// not say), read with zstd's own functions.
fn zstd_frame_sizes(file: &[u8]) -> Vec<Option<u64>> {
    use zstd::zstd_safe;
    let mut rest = file;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = zstd_safe::find_frame_compressed_size(rest).expect("a zstd frame");
        let size = zstd_safe::get_frame_content_size(&rest[..len]).expect("a frame header");
        frames.push(size);
        rest = &rest[len..];
    }
    frames
}

/// Every NAR file of `cache`, by name, with its bytes.
fn nar_files(cache: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(cache.join("nar"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect()
}

#[test]
fn a_cache_of_single_frame_zstd_nars_is_added_to_without_rewriting_them() {
    // Nix before 2.35 (2.8 here), and this tool before it, wrote each zstd
    // NAR as one frame that does not announce its size. A run into such a
    // cache leaves those NARs alone and writes the new paths' NARs in
    // frames; verify, prune and Nix take the mix.
    let fixture = fixture();
    let (top, file) = (&fixture.roots[0], &fixture.roots[1]);
    let cache = nix_copy_to("compression=zstd", std::slice::from_ref(file));
    let old = nar_files(cache.path());
    assert!(!old.is_empty());
    for (name, bytes) in &old {
        assert_eq!(
            zstd_frame_sizes(bytes),
            [None],
            "{name} is an old-style NAR"
        );
    }

    run(&mut build_into(cache.path(), &[top, file]));
    let now = nar_files(cache.path());
    for (name, bytes) in &old {
        assert!(now.get(name) == Some(bytes), "{name} was rewritten");
    }
    let large = narinfo_of(cache.path(), fixture_path("large"));
    let large_file = &now[large["URL"].trim_start_matches("nar/")];
    let frame = 16 << 20;
    let nar_size: u64 = large["NarSize"].parse().unwrap();
    assert!(nar_size > 2 * frame && nar_size < 3 * frame);
    assert_eq!(
        zstd_frame_sizes(large_file),
        [Some(frame), Some(frame), Some(nar_size - 2 * frame)]
    );

    assert_eq!(assert_cache_consistent(cache.path()), fixture_closure());
    assert_verify_accepts(cache.path());
    let store = substitute_fixture(cache.path());
    assert_store_holds_fixture(store.path());
    // Prune removes the new paths; what is left is the old cache.
    run(mk_binary_cache()
        .arg("prune")
        .arg(cache.path())
        .args(["--keep", file]));
    assert_eq!(nar_files(cache.path()), old);
    assert_verify_accepts(cache.path());
}
