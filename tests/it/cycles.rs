//! Reference cycles: store paths that refer to each other. Nix never makes
//! one (a path's references exist before it, but for itself, and a path
//! naming itself is no cycle), so a cycle is a hand-made closure file or
//! hand-edited narinfos: hostile input. No order puts each narinfo after
//! those of its references, so a writer that waited for them would write
//! none, and a reader could substitute none of them.
//!
//! What each command does with one, as a user sees it (exit code, message
//! words, the files left):
//! - the builder and `build --to --closure-json` refuse the closure, name
//!   the paths on the cycle, and leave no cache;
//! - on a cache whose narinfos form a cycle, `sign` and `publish` refuse
//!   before they write or upload anything; `prune` refuses when the cycle is
//!   among what it would remove (no order of removal is safe) and keeps it
//!   when it is among what it keeps; `verify` reports it as a problem; and
//!   `build --to` trusts the narinfos already there by their names, as it
//!   always does, and leaves them as they are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::build::{build_into, mk_binary_cache};
use crate::common::*;

// Two store paths that need not exist: the closure is refused before the
// store is looked at.
const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
const B: &str = "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb";
const HASH: &str = "sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq";

/// A closure in which A and B each name the other.
fn cyclic_closure() -> serde_json::Value {
    json!([
        {"path": A, "narHash": HASH, "narSize": 504, "references": [B]},
        {"path": B, "narHash": HASH, "narSize": 504, "references": [A, B]},
    ])
}

/// Runs `cmd`, which must exit with `code`; gives its stdout and stderr.
fn exits_with(cmd: &mut Command, code: i32) -> (String, String) {
    let out = cmd.output().expect("running the program");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stdout}{stderr}");
    (stdout, stderr)
}

/// Whether `text` names the cycle between `a` and `b`.
fn names_the_cycle(text: &str, a: &str, b: &str) -> bool {
    text.contains("form a cycle")
        && (text.contains(&format!("{a} -> {b} -> {a}"))
            || text.contains(&format!("{b} -> {a} -> {b}")))
}

#[test]
fn the_builder_refuses_a_closure_with_a_cycle_and_leaves_no_output() {
    let work = tempdir();
    let out = work.path().join("out");
    let attrs = work.path().join(".attrs.json");
    let json = json!({"outputs": {"out": out}, "closure": cyclic_closure()});
    fs::write(&attrs, json.to_string()).unwrap();
    let mut cmd = mk_binary_cache();
    cmd.env("NIX_ATTRS_JSON_FILE", &attrs);
    let (_, stderr) = exits_with(&mut cmd, 1);
    assert!(names_the_cycle(&stderr, A, B), "{stderr}");
    // Not `cached 0 paths` and an empty cache, as before.
    assert!(!stderr.contains("cached"), "{stderr}");
    assert!(out.symlink_metadata().is_err(), "an output was left");
}

#[test]
fn build_refuses_a_closure_file_with_a_cycle_and_creates_no_cache() {
    let work = tempdir();
    let file = work.path().join("closure.json");
    fs::write(&file, cyclic_closure().to_string()).unwrap();
    let cache = work.path().join("cache");
    let mut cmd = build_into(&cache, &["--closure-json"]);
    cmd.arg(&file);
    let (_, stderr) = exits_with(&mut cmd, 1);
    assert!(names_the_cycle(&stderr, A, B), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(cache.symlink_metadata().is_err(), "a cache was created");
}

/// A cache of the fixture, in `work/cache`, in which the narinfos of its
/// two roots were edited to refer to each other: `work` (a temporary
/// directory, removed when dropped), the cache and the two roots.
fn cyclic_cache() -> (tempfile::TempDir, PathBuf, &'static str, &'static str) {
    let work = tempdir();
    let cache = work.path().join("cache");
    let roots = &fixture().roots;
    run(build_into(&cache, &["-q"]).args(roots));
    let (a, b) = (roots[0].as_str(), roots[1].as_str());
    add_reference(&cache, a, b);
    add_reference(&cache, b, a);
    (work, cache, a, b)
}

/// Edits the narinfo of `from` in `cache` to name `to` among its references.
fn add_reference(cache: &Path, from: &str, to: &str) {
    let file = cache.join(format!("{}.narinfo", hash_part(from)));
    let text = fs::read_to_string(&file).unwrap();
    let edited: String = text
        .lines()
        .map(|line| match line.strip_prefix("References:") {
            Some(refs) => format!("References: {} {}\n", refs.trim(), basename(to)),
            None => format!("{line}\n"),
        })
        .collect();
    assert_ne!(edited, text, "no References line in {}", file.display());
    fs::write(&file, edited).unwrap();
}

#[test]
fn sign_refuses_a_cache_whose_narinfos_form_a_cycle_and_changes_nothing() {
    let (work, cache, a, b) = cyclic_cache();
    let key = generate_key(work.path(), "test-1");
    let before = tree(&cache);
    let mut cmd = mk_binary_cache();
    cmd.args(["sign", "--key-file"])
        .arg(&key.secret)
        .arg(&cache);
    let (_, stderr) = exits_with(&mut cmd, 1);
    assert!(names_the_cycle(&stderr, a, b), "{stderr}");
    assert!(stderr.contains("nothing was signed"), "{stderr}");
    assert!(tree(&cache) == before, "sign changed the cache");
    // Nor is a signed copy made.
    let copy = work.path().join("copy");
    let mut cmd = mk_binary_cache();
    cmd.args(["sign", "--key-file"])
        .arg(&key.secret)
        .arg("--out")
        .arg(&copy)
        .arg(&cache);
    exits_with(&mut cmd, 1);
    assert!(copy.symlink_metadata().is_err(), "a copy was left");
}

#[test]
fn verify_reports_a_cycle_on_each_narinfo_on_it() {
    let (_work, cache, a, b) = cyclic_cache();
    let mut cmd = mk_binary_cache();
    cmd.arg("verify").arg(&cache);
    let (stdout, _) = exits_with(&mut cmd, 1);
    for path in [a, b] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{path}: reference-cycle: ")))
            .unwrap_or_else(|| panic!("no reference-cycle problem for {path}:\n{stdout}"));
        assert!(names_the_cycle(line, a, b), "{line}");
    }
}

#[test]
fn prune_refuses_to_remove_narinfos_on_a_cycle_and_removes_nothing() {
    let (_work, cache, a, b) = cyclic_cache();
    // Keep a path that refers to nothing: both roots, on the cycle, would go.
    let leaf = fixture()
        .closure
        .iter()
        .find(|p| {
            let refs = &narinfo_of(&cache, p)["References"];
            refs.split_whitespace().all(|r| r == basename(p))
        })
        .expect("a path of the fixture that refers to nothing");
    let before = tree(&cache);
    for args in [vec!["--keep", leaf, "--dry-run"], vec!["--keep", leaf]] {
        let mut cmd = mk_binary_cache();
        cmd.arg("prune").arg(&cache).args(&args);
        let (_, stderr) = exits_with(&mut cmd, 1);
        assert!(names_the_cycle(&stderr, a, b), "{stderr}");
        assert!(stderr.contains("nothing was removed"), "{stderr}");
        assert!(tree(&cache) == before, "prune {args:?} changed the cache");
    }
}

#[test]
fn prune_keeps_a_cycle_among_the_paths_it_keeps() {
    // Keeping both paths needs no order: the closure of the roots is found
    // however the references run, and nothing on the cycle goes.
    let (_work, cache, a, b) = cyclic_cache();
    let mut cmd = mk_binary_cache();
    cmd.arg("prune").arg(&cache).arg("-q");
    exits_with(&mut cmd, 0);
    for path in [a, b] {
        assert!(
            cache.join(format!("{}.narinfo", hash_part(path))).is_file(),
            "{path} went"
        );
    }
}

#[test]
fn build_into_a_cache_with_a_cycle_leaves_its_narinfos_as_they_are() {
    // `build --to` skips a path whose narinfo is there without reading it
    // (reading every narinfo would cost a large cache dearly); the cycle is
    // neither read nor made worse.
    let (_work, cache, a, _) = cyclic_cache();
    let before = tree(&cache);
    let (_, stderr) = exits_with(&mut build_into(&cache, &[a]), 0);
    assert!(stderr.contains("already in the cache"), "{stderr}");
    assert!(tree(&cache) == before, "build --to changed the cache");
}

#[test]
fn publish_refuses_a_cache_whose_narinfos_form_a_cycle_before_connecting() {
    let (_work, cache, a, b) = cyclic_cache();
    // Nothing listens there: a publish that got as far as the network would
    // fail with another error.
    let mut cmd = crate::publish::publisher();
    cmd.arg(&cache)
        .arg("s3://bucket?endpoint=http://127.0.0.1:9&region=us-east-1");
    let (_, stderr) = exits_with(&mut cmd, 1);
    assert!(names_the_cycle(&stderr, a, b), "{stderr}");
}
