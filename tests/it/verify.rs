//! `mk-binary-cache verify` on real caches: one built by our builder through
//! Nix (sandbox on) and one written by `nix copy --to file://`. Each is
//! checked clean as made, then damaged in one way per test, on a writable
//! copy, and the damage must be reported with its kind and the path it is
//! about.
//!
//! These tests need Nix; without it they fail with a message saying so.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Our zstd cache of the fixture, in the store.
fn our_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| build_cache(&[]))
}

/// What `nix copy --to file://…?compression=xz` writes for the fixture.
fn nix_copy_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| nix_copy_fixture("verify-nix-copy-xz", "compression=xz"))
}

/// The fixture's roots copied by `nix copy` into a new cache under target/e2e.
fn nix_copy_fixture(name: &str, params: &str) -> PathBuf {
    let dir = repo().join("target/e2e").join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    let url = format!("file://{}?{params}", dir.display());
    run(nix_new(&["copy", "--option", "substituters", "", "--to", &url]).args(&fixture().roots));
    dir
}

/// Both kinds of cache, named for messages.
fn caches() -> [(&'static str, &'static Path); 2] {
    [("ours", our_cache()), ("nix copy", nix_copy_cache())]
}

/// A writable copy of `cache` in a fresh temporary directory: real copies,
/// never links, so damaging it cannot touch the original.
fn writable_copy(cache: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir();
    let copy = tmp.path().join("cache");
    run(Command::new("cp")
        .args(["-r", "--no-preserve=mode,ownership"])
        .arg(cache)
        .arg(&copy));
    (tmp, copy)
}

fn narinfo_file(cache: &Path, store_path: &str) -> PathBuf {
    cache.join(format!("{}.narinfo", hash_part(store_path)))
}

/// Replaces the value of `key` in the narinfo of `store_path`.
fn set_field(cache: &Path, store_path: &str, key: &str, value: &str) {
    let file = narinfo_file(cache, store_path);
    let text = fs::read_to_string(&file).unwrap();
    let prefix = format!("{key}: ");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "no {key} in {text}"
    );
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&file, edited).unwrap();
}

fn field(cache: &Path, store_path: &str, key: &str) -> String {
    narinfo(&narinfo_file(cache, store_path))[key].clone()
}

/// The NAR file the narinfo of `store_path` names.
fn nar_file(cache: &Path, store_path: &str) -> PathBuf {
    cache.join(field(cache, store_path, "URL"))
}

fn mkbc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mk-binary-cache"))
}

/// `verify --json`: the exit code and the report.
fn verify_json(cache: &Path, args: &[&str]) -> (i32, Value) {
    let out = mkbc()
        .arg("verify")
        .arg("--json")
        .args(args)
        .arg(cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("killed by a signal"), report)
}

/// The (kind, path) of every problem in a report.
fn problems(report: &Value) -> BTreeSet<(String, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The kinds of problem reported about `path`.
fn kinds_about(report: &Value, path: &str) -> BTreeSet<String> {
    problems(report)
        .into_iter()
        .filter(|(_, p)| p == path)
        .map(|(k, _)| k)
        .collect()
}

fn set(kinds: &[&str]) -> BTreeSet<String> {
    kinds.iter().map(|k| k.to_string()).collect()
}

/// Verifies `cache`, which must have problems, exactly of `kinds` about `path`.
fn assert_reported(which: &str, cache: &Path, args: &[&str], path: &str, kinds: &[&str]) {
    let (code, report) = verify_json(cache, args);
    assert_eq!(
        code, 1,
        "{which}: exit code with problems; report: {report:#}"
    );
    assert_eq!(report["ok"], false, "{which}");
    assert_eq!(
        kinds_about(&report, path),
        set(kinds),
        "{which}: problems about {path}; report: {report:#}"
    );
}

#[test]
fn clean_caches_verify_with_no_problems() {
    for (which, cache) in caches() {
        let (code, report) = verify_json(cache, &[]);
        assert_eq!(code, 0, "{which}: {report:#}");
        assert_eq!(report["ok"], true, "{which}");
        assert_eq!(report["problems"], Value::Array(vec![]), "{which}");
        let counts = &report["counts"];
        assert_eq!(counts["narinfos"], fixture().closure.len(), "{which}");
        assert_eq!(counts["paths_ok"], fixture().closure.len(), "{which}");
        let nar_bytes: u64 = fixture()
            .closure
            .iter()
            .map(|p| field(cache, p, "NarSize").parse::<u64>().unwrap())
            .sum();
        assert_eq!(
            counts["nar_bytes"], nar_bytes,
            "{which}: every NAR read whole"
        );
    }
}

#[test]
fn a_clean_cache_prints_a_summary_line_and_exits_zero() {
    let out = mkbc().arg("verify").arg(our_cache()).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("checked {} paths", fixture().closure.len())),
        "{stdout}"
    );
    assert!(lines[0].contains("no problems"), "{stdout}");
}

#[test]
fn a_bzip2_cache_written_by_nix_verifies() {
    let cache = nix_copy_fixture("verify-nix-copy-bzip2", "compression=bzip2");
    assert_eq!(field(&cache, fixture_path("leaf"), "Compression"), "bzip2");
    let (code, report) = verify_json(&cache, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn problems_are_printed_one_line_each_with_the_path_then_a_summary() {
    let (_tmp, cache) = writable_copy(our_cache());
    let (leaf, left) = (fixture_path("leaf"), fixture_path("left"));
    set_field(&cache, leaf, "FileSize", "1");
    set_field(&cache, left, "NarHash", &nar_hash(Path::new(leaf)));
    let out = mkbc().arg("verify").arg(&cache).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let mut problem_lines = lines[..2].to_vec();
    problem_lines.sort();
    let mut expected = [
        format!("{leaf}: file-size: "),
        format!("{left}: nar-hash: "),
    ];
    expected.sort();
    for (line, start) in problem_lines.iter().zip(&expected) {
        assert!(line.starts_with(start.as_str()), "{line:?} vs {start:?}");
    }
    assert!(lines[2].contains("2 problems"), "{stdout}");
}

#[test]
fn a_cache_that_cannot_be_read_exits_two() {
    let out = mkbc()
        .args(["verify", "/nonexistent/cache"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cache"));
}

#[test]
fn reports_a_missing_nix_cache_info() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        fs::remove_file(cache.join("nix-cache-info")).unwrap();
        assert_reported(
            which,
            &cache,
            &[],
            "nix-cache-info",
            &["missing-cache-info"],
        );
    }
}

#[test]
fn reports_a_wrong_store_dir() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        fs::write(cache.join("nix-cache-info"), "StoreDir: /gnu/store\n").unwrap();
        assert_reported(which, &cache, &[], "nix-cache-info", &["store-dir"]);
    }
}

#[test]
fn reports_a_store_dir_other_than_the_one_asked_for() {
    let (code, report) = verify_json(our_cache(), &["--store-dir", "/gnu/store"]);
    assert_eq!(code, 1);
    assert!(problems(&report).contains(&("store-dir".into(), "nix-cache-info".into())));
}

#[test]
fn reports_an_unparsable_narinfo_by_its_file_name() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        set_field(&cache, leaf, "NarHash", "sha256:not-a-hash");
        let file = format!("{}.narinfo", hash_part(leaf));
        assert_reported(which, &cache, &[], &file, &["bad-narinfo"]);
        // Its referrers are not told twice that it is missing.
        let (_, report) = verify_json(&cache, &[]);
        assert_eq!(report["counts"]["problems"], 1, "{which}: {report:#}");
    }
}

#[test]
fn reports_a_url_with_dot_dot() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let url = field(&cache, leaf, "URL");
        set_field(&cache, leaf, "URL", &format!("../cache/{url}"));
        assert_reported(which, &cache, &[], leaf, &["outside-cache"]);
    }
}

#[test]
fn reports_an_absolute_url() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        set_field(&cache, leaf, "URL", "/etc/passwd");
        assert_reported(which, &cache, &[], leaf, &["outside-cache"]);
    }
}

#[test]
fn reports_a_nar_symlink_to_outside_without_opening_its_target() {
    for (which, base) in caches() {
        let (tmp, cache) = writable_copy(base);
        // A FIFO: opening it would block until a writer comes, so a verify
        // that returns at all has not opened it.
        let fifo = tmp.path().join("fifo");
        run(Command::new("mkfifo").arg(&fifo));
        let (leaf, left) = (fixture_path("leaf"), fixture_path("left"));
        symlink(&fifo, cache.join("nar/absolute.nar")).unwrap();
        symlink("../../fifo", cache.join("nar/relative.nar")).unwrap();
        set_field(&cache, leaf, "URL", "nar/absolute.nar");
        set_field(&cache, left, "URL", "nar/relative.nar");
        let start = Instant::now();
        let (code, report) = verify_json(&cache, &[]);
        assert!(start.elapsed() < Duration::from_secs(60));
        assert_eq!(code, 1);
        assert_eq!(
            kinds_about(&report, leaf),
            set(&["outside-cache"]),
            "{which}"
        );
        assert_eq!(
            kinds_about(&report, left),
            set(&["outside-cache"]),
            "{which}"
        );
    }
}

#[test]
fn follows_a_nar_symlink_that_stays_inside_the_cache() {
    let (_tmp, cache) = writable_copy(our_cache());
    let leaf = fixture_path("leaf");
    let url = field(&cache, leaf, "URL");
    let name = Path::new(&url).file_name().unwrap();
    symlink(name, cache.join("nar/alias.nar")).unwrap();
    set_field(&cache, leaf, "URL", "nar/alias.nar");
    let (code, report) = verify_json(&cache, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn reports_a_missing_nar_file() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        fs::remove_file(nar_file(&cache, leaf)).unwrap();
        assert_reported(which, &cache, &[], leaf, &["missing-nar"]);
    }
}

#[test]
fn reports_a_wrong_file_size() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let size: u64 = field(&cache, leaf, "FileSize").parse().unwrap();
        set_field(&cache, leaf, "FileSize", &(size + 1).to_string());
        assert_reported(which, &cache, &[], leaf, &["file-size"]);
    }
}

#[test]
fn reports_a_wrong_file_hash() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let other = field(&cache, fixture_path("left"), "FileHash");
        set_field(&cache, leaf, "FileHash", &other);
        assert_reported(which, &cache, &[], leaf, &["file-hash"]);
    }
}

#[test]
fn reports_a_truncated_nar_file() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let file = nar_file(&cache, leaf);
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        assert_reported(
            which,
            &cache,
            &[],
            leaf,
            &["file-size", "file-hash", "decompression"],
        );
    }
}

#[test]
fn reports_a_truncated_uncompressed_nar_as_short_and_malformed() {
    let cache_dir = nix_copy_fixture("verify-nix-copy-none", "compression=none");
    let (_tmp, cache) = writable_copy(&cache_dir);
    let leaf = fixture_path("leaf");
    let file = nar_file(&cache, leaf);
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    assert_reported(
        "nix copy, none",
        &cache,
        &[],
        leaf,
        &["file-size", "file-hash", "bad-nar", "nar-size", "nar-hash"],
    );
}

#[test]
fn reports_a_bit_flip_in_a_nar_file() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let file = nar_file(&cache, leaf);
        let mut bytes = fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        fs::write(&file, &bytes).unwrap();
        let (code, report) = verify_json(&cache, &[]);
        assert_eq!(code, 1);
        let kinds = kinds_about(&report, leaf);
        assert!(kinds.contains("file-hash"), "{which}: {kinds:?}");
        assert!(
            ["decompression", "bad-nar", "nar-hash"]
                .iter()
                .any(|k| kinds.contains(*k)),
            "{which}: the damaged NAR itself must be reported: {kinds:?}"
        );
    }
}

#[test]
fn reports_a_nar_hash_mismatch() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let other = field(&cache, fixture_path("left"), "NarHash");
        set_field(&cache, leaf, "NarHash", &other);
        assert_reported(which, &cache, &[], leaf, &["nar-hash"]);
    }
}

#[test]
fn reports_a_nar_size_mismatch_either_way() {
    for (which, base) in caches() {
        for delta in [-8i64, 8] {
            let (_tmp, cache) = writable_copy(base);
            let leaf = fixture_path("leaf");
            let size: i64 = field(&cache, leaf, "NarSize").parse().unwrap();
            set_field(&cache, leaf, "NarSize", &(size + delta).to_string());
            assert_reported(which, &cache, &[], leaf, &["nar-size"]);
        }
    }
}

#[test]
fn a_nar_size_far_too_small_stops_decompression_right_after_it() {
    let (_tmp, cache) = writable_copy(our_cache());
    let large = fixture_path("large");
    set_field(&cache, large, "NarSize", "1000");
    let (code, report) = verify_json(&cache, &[]);
    assert_eq!(code, 1);
    assert_eq!(kinds_about(&report, large), set(&["nar-size"]));
    let others: u64 = fixture()
        .closure
        .iter()
        .filter(|p| *p != large)
        .map(|p| field(&cache, p, "NarSize").parse::<u64>().unwrap())
        .sum();
    assert_eq!(report["counts"]["nar_bytes"], others + 1001);
}

#[test]
fn reports_a_missing_reference() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        fs::remove_file(narinfo_file(&cache, leaf)).unwrap();
        let (code, report) = verify_json(&cache, &[]);
        assert_eq!(code, 1);
        for referrer in [fixture_path("left"), fixture_path("right")] {
            assert_eq!(
                kinds_about(&report, referrer),
                set(&["missing-reference"]),
                "{which}: {report:#}"
            );
        }
        let message = report["problems"][0]["message"].as_str().unwrap();
        assert!(message.contains(leaf), "{which}: {message}");
    }
}

#[test]
fn reports_a_narinfo_whose_name_is_not_its_hash_part() {
    for (which, base) in caches() {
        let (_tmp, cache) = writable_copy(base);
        let leaf = fixture_path("leaf");
        let wrong = format!("{}.narinfo", "0".repeat(32));
        fs::rename(narinfo_file(&cache, leaf), cache.join(&wrong)).unwrap();
        let (code, report) = verify_json(&cache, &[]);
        assert_eq!(code, 1);
        assert!(
            kinds_about(&report, leaf).contains("narinfo-name"),
            "{which}: {report:#}"
        );
    }
}

/// A signed copy of `base` (by `sign --out`), in a fresh temporary
/// directory, with the key's files.
fn signed_copy(base: &Path) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempdir();
    let NixKey { secret, public, .. } = generate_key(tmp.path(), "verify-test-1");
    let cache = tmp.path().join("signed");
    // Our copy shares the NARs by hard links: these tests change narinfos only.
    run(mkbc()
        .args(["sign", "-q", "--key-file"])
        .arg(&secret)
        .arg("--out")
        .arg(&cache)
        .arg(base));
    (tmp, cache, secret, public)
}

#[test]
fn signatures_by_a_trusted_key_verify_with_require_sigs() {
    for (which, base) in caches() {
        let (_tmp, cache, _, public) = signed_copy(base);
        let key_file = public.to_str().unwrap();
        let (code, report) =
            verify_json(&cache, &["--require-sigs", "--trusted-key-file", key_file]);
        assert_eq!(code, 0, "{which}: {report:#}");
        assert_eq!(report["counts"]["signed"], fixture().closure.len());
    }
}

#[test]
fn require_sigs_reports_every_path_signed_by_another_key_only() {
    for (which, base) in caches() {
        let (tmp, cache, _, _) = signed_copy(base);
        let other = generate_key(tmp.path(), "verify-test-2").public_text;
        let (code, report) = verify_json(&cache, &["--require-sigs", "--trusted-key", &other]);
        assert_eq!(code, 1);
        for path in &fixture().closure {
            assert_eq!(
                kinds_about(&report, path),
                set(&["missing-signature"]),
                "{which}"
            );
        }
    }
}

#[test]
fn require_sigs_reports_a_path_with_no_signature() {
    for (which, base) in caches() {
        let (_tmp, cache, _, public) = signed_copy(base);
        let leaf = fixture_path("leaf");
        let file = narinfo_file(&cache, leaf);
        let text = fs::read_to_string(&file).unwrap();
        let unsigned: String = text
            .lines()
            .filter(|l| !l.starts_with("Sig: "))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&file, unsigned).unwrap();
        let key_file = public.to_str().unwrap();
        assert_reported(
            which,
            &cache,
            &["--require-sigs", "--trusted-key-file", key_file],
            leaf,
            &["missing-signature"],
        );
        // Without --require-sigs a missing signature is no problem.
        let (code, _) = verify_json(&cache, &["--trusted-key-file", key_file]);
        assert_eq!(code, 0, "{which}");
    }
}

#[test]
fn reports_a_signature_that_no_longer_matches_an_altered_narinfo() {
    for (which, base) in caches() {
        let (_tmp, cache, _, public) = signed_copy(base);
        let left = fixture_path("left");
        // Drop a reference: the file still parses, the fingerprint changes.
        let references = field(&cache, left, "References");
        let fewer: Vec<&str> = references
            .split(' ')
            .filter(|r| !r.ends_with("-leaf"))
            .collect();
        assert_ne!(fewer.len(), references.split(' ').count());
        set_field(&cache, left, "References", &fewer.join(" "));
        let key_file = public.to_str().unwrap();
        // Reported as bad whether signatures are required or not, once.
        for required in [&["--require-sigs"][..], &[]] {
            let args = [required, &["--trusted-key-file", key_file]].concat();
            assert_reported(which, &cache, &args, left, &["bad-signature"]);
        }
    }
}

#[test]
fn require_sigs_without_a_trusted_key_is_a_usage_error() {
    let out = mkbc()
        .args(["verify", "--require-sigs"])
        .arg(our_cache())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trusted key"));
}

#[test]
fn the_report_does_not_depend_on_the_number_of_jobs() {
    let (_tmp, cache) = writable_copy(our_cache());
    set_field(&cache, fixture_path("leaf"), "FileSize", "1");
    set_field(&cache, fixture_path("large"), "NarSize", "8");
    let (_, one) = verify_json(&cache, &["--jobs", "1"]);
    let (_, four) = verify_json(&cache, &["--jobs", "4"]);
    assert_eq!(one, four);
}

/// Writes a cache of one store path whose NAR is a single file of `len`
/// zero bytes, zstd-compressed, as our builder would describe it.
fn cache_of_zeros(dir: &Path, len: u64) {
    use mk_binary_cache::format::compression::{Compression, Workspace};
    use mk_binary_cache::format::hash::HashingWriter;
    use mk_binary_cache::format::nar::writer;
    use std::io::{Read, Write};

    fs::create_dir_all(dir.join("nar")).unwrap();
    fs::write(dir.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    let temp = dir.join("nar/tmp");
    let file = HashingWriter::new(fs::File::create(&temp).unwrap());
    let mut workspace = Workspace::default();
    let mut encoder = Compression::Zstd
        .encoder(file, 1, len, 1, &mut workspace)
        .unwrap();
    let mut nar = HashingWriter::new(&mut encoder);
    writer::open(&mut nar)
        .unwrap()
        .regular(false, len, &mut std::io::repeat(0).take(len))
        .unwrap();
    let (_, nar_hash, nar_size) = nar.finish();
    let (_, file_hash, file_size) = encoder.finish().unwrap().finish();
    let url = format!("nar/{}.nar.zst", file_hash.to_nix32());
    fs::rename(&temp, dir.join(&url)).unwrap();
    let mut narinfo =
        fs::File::create(dir.join("0123456789abcdfghijklmnpqrsvwxyz.narinfo")).unwrap();
    write!(
        narinfo,
        "StorePath: /nix/store/0123456789abcdfghijklmnpqrsvwxyz-zeros\nURL: {url}\n\
         Compression: zstd\nFileHash: {file_hash}\nFileSize: {file_size}\n\
         NarHash: {nar_hash}\nNarSize: {nar_size}\nReferences: \n"
    )
    .unwrap();
}

#[test]
fn verifying_a_1_gib_nar_takes_a_small_fixed_amount_of_memory() {
    let tmp = tempdir();
    cache_of_zeros(tmp.path(), 1 << 30);
    let mut child = mkbc()
        .args(["verify", "--json"])
        .arg(tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, peak_kib, samples) = wait_with_peak_rss(&mut child);
    let mut report = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut report).unwrap();
    assert!(status.success(), "{report}");
    assert!(
        samples >= 10,
        "only {samples} samples of the child's memory"
    );
    let report: Value = serde_json::from_str(&report).unwrap();
    let narinfo = narinfo(&tmp.path().join("0123456789abcdfghijklmnpqrsvwxyz.narinfo"));
    let nar_size: u64 = narinfo["NarSize"].parse().unwrap();
    assert!(nar_size > 1 << 30);
    assert_eq!(
        report["counts"]["nar_bytes"], nar_size,
        "the NAR was read whole"
    );
    let peak_mib = peak_kib / 1024;
    eprintln!("verify of a 1 GiB NAR: peak RSS {peak_mib} MiB ({samples} samples)");
    assert!(peak_mib < 64, "verify used {peak_mib} MiB for a 1 GiB NAR");
}
