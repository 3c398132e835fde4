//! NAR listings (`<hash>.ls`) and the debug-info index (`debuginfo/`), as
//! `nix copy` writes them with `write-nar-listing=true` and
//! `index-debug-info=true`, byte for byte.
//!
//! The probe is a store path added with `nix-store --add`, with every name
//! that JSON escaping can get wrong and every near miss of a build-ID file.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::OnceLock;

use mk_binary_cache::format::nar::{listing, reader};

use crate::build::{build_into, nix_copy_to};
use crate::common::*;

const NIX_PARAMS: &str = "compression=none&write-nar-listing=true&index-debug-info=true";
const OUR_FLAGS: [&str; 4] = [
    "--compression",
    "none",
    "--write-nar-listing",
    "--index-debug-info",
];

/// A build ID's last 38 hex digits.
const ID: &str = "0123456789abcdef0123456789abcdef012345";

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// Makes the probe tree at `root`.
fn make_probe(root: &Path) {
    let names: [&[u8]; 12] = [
        b"ctrl\x01\x1b",
        b"q\"uote",
        b"back\\slash",
        b"new\nline",
        b"tab\tcr\r",
        b"bs\x08ff\x0c",
        b"del\x7f",
        b"caf\xe9",
        b"gr\xc3\xbcn",
        b"Z-upper",
        b"eight-by",
        b"nine-byte",
    ];
    for (i, name) in names.iter().enumerate() {
        write(&root.join(OsStr::from_bytes(name)), &"x".repeat(i));
    }
    write(&root.join("empty"), "");
    write(&root.join("bin/run"), "#!/bin/sh\n");
    fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("a/b/c/deep.txt"), "deep\n");
    symlink("../empty", root.join("bin/relative")).unwrap();
    symlink(
        OsStr::from_bytes(b"odd \"\\\x01 target"),
        root.join("odd-link"),
    )
    .unwrap();

    let ids = root.join("lib/debug/.build-id");
    write(&ids.join(format!("ab/{ID}.debug")), "indexed");
    write(&ids.join(format!("ab/{ID}0.debug")), "name too long");
    write(&ids.join(format!("ab/{ID}.txt")), "not .debug");
    write(&ids.join(format!("AB/{ID}.debug")), "upper-case directory");
    write(&ids.join(format!("abc/{ID}.debug")), "directory too long");
    write(
        &ids.join(format!("cd/{}.debug", ID.to_uppercase())),
        "upper-case name",
    );
    symlink(
        format!("../ab/{ID}.debug"),
        ids.join("cd/ffffffffffffffffffffffffffffffffffffff.debug"),
    )
    .unwrap();
    fs::create_dir_all(ids.join("cd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.debug")).unwrap();
    write(
        &ids.join("cd/1111111111111111111111111111111111111a.debug"),
        "indexed too",
    );
}

struct Probe {
    store_path: String,
    /// What `nix copy` wrote.
    reference: tempfile::TempDir,
    /// What `mk-binary-cache build` wrote.
    ours: tempfile::TempDir,
}

fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let work = tempdir();
        let root = work.path().join("listing-probe");
        make_probe(&root);
        let store_path = run(nix_cmd("nix-store").arg("--add").arg(&root))
            .trim()
            .to_string();
        let reference = nix_copy_to(NIX_PARAMS, std::slice::from_ref(&store_path));
        let ours = tempdir();
        run(build_into(ours.path(), &OUR_FLAGS).arg(&store_path));
        Probe {
            store_path,
            reference,
            ours,
        }
    })
}

/// The regular files of `dir` under `cache`, by name, with their bytes.
fn files(cache: &Path, dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(cache.join(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn listing_recorded_while_dumping_equals_nix_s_for_the_golden_tree() {
    // tree.nar and tree.ls were made by Nix (tests/fixtures/nar/make-fixtures.sh).
    let nar = fs::read(fixture_file("nar/tree.nar")).unwrap();
    let work = tempdir();
    let tree = work.path().join("tree");
    reader::restore(nar.as_slice(), &tree).unwrap();
    let mut again = Vec::new();
    let listing = listing::dump(&tree, &mut again).unwrap();
    assert!(again == nar, "the restored tree dumps to another NAR");
    assert_eq!(
        String::from_utf8_lossy(&listing.to_ls_json()),
        String::from_utf8_lossy(&fs::read(fixture_file("nar/tree.ls")).unwrap())
    );
    assert_eq!(
        listing.to_ls_json(),
        fs::read(fixture_file("nar/tree.ls")).unwrap()
    );
}

#[test]
fn listing_is_byte_identical_to_nix_copy_s() {
    let p = probe();
    let name = format!("{}.ls", hash_part(&p.store_path));
    let theirs = fs::read(p.reference.path().join(&name)).unwrap();
    let ours = fs::read(p.ours.path().join(&name)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
    assert!(ours == theirs, "the listings differ in a non-UTF-8 byte");
}

#[test]
fn debug_info_index_is_byte_identical_to_nix_copy_s() {
    let p = probe();
    let theirs = files(p.reference.path(), "debuginfo");
    assert_eq!(
        theirs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            format!("ab{ID}.debug"),
            "cd1111111111111111111111111111111111111a.debug".to_string()
        ],
        "what Nix indexes"
    );
    assert_eq!(files(p.ours.path(), "debuginfo"), theirs);
}

#[test]
fn whole_cache_equals_nix_copy_s_but_for_our_extra_files() {
    let p = probe();
    let ours = files(p.ours.path(), ".");
    let theirs = files(p.reference.path(), ".");
    // store-paths is ours alone; the narinfo carries the path's CA: line.
    let ours: Vec<_> = ours
        .into_iter()
        .filter(|(n, _)| n != "store-paths")
        .collect();
    assert_eq!(
        ours.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        theirs.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for ((name, our_bytes), (_, their_bytes)) in ours.iter().zip(&theirs) {
        assert_eq!(
            String::from_utf8_lossy(our_bytes),
            String::from_utf8_lossy(their_bytes),
            "{name}"
        );
    }
    assert_eq!(
        files(p.ours.path(), "nar"),
        files(p.reference.path(), "nar")
    );
}

#[test]
fn nix_store_ls_and_cat_browse_our_cache_as_they_browse_nix_s() {
    let p = probe();
    let browse = |cache: &Path, args: &[&str]| {
        let url = format!("file://{}", cache.display());
        run(nix_new(args)
            .args(["--store", &url])
            .arg(format!("{}/a", p.store_path)))
    };
    for args in [
        &["store", "ls", "-lR"][..],
        &["store", "ls", "--json", "-R"],
    ] {
        let ours = browse(p.ours.path(), args);
        assert!(ours.contains("deep.txt"), "{ours}");
        assert_eq!(ours, browse(p.reference.path(), args), "nix {args:?}");
    }
    let url = format!("file://{}", p.ours.path().display());
    let cat =
        run(nix_new(&["store", "cat", "--store", &url])
            .arg(format!("{}/a/b/c/deep.txt", p.store_path)));
    assert_eq!(cat, "deep\n");
}

#[test]
fn listings_and_the_index_are_not_written_unless_asked_for() {
    let p = probe();
    let cache = tempdir();
    run(build_into(cache.path(), &["--compression", "none"]).arg(&p.store_path));
    let names: Vec<String> = files(cache.path(), ".")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".ls")), "{names:?}");
    assert!(files(cache.path(), "debuginfo").is_empty());
}

#[test]
fn an_existing_debug_info_entry_is_not_overwritten() {
    let p = probe();
    let cache = tempdir();
    make_empty_cache(cache.path());
    let kept = cache.path().join(format!("debuginfo/ab{ID}.debug"));
    fs::write(&kept, "written before").unwrap();
    run(build_into(cache.path(), &OUR_FLAGS).arg(&p.store_path));
    assert_eq!(fs::read_to_string(&kept).unwrap(), "written before");
    let theirs = files(p.reference.path(), "debuginfo");
    let ours = files(cache.path(), "debuginfo");
    assert_eq!(ours[1], theirs[1], "the other entry is written");
}

#[test]
fn an_empty_debug_info_entry_is_replaced() {
    // Entries are renamed into place unsynced (a group commit syncs them
    // before the narinfo); a power loss before that can leave one empty,
    // which is no entry, and must not be kept as one.
    let p = probe();
    let cache = tempdir();
    make_empty_cache(cache.path());
    fs::write(cache.path().join(format!("debuginfo/ab{ID}.debug")), "").unwrap();
    run(build_into(cache.path(), &OUR_FLAGS).arg(&p.store_path));
    let theirs = files(p.reference.path(), "debuginfo");
    assert_eq!(files(cache.path(), "debuginfo"), theirs);
}

/// Makes a cache of no paths at `cache`, with every directory, for a test
/// to put entries in before a run.
fn make_empty_cache(cache: &Path) {
    let work = tempdir();
    let empty = work.path().join("empty.json");
    fs::write(&empty, "[]").unwrap();
    run(build_into(cache, &["--closure-json"]).arg(&empty));
}

/// Adds a store path holding the build ID `ID` (and `padding` bytes more, to
/// make its NAR the larger), named after `i` so that retries differ.
fn add_debug_twin(work: &Path, i: usize, padding: usize) -> String {
    let root = work.join(format!("debug-twin-{i}"));
    write(
        &root.join(format!("lib/debug/.build-id/ab/{ID}.debug")),
        "the same build",
    );
    write(&root.join("padding"), &"p".repeat(padding));
    run(nix_cmd("nix-store").arg("--add").arg(&root))
        .trim()
        .to_string()
}

#[test]
fn between_two_paths_with_one_build_id_the_smaller_store_path_wins() {
    // With one job, the larger NAR is written first. The entry must name the
    // smaller store path's NAR both when that path comes second (and replaces
    // the entry) and when it comes first (and keeps it): the cache must not
    // depend on the order paths are written in, hence on the number of cores.
    let work = tempdir();
    let small = add_debug_twin(work.path(), 0, 0);
    for large_sorts_first in [false, true] {
        let large = (1..)
            .map(|i| add_debug_twin(work.path(), i, 100_000))
            .find(|p| (*p < small) == large_sorts_first)
            .unwrap();
        let winner = if large_sorts_first { &large } else { &small };
        for jobs in ["1", "2"] {
            let cache = tempdir();
            run(
                build_into(cache.path(), &["--index-debug-info", "--jobs", jobs])
                    .args([&small, &large]),
            );
            let entry =
                fs::read_to_string(cache.path().join(format!("debuginfo/ab{ID}.debug"))).unwrap();
            let url = &narinfo_of(cache.path(), winner)["URL"];
            assert!(
                entry.contains(&format!("\"../{url}\"")),
                "jobs {jobs}: {entry} does not name {winner}'s NAR {url}"
            );
        }
    }
}
