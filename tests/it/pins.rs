//! Named pins: `build --to --pin NAME`, `pin`, `pins`, and what `prune`
//! keeps of them.
//!
//! What is specified here: a pin records each release's roots as a new
//! revision with its time, in the plain file `pins/NAME` that an HTTP client
//! reads; its retention policy is stored with it and applied by a later
//! prune without being restated; prune keeps the closures of the retained
//! revisions, of the roots added without a pin and of `--keep`, drops the
//! other revisions from the pin and their roots from `store-paths`, and
//! reports per pin; `--dry-run` changes nothing; `pins` lists each pin's
//! revisions with their sizes and the bytes only they hold; `pin` pins
//! paths the cache holds and refuses others.
//!
//! The releases are the fixture's two roots: `top` and `left.file`, whose
//! closures share `leaf` and busybox.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::build::{
    assert_verify_accepts, build_into, closure_of, mk_binary_cache, store_paths_file,
};
use crate::common::*;
use crate::http::Nginx;
use crate::prune::{assert_holds_exactly, left_file, prune, top};

/// `build --to cache --pin NAME <flags> root`, with listings (which
/// `assert_holds_exactly` expects).
fn release(cache: &Path, name: &str, flags: &[&str], root: &str) {
    let mut cmd = build_into(cache, &["--write-nar-listing", "-q", "--pin", name]);
    run(cmd.args(flags).arg(root));
}

/// The `Root:` lines of the newest revision, as a script would read them.
fn newest_roots(pin: &str) -> Vec<String> {
    let mut revisions = 0;
    pin.lines()
        .filter(|l| {
            revisions += l.starts_with("Revision: ") as usize;
            revisions == 1
        })
        .filter_map(|l| l.strip_prefix("Root: ").map(str::to_owned))
        .collect()
}

/// The numbers of the revisions a pin file holds, newest first.
fn revision_numbers(cache: &Path, name: &str) -> Vec<u64> {
    fs::read_to_string(cache.join("pins").join(name))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Revision: "))
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Sets the `Time:` of every revision of the pin to `seconds_ago` before
/// now, as if they had been recorded then.
fn age_revisions(cache: &Path, name: &str, seconds_ago: u64) {
    let file = cache.join("pins").join(name);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text: String = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| match l.starts_with("Time: ") {
            true => format!("Time: {}\n", now - seconds_ago),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(file, text).unwrap();
}

#[test]
fn a_pinned_build_records_a_revision_that_a_client_fetches_over_http() {
    let cache = tempdir();
    release(cache.path(), "release", &["--keep-revisions", "2"], top());
    release(cache.path(), "release", &[], left_file());

    let nginx = Nginx::serve(cache.path());
    let pin = nginx.get("/pins/release");
    assert!(pin.starts_with("Pin: release\nKeepRevisions: 2\n"), "{pin}");
    assert_eq!(newest_roots(&pin), [left_file()]);
    assert_eq!(revision_numbers(cache.path(), "release"), [2, 1]);
    // store-paths keeps its meaning: the roots of the retained revisions.
    assert_eq!(store_paths_file(cache.path()), [top(), left_file()]);
    assert_verify_accepts(cache.path());
}

#[test]
fn prune_drops_the_revisions_the_stored_policy_drops_and_what_only_they_hold() {
    let cache = tempdir();
    release(cache.path(), "release", &["--keep-revisions", "1"], top());
    // The policy is not restated: the pin keeps it.
    release(cache.path(), "release", &[], left_file());

    let out = run(&mut prune(cache.path(), &[]));
    assert_holds_exactly(cache.path(), &[left_file()]);
    assert_eq!(revision_numbers(cache.path(), "release"), [2]);
    // A path added under a pin is a root through its pin alone.
    assert_eq!(store_paths_file(cache.path()), [left_file()]);
    assert!(out.contains("dropped revision 1 of pin release\n"), "{out}");
    let gone = closure_of(&[top()]).len()
        - closure_of(&[top()])
            .intersection(&closure_of(&[left_file()]))
            .count();
    let kept = closure_of(&[left_file()]).len();
    assert!(
        out.contains(&format!(
            "pin release (the newest 1 revision): kept revision 2 ({kept} paths); dropped revision 1: {gone} paths, "
        )),
        "{out}"
    );
}

#[test]
fn revisions_younger_than_keep_days_are_kept_and_older_ones_dropped() {
    let cache = tempdir();
    release(cache.path(), "nightly", &["--keep-days", "7"], top());
    release(cache.path(), "nightly", &[], left_file());

    // Both a day old: the policy keeps both.
    age_revisions(cache.path(), "nightly", 86_400);
    run(&mut prune(cache.path(), &[]));
    assert_holds_exactly(cache.path(), &[top(), left_file()]);

    // Eight days old: only the newest stays, whatever its age.
    age_revisions(cache.path(), "nightly", 8 * 86_400);
    run(&mut prune(cache.path(), &[]));
    assert_holds_exactly(cache.path(), &[left_file()]);
    assert_eq!(revision_numbers(cache.path(), "nightly"), [2]);
}

#[test]
fn roots_added_without_a_pin_stay_when_a_pin_drops_its_revisions() {
    let cache = tempdir();
    run(&mut build_into(
        cache.path(),
        &["--write-nar-listing", "-q", top()],
    ));
    release(
        cache.path(),
        "release",
        &["--keep-revisions", "1"],
        left_file(),
    );
    release(cache.path(), "release", &[], left_file());

    run(&mut prune(cache.path(), &[]));
    assert_holds_exactly(cache.path(), &[top(), left_file()]);
    assert_eq!(store_paths_file(cache.path()), [top(), left_file()]);
    assert_eq!(revision_numbers(cache.path(), "release"), [2]);
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_each_pin_would_drop() {
    let cache = tempdir();
    release(cache.path(), "release", &["--keep-revisions", "1"], top());
    release(cache.path(), "release", &[], left_file());
    let before = tree(cache.path());

    let out = run(&mut prune(cache.path(), &["--dry-run"]));
    assert!(tree(cache.path()) == before, "a dry run changed the cache");
    assert!(
        out.contains("would drop revision 1 of pin release\n"),
        "{out}"
    );
    assert!(out.contains(&format!("would remove {} (", top())), "{out}");
    assert!(out.contains("dry run: would remove "), "{out}");
}

#[test]
fn pin_pins_paths_the_cache_holds_and_refuses_others() {
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", left_file()]));

    let mut pin = mk_binary_cache();
    pin.arg("pin")
        .arg(cache.path())
        .args(["stable", left_file(), "--keep-revisions", "3"]);
    assert_eq!(
        run(&mut pin),
        "pin stable: revision 1 with 1 roots (keeps the newest 3 revisions)\n"
    );
    let text = fs::read_to_string(cache.path().join("pins/stable")).unwrap();
    assert_eq!(newest_roots(&text), [left_file()]);

    // `top` is in the store, not in the cache: pinning it would name a
    // path the cache cannot serve.
    let mut pin = mk_binary_cache();
    pin.arg("pin").arg(cache.path()).args(["stable", top()]);
    let error = run_failing(&mut pin);
    assert!(error.contains("the cache has no narinfo for"), "{error}");
    assert_eq!(revision_numbers(cache.path(), "stable"), [1]);

    // Only the policy: no new revision.
    let mut pin = mk_binary_cache();
    pin.arg("pin")
        .arg(cache.path())
        .args(["stable", "--keep-days", "30"]);
    assert_eq!(
        run(&mut pin),
        "pin stable: keeps revisions younger than 30 days\n"
    );
    assert_eq!(revision_numbers(cache.path(), "stable"), [1]);
}

#[test]
fn a_bad_pin_name_is_refused_before_anything_is_written() {
    let cache = tempdir();
    let error = run_failing(&mut build_into(
        cache.path(),
        &["-q", "--pin", "../x", top()],
    ));
    assert!(error.contains("'../x' is not a pin name"), "{error}");
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

/// The bytes of the narinfos of `paths` and of the NARs they name, read
/// from the cache's files.
fn bytes_of(cache: &Path, paths: &BTreeSet<String>) -> u64 {
    let mut nars = BTreeSet::new();
    paths
        .iter()
        .map(|path| {
            let file = cache.join(format!("{}.narinfo", hash_part(path)));
            let url = narinfo(&file)["URL"].clone();
            let nar = match nars.insert(url.clone()) {
                true => fs::metadata(cache.join(&url)).unwrap().len(),
                false => 0,
            };
            fs::metadata(&file).unwrap().len() + nar
        })
        .sum()
}

#[test]
fn pins_lists_each_revision_with_its_size_and_the_bytes_only_it_holds() {
    let cache = tempdir();
    release(cache.path(), "a", &[], top());
    release(cache.path(), "b", &["--keep-revisions", "1"], left_file());
    let top_closure = closure_of(&[top()]);
    let left_closure = closure_of(&[left_file()]);
    let only_top: BTreeSet<String> = top_closure.difference(&left_closure).cloned().collect();
    let only_left: BTreeSet<String> = left_closure.difference(&top_closure).cloned().collect();

    let mut list = mk_binary_cache();
    let out = run(list.arg("pins").arg(cache.path()));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("pin a (keeps every revision): 1 revisions, "),
        "{out}"
    );
    assert!(lines[1].starts_with("  revision 1, "), "{out}");
    assert!(lines[1].contains(": 1 roots, "), "{out}");
    assert!(
        lines[2].starts_with("pin b (keeps the newest 1 revision): 1 revisions, "),
        "{out}"
    );
    for (line, closure, only) in [
        (lines[0], &top_closure, &only_top),
        (lines[1], &top_closure, &only_top),
        (lines[2], &left_closure, &only_left),
        (lines[3], &left_closure, &only_left),
    ] {
        let size = bytes_of(cache.path(), closure);
        assert!(
            line.contains(&format!(" {} paths, ", closure.len())),
            "{line}"
        );
        assert!(
            line.contains(&format!(" ({size} bytes), ")),
            "{line}: {size}"
        );
        let only = bytes_of(cache.path(), only);
        assert!(
            line.ends_with(&format!(" ({only} bytes) only here")),
            "{line}: {only}"
        );
    }
}
