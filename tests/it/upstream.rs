//! Upstreams: `build --to` and `publish` with `--upstream-key NAME` and
//! `--upstream URL` leave out what another cache already serves.
//!
//! What is specified here: a path signed in the store by an upstream's key
//! is left out with no network at all, and an unsigned one is kept; a path
//! whose narinfo an upstream (`file://`, or a real nginx on 127.0.0.1)
//! serves is left out, and one it does not serve, or serves a fake page
//! for, is kept; an upstream that does not answer is an error that leaves no
//! cache, unless `--unreachable-upstream-is-empty`; the result is a delta
//! cache whose `nix-cache-info` names its upstreams, which `verify` accepts
//! as a delta, and from which, with its upstream, a fresh store gets every
//! root with `--max-jobs 0`; the summary says what was skipped and why.
//!
//! The upstream of the URL tests is a cache of the closure of `left.file`
//! (left-file, leaf, busybox), as in tests/it/exclude.rs. The key tests
//! sign paths of their own (tests/fixtures/path-info/closure.nix with the
//! label `upstream`) with a key made for the run, since the store is shared
//! with the tests running beside these.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::build::{build_into, closure_of, mk_binary_cache};
use crate::common::*;
use crate::e2e::{assert_store_holds_fixture, substitute_attr};
use crate::http::Nginx;

fn top() -> &'static str {
    &fixture().roots[0]
}

fn left_file() -> &'static str {
    &fixture().roots[1]
}

/// The store paths `cache` has narinfos for.
fn held(cache: &Path) -> BTreeSet<String> {
    narinfo_hash_parts(cache)
        .iter()
        .map(|h| {
            // Not `narinfo()`: the signed paths carry the `Sig:` lines of
            // every run's key.
            let text = fs::read_to_string(cache.join(format!("{h}.narinfo"))).unwrap();
            narinfo_fields(&text)
                .into_iter()
                .find(|(k, _)| k == "StorePath")
                .unwrap()
                .1
        })
        .collect()
}

/// The closure of `top` without that of left.file: what the upstream lacks.
fn top_minus_upstream() -> BTreeSet<String> {
    &closure_of(&[top()]) - &closure_of(&[left_file()])
}

/// The upstream: a cache of the closure of left.file.
fn upstream_cache() -> tempfile::TempDir {
    let dir = tempdir();
    run(&mut build_into(dir.path(), &["-q", left_file()]));
    dir
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Runs `cmd`, which must succeed; returns its standard error.
fn stderr_of(cmd: &mut std::process::Command) -> String {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", show(cmd));
    stderr
}

fn cache_info_lines(cache: &Path) -> Vec<String> {
    fs::read_to_string(cache.join("nix-cache-info"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `build --to` needs mk-binary-cache-publish beside it to ask over HTTP.
fn require_query_program() {
    assert!(
        cfg!(feature = "publish"),
        "the HTTP upstream tests need mk-binary-cache-publish: \
         `cargo test --features publish` (scripts/test passes --all-features)"
    );
}

// --- --upstream-key --------------------------------------------------------

/// This module's closure, with its `toFile` path (and only it) signed in the
/// store by a key made for this run.
struct Signed {
    app: String,
    note: String,
    busybox: String,
    key_name: String,
    _keys: tempfile::TempDir,
}

fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let keys = tempdir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let key_name = format!("mkbc-upstream-{}-{nanos}", std::process::id());
        let key = generate_key(keys.path(), &key_name);
        let bb = nix_path(busybox_dir());
        let out = nix_build(
            &fixture_file("path-info/closure.nix"),
            &["--arg", "busyboxDir", &bb, "--argstr", "label", "upstream"],
        );
        let app = out[0].clone();
        let closure = run(nix_cmd("nix-store").arg("-qR").arg(&app));
        let find = |suffix: &str| {
            closure
                .lines()
                .find(|p| p.ends_with(suffix))
                .unwrap_or_else(|| panic!("no *{suffix} in {closure}"))
                .to_string()
        };
        let note = find("-upstream-note.txt");
        let busybox = find("-busybox");
        run(nix_new(&["store", "sign", "--key-file"])
            .arg(&key.secret)
            .arg(&note));
        Signed {
            app,
            note,
            busybox,
            key_name,
            _keys: keys,
        }
    })
}

#[test]
fn build_leaves_out_a_path_signed_by_an_upstream_key_and_keeps_an_unsigned_one() {
    let signed = signed();
    let cache = tempdir();
    let stderr = stderr_of(&mut build_into(
        cache.path(),
        &["--upstream-key", &signed.key_name, &signed.app],
    ));
    let expected: BTreeSet<String> = [signed.app.clone(), signed.busybox.clone()].into();
    assert_eq!(held(cache.path()), expected);
    // The app still names the note, which its upstream serves.
    let app = narinfo_of(cache.path(), &signed.app);
    assert!(
        app["References"].contains(basename(&signed.note)),
        "{app:?}"
    );
    assert!(
        cache_info_lines(cache.path()).contains(&format!("UpstreamKey: {}", signed.key_name)),
        "{:?}",
        cache_info_lines(cache.path())
    );
    let note_size = narinfo_of_store(&signed.note);
    assert!(
        stderr.contains(&format!(
            "skipped 1 path ({note_size} of NAR) that upstreams serve: 1 signed by {}",
            signed.key_name
        )),
        "{stderr}"
    );
}

/// The NAR size of a store path as the summary prints it.
fn narinfo_of_store(path: &str) -> String {
    let size: u64 = run(nix_cmd("nix-store").args(["-q", "--size", path]))
        .trim()
        .parse()
        .unwrap();
    mk_binary_cache::support::progress::human_bytes(size)
}

#[test]
fn a_key_that_signed_nothing_leaves_everything_in() {
    let signed = signed();
    let cache = tempdir();
    run(&mut build_into(
        cache.path(),
        &[
            "-q",
            "--upstream-key",
            "mkbc-upstream-nobody-1",
            &signed.app,
        ],
    ));
    assert_eq!(held(cache.path()).len(), 3);
}

#[test]
fn an_upstream_key_name_with_a_colon_is_refused_before_anything_is_written() {
    let cache = tempdir();
    let stderr = run_failing(&mut build_into(
        cache.path(),
        &["--upstream-key", "name:c2VjcmV0", left_file()],
    ));
    assert!(
        stderr.contains("--upstream-key 'name:c2VjcmV0': expected the name of a key"),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

// --- --upstream file:// -----------------------------------------------------

#[test]
fn build_leaves_out_what_a_file_upstream_serves_and_says_so() {
    let upstream = upstream_cache();
    let url = file_url(upstream.path());
    let delta = tempdir();
    let stderr = stderr_of(&mut build_into(delta.path(), &["--upstream", &url, top()]));
    assert_eq!(held(delta.path()), top_minus_upstream());
    let skipped = (&closure_of(&[top()]) & &closure_of(&[left_file()])).len();
    assert!(
        stderr.contains(&format!("that upstreams serve: {skipped} served by {url}")),
        "{stderr}"
    );
    assert!(
        cache_info_lines(delta.path()).contains(&format!("Upstream: {url}")),
        "{:?}",
        cache_info_lines(delta.path())
    );
}

// The delta names its upstream, so verify needs no --delta to accept the
// references it lacks, and says what it is a delta of.
#[test]
fn verify_accepts_a_cache_that_names_its_upstreams_as_a_delta() {
    let upstream = upstream_cache();
    let url = file_url(upstream.path());
    let delta = tempdir();
    run(&mut build_into(
        delta.path(),
        &["-q", "--upstream", &url, top()],
    ));
    let stdout = run(mk_binary_cache().arg("verify").arg(delta.path()));
    assert!(
        stdout.contains(&format!("no problems; a delta of {url}")),
        "{stdout}"
    );
}

#[test]
fn a_fresh_store_gets_every_root_from_the_delta_and_its_file_upstream() {
    let upstream = upstream_cache();
    let delta = tempdir();
    let delta_url = file_url(delta.path());
    let upstream_url = file_url(upstream.path());
    run(&mut build_into(
        delta.path(),
        &["-q", "--upstream", &upstream_url, top(), left_file()],
    ));
    let store = tempdir();
    run(&mut substitute_attr(
        store.path(),
        &format!("{delta_url} {upstream_url}"),
        "roots",
    ));
    assert_store_holds_fixture(store.path());
}

#[test]
fn a_narinfo_that_names_another_path_is_no_hit() {
    // An upstream whose narinfos all hold the first one's text: it serves
    // the path of that one, and nothing else.
    let upstream = upstream_cache();
    let names = narinfo_hash_parts(upstream.path());
    let first = upstream.path().join(format!("{}.narinfo", names[0]));
    let true_one = narinfo(&first)["StorePath"].clone();
    for name in &names[1..] {
        fs::copy(&first, upstream.path().join(format!("{name}.narinfo"))).unwrap();
    }
    let delta = tempdir();
    let url = file_url(upstream.path());
    run(&mut build_into(
        delta.path(),
        &["-q", "--upstream", &url, top(), left_file()],
    ));
    let mut expected = closure_of(&[top(), left_file()]);
    expected.remove(&true_one);
    assert_eq!(held(delta.path()), expected);
}

// --- --upstream http:// (nginx) ---------------------------------------------

#[test]
fn a_fresh_store_gets_every_root_from_the_delta_and_its_http_upstream() {
    require_query_program();
    let upstream = upstream_cache();
    let nginx = Nginx::serve(upstream.path());
    let delta = tempdir();
    let stderr = stderr_of(&mut build_into(
        delta.path(),
        &["--upstream", &nginx.url(), top(), left_file()],
    ));
    assert_eq!(held(delta.path()), top_minus_upstream());
    assert!(
        stderr.contains(&format!("served by {}", nginx.url())),
        "{stderr}"
    );
    assert!(cache_info_lines(delta.path()).contains(&format!("Upstream: {}", nginx.url())));
    let store = tempdir();
    run(&mut substitute_attr(
        store.path(),
        &format!("{} {}", file_url(delta.path()), nginx.url()),
        "roots",
    ));
    assert_store_holds_fixture(store.path());
}

#[test]
fn a_fake_200_page_from_an_http_upstream_is_no_hit() {
    require_query_program();
    // A server that answers every narinfo it is asked for with a page.
    let site = tempdir();
    fs::write(site.path().join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    for path in closure_of(&[top()]) {
        fs::write(
            site.path().join(format!("{}.narinfo", hash_part(&path))),
            "<html><body>Welcome!</body></html>\n",
        )
        .unwrap();
    }
    let nginx = Nginx::serve(site.path());
    let cache = tempdir();
    run(&mut build_into(
        cache.path(),
        &["-q", "--upstream", &nginx.url(), top()],
    ));
    assert_eq!(held(cache.path()), closure_of(&[top()]));
    // It was asked: the pages were fetched, and found wanting.
    assert!(
        nginx
            .requests()
            .iter()
            .any(|r| r.contains(".narinfo ") && r.contains("\" 200 ")),
        "{:#?}",
        nginx.requests()
    );
}

#[test]
fn an_unreachable_upstream_is_an_error_that_leaves_no_cache() {
    require_query_program();
    let url = format!("http://127.0.0.1:{}", free_port());
    let cache = tempdir();
    let stderr = run_failing(&mut build_into(cache.path(), &["--upstream", &url, top()]));
    assert!(
        stderr.contains(&format!("upstream {url} did not answer")),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn an_unreachable_upstream_can_be_taken_as_empty() {
    require_query_program();
    let url = format!("http://127.0.0.1:{}", free_port());
    let cache = tempdir();
    let stderr = stderr_of(&mut build_into(
        cache.path(),
        &["--unreachable-upstream-is-empty", "--upstream", &url, top()],
    ));
    assert!(
        stderr.contains(&format!(
            "warning: upstream {url} did not answer: nix-cache-info"
        )),
        "{stderr}"
    );
    assert_eq!(held(cache.path()), closure_of(&[top()]));
}

#[test]
fn an_address_that_is_not_a_binary_cache_is_an_error() {
    require_query_program();
    let site = tempdir();
    let nginx = Nginx::serve(site.path());
    let cache = tempdir();
    let stderr = run_failing(&mut build_into(
        cache.path(),
        &["--upstream", &nginx.url(), top()],
    ));
    assert!(
        stderr.contains("it has no nix-cache-info: it is not a binary cache"),
        "{stderr}"
    );
}

// --- publish -------------------------------------------------------------

#[test]
fn publish_leaves_out_what_upstreams_serve_and_the_bucket_says_so() {
    use crate::publish::{Moto, publisher};
    let signed = signed();
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", &signed.app]));
    let upstream = tempdir();
    run(&mut build_into(upstream.path(), &["-q", &signed.busybox]));
    let bucket = Moto::shared().bucket("upstream");
    let url = file_url(upstream.path());
    let stdout = run(publisher()
        .args(["--upstream-key", &signed.key_name, "--upstream", &url])
        .arg(cache.path())
        .arg(bucket.url()));
    assert!(
        stdout.contains(&format!(
            "that upstreams serve: 1 signed by {}, 1 served by {url}",
            signed.key_name
        )),
        "{stdout}"
    );
    let objects = bucket.objects();
    let has = |path: &str| objects.contains_key(&format!("{}.narinfo", hash_part(path)));
    assert!(has(&signed.app), "{objects:?}");
    assert!(!has(&signed.note) && !has(&signed.busybox), "{objects:?}");
    // Nor their NARs: only the app's is there.
    let nars = objects.keys().filter(|k| k.starts_with("nar/")).count();
    assert_eq!(nars, 1, "{objects:?}");
    let app_nar = narinfo_of(cache.path(), &signed.app)["URL"].clone();
    assert!(objects.contains_key(&app_nar), "{objects:?}");
    let copy = tempdir();
    Moto::shared().s3(&["download", &bucket.name, copy.path().to_str().unwrap()]);
    let info = fs::read_to_string(copy.path().join("nix-cache-info")).unwrap();
    assert!(
        info.contains(&format!("Upstream: {url}\n"))
            && info.contains(&format!("UpstreamKey: {}\n", signed.key_name)),
        "{info}"
    );
}
