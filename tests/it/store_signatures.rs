//! `mk-binary-cache build --to` carries over what the local store knows of
//! each path, as `nix copy --to file://` does: its signatures (`Sig:`), its
//! deriver and its content address (`CA:`), in Nix's field order. A cache
//! built from store paths signed in the store is trusted by a fresh Nix with
//! `require-sigs = true` and only the key that signed them, with nothing
//! re-signed; `sign` then adds its own signature beside the carried ones,
//! once.
//!
//! The store is shared with the tests running beside these, so the paths
//! signed here are this module's own (tests/fixtures/path-info/closure.nix
//! with the label `store-signatures`), and each run signs them with a new
//! key. Busybox, which other fixtures share, is content-addressed: a fresh
//! store takes it on its `CA:` alone, and it is never signed.
//!
//! These tests need Nix; without it they fail with a message saying so.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::build::{build_into, mk_binary_cache, nix_copy_to};
use crate::common::*;

/// This module's closure, its derivation output and `toFile` path signed in
/// the local store by a key made for this run.
pub(crate) struct Signed {
    /// The derivation output: input-addressed, with a deriver.
    pub(crate) app: String,
    /// The `builtins.toFile` path: content-addressed.
    pub(crate) note: String,
    /// Every path of the closure, busybox included.
    pub(crate) closure: Vec<String>,
    pub(crate) key: NixKey,
    _keys: tempfile::TempDir,
}

impl Signed {
    /// The name of the key that signed `app` and `note`.
    pub(crate) fn key_name(&self) -> &str {
        self.key.public_text.split(':').next().unwrap()
    }

    /// Busybox, the path of the closure no key signed.
    pub(crate) fn busybox(&self) -> &str {
        self.closure
            .iter()
            .find(|p| p.ends_with("-busybox"))
            .expect("busybox in the closure")
    }
}

pub(crate) fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let keys = tempdir();
        // A name of its own, so that this run's signature is told apart from
        // those earlier runs left on the same paths.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let key = generate_key(
            keys.path(),
            &format!("mkbc-store-sig-{}-{nanos}", std::process::id()),
        );
        let bb = nix_path(busybox_dir());
        let out = nix_build(
            &fixture_file("path-info/closure.nix"),
            &[
                "--arg",
                "busyboxDir",
                &bb,
                "--argstr",
                "label",
                "store-signatures",
            ],
        );
        let app = out[0].clone();
        let closure: Vec<String> = run(nix_cmd("nix-store").arg("-qR").arg(&app))
            .lines()
            .map(str::to_string)
            .collect();
        let note = closure
            .iter()
            .find(|p| p.ends_with("-store-signatures-note.txt"))
            .expect("the toFile path in the closure")
            .clone();
        run(nix_new(&["store", "sign", "--key-file"])
            .arg(&key.secret)
            .args([&app, &note]));
        Signed {
            app,
            note,
            closure,
            key,
            _keys: keys,
        }
    })
}

/// The values of the `key` lines of the narinfo of `store_path` in `cache`
/// (`Sig:` may repeat: earlier runs left their signatures in the store).
fn fields(cache: &Path, store_path: &str, key: &str) -> Vec<String> {
    let file = cache.join(format!("{}.narinfo", hash_part(store_path)));
    let text = std::fs::read_to_string(&file).unwrap();
    narinfo_fields(&text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

fn signatures(cache: &Path, store_path: &str) -> Vec<String> {
    fields(cache, store_path, "Sig")
}

/// How many of `sigs` are by the key named as `key`'s public key is.
fn by_key(sigs: &[String], key: &NixKey) -> usize {
    let name = key.public_text.split(':').next().unwrap();
    sigs.iter()
        .filter(|s| s.starts_with(&format!("{name}:")))
        .count()
}

/// `nix-store --realise` of `path` into a new chroot store, substituting
/// only (`--max-jobs 0`) from `cache`, with `require-sigs = true` and
/// `trusted_key` as the only trusted key.
fn substitute(cache: &Path, path: &str, trusted_key: &str) -> (tempfile::TempDir, Command) {
    let store = tempdir();
    let url = format!("file://{}", cache.display());
    let mut cmd = nix_cmd("nix-store");
    cmd.arg("--store")
        .arg(store.path())
        .args(["--realise", path, "--max-jobs", "0"])
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", trusted_key])
        .args(["--option", "substituters", &url]);
    (store, cmd)
}

// Compared with the narinfos `nix copy` writes for the same paths (xz with
// parallel compression, which is what we write for every path, so that
// FileHash agrees too): every field, the signatures made in the store among
// them, in Nix's order.
#[test]
fn narinfos_carry_signatures_deriver_and_ca_as_nix_copy_writes_them() {
    let signed = signed();
    let work = tempdir();
    let cache = work.path().join("cache");
    run(&mut build_into(
        &cache,
        &["--compression", "xz", "-q", &signed.app],
    ));
    let theirs = nix_copy_to(
        "compression=xz&parallel-compression=true",
        std::slice::from_ref(&signed.app),
    );
    for path in &signed.closure {
        let name = format!("{}.narinfo", hash_part(path));
        let ours = std::fs::read_to_string(cache.join(&name)).unwrap();
        let nix = std::fs::read_to_string(theirs.path().join(&name)).unwrap();
        assert_eq!(ours, nix, "narinfo of {path}");
    }
    let deriver = fields(&cache, &signed.app, "Deriver");
    assert!(
        deriver[0].ends_with("-store-signatures-app.drv"),
        "{deriver:?}"
    );
    assert_eq!(by_key(&signatures(&cache, &signed.app), &signed.key), 1);
    let ca = fields(&cache, &signed.note, "CA");
    assert!(ca[0].starts_with("text:sha256:"), "{ca:?}");
    assert_eq!(by_key(&signatures(&cache, &signed.note), &signed.key), 1);
}

// The closing demonstration of the feature: no `require-sigs false`, no
// signing of the cache, only the key that signed the store paths.
#[test]
fn a_fresh_store_trusting_only_the_store_key_substitutes_the_cache() {
    let signed = signed();
    let work = tempdir();
    let cache = work.path().join("cache");
    run(&mut build_into(&cache, &["-q", &signed.app]));
    let (store, mut cmd) = substitute(&cache, &signed.app, &signed.key.public_text);
    run(&mut cmd);
    for path in &signed.closure {
        assert_eq!(
            nar_hash(&in_store(store.path(), path)),
            nar_hash(Path::new(path)),
            "{path} in the fresh store"
        );
    }
    // The signature is what Nix trusted: another key is refused.
    let other = generate_key(work.path(), "mkbc-store-sig-other-1");
    let (_store, mut cmd) = substitute(&cache, &signed.app, &other.public_text);
    let stderr = run_failing(&mut cmd);
    // Nix 2.8 says "is not signed by any of the keys", 2.34 "as it's not
    // signed by any of the keys".
    assert!(
        stderr.contains("not signed by any of the keys in 'trusted-public-keys'"),
        "{stderr}"
    );
}

#[test]
fn sign_adds_its_signature_beside_the_carried_ones_once() {
    let signed = signed();
    let work = tempdir();
    let cache = work.path().join("cache");
    run(&mut build_into(&cache, &["-q", &signed.app]));
    let carried = signatures(&cache, &signed.app);
    let key = generate_key(work.path(), "mkbc-store-sig-added-1");
    for _ in 0..2 {
        run(mk_binary_cache()
            .args(["sign", "-q", "--key-file"])
            .arg(&key.secret)
            .arg(&cache));
    }
    let now = signatures(&cache, &signed.app);
    assert_eq!(
        now[..carried.len()],
        carried[..],
        "carried signatures kept, first"
    );
    assert_eq!(now.len(), carried.len() + 1, "{now:?}");
    assert_eq!(by_key(&now, &key), 1);
    // Nix trusts the cache on the added signature alone too.
    let (_store, mut cmd) = substitute(&cache, &signed.app, &key.public_text);
    run(&mut cmd);
}
