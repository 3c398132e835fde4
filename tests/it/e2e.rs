//! End-to-end tests: real Nix, sandbox on, builds caches of the fixture
//! closure (tests/fixtures/closure.nix) with `mkBinaryCache` and checks that
//! Nix substitutes from them, and that they agree with what `nix copy` writes.
//!
//! The fixture is a diamond of references, a self-reference, symlinks of
//! every kind, a single-file and a symlink store path, non-UTF-8 names, and
//! NARs of 4.6 and 33 MiB, both above the sizes from which xz and zstd write
//! their multithreaded formats. What is specified here:
//!
//! - a fresh store gets every path from the cache with `--max-jobs 0`, for
//!   zstd, xz and no compression, with NAR hashes equal to the originals, and
//!   `nix copy --from file://…` works;
//! - the narinfos equal those `nix copy --to file://…` writes (but for
//!   `Deriver:`, which a build is not told); with xz the NAR files are
//!   byte-identical to `nix copy`'s; the listings and the debug-info index
//!   equal Nix's;
//! - every NAR decompresses to `nix-store --dump` of its path, and `FileHash`
//!   and `FileSize` describe the file;
//! - `nix-build --check` reproduces the cache, and the cache is
//!   byte-identical with 1 and 2 cores;
//! - `nix-cache-info`, the empty directories and `store-paths` are right, an
//!   empty `rootPaths` gives a cache Nix opens, and an unknown compression
//!   fails at evaluation;
//! - `default.nix`, the overlay and `flake.nix` evaluate and build against a
//!   small stand-in for nixpkgs (`tests/fixtures/fake-nixpkgs`), since there
//!   is no nixpkgs on the test machines.
//!
//! These tests need Nix and busybox-static (`scripts/test` installs them) and
//! fail loudly without them. Inside a Nix build (nix/package.nix) only the
//! unit tests run, since Nix cannot run there.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;

/// Builds a value once; a failure is reported by every test that needs it.
fn once<T>(cell: &'static OnceLock<Result<T, String>>, f: impl FnOnce() -> T) -> &'static T {
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string())
        })
    });
    match result {
        Ok(v) => v,
        Err(e) => panic!("a shared test input failed to build earlier:\n{e}"),
    }
}

fn once_path(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    f: impl FnOnce() -> PathBuf,
) -> &'static Path {
    once(cell, f).as_path()
}

/// The default cache: zstd.
fn zstd_cache() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once_path(&CACHE, || build_cache(&[]))
}

/// An xz cache at the default level, to compare with `nix copy`'s.
fn xz_cache() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once_path(&CACHE, || {
        build_cache(&[
            "--argstr",
            "name",
            "fixture-cache-xz",
            "--argstr",
            "compression",
            "xz",
        ])
    })
}

/// An uncompressed cache with NAR listings and the debug-info index.
pub(crate) fn none_cache() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once_path(&CACHE, || {
        build_cache(&[
            "--argstr",
            "name",
            "fixture-cache-none",
            "--argstr",
            "compression",
            "none",
            "--arg",
            "writeNarListing",
            "true",
            "--arg",
            "indexDebugInfo",
            "true",
        ])
    })
}

/// What `nix copy --to file://DIR?<params>` writes for the fixture's roots.
fn nix_copy_reference(name: &str, params: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/e2e")
        .join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    let url = format!("file://{}?{params}", dir.display());
    run(nix_new(&["copy", "--to", &url]).args(&fixture().roots));
    dir
}

/// `nix copy`'s xz cache with `parallel-compression=true` (liblzma's
/// multithreaded encoder with its own block size).
fn reference_xz_parallel() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once_path(&CACHE, || {
        nix_copy_reference(
            "reference-xz-parallel",
            "compression=xz&parallel-compression=true",
        )
    })
}

/// `nix copy`'s uncompressed cache with listings and the debug-info index.
fn reference_none() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once_path(&CACHE, || {
        nix_copy_reference(
            "reference-none",
            "compression=none&write-nar-listing=true&index-debug-info=true",
        )
    })
}

/// Substitutes the fixture's roots from `cache` into a fresh chroot store by
/// evaluating closure.nix there with `--max-jobs 0`: Nix fails rather than
/// build, so success means every derivation output came from the cache.
pub(crate) fn substitute_fixture(cache: &Path) -> tempfile::TempDir {
    substitute_fixture_from(&format!("file://{}", cache.display()))
}

/// As [`substitute_fixture`], from the cache at `url` (`file://…`, `http://…`).
pub(crate) fn substitute_fixture_from(url: &str) -> tempfile::TempDir {
    let store = tempdir();
    run(&mut substitute_attr(store.path(), url, "roots"));
    store
}

/// The `nix-build` that substitutes attribute `attr` of closure.nix from
/// the cache at `url` into the chroot store `store`, with `--max-jobs 0`.
pub(crate) fn substitute_attr(store: &Path, url: &str, attr: &str) -> Command {
    let bb = nix_path(busybox_dir());
    let mut cmd = nix_cmd("nix-build");
    cmd.arg(fixture_file("closure.nix"))
        .args(["-A", attr, "--arg", "busyboxDir", &bb, "--no-out-link"])
        .arg("--store")
        .arg(store)
        .args(["--max-jobs", "0"])
        .args(["--option", "require-sigs", "false"])
        .args(["--option", "substituters", url])
        .args(["--option", "trusted-substituters", url]);
    cmd
}

/// Every fixture path is in `store` (a chroot store) with its original NAR hash.
pub(crate) fn assert_store_holds_fixture(store: &Path) {
    let fixture = fixture();
    let listed = run(nix_cmd("nix-store")
        .arg("--store")
        .arg(store)
        .arg("-qR")
        .args(&fixture.roots));
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed, fixture.closure, "closure in the fresh store");
    for path in &fixture.closure {
        assert_eq!(
            nar_hash(&in_store(store, path)),
            nar_hash(Path::new(path)),
            "NAR hash of {path} in the fresh store"
        );
    }
}

fn substitutes_every_path(cache: &Path) {
    let store = substitute_fixture(cache);
    assert_store_holds_fixture(store.path());
}

#[test]
fn zstd_cache_substitutes_every_path_into_a_fresh_store() {
    substitutes_every_path(zstd_cache());
}

#[test]
fn xz_cache_substitutes_every_path_into_a_fresh_store() {
    substitutes_every_path(xz_cache());
}

#[test]
fn uncompressed_cache_substitutes_every_path_into_a_fresh_store() {
    substitutes_every_path(none_cache());
}

#[test]
fn nix_copy_from_the_cache_copies_every_path() {
    let cache = zstd_cache();
    let store = tempdir();
    copy_out_of_cache(cache, store.path(), &fixture().closure);
    assert_store_holds_fixture(store.path());
}

#[test]
fn reading_the_cache_leaves_its_store_path_intact() {
    // As root, Nix could write into the cache it reads (it creates missing
    // directories and nix-cache-info); the store path must not change.
    let cache = zstd_cache();
    let store = tempdir();
    copy_out_of_cache(cache, store.path(), &fixture().roots);
    run(nix_cmd("nix-store").arg("--verify-path").arg(cache));
}

#[test]
fn cache_holds_one_narinfo_per_closure_path() {
    let mut expected: Vec<String> = fixture()
        .closure
        .iter()
        .map(|p| hash_part(p).to_string())
        .collect();
    expected.sort();
    assert_eq!(narinfo_hash_parts(zstd_cache()), expected);
}

#[test]
fn nar_directory_holds_exactly_the_files_the_narinfos_name() {
    for cache in [zstd_cache(), xz_cache(), none_cache()] {
        let mut named: BTreeSet<String> = BTreeSet::new();
        for path in &fixture().closure {
            named.insert(narinfo_of(cache, path)["URL"].clone());
        }
        let present: BTreeSet<String> = fs::read_dir(cache.join("nar"))
            .unwrap()
            .map(|e| format!("nar/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        assert_eq!(present, named, "files in {}/nar", cache.display());
    }
}

/// Checks URL, FileHash and FileSize of every narinfo against the file.
fn file_fields_describe_the_nar_files(cache: &Path, compression: &str, ext: &str) {
    for path in &fixture().closure {
        let info = narinfo_of(cache, path);
        assert_eq!(info["Compression"], compression, "Compression of {path}");
        let recorded = &info["FileHash"];
        let nix32 = recorded
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("FileHash of {path} is not sha256:<nix32>: {recorded}"));
        assert_eq!(
            info["URL"],
            format!("nar/{nix32}.nar{ext}"),
            "URL of {path}"
        );
        let file = cache.join(&info["URL"]);
        assert_eq!(&file_hash(&file), recorded, "FileHash of {path}");
        let size = fs::metadata(&file).unwrap().len();
        assert_eq!(info["FileSize"], size.to_string(), "FileSize of {path}");
    }
}

#[test]
fn zstd_file_hash_and_size_describe_the_nar_files() {
    file_fields_describe_the_nar_files(zstd_cache(), "zstd", ".zst");
}

#[test]
fn xz_file_hash_and_size_describe_the_nar_files() {
    file_fields_describe_the_nar_files(xz_cache(), "xz", ".xz");
}

#[test]
fn uncompressed_file_hash_and_size_describe_the_nar_files() {
    file_fields_describe_the_nar_files(none_cache(), "none", "");
}

/// Every NAR file decompresses to `nix-store --dump` of its path, and the
/// narinfo's NarHash and NarSize are those of Nix's database.
fn nar_files_decompress_to_nix_store_dump(cache: &Path) {
    for path in &fixture().closure {
        let info = narinfo_of(cache, path);
        let bytes = fs::read(cache.join(&info["URL"])).unwrap();
        let nar = decompress(&info["Compression"], &bytes);
        let reference = dump(path);
        assert!(
            nar == reference,
            "NAR of {path} differs from nix-store --dump"
        );
        assert_eq!(
            info["NarSize"],
            reference.len().to_string(),
            "NarSize of {path}"
        );
        let db_hash = run(nix_cmd("nix-store").args(["-q", "--hash", path]));
        assert_eq!(info["NarHash"], db_hash.trim(), "NarHash of {path}");
    }
}

#[test]
fn zstd_nar_files_decompress_to_nix_store_dump() {
    nar_files_decompress_to_nix_store_dump(zstd_cache());
}

#[test]
fn xz_nar_files_decompress_to_nix_store_dump() {
    nar_files_decompress_to_nix_store_dump(xz_cache());
}

#[test]
fn uncompressed_nar_files_equal_nix_store_dump() {
    nar_files_decompress_to_nix_store_dump(none_cache());
}

#[test]
fn narinfos_agree_with_nix_copy_on_every_content_field() {
    for path in &fixture().closure {
        let ours = narinfo_of(xz_cache(), path);
        let theirs = narinfo_of(reference_xz_parallel(), path);
        for key in [
            "StorePath",
            "NarHash",
            "NarSize",
            "References",
            "Compression",
        ] {
            assert_eq!(ours.get(key), theirs.get(key), "{key} of {path}");
        }
    }
}

#[test]
fn references_include_the_self_reference() {
    let top = fixture()
        .closure
        .iter()
        .find(|p| p.ends_with("-top"))
        .expect("the fixture has a path named top");
    let refs = narinfo_of(zstd_cache(), top)["References"].clone();
    let refs: Vec<&str> = refs.split(' ').collect();
    assert!(
        refs.contains(&basename(top)),
        "References of {top}: {refs:?}"
    );
    let mut sorted = refs.clone();
    sorted.sort();
    assert_eq!(refs, sorted, "References are sorted");
}

#[test]
fn xz_nar_files_are_byte_identical_to_nix_copy_with_parallel_compression() {
    // Every path, small ones included, goes through liblzma's multithreaded
    // encoder with the block size it picks for preset 6, as `nix copy` with
    // `parallel-compression=true` writes it, whatever the thread counts.
    // Nix itself never checks FileHash, so only this test can catch a change.
    for path in &fixture().closure {
        let ours = narinfo_of(xz_cache(), path);
        let theirs = narinfo_of(reference_xz_parallel(), path);
        for key in ["URL", "FileHash", "FileSize"] {
            assert_eq!(ours.get(key), theirs.get(key), "{key} of {path}");
        }
    }
}

/// The narinfo texts are equal once Nix's `Deriver:` line (which the closure
/// Nix hands to a build does not include) is dropped.
fn narinfo_texts_equal_nix_copy(ours: &Path, theirs: &Path) {
    for path in &fixture().closure {
        let name = format!("{}.narinfo", hash_part(path));
        let our_text: String = fs::read_to_string(ours.join(&name))
            .unwrap()
            .lines()
            .map(|l| format!("{l}\n"))
            .collect();
        let their_text: String = fs::read_to_string(theirs.join(&name))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("Deriver: "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(our_text, their_text, "narinfo of {path}");
    }
}

#[test]
fn xz_narinfo_texts_equal_nix_copy_but_for_deriver() {
    narinfo_texts_equal_nix_copy(xz_cache(), reference_xz_parallel());
}

#[test]
fn uncompressed_narinfo_texts_equal_nix_copy_but_for_deriver() {
    narinfo_texts_equal_nix_copy(none_cache(), reference_none());
}

/// The parsed JSON of every file in `dir` under `cache`, keyed by file name.
///
/// Nix 2.8 writes file names into listings as raw bytes, so a listing of a
/// non-UTF-8 name is not valid JSON: both sides are read lossily, which keeps
/// names apart as long as they differ in their valid parts.
fn json_files(cache: &Path, dir: &str, suffix: &str) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(cache.join(dir)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) {
            let bytes = fs::read(entry.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            out.insert(name, json);
        }
    }
    out
}

#[test]
fn nar_listings_equal_nix_copy() {
    let ours = json_files(none_cache(), ".", ".ls");
    let theirs = json_files(reference_none(), ".", ".ls");
    assert_eq!(
        theirs.len(),
        fixture().closure.len(),
        "listings nix copy wrote"
    );
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, listing) in &theirs {
        assert_eq!(&ours[name], listing, "listing {name}");
    }
}

#[test]
fn debug_info_index_equals_nix_copy() {
    let ours = json_files(none_cache(), "debuginfo", ".debug");
    let theirs = json_files(reference_none(), "debuginfo", ".debug");
    assert!(
        !theirs.is_empty(),
        "nix copy indexed no debug info: is the fixture wrong?"
    );
    assert_eq!(ours, theirs);
}

#[test]
fn debug_info_is_not_indexed_by_default() {
    let entries = fs::read_dir(zstd_cache().join("debuginfo"))
        .unwrap()
        .count();
    assert_eq!(entries, 0);
}

#[test]
fn nar_listings_are_not_written_by_default() {
    let listings = json_files(zstd_cache(), ".", ".ls");
    assert!(listings.is_empty(), "{:?}", listings.keys());
}

#[test]
fn nix_build_check_rebuilds_the_same_cache() {
    zstd_cache();
    let mut args = input_args();
    args.push("--check".to_string());
    nix_build(&fixture_file("cache.nix"), &args);
}

#[test]
fn cache_bytes_do_not_depend_on_the_number_of_cores() {
    for compression in ["zstd", "xz"] {
        let build = |cores: &str| {
            let name = format!("cores-{cores}-{compression}");
            build_cache(&[
                "--argstr",
                "name",
                &name,
                "--argstr",
                "compression",
                compression,
                "--cores",
                cores,
            ])
        };
        let one = tree(&build("1"));
        let two = tree(&build("2"));
        let differing: Vec<_> = one
            .keys()
            .chain(two.keys())
            .filter(|k| one.get(*k) != two.get(*k))
            .collect();
        assert!(
            differing.is_empty(),
            "{compression}: cores 1 and 2 differ in {differing:?}"
        );
    }
}

#[test]
fn compression_level_is_passed_to_the_compressor() {
    let strong = build_cache(&[
        "--argstr",
        "name",
        "fixture-cache-zstd-19",
        "--arg",
        "compressionLevel",
        "19",
    ]);
    let leaf = fixture()
        .closure
        .iter()
        .find(|p| p.ends_with("-leaf"))
        .expect("the fixture has a path named leaf");
    let default = narinfo_of(zstd_cache(), leaf);
    let strong = narinfo_of(&strong, leaf);
    assert_eq!(default["NarHash"], strong["NarHash"]);
    let size = |info: &BTreeMap<String, String>| info["FileSize"].parse::<u64>().unwrap();
    assert!(
        size(&strong) < size(&default),
        "zstd -19 ({}) is not smaller than the default level ({})",
        size(&strong),
        size(&default)
    );
}

#[test]
fn nix_cache_info_holds_only_the_store_dir_by_default() {
    let info = fs::read_to_string(zstd_cache().join("nix-cache-info")).unwrap();
    assert_eq!(info, "StoreDir: /nix/store\n");
}

fn cache_info_lines(cache: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(cache.join("nix-cache-info")).unwrap();
    assert!(
        text.ends_with('\n'),
        "nix-cache-info lacks its final newline: {text:?}"
    );
    text.lines().map(str::to_string).collect()
}

#[test]
fn nix_cache_info_carries_priority_and_want_mass_query() {
    let cache = build_cache(&[
        "--argstr",
        "name",
        "cache-info-priority",
        "--argstr",
        "compression",
        "none",
        "--arg",
        "priority",
        "30",
        "--arg",
        "wantMassQuery",
        "true",
    ]);
    let expected: BTreeSet<String> = ["StoreDir: /nix/store", "WantMassQuery: 1", "Priority: 30"]
        .map(str::to_string)
        .into();
    assert_eq!(cache_info_lines(&cache), expected);
}

#[test]
fn want_mass_query_false_is_written_as_zero() {
    let cache = build_cache(&[
        "--argstr",
        "name",
        "cache-info-no-mass-query",
        "--argstr",
        "compression",
        "none",
        "--arg",
        "wantMassQuery",
        "false",
    ]);
    let expected: BTreeSet<String> = ["StoreDir: /nix/store", "WantMassQuery: 0"]
        .map(str::to_string)
        .into();
    assert_eq!(cache_info_lines(&cache), expected);
}

#[test]
fn cache_has_every_directory_a_read_only_cache_needs() {
    let cache = zstd_cache();
    assert!(cache.join("nar").is_dir(), "nar/");
    for dir in ["log", "realisations", "build-trace-v2", "debuginfo"] {
        let path = cache.join(dir);
        assert!(path.is_dir(), "{dir}/ is missing");
        assert_eq!(
            fs::read_dir(&path).unwrap().count(),
            0,
            "{dir}/ is not empty"
        );
    }
}

#[test]
fn store_paths_lists_the_roots_one_per_line() {
    let text = fs::read_to_string(zstd_cache().join("store-paths")).unwrap();
    let expected: String = fixture().roots.iter().map(|r| format!("{r}\n")).collect();
    assert_eq!(text, expected);
}

#[test]
fn empty_root_list_gives_an_empty_cache_nix_can_open() {
    let cache = build_cache(&[
        "--argstr",
        "name",
        "empty-cache",
        "--argstr",
        "roots",
        "none",
    ]);
    assert_eq!(
        fs::read_to_string(cache.join("nix-cache-info")).unwrap(),
        "StoreDir: /nix/store\n"
    );
    assert_eq!(narinfo_hash_parts(&cache), Vec::<String>::new());
    assert_eq!(fs::read_dir(cache.join("nar")).unwrap().count(), 0);
    assert_eq!(fs::read_to_string(cache.join("store-paths")).unwrap(), "");
    run(nix_new(&["store", "ping", "--store"]).arg(format!("file://{}", cache.display())));
}

#[test]
fn unknown_compression_is_an_evaluation_error() {
    // The check comes before the builder is needed, so any directory will do.
    let dir = nix_path(busybox_dir());
    let stderr = run_failing(
        nix_cmd("nix-instantiate")
            .arg(fixture_file("cache.nix"))
            .args(["--arg", "busyboxDir", &dir, "--arg", "toolDir", &dir])
            .args(["--argstr", "compression", "gzip"]),
    );
    assert!(
        stderr.contains(r#"unknown compression "gzip""#),
        "unexpected error: {stderr}"
    );
}

/// `nix-build` of this repository's own entry points against
/// tests/fixtures/fake-nixpkgs, whose packages are busybox scripts and whose
/// `buildRustPackage` copies the static build.
fn stand_in_nix_build(file: &Path, args: &[&str]) -> Vec<String> {
    let fake = fixture_file("fake-nixpkgs");
    let out = run(nix_cmd("nix-build")
        .env("MKBC_BUSYBOX_DIR", busybox_dir())
        .env("MKBC_TOOL_DIR", tool_dir())
        .arg(file)
        .arg("-I")
        .arg(format!("nixpkgs={}", fake.display()))
        .arg("--no-out-link")
        .args(BUILD_OPTIONS)
        .args(args));
    out.lines().map(str::to_string).collect()
}

#[test]
fn flake_outputs_evaluate_with_a_stand_in_nixpkgs() {
    let expr = r#"
      let
        e = import ./tests/fixtures/entry-points.nix;
        s = builtins.currentSystem;
        f = e.flake;
      in
      [
        f.packages.${s}.default.drvPath
        f.packages.${s}.example.drvPath
        f.checks.${s}.package.drvPath
        f.checks.${s}.example.drvPath
        f.checks.${s}.version.drvPath
        f.checks.${s}.cache.drvPath
        f.checks.${s}.default-nix.drvPath
        # The publisher, a package of its own (evaluated: the stand-in
        # builds every package from the static mk-binary-cache).
        f.packages.${s}.mk-binary-cache-publish.drvPath
        f.checks.${s}.publish.drvPath
        # A functor with `.override`, as callPackage makes of a function.
        (f.lib.${s}.mkBinaryCache ? __functor)
        (builtins.isFunction f.overlays.default)
        (e.overlaid.mkBinaryCache { rootPaths = [ ]; }).drvPath
      ]
    "#;
    let out = run(nix_cmd("nix-instantiate")
        .current_dir(repo())
        .env("MKBC_BUSYBOX_DIR", busybox_dir())
        .args(["--eval", "--strict", "--json", "-E", expr]));
    let values: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(values.len(), 12);
    for v in &values[..9] {
        assert!(v.as_str().is_some_and(|s| s.ends_with(".drv")), "{v}");
    }
    assert_eq!(values[9], true);
    assert_eq!(values[10], true);
}

#[test]
fn default_nix_builds_the_example_cache_with_a_stand_in_nixpkgs() {
    // default.nix with its default argument: `import <nixpkgs> { overlays … }`.
    let out = stand_in_nix_build(&repo().join("default.nix"), &["-A", "example"]);
    assert_eq!(out.len(), 1, "{out:?}");
    let cache = Path::new(&out[0]);
    let roots = fs::read_to_string(cache.join("store-paths")).unwrap();
    assert!(
        roots.trim_end().ends_with("-hello-2.12"),
        "store-paths: {roots:?}"
    );
    assert!(!narinfo_hash_parts(cache).is_empty());
}

#[test]
fn package_version_test_passes_with_a_stand_in_nixpkgs() {
    let attr = format!("flake.checks.{}.version", current_system());
    stand_in_nix_build(&fixture_file("entry-points.nix"), &["-A", &attr]);
}

fn current_system() -> String {
    let out =
        run(nix_cmd("nix-instantiate").args(["--eval", "--json", "-E", "builtins.currentSystem"]));
    serde_json::from_str(&out).unwrap()
}
