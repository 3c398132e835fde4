//! The README's usage examples, run as written, so that they stay true.
//!
//! Every line of a plain code block of README.md that starts with
//! `mk-binary-cache ` is run in order by `sh`, in a directory that holds what
//! the examples name: `result` (a symlink to a root of the fixture closure, as
//! `nix-build` leaves one), `base-cache` (a cache of part of that closure),
//! and `cache.secret`/`cache.public` (a key pair made by Nix). Each must
//! exit 0. The `publish` example goes to the S3 server of the tests
//! (`tests/it/publish.rs`) instead of AWS: its URL gets that server's
//! `endpoint=` and the name of a fresh bucket, which must then hold the cache
//! byte for byte. Then Nix itself substitutes the root from the cache the
//! examples built, as the README says a consumer does.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::publish::{Moto, credentials};

/// The example command lines of the README, in order.
fn examples() -> Vec<String> {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let mut lines = Vec::new();
    let mut fence: Option<String> = None;
    for line in readme.lines() {
        if let Some(info) = line.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_owned()),
                Some(_) => None,
            };
            continue;
        }
        if let Some(info) = &fence
            && (info.is_empty() || info == "sh")
            && line.starts_with("mk-binary-cache ")
        {
            lines.push(line.to_owned());
        }
    }
    lines
}

#[test]
fn the_readme_has_an_example_of_every_command() {
    let examples = examples();
    for command in ["build", "sign", "verify", "prune", "publish"] {
        assert!(
            examples
                .iter()
                .any(|e| e.starts_with(&format!("mk-binary-cache {command} "))),
            "the README has no example of `{command}`: {examples:#?}"
        );
    }
}

#[test]
fn the_readme_s_examples_run_as_written() {
    let fixture = fixture();
    let dir = tempdir();
    let work = dir.path();
    std::os::unix::fs::symlink(&fixture.roots[0], work.join("result")).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_mk-binary-cache"));
    run(Command::new(bin)
        .args(["build", "--quiet", "--to"])
        .arg(work.join("base-cache"))
        .arg(fixture_path("leaf")));
    let key = generate_key(work, "cache.example.org-1");
    fs::rename(&key.secret, work.join("cache.secret")).unwrap();
    fs::rename(&key.public, work.join("cache.public")).unwrap();

    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let moto = Moto::shared();
    let bucket = moto.bucket("readme");
    let mut ran = 0;
    for example in examples() {
        let mut example = example;
        if example.starts_with("mk-binary-cache publish ") {
            example = example.replace(
                "s3://my-cache?",
                &format!("s3://{}?endpoint={}&", bucket.name, moto.endpoint()),
            );
        }
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &example])
            .current_dir(work)
            .env("PATH", &path);
        let out = credentials(&mut cmd, "testing", "testing")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the README's example `{example}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} examples ran");
    bucket.assert_holds(&work.join("signed"));

    // What the examples built is a cache Nix substitutes from, building nothing.
    let store = work.join("fresh-store");
    run(nix_cmd("nix-store")
        .arg("--store")
        .arg(&store)
        .args(["--realise", &fixture.roots[0], "--max-jobs", "0"])
        .args(["--option", "require-sigs", "false"])
        .arg("--option")
        .arg("substituters")
        .arg(format!("file://{}", work.join("cache").display())));
    assert!(in_store(&store, &fixture.roots[0]).exists());
}
