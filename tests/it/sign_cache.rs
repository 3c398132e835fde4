//! `mk-binary-cache sign` and `signBinaryCache` against real Nix: our
//! signatures are the ones `nix copy` makes with the same key, a fresh store
//! substitutes from a signed cache with `require-sigs = true`, Nix refuses
//! it with another key or after a narinfo was altered, and the secret key
//! never enters the store.
//!
//! These tests need Nix; without it they fail with a message saying so.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::*;

/// Our zstd cache of the fixture, in the store.
fn our_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| build_cache(&[]))
}

fn mkbc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mk-binary-cache"))
}

/// A key pair made by Nix: (secret file, public file, public key text).
/// `mk-binary-cache sign ARGS…`, which must succeed.
fn sign(args: &[&Path]) {
    let mut cmd = mkbc();
    cmd.args(["sign", "-q"]).args(args);
    run(&mut cmd);
}

/// Writes a signed copy of `cache` to `out` with `key`.
fn sign_copy(cache: &Path, out: &Path, key: &NixKey) {
    sign(&[
        Path::new("--key-file"),
        &key.secret,
        Path::new("--out"),
        out,
        cache,
    ]);
}

/// `nix copy` of the fixture's roots into a new cache `dir`.
fn nix_copy_to(dir: &Path, params: &str) {
    let url = format!("file://{}?{params}", dir.display());
    run(nix_new(&["copy", "--option", "substituters", "", "--to", &url]).args(&fixture().roots));
}

/// Every narinfo of `cache`: file name -> text.
fn narinfo_texts(cache: &Path) -> BTreeMap<String, String> {
    narinfo_hash_parts(cache)
        .into_iter()
        .map(|h| {
            let text = fs::read_to_string(cache.join(format!("{h}.narinfo"))).unwrap();
            (h, text)
        })
        .collect()
}

fn sig_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("Sig: ")).collect()
}

fn without_sig_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Sig: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every file, directory and symlink under `root`, relative, sorted.
fn entries(root: &Path) -> Vec<PathBuf> {
    tree(root).into_keys().collect()
}

#[test]
fn signing_a_nix_copy_cache_gives_the_narinfos_nix_copy_writes_with_the_key() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-1");
    let (unsigned, by_nix) = (tmp.path().join("unsigned"), tmp.path().join("by-nix"));
    nix_copy_to(&unsigned, "compression=none");
    nix_copy_to(
        &by_nix,
        &format!("compression=none&secret-key={}", key.secret.display()),
    );
    sign(&[Path::new("--key-file"), &key.secret, &unsigned]);
    let (ours, theirs) = (narinfo_texts(&unsigned), narinfo_texts(&by_nix));
    assert_eq!(ours.len(), fixture().closure.len());
    assert_eq!(ours, theirs, "narinfos signed by us and by nix copy");
}

#[test]
fn signatures_of_our_cache_equal_those_nix_copy_makes() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-2");
    let by_nix = tmp.path().join("by-nix");
    nix_copy_to(
        &by_nix,
        &format!("compression=xz&secret-key={}", key.secret.display()),
    );
    let signed = tmp.path().join("signed");
    sign_copy(our_cache(), &signed, &key);
    for path in &fixture().closure {
        let ours = narinfo_of(&signed, path);
        let theirs = narinfo_of(&by_nix, path);
        assert_eq!(ours["Sig"], theirs["Sig"], "signature of {path}");
        assert!(ours["Sig"].starts_with("sign-test-2:"));
    }
}

#[test]
fn signing_again_keeps_signatures_and_adds_none_twice() {
    let tmp = tempdir();
    let (first, second) = (
        generate_key(tmp.path(), "sign-test-a"),
        generate_key(tmp.path(), "sign-test-b"),
    );
    let cache = tmp.path().join("signed");
    sign_copy(our_cache(), &cache, &first);
    let once = narinfo_texts(&cache);
    sign(&[Path::new("--key-file"), &first.secret, &cache]);
    assert_eq!(narinfo_texts(&cache), once, "signing again by the same key");
    sign(&[
        Path::new("--key-file"),
        &second.secret,
        Path::new("--key-file"),
        &first.secret,
        &cache,
    ]);
    for (name, text) in narinfo_texts(&cache) {
        let before = &once[&name];
        let sigs = sig_lines(&text);
        assert_eq!(sigs.len(), 2, "{name}: {text}");
        assert_eq!(
            sigs[0],
            sig_lines(before)[0],
            "{name}: the first kept first"
        );
        assert!(sigs[1].starts_with("Sig: sign-test-b:"), "{name}");
        assert_eq!(without_sig_lines(&text), without_sig_lines(before));
    }
}

#[test]
fn signing_in_place_replaces_each_narinfo_with_a_new_file_of_the_same_mode() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-atomic");
    let cache = tmp.path().join("cache");
    nix_copy_to(&cache, "compression=none");
    let leaf = narinfo_path_of(&cache, fixture_path("leaf"));
    fs::set_permissions(&leaf, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::read_to_string(&leaf).unwrap();
    // A reader that opened the narinfo before keeps reading the old text,
    // whole: the new one was written beside it and renamed over it.
    let mut held = fs::File::open(&leaf).unwrap();
    let inode = held.metadata().unwrap().ino();
    sign(&[Path::new("--key-file"), &key.secret, &cache]);
    let after = fs::metadata(&leaf).unwrap();
    assert_ne!(after.ino(), inode);
    assert_eq!(after.mode() & 0o777, 0o640);
    let mut old = String::new();
    held.read_to_string(&mut old).unwrap();
    assert_eq!(old, before);
    assert_eq!(
        without_sig_lines(&fs::read_to_string(&leaf).unwrap()),
        before
    );
    // No temporary file is left behind.
    let stray: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

fn narinfo_path_of(cache: &Path, store_path: &str) -> PathBuf {
    cache.join(format!("{}.narinfo", hash_part(store_path)))
}

#[test]
fn signing_a_cache_in_the_store_in_place_is_refused_and_points_to_out() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-ro");
    let out = mkbc()
        .args(["sign", "--key-file"])
        .arg(&key.secret)
        .arg(our_cache())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--out"), "{stderr}");
    assert!(
        sig_lines(&fs::read_to_string(narinfo_path_of(our_cache(), fixture_path("leaf"))).unwrap())
            .is_empty()
    );
}

#[test]
fn a_signed_copy_holds_everything_the_cache_holds() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-copy");
    // The end-to-end tests' uncompressed cache, with listings and debug info.
    let source = crate::e2e::none_cache();
    let copy = tmp.path().join("signed");
    sign_copy(source, &copy, &key);
    assert_eq!(entries(&copy), entries(source));
    for dir in ["log", "realisations", "debuginfo", "nar"] {
        assert!(copy.join(dir).is_dir(), "{dir}");
    }
    let (theirs, ours) = (tree(source), tree(&copy));
    for (rel, node) in &theirs {
        let name = rel.to_string_lossy();
        if name.ends_with(".narinfo") {
            let (Node::File { contents: a, .. }, Node::File { contents: b, .. }) =
                (node, &ours[rel])
            else {
                panic!("{name} is not a file");
            };
            let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
            assert_eq!(without_sig_lines(&b), without_sig_lines(&a), "{name}");
            assert_eq!(sig_lines(&b).len(), 1, "{name}");
        } else {
            assert_eq!(&ours[rel], node, "{name}");
        }
    }
}

#[test]
fn a_signed_copy_on_the_same_filesystem_hard_links_the_nar_files() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-link");
    let copy = tmp.path().join("signed");
    let source = our_cache();
    assert_eq!(
        fs::metadata(source).unwrap().dev(),
        fs::metadata(tmp.path()).unwrap().dev(),
        "this test needs the temporary directory on the store's filesystem"
    );
    sign_copy(source, &copy, &key);
    for path in &fixture().closure {
        let url = &narinfo_of(source, path)["URL"];
        let (a, b) = (
            fs::metadata(source.join(url)).unwrap(),
            fs::metadata(copy.join(url)).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{url}");
    }
}

#[test]
fn a_signed_copy_on_another_filesystem_gets_copies() {
    let shm = Path::new("/dev/shm");
    let store_dev = fs::metadata(our_cache()).unwrap().dev();
    assert!(
        fs::metadata(shm).is_ok_and(|m| m.dev() != store_dev),
        "this test needs /dev/shm on another filesystem than the store"
    );
    let keys = tempdir();
    let key = generate_key(keys.path(), "sign-test-shm");
    let tmp = tempfile::Builder::new()
        .prefix("mkbc-sign-")
        .tempdir_in(shm)
        .unwrap();
    let copy = tmp.path().join("signed");
    let out = mkbc()
        .args(["sign", "--key-file"])
        .arg(&key.secret)
        .arg("--out")
        .arg(&copy)
        .arg(our_cache())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" 0 hard-linked"), "{stderr}");
    for path in &fixture().closure {
        let url = &narinfo_of(our_cache(), path)["URL"];
        assert_eq!(
            fs::read(copy.join(url)).unwrap(),
            fs::read(our_cache().join(url)).unwrap(),
            "{url}"
        );
    }
}

#[test]
fn a_signed_copy_refuses_a_non_empty_directory_and_leaves_nothing() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-busy");
    let out_dir = tmp.path().join("busy");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("keep"), "mine").unwrap();
    let out = mkbc()
        .args(["sign", "--key-file"])
        .arg(&key.secret)
        .arg("--out")
        .arg(&out_dir)
        .arg(our_cache())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        entries(&out_dir),
        vec![PathBuf::new(), PathBuf::from("keep")]
    );
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Copies `store_path` out of the cache at `cache` into a fresh store, with
/// signatures required and `public` the only trusted key.
fn nix_copy_from(cache: &Path, public: &str, store_path: &str) -> (tempfile::TempDir, Output) {
    let store = tempdir();
    let out = nix_new(&["copy", "--option", "substituters", ""])
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", public])
        .arg("--from")
        .arg(format!("file://{}", cache.display()))
        .arg("--to")
        .arg(store.path())
        .arg(store_path)
        .output()
        .unwrap();
    (store, out)
}

#[test]
fn a_fresh_store_substitutes_every_path_from_a_signed_cache_with_require_sigs() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-e2e");
    let cache = tmp.path().join("signed");
    sign_copy(our_cache(), &cache, &key);
    let store = tempdir();
    let url = format!("file://{}", cache.display());
    run(nix_cmd("nix-build")
        .arg(fixture_file("closure.nix"))
        .args(["-A", "roots", "--no-out-link"])
        .args(["--arg", "busyboxDir", &nix_path(busybox_dir())])
        .arg("--store")
        .arg(store.path())
        .args(["--max-jobs", "0"])
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &key.public_text])
        .args(["--option", "substituters", &url])
        .args(["--option", "trusted-substituters", &url]));
    for path in &fixture().closure {
        assert_eq!(
            nar_hash(&in_store(store.path(), path)),
            nar_hash(Path::new(path)),
            "{path} in the fresh store"
        );
    }
}

#[test]
fn nix_refuses_a_signed_cache_when_another_key_is_trusted() {
    let tmp = tempdir();
    let (key, other) = (
        generate_key(tmp.path(), "sign-test-mine"),
        generate_key(tmp.path(), "sign-test-other"),
    );
    let cache = tmp.path().join("signed");
    sign_copy(our_cache(), &cache, &key);
    // `leaf` is input-addressed: Nix trusts it by signature only.
    let leaf = fixture_path("leaf");
    let (_store, out) = nix_copy_from(&cache, &other.public_text, leaf);
    assert!(
        !out.status.success(),
        "Nix accepted a path signed by an untrusted key"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lacks a valid signature"), "{stderr}");
    let (_store, out) = nix_copy_from(&cache, &key.public_text, leaf);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nix_refuses_a_path_whose_narinfo_was_altered_after_signing() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-altered");
    let left = fixture_path("left");
    for field in ["References", "NarHash"] {
        let cache = tmp.path().join(format!("signed-{field}"));
        sign_copy(our_cache(), &cache, &key);
        let file = narinfo_path_of(&cache, left);
        let text = fs::read_to_string(&file).unwrap();
        let prefix = format!("{field}: ");
        let altered: String = text
            .lines()
            .map(|l| match l.strip_prefix(&prefix) {
                Some(value) => format!("{prefix}{}\n", alter(field, value)),
                None => format!("{l}\n"),
            })
            .collect();
        assert_ne!(altered, text, "{field} unchanged");
        fs::write(&file, altered).unwrap();
        let (_store, out) = nix_copy_from(&cache, &key.public_text, left);
        assert!(
            !out.status.success(),
            "Nix accepted a narinfo with {field} altered"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("lacks a valid signature"),
            "{field}: {stderr}"
        );
    }
}

/// A narinfo field's value, changed so that the narinfo still parses.
fn alter(field: &str, value: &str) -> String {
    match field {
        // Drop the reference to leaf.
        "References" => value
            .split(' ')
            .filter(|r| !r.ends_with("-leaf"))
            .collect::<Vec<_>>()
            .join(" "),
        "NarHash" => format!("sha256:{}", "0".repeat(52)),
        _ => unreachable!("no alteration of {field}"),
    }
}

/// Builds tests/fixtures/signed-cache.nix: `signBinaryCache` from the overlay
/// on the stand-in nixpkgs, for the fixture cache; `key_files` is a Nix
/// expression. Returns the output, or the failed command's description.
fn build_signer(key_files: &str) -> Result<String, String> {
    let mut cmd = nix_cmd("nix-build");
    cmd.arg(fixture_file("signed-cache.nix"))
        .arg("--no-out-link")
        .args(BUILD_OPTIONS)
        .args(input_args())
        .args(["--arg", "keyFiles", key_files])
        .env("MKBC_BUSYBOX_DIR", busybox_dir())
        .env("MKBC_TOOL_DIR", tool_dir());
    try_run(&mut cmd).map(|out| out.trim().to_owned())
}

/// Store paths holding `needle`, searched byte for byte in the whole store.
fn store_files_containing(needle: &str) -> String {
    let out = Command::new("grep")
        .args(["-rlsF", "--", needle, "/nix/store"])
        .output()
        .expect("running grep");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn secret_base64(key: &NixKey) -> String {
    let text = fs::read_to_string(&key.secret).unwrap();
    text.trim().split_once(':').unwrap().1.to_owned()
}

#[test]
fn sign_binary_cache_script_signs_a_copy_and_the_secret_never_enters_the_store() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-script");
    let secret = key.secret.to_str().unwrap();
    let signer = build_signer(&format!("[ \"{secret}\" ]")).unwrap_or_else(|e| panic!("{e}"));
    let script = Path::new(&signer).join("bin/sign-binary-cache");

    let usage = Command::new(&script).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));

    let signed = tmp.path().join("signed");
    run(Command::new(&script).arg(&signed));
    let verified = mkbc()
        .args([
            "verify",
            "--require-sigs",
            "--trusted-key",
            &key.public_text,
        ])
        .arg(&signed)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );

    // The script names the key file; the key itself is nowhere in the store.
    assert!(fs::read_to_string(&script).unwrap().contains(secret));
    let found = store_files_containing(&secret_base64(&key));
    assert!(found.is_empty(), "the secret key is in the store: {found}");
}

#[test]
fn sign_binary_cache_refuses_a_key_given_as_a_nix_path() {
    let tmp = tempdir();
    let key = generate_key(tmp.path(), "sign-test-path");
    let error = build_signer(&format!("[ ({}) ]", nix_path(&key.secret))).unwrap_err();
    assert!(
        error.contains("would copy the secret key into the world-readable store"),
        "{error}"
    );
    let found = store_files_containing(&secret_base64(&key));
    assert!(found.is_empty(), "the secret key is in the store: {found}");
}
