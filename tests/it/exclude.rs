//! Delta caches: `mkBinaryCache { exclude = …; }` and `build --to
//! --exclude PATH / --exclude-cache DIR`.
//!
//! What is specified here: a delta cache holds the closure of its roots
//! minus the excluded closure, its narinfos still name every reference, and
//! `store-paths` still lists every root; a store that already holds the
//! excluded closure (copied in from another cache) substitutes the roots
//! from the delta cache with `--max-jobs 0`, and an empty store is told
//! exactly which path is missing.
//!
//! The base is the closure of `left.file` (left-file, leaf, busybox); the
//! delta is the rest of `top`'s closure.

use std::collections::BTreeSet;
use std::path::Path;

use crate::build::{build_into, closure_of, store_paths_file};
use crate::common::*;
use crate::e2e::{assert_store_holds_fixture, substitute_attr};

pub(crate) fn top() -> &'static str {
    &fixture().roots[0]
}

pub(crate) fn left_file() -> &'static str {
    &fixture().roots[1]
}

/// The store paths `cache` has narinfos for.
pub(crate) fn held(cache: &Path) -> BTreeSet<String> {
    narinfo_hash_parts(cache)
        .iter()
        .map(|h| {
            // Not `narinfo()`: a path signed in the store may carry several
            // `Sig:` lines.
            let text = std::fs::read_to_string(cache.join(format!("{h}.narinfo"))).unwrap();
            let (_, path) = narinfo_fields(&text)
                .into_iter()
                .find(|(k, _)| k == "StorePath")
                .unwrap();
            path
        })
        .collect()
}

/// The closure of `roots` without that of left.file.
pub(crate) fn minus_base(roots: &[&str]) -> BTreeSet<String> {
    &closure_of(roots) - &closure_of(&[left_file()])
}

/// A cache of the base, as `build --to` writes it.
pub(crate) fn base_cache(dir: &Path) {
    run(&mut build_into(dir, &["-q", left_file()]));
}

#[test]
fn exclude_leaves_out_the_excluded_closure_and_keeps_every_reference() {
    let delta = tempdir();
    run(&mut build_into(
        delta.path(),
        &["-q", "--exclude", left_file(), top()],
    ));
    assert_eq!(held(delta.path()), minus_base(&[top()]));
    // `left` still names `leaf`, which is not here: consumers have it.
    let left = narinfo_of(delta.path(), fixture_path("left"));
    let leaf = basename(fixture_path("leaf"));
    assert!(left["References"].split(' ').any(|r| r == leaf), "{left:?}");
    assert_eq!(store_paths_file(delta.path()), [top()]);
}

// A delta cache is not closed under references on purpose: `verify` says
// so, and with `--delta` checks all the rest and accepts it.
#[test]
fn verify_accepts_a_delta_cache_when_told_it_is_one() {
    let delta = tempdir();
    run(&mut build_into(
        delta.path(),
        &["-q", "--exclude", left_file(), top()],
    ));
    let verify = |extra: &[&str]| {
        let mut cmd = crate::build::mk_binary_cache();
        cmd.arg("verify").args(extra).arg(delta.path());
        cmd.output().unwrap()
    };
    let closed = verify(&[]);
    let stdout = String::from_utf8_lossy(&closed.stdout);
    assert_eq!(closed.status.code(), Some(1), "{stdout}");
    let leaf = fixture_path("leaf");
    assert!(
        stdout.contains(&format!("missing-reference: refers to {leaf}")),
        "{stdout}"
    );
    let as_delta = verify(&["--delta"]);
    assert!(
        as_delta.status.success(),
        "{}{}",
        String::from_utf8_lossy(&as_delta.stdout),
        String::from_utf8_lossy(&as_delta.stderr)
    );
}

#[test]
fn an_excluded_root_has_no_narinfo_but_stays_in_store_paths() {
    let delta = tempdir();
    let args = ["-q", "--exclude", left_file(), top(), left_file()];
    run(&mut build_into(delta.path(), &args));
    assert_eq!(held(delta.path()), minus_base(&[top()]));
    assert_eq!(store_paths_file(delta.path()), [top(), left_file()]);
}

#[test]
fn exclude_cache_leaves_out_what_the_other_cache_holds() {
    let base = tempdir();
    base_cache(base.path());
    let delta = tempdir();
    let base_dir = base.path().to_str().unwrap();
    run(&mut build_into(
        delta.path(),
        &["-q", "--exclude-cache", base_dir, top()],
    ));
    assert_eq!(held(delta.path()), minus_base(&[top()]));
}

#[test]
fn exclude_cache_refuses_a_directory_that_is_not_a_cache() {
    let other = tempdir();
    let delta = tempdir();
    let other_dir = other.path().to_str().unwrap();
    let stderr = run_failing(&mut build_into(
        delta.path(),
        &["--exclude-cache", other_dir, top()],
    ));
    assert!(
        stderr.contains(&format!(
            "--exclude-cache '{other_dir}' is not a binary cache: it has no nix-cache-info"
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(delta.path()).unwrap().count(), 0);
}

/// A fresh chroot store holding the base, copied in from the base cache.
fn store_with_base() -> (tempfile::TempDir, tempfile::TempDir) {
    let base = tempdir();
    base_cache(base.path());
    let store = tempdir();
    run(
        nix_new(&["copy", "--no-check-sigs", "--option", "substituters", ""])
            .arg("--from")
            .arg(format!("file://{}", base.path().display()))
            .arg("--to")
            .arg(store.path())
            .arg(left_file()),
    );
    (base, store)
}

#[test]
fn a_store_with_the_excluded_closure_substitutes_the_roots_from_the_delta() {
    let delta = tempdir();
    run(&mut build_into(
        delta.path(),
        &["-q", "--exclude", left_file(), top()],
    ));
    let (_base, store) = store_with_base();
    let url = format!("file://{}", delta.path().display());
    // --max-jobs 0: nothing may be built, everything is substituted.
    run(&mut substitute_attr(store.path(), &url, "top"));
    assert_store_holds_fixture(store.path());
}

#[test]
fn an_empty_store_is_told_exactly_which_path_is_missing() {
    let delta = tempdir();
    run(&mut build_into(
        delta.path(),
        &["-q", "--exclude", left_file(), top()],
    ));
    let store = tempdir();
    let url = format!("file://{}", delta.path().display());
    let stderr = run_failing(&mut substitute_attr(store.path(), &url, "top"));
    // busybox, a source path, enters the store when closure.nix is
    // evaluated; leaf is the one path of the base that Nix must get.
    let missing: Vec<&str> = stderr
        .lines()
        .skip_while(|l| *l != "don't know how to build these paths:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(missing, [fixture_path("leaf")], "{stderr}");
}

#[test]
fn mk_binary_cache_exclude_writes_the_delta_and_lists_every_root() {
    let cache = build_cache(&["--argstr", "exclude", "left-file"]);
    // The roots are top and left.file; left.file's closure is left out.
    assert_eq!(held(&cache), minus_base(&[top(), left_file()]));
    assert_eq!(store_paths_file(&cache), fixture().roots);
    let (_base, store) = store_with_base();
    let url = format!("file://{}", cache.display());
    run(&mut substitute_attr(store.path(), &url, "roots"));
    assert_store_holds_fixture(store.path());
}

#[test]
fn exclude_refuses_a_path_outside_the_store_before_writing() {
    let work = tempdir();
    let delta = work.path().join("delta");
    let outside = work.path().to_str().unwrap();
    let stderr = run_failing(&mut build_into(&delta, &["--exclude", outside, top()]));
    assert!(
        stderr.contains(&format!(
            "--exclude: root '{outside}': '{outside}' is not inside the store directory '/nix/store'"
        )),
        "{stderr}"
    );
    assert!(!delta.exists());
}
