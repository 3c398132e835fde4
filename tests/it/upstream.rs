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

use crate::build::{build_into, closure_of, mk_binary_cache, store_paths_file};
use crate::common::*;
use crate::e2e::{assert_store_holds_fixture, substitute_attr};
use crate::exclude::{base_cache, held, left_file, minus_base, top};
use crate::http::Nginx;
use crate::publish::{Moto, credentials, publisher};
use crate::store_signatures::signed;
use mk_binary_cache::support::progress::human_bytes;

/// The closure of `top` without that of left.file: what the upstream lacks.
fn top_minus_upstream() -> BTreeSet<String> {
    minus_base(&[top()])
}

/// The upstream: a cache of the closure of left.file.
fn upstream_cache() -> tempfile::TempDir {
    let dir = tempdir();
    base_cache(dir.path());
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
    let built = option_env!("CARGO_BIN_EXE_mk-binary-cache-publish")
        .filter(|_| cfg!(feature = "publish"))
        .is_some();
    assert!(
        built,
        "the HTTP upstream tests need mk-binary-cache-publish: \
         `cargo test --features publish` (scripts/test passes --all-features)"
    );
}

// --- --upstream-key --------------------------------------------------------

// The app and its note are signed in the store by the run's key; busybox
// is not.
#[test]
fn build_leaves_out_paths_signed_by_an_upstream_key_and_keeps_an_unsigned_one() {
    let signed = signed();
    let cache = tempdir();
    let stderr = stderr_of(&mut build_into(
        cache.path(),
        &["--upstream-key", signed.key_name(), &signed.app],
    ));
    assert_eq!(
        held(cache.path()),
        BTreeSet::from([signed.busybox().to_string()])
    );
    assert_eq!(store_paths_file(cache.path()), [signed.app.as_str()]);
    assert!(
        cache_info_lines(cache.path()).contains(&format!("UpstreamKey: {}", signed.key_name())),
        "{:?}",
        cache_info_lines(cache.path())
    );
    let bytes = human_bytes(nar_size(&signed.app) + nar_size(&signed.note));
    assert!(
        stderr.contains(&format!(
            "skipped 2 paths ({bytes} of NAR) that upstreams serve: 2 signed by {}",
            signed.key_name()
        )),
        "{stderr}"
    );
}

/// The NAR size of a store path, as the local store has it.
fn nar_size(path: &str) -> u64 {
    run(nix_cmd("nix-store").args(["-q", "--size", path]))
        .trim()
        .parse()
        .unwrap()
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
    let all: BTreeSet<String> = signed.closure.iter().cloned().collect();
    assert_eq!(held(cache.path()), all);
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

// A cache that grows run by run is a delta of every upstream any run left
// paths out for: nix-cache-info keeps the upstreams it names, and its other
// lines, and adds the new ones.
#[test]
fn later_runs_add_their_upstreams_to_those_nix_cache_info_names() {
    let upstream = upstream_cache();
    let url = file_url(upstream.path());
    let cache = tempdir();
    run(&mut build_into(
        cache.path(),
        &[
            "-q",
            "--priority",
            "30",
            "--upstream-key",
            "mkbc-first-1",
            left_file(),
        ],
    ));
    run(&mut build_into(
        cache.path(),
        &["-q", "--upstream", &url, top()],
    ));
    run(&mut build_into(
        cache.path(),
        &["-q", "--upstream", &url, top()],
    ));
    assert_eq!(
        cache_info_lines(cache.path()),
        [
            "StoreDir: /nix/store".to_string(),
            "Priority: 30".to_string(),
            format!("Upstream: {url}"),
            "UpstreamKey: mkbc-first-1".to_string(),
        ]
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

#[test]
fn without_the_publisher_an_http_upstream_says_what_to_install() {
    // The builder alone, as mkBinaryCache's closure has it, with Nix in PATH.
    let dir = tempdir();
    let bin = dir.path().join("mk-binary-cache");
    fs::copy(env!("CARGO_BIN_EXE_mk-binary-cache"), &bin).unwrap();
    let nix_bin =
        Path::new(&run(std::process::Command::new("sh").args(["-c", "command -v nix"])).trim())
            .parent()
            .unwrap()
            .to_owned();
    let cache = tempdir();
    let mut cmd = std::process::Command::new(&bin);
    hermetic_nix(&mut cmd)
        .env(
            "PATH",
            format!("{}:{}", dir.path().display(), nix_bin.display()),
        )
        .args(["build", "--to"])
        .arg(cache.path())
        .args(["--upstream", "https://cache.example.org", top()]);
    let stderr = run_failing(&mut cmd);
    assert!(
        stderr.contains(&format!(
            "upstream https://cache.example.org: asking it over the network needs \
             mk-binary-cache-publish (the publish feature) installed beside mk-binary-cache \
             or in PATH: mk-binary-cache-publish is in neither {} nor PATH",
            dir.path().display()
        )),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

// --- --upstream s3:// (moto) ---------------------------------------------

#[test]
fn build_leaves_out_what_an_s3_upstream_serves() {
    require_query_program();
    let moto = Moto::shared();
    let bucket = moto.bucket("upstream-s3");
    let upstream = upstream_cache();
    run(publisher().arg("-q").arg(upstream.path()).arg(bucket.url()));
    let delta = tempdir();
    let mut cmd = build_into(delta.path(), &["-q", "--upstream", &bucket.url(), top()]);
    // The program that asks S3 finds its keys as publish does.
    credentials(&mut cmd, "testing", "testing");
    run(&mut cmd);
    assert_eq!(held(delta.path()), top_minus_upstream());
    assert!(cache_info_lines(delta.path()).contains(&format!("Upstream: {}", bucket.url())));
}

// --- publish -------------------------------------------------------------

/// `mk-binary-cache-publish ARGS CACHE` into a new bucket; its stdout, its
/// objects, and its nix-cache-info.
fn publish_with(cache: &Path, args: &[&str]) -> (String, BTreeSet<String>, String) {
    let moto = Moto::shared();
    let bucket = moto.bucket("upstream");
    let stdout = run(publisher().args(args).arg(cache).arg(bucket.url()));
    let copy = tempdir();
    moto.s3(&["download", &bucket.name, copy.path().to_str().unwrap()]);
    let info = fs::read_to_string(copy.path().join("nix-cache-info")).unwrap();
    (stdout, bucket.objects().into_keys().collect(), info)
}

/// The objects of the narinfo and NAR of `path` in `cache`.
fn objects_of(cache: &Path, path: &str) -> [String; 2] {
    let text = fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(path)))).unwrap();
    let (_, nar) = narinfo_fields(&text)
        .into_iter()
        .find(|(k, _)| k == "URL")
        .unwrap();
    [format!("{}.narinfo", hash_part(path)), nar]
}

#[test]
fn publish_leaves_out_paths_whose_narinfos_an_upstream_key_signed() {
    let signed = signed();
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", &signed.app]));
    let (stdout, objects, info) =
        publish_with(cache.path(), &["--upstream-key", signed.key_name()]);
    for object in objects_of(cache.path(), signed.busybox()) {
        assert!(objects.contains(&object), "{object}: {objects:?}");
    }
    for path in [&signed.app, &signed.note] {
        for object in objects_of(cache.path(), path) {
            assert!(!objects.contains(&object), "{object}: {objects:?}");
        }
    }
    assert!(
        stdout.contains(&format!(
            "that upstreams serve: 2 signed by {}",
            signed.key_name()
        )),
        "{stdout}"
    );
    assert!(
        info.contains(&format!("UpstreamKey: {}\n", signed.key_name())),
        "{info}"
    );
}

#[test]
fn publish_leaves_out_what_a_file_upstream_serves_and_the_bucket_says_so() {
    let cache = tempdir();
    // `leaf`, which the upstream serves, has the fixture's debug file.
    let args = ["-q", "--index-debug-info", "--write-nar-listing", top()];
    run(&mut build_into(cache.path(), &args));
    assert!(cache.path().join("debuginfo").read_dir().unwrap().count() > 0);
    let upstream = upstream_cache();
    let url = file_url(upstream.path());
    let (stdout, objects, info) = publish_with(cache.path(), &["--upstream", &url]);
    // Nor the listing and debug-info entries of what is left out.
    let listings = objects.iter().filter(|o| o.ends_with(".ls")).count();
    assert_eq!(listings, top_minus_upstream().len(), "{objects:?}");
    assert!(
        !objects.iter().any(|o| o.starts_with("debuginfo/")),
        "{objects:?}"
    );
    let narinfos: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.ends_with(".narinfo"))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = top_minus_upstream()
        .iter()
        .map(|p| format!("{}.narinfo", hash_part(p)))
        .collect();
    assert_eq!(narinfos, expected);
    let nars = objects.iter().filter(|o| o.starts_with("nar/")).count();
    assert_eq!(nars, expected.len(), "{objects:?}");
    assert!(stdout.contains(&format!("served by {url}")), "{stdout}");
    assert!(info.contains(&format!("Upstream: {url}\n")), "{info}");
}
