//! What `mk-binary-cache build` caches, outside a Nix build: store paths
//! whose closure the local Nix computes (`nix path-info --json --recursive`),
//! or a closure file, and the root paths that `store-paths` lists.
//!
//! A closure file is `nix path-info --json` output of any Nix version and
//! `--json-format` (a list, a map keyed by path, or formats 2 and 3) or the
//! list that `exportReferencesGraph` writes with structured attributes; see
//! [`closure::from_path_info_json`]. What the store says of each path beyond
//! its contents (signatures, deriver, content address) goes into the
//! narinfos, as `nix copy` carries it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::format::store_path::{self, PathInfo, StorePath, StorePathError, containing_store_path};
use crate::input::closure::{self, ClosureError};
use crate::support::shell::{plain_text, show};

/// The local store's directory: `NIX_STORE_DIR`, which Nix reads, or
/// `/nix/store`. (A builder is told its store by `NIX_STORE` instead.)
pub fn store_dir() -> String {
    std::env::var("NIX_STORE_DIR").unwrap_or_else(|_| store_path::DEFAULT_STORE_DIR.to_owned())
}

/// How many symlinks a root may go through before it reaches the store.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("cannot run `{command}`: {source} (is Nix installed and on PATH?)")]
    Spawn { command: String, source: io::Error },
    /// Nix said no; `output` is what it printed, as plain text on one line.
    #[error("`{what}` {}: {output}", failure(.status))]
    Nix {
        what: &'static str,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error(
        "'{0}' is not in the local Nix store: build it, or fetch it with \
         `nix-store --realise PATH` or `nix copy --from URL PATH`, first"
    )]
    NotInLocalStore(StorePath),
    #[error("'{0}' does not exist")]
    Missing(PathBuf),
    #[error("`{command}` printed a closure that cannot be read: {source}")]
    NixOutput {
        command: String,
        source: ClosureError,
    },
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("closure file '{path}': {source}")]
    ClosureFile { path: PathBuf, source: ClosureError },
    #[error("root '{path}': {source}")]
    NotInStore {
        path: PathBuf,
        source: StorePathError,
    },
    #[error("'{0}' is not in the closure file")]
    NotInClosure(StorePath),
    #[error("the closure is incomplete: '{path}' refers to '{reference}', which is not in it")]
    Incomplete {
        path: StorePath,
        reference: StorePath,
    },
    #[error("no store paths to cache: give some, or --closure-json FILE")]
    NoPaths,
}

/// The paths to cache and the roots among them.
#[derive(Debug)]
pub struct Input {
    /// Every path to cache, sorted by path; closed under references.
    pub closure: Vec<PathInfo>,
    /// What `store-paths` should list, in the order given.
    pub roots: Vec<StorePath>,
}

/// The closure of `paths` in the local store, as `nix` computes it.
///
/// `paths` may be store paths, paths inside store paths, or symlinks to
/// either (`./result`).
pub fn from_local_store(paths: &[PathBuf], store_dir: &str) -> Result<Input, BuildError> {
    if paths.is_empty() {
        return Err(BuildError::NoPaths);
    }
    let roots = resolve_roots(paths, store_dir)?;
    check_valid(&roots)?;
    let with_format = takes_json_format(&nix_version()).unwrap_or(true);
    // A `.drv` root stands for the derivation file and its closure, as
    // `nix copy` has it. Nix 2.8 reads a bare `.drv` as its outputs, later
    // versions as the file; with `--derivation` every version reads it as
    // the file. That flag would turn an output into its deriver, so only
    // `.drv` roots are asked with it.
    let (derivations, others): (Vec<StorePath>, Vec<StorePath>) = roots
        .iter()
        .cloned()
        .partition(|r| r.name().ends_with(".drv"));
    let mut closure = Vec::new();
    for (group, as_derivations) in [(others, false), (derivations, true)] {
        if !group.is_empty() {
            closure.extend(closure_of(&group, as_derivations, with_format, store_dir)?);
        }
    }
    closure.sort_by(|a, b| a.path.cmp(&b.path));
    closure.dedup_by(|a, b| a.path == b.path);
    check_complete(&closure)?;
    Ok(Input { closure, roots })
}

/// The closure of `roots` as `nix path-info` gives it. A Nix we cannot
/// place (`with_format` by default) is asked with `--json-format`, then
/// without it if it refuses the flag.
fn closure_of(
    roots: &[StorePath],
    derivations: bool,
    with_format: bool,
    store_dir: &str,
) -> Result<Vec<PathInfo>, BuildError> {
    let mut result = path_info(roots, derivations, with_format);
    if with_format
        && matches!(&result, Err(BuildError::Nix { output, .. }) if output.contains("json-format"))
    {
        result = path_info(roots, derivations, false);
    }
    let (command, out) = result?;
    let text = String::from_utf8_lossy(&out.stdout);
    closure::from_path_info_json(&text, store_dir)
        .map_err(|source| BuildError::NixOutput { command, source })
}

/// The JSON format `build` asks `nix path-info` for where Nix has
/// `--json-format` (2.33 and later, where `--json` alone is deprecated and
/// announced to become an error). Every format can be read; 2 is the first
/// with a version number and the one every such Nix prints.
const PATH_INFO_JSON_FORMAT: &str = "2";

/// Runs `nix path-info --json --recursive` on `roots`, with `--derivation`
/// when `derivations` and `--json-format` when `with_format`, and gives the
/// command and its output.
fn path_info(
    roots: &[StorePath],
    derivations: bool,
    with_format: bool,
) -> Result<(String, std::process::Output), BuildError> {
    let mut cmd = Command::new("nix");
    cmd.args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
    ]);
    if with_format {
        cmd.args(["--json-format", PATH_INFO_JSON_FORMAT]);
    }
    if derivations {
        cmd.arg("--derivation");
    }
    cmd.arg("--recursive");
    cmd.args(roots.iter().map(|r| OsString::from(r.to_absolute())));
    let out = run_nix(&mut cmd, "nix path-info")?;
    Ok((show(&cmd), out))
}

/// Runs `cmd`, a Nix command called `what` in messages; its output if it
/// succeeds.
fn run_nix(cmd: &mut Command, what: &'static str) -> Result<std::process::Output, BuildError> {
    let out = cmd.output().map_err(|source| BuildError::Spawn {
        command: show(cmd),
        source,
    })?;
    if !out.status.success() {
        return Err(BuildError::Nix {
            what,
            status: out.status,
            output: plain_text(&out.stderr),
        });
    }
    Ok(out)
}

/// Refuses a root that is not valid in the local store, before `nix
/// path-info` is asked about it: that would try the substituters of the
/// user's nix.conf first, which takes seconds offline, and much longer with
/// one that does not answer. `nix-store --check-validity` asks the local
/// store's database alone, on every Nix version.
fn check_valid(roots: &[StorePath]) -> Result<(), BuildError> {
    let mut cmd = Command::new("nix-store");
    cmd.args(["--check-validity", "--print-invalid"]);
    cmd.args(roots.iter().map(|r| OsString::from(r.to_absolute())));
    let out = run_nix(&mut cmd, "nix-store --check-validity")?;
    let invalid = String::from_utf8_lossy(&out.stdout);
    match roots
        .iter()
        .find(|r| invalid.lines().any(|l| l == r.to_absolute()))
    {
        Some(root) => Err(BuildError::NotInLocalStore(root.clone())),
        None => Ok(()),
    }
}

/// How a program ended, in words: `exited with 1`, `was killed by SIGABRT`.
fn failure(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("failed (exit code {code})"),
        (None, Some(signal)) => match signal_name(signal) {
            Some(name) => format!("was killed by {name} (signal {signal})"),
            None => format!("was killed by signal {signal}"),
        },
        (None, None) => format!("failed ({status})"),
    }
}

/// The names of the signals a program usually dies of.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// What `nix --version` prints, or nothing if it cannot be run (the
/// path-info call then says why).
fn nix_version() -> String {
    Command::new("nix")
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether the Nix that printed `version` (`nix (Nix) 2.34.8`) has
/// `nix path-info --json-format` (2.33 and later), if that can be told.
/// Lix numbers its releases 2.90 and up but forked from Nix 2.18: it has no
/// such flag.
fn takes_json_format(version: &str) -> Option<bool> {
    if version.contains("Lix") {
        return Some(false);
    }
    let number = version.split_whitespace().last()?;
    let mut parts = number.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
    });
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    Some((major, minor) >= (2, 33))
}

/// The closure in `file`. The roots are `paths` when given (each must be in
/// the closure), else the paths of the closure that no other path refers to.
pub fn from_closure_file(
    file: &Path,
    paths: &[PathBuf],
    store_dir: &str,
) -> Result<Input, BuildError> {
    let text = fs::read_to_string(file).map_err(|source| BuildError::Read {
        path: file.to_owned(),
        source,
    })?;
    let closure = closure::from_path_info_json(&text, store_dir).map_err(|source| {
        BuildError::ClosureFile {
            path: file.to_owned(),
            source,
        }
    })?;
    check_complete(&closure)?;
    let roots = if paths.is_empty() {
        tops(&closure)
    } else {
        let roots = resolve_roots(paths, store_dir)?;
        if let Some(missing) = roots
            .iter()
            .find(|r| closure.binary_search_by(|p| p.path.cmp(r)).is_err())
        {
            return Err(BuildError::NotInClosure(missing.clone()));
        }
        roots
    };
    Ok(Input { closure, roots })
}

/// Refuses a closure with a reference to a path outside it: a cache of it
/// would leave consumers unable to substitute that path.
fn check_complete(closure: &[PathInfo]) -> Result<(), BuildError> {
    let paths: BTreeSet<&StorePath> = closure.iter().map(|p| &p.path).collect();
    for info in closure {
        if let Some(reference) = info.references.iter().find(|r| !paths.contains(r)) {
            return Err(BuildError::Incomplete {
                path: info.path.clone(),
                reference: reference.clone(),
            });
        }
    }
    Ok(())
}

/// The paths no other path of the closure refers to, in closure order.
fn tops(closure: &[PathInfo]) -> Vec<StorePath> {
    let referred: BTreeSet<&StorePath> = closure
        .iter()
        .flat_map(|p| p.references.iter().filter(move |r| **r != p.path))
        .collect();
    closure
        .iter()
        .map(|p| &p.path)
        .filter(|p| !referred.contains(p))
        .cloned()
        .collect()
}

/// The store paths `paths` stand for, without duplicates, in order.
pub(crate) fn resolve_roots(
    paths: &[PathBuf],
    store_dir: &str,
) -> Result<Vec<StorePath>, BuildError> {
    let resolved = paths
        .iter()
        .map(|path| resolve_root(path, store_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let mut roots = Vec::new();
    store_path::append_new(&mut roots, resolved);
    Ok(roots)
}

/// The store path `path` is in, following symlinks only until the store is
/// reached: a store path that is itself a symlink stands for itself.
fn resolve_root(path: &Path, store_dir: &str) -> Result<StorePath, BuildError> {
    let not_in_store = |source| BuildError::NotInStore {
        path: path.to_owned(),
        source,
    };
    let mut current = std::path::absolute(path).map_err(|source| BuildError::Read {
        path: path.to_owned(),
        source,
    })?;
    for _ in 0..MAX_SYMLINKS {
        if current.starts_with(store_dir) {
            break;
        }
        match fs::read_link(&current) {
            Ok(target) => {
                let parent = current.parent().unwrap_or(Path::new("/"));
                current = parent.join(target);
            }
            Err(_) => break,
        }
    }
    // Said before "not in the store": the mistake is more likely a typo.
    if !current.starts_with(store_dir)
        && fs::symlink_metadata(&current).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
    {
        return Err(BuildError::Missing(path.to_owned()));
    }
    let text = current.to_string_lossy();
    containing_store_path(&text, store_dir).map_err(not_in_store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
    const B: &str = "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb";
    const HASH: &str = "sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq";

    fn entry(path: &str, references: &[&str]) -> serde_json::Value {
        serde_json::json!({"path": path, "narHash": HASH, "narSize": 504, "references": references})
    }

    fn closure_file(entries: &[serde_json::Value]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), serde_json::to_string(entries).unwrap()).unwrap();
        file
    }

    #[test]
    fn roots_of_a_closure_file_are_the_paths_nothing_refers_to() {
        let file = closure_file(&[entry(A, &[A, B]), entry(B, &[])]);
        let input = from_closure_file(file.path(), &[], "/nix/store").unwrap();
        assert_eq!(input.closure.len(), 2);
        let roots: Vec<String> = input.roots.iter().map(|r| r.to_string()).collect();
        assert_eq!(roots, [A]);
    }

    #[test]
    fn roots_given_with_a_closure_file_must_be_in_it() {
        let file = closure_file(&[entry(A, &[B]), entry(B, &[])]);
        let input = from_closure_file(
            file.path(),
            &[PathBuf::from(format!("{B}/lib"))],
            "/nix/store",
        )
        .unwrap();
        assert_eq!(input.roots[0].to_string(), B);
        let other = "/nix/store/sbi569kby1xympi1rxrny9nv9vr9151n-other";
        let e = from_closure_file(file.path(), &[PathBuf::from(other)], "/nix/store").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("'{other}' is not in the closure file")
        );
    }

    #[test]
    fn an_incomplete_closure_is_refused() {
        let file = closure_file(&[entry(A, &[B])]);
        let e = from_closure_file(file.path(), &[], "/nix/store").unwrap_err();
        assert!(
            matches!(&e, BuildError::Incomplete { reference, .. } if reference.to_string() == B),
            "{e}"
        );
    }

    #[test]
    fn a_symlink_to_a_store_path_stands_for_it_but_a_store_symlink_for_itself() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("result");
        symlink(format!("{A}/bin/app"), &result).unwrap();
        let again = dir.path().join("again");
        symlink("result", &again).unwrap();
        for link in [&result, &again] {
            assert_eq!(resolve_root(link, "/nix/store").unwrap().to_string(), A);
        }
        // A path in the store is taken as it is, never followed.
        assert_eq!(
            resolve_root(Path::new(B), "/nix/store")
                .unwrap()
                .to_string(),
            B
        );
        let e = resolve_root(dir.path(), "/nix/store").unwrap_err();
        assert!(matches!(e, BuildError::NotInStore { .. }), "{e}");
    }

    #[test]
    fn a_root_that_does_not_exist_is_said_to_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("result");
        let e = resolve_root(&missing, "/nix/store").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("'{}' does not exist", missing.display())
        );
        // A link to nowhere outside the store, too.
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let e = resolve_root(&dangling, "/nix/store").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("'{}' does not exist", dangling.display())
        );
    }

    #[test]
    fn a_failed_nix_is_described_in_words() {
        use std::os::unix::process::ExitStatusExt;
        let status = |raw| std::process::ExitStatus::from_raw(raw);
        assert_eq!(failure(&status(1 << 8)), "failed (exit code 1)");
        assert_eq!(
            failure(&status(libc::SIGABRT)),
            "was killed by SIGABRT (signal 6)"
        );
        assert_eq!(failure(&status(libc::SIGUSR2)), "was killed by signal 12");
    }

    // As `nix --version` prints it for each kind of Nix.
    #[test]
    fn json_format_is_asked_of_nix_2_33_and_later_only() {
        for (version, takes) in [
            ("nix (Nix) 2.8.0\n", Some(false)),
            ("nix (Nix) 2.32.4\n", Some(false)),
            ("nix (Nix) 2.33.0\n", Some(true)),
            ("nix (Nix) 2.34.8\n", Some(true)),
            ("nix (Nix) 2.35.0pre20260101_0123abc\n", Some(true)),
            ("nix (Nix) 3.0\n", Some(true)),
            ("nix (Determinate Nix 3.6.2) 2.29.0\n", Some(false)),
            ("nix (Lix, like Nix) 2.91.1\n", Some(false)),
            ("", None),
            ("nix (Some Fork) unknown\n", None),
        ] {
            assert_eq!(takes_json_format(version), takes, "{version:?}");
        }
    }

    #[test]
    fn an_unreadable_closure_file_names_itself() {
        let e =
            from_closure_file(Path::new("/does/not/exist.json"), &[], "/nix/store").unwrap_err();
        assert!(e.to_string().contains("/does/not/exist.json"), "{e}");
        let bad = tempfile::NamedTempFile::new().unwrap();
        fs::write(bad.path(), "{").unwrap();
        let e = from_closure_file(bad.path(), &[], "/nix/store").unwrap_err();
        assert!(matches!(e, BuildError::ClosureFile { .. }), "{e}");
    }
}
