//! Every subcommand's failure reaches the user through one printer: a single
//! line `mk-binary-cache: error: <what failed>: <cause>` that names each
//! cause once, and a non-zero exit (2 for `verify`, whose 1 means "problems
//! found").

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::build::mk_binary_cache;
use crate::common::*;

/// Runs `cmd`, which must fail with `code`; returns what it printed on stderr.
fn failure(cmd: &mut Command, code: i32) -> String {
    let out = cmd.output().expect("running mk-binary-cache");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// The builder, run as Nix runs it: no arguments, the attrs file in the
/// environment.
fn builder(attrs: &Path) -> Command {
    let mut cmd = mk_binary_cache();
    cmd.env("NIX_ATTRS_JSON_FILE", attrs);
    cmd
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn builder_mode_with_an_attrs_file_that_is_not_json() {
    let work = tempdir();
    let attrs = work.path().join(".attrs.json");
    fs::write(&attrs, "{\n").unwrap();
    assert_eq!(
        failure(&mut builder(&attrs), 1),
        format!(
            "mk-binary-cache: error: '{}' is not valid JSON: EOF while parsing an object at line 2 column 0\n",
            p(&attrs)
        )
    );
}

// An I/O error wrapped by two layers of context: the cause, once, at the end.
#[test]
fn builder_mode_that_cannot_create_its_output() {
    let work = tempdir();
    let file = work.path().join("file");
    fs::write(&file, "").unwrap();
    let out = file.join("out");
    let attrs = work.path().join(".attrs.json");
    let json = serde_json::json!({"outputs": {"out": out}, "closure": []});
    fs::write(&attrs, json.to_string()).unwrap();
    assert_eq!(
        failure(&mut builder(&attrs), 1),
        format!(
            "mk-binary-cache: error: writing the cache to '{0}': cannot write '{0}': Not a directory (os error 20)\n",
            p(&out)
        )
    );
}

#[test]
fn build_of_a_path_outside_the_store() {
    let work = tempdir();
    let cache = work.path().join("cache");
    let mut cmd = mk_binary_cache();
    cmd.args(["build", "--to"]).arg(&cache).arg(work.path());
    assert_eq!(
        failure(&mut cmd, 1),
        format!(
            "mk-binary-cache: error: root '{0}': '{0}' is not inside the store directory '/nix/store'\n",
            p(work.path())
        )
    );
}

// A closure file may name a path this machine lacks: refused before the
// cache directory is made, so the bad input leaves nothing behind.
#[test]
fn build_of_a_closure_naming_a_path_missing_from_the_store() {
    let work = tempdir();
    let absent = "/nix/store/00000000000000000000000000000000-absent";
    let closure = work.path().join("closure.json");
    let json = serde_json::json!([{
        "path": absent,
        "narHash": format!("sha256:{}", "0".repeat(52)),
        "narSize": 8,
        "references": []
    }]);
    fs::write(&closure, json.to_string()).unwrap();
    let cache = work.path().join("cache");
    let mut cmd = mk_binary_cache();
    cmd.args(["build", "--to"])
        .arg(&cache)
        .arg("--closure-json")
        .arg(&closure);
    assert_eq!(
        failure(&mut cmd, 1),
        format!(
            "mk-binary-cache: error: writing the cache to '{}': '{absent}' is not in the store, and the cache has no narinfo for it\n",
            p(&cache)
        )
    );
    assert!(!cache.exists(), "a cache was left behind");
}

#[test]
fn build_with_a_missing_closure_file() {
    let work = tempdir();
    let missing = work.path().join("closure.json");
    let mut cmd = mk_binary_cache();
    cmd.args(["build", "--to"])
        .arg(work.path().join("cache"))
        .arg("--closure-json")
        .arg(&missing);
    assert_eq!(
        failure(&mut cmd, 1),
        format!(
            "mk-binary-cache: error: cannot read '{}': No such file or directory (os error 2)\n",
            p(&missing)
        )
    );
}

#[test]
fn sign_with_a_missing_key_file() {
    let work = tempdir();
    let key = work.path().join("secret.key");
    let mut cmd = mk_binary_cache();
    cmd.args(["sign", "--key-file"]).arg(&key).arg(work.path());
    assert_eq!(
        failure(&mut cmd, 1),
        format!(
            "mk-binary-cache: error: reading secret key file '{}': No such file or directory (os error 2)\n",
            p(&key)
        )
    );
}

#[test]
fn sign_of_a_missing_cache() {
    let work = tempdir();
    let missing = work.path().join("cache");
    let mut cmd = mk_binary_cache();
    cmd.args(["sign", "--key-file"])
        .arg(fixture_file("keys/secret.key"))
        .arg(&missing);
    assert_eq!(
        failure(&mut cmd, 1),
        format!(
            "mk-binary-cache: error: signing '{0}' in place: cannot read '{0}': No such file or directory (os error 2)\n",
            p(&missing)
        )
    );
}

#[test]
fn sign_of_a_directory_that_is_not_a_cache() {
    let work = tempdir();
    let mut cmd = mk_binary_cache();
    cmd.args(["sign", "--key-file"])
        .arg(fixture_file("keys/secret.key"))
        .arg(work.path());
    assert_eq!(
        failure(&mut cmd, 1),
        format!(
            "mk-binary-cache: error: signing '{0}' in place: '{0}' is not a binary cache: it has no nix-cache-info\n",
            p(work.path())
        )
    );
}

// The message of the issue that asked for this, with its cause once.
#[test]
fn verify_of_a_missing_cache() {
    let mut cmd = mk_binary_cache();
    cmd.args(["verify", "/nonexistent"]);
    assert_eq!(
        failure(&mut cmd, 2),
        "mk-binary-cache: error: verifying '/nonexistent': cannot open the cache '/nonexistent': No such file or directory (os error 2)\n"
    );
}
