//! How `build` asks the local Nix for the closure: `nix path-info --json
//! --recursive`, with `--json-format 2` where Nix has that flag (2.33 and
//! later, where `--json` alone is deprecated), without it on older Nix, and,
//! for a Nix whose version cannot be told, with the flag and then without it
//! if Nix refuses the flag. The formats themselves are read in
//! `closure::tests`, from what each Nix version printed.
//!
//! A `nix` script put first on PATH logs each call and hands it to the real
//! Nix (2.8 here, which has no `--json-format`); only `--version` may be
//! answered by the script.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::build_into;
use crate::common::*;

/// A directory with a `nix` that logs its arguments to `<dir>/calls`, one
/// call a line, and prints `version` for `--version` (the real Nix's when
/// `None`).
fn logging_nix(dir: &Path, version: Option<&str>) -> PathBuf {
    require_nix();
    let real = run(Command::new("sh").args(["-c", "command -v nix"]));
    let answer = match version {
        Some(v) => format!("if [ \"$1\" = --version ]; then echo '{v}'; exit 0; fi\n"),
        None => String::new(),
    };
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\n{answer}exec '{real}' \"$@\"\n",
        log = dir.join("calls").display(),
        real = real.trim(),
    );
    let nix = dir.join("nix");
    fs::write(&nix, script).unwrap();
    fs::set_permissions(&nix, fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_path_buf()
}

/// Runs `build --to <work>/cache <root>` with `bin` first on PATH; returns
/// the path-info calls it made.
fn build_with(bin: &Path, work: &Path, root: &str) -> Vec<String> {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let cache = work.join("cache");
    run(build_into(&cache, &["-q", root]).env("PATH", path));
    assert_eq!(
        narinfo_of(&cache, root)["StorePath"],
        root,
        "the cache holds the root"
    );
    fs::read_to_string(bin.join("calls"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("path-info"))
        .map(str::to_string)
        .collect()
}

#[test]
fn nix_2_8_is_asked_without_json_format() {
    let work = tempdir();
    let bin = logging_nix(work.path(), None);
    let calls = build_with(&bin, work.path(), fixture_path("leaf"));
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(!calls[0].contains("--json-format"), "{calls:?}");
}

#[test]
fn a_nix_whose_version_cannot_be_told_is_asked_with_json_format_then_without() {
    let work = tempdir();
    let bin = logging_nix(work.path(), Some("nix (Some Fork) unreleased"));
    let calls = build_with(&bin, work.path(), fixture_path("leaf"));
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("--json --json-format 2 --recursive"),
        "{calls:?}"
    );
    assert!(!calls[1].contains("--json-format"), "{calls:?}");
}

// The real Nix 2.34 is run by the version matrix; here a 2.8 that claims to
// be 2.34 shows that the flag is asked for (2.8 then refuses it, and the
// fallback reads its list).
#[test]
fn nix_2_33_and_later_is_asked_for_json_format_2() {
    let work = tempdir();
    let bin = logging_nix(work.path(), Some("nix (Nix) 2.34.8"));
    let calls = build_with(&bin, work.path(), fixture_path("leaf"));
    assert!(calls[0].contains("--json-format 2"), "{calls:?}");
}
