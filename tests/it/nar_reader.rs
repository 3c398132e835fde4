//! The NAR reader checked against live Nix: random trees written to disk and
//! dumped by `nix-store --dump` read back as the trees we wrote, and what
//! [`restore`] unpacks dumps again to the very same bytes.
//!
//! These tests need Nix; without it they fail with a message saying so.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mk_binary_cache::format::nar::is_valid_entry_name;
use mk_binary_cache::format::nar::reader::{Node, read_tree, restore, validate};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// `nix-store --dump PATH`, panicking with a clear message if Nix is missing.
fn nix_dump(path: &Path) -> Vec<u8> {
    let out = crate::common::hermetic_nix(Command::new("nix-store").arg("--dump").arg(path))
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == ErrorKind::NotFound {
                panic!("`nix-store` not found: the NAR reader tests need Nix (apt-get install -y nix-bin)")
            }
            panic!("running nix-store --dump: {e}")
        });
    assert!(
        out.status.success(),
        "nix-store --dump {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Creates `node` at `path`.
fn write_tree(path: &Path, node: &Node) {
    match node {
        Node::Regular {
            executable,
            contents,
        } => {
            fs::write(path, contents).unwrap();
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path).unwrap()
        }
        Node::Directory(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                write_tree(&path.join(OsStr::from_bytes(name)), child);
            }
        }
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Mostly printable, sometimes any byte (non-UTF-8 names included).
    let byte = prop_oneof![4 => b'0'..=b'z', 1 => any::<u8>()];
    vec(byte, 1..16).prop_filter("valid entry name", |n| is_valid_entry_name(n))
}

fn tree() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        3 => (any::<bool>(), vec(any::<u8>(), 0..300))
            .prop_map(|(executable, contents)| Node::Regular { executable, contents }),
        1 => vec(1u8..=255, 1..64).prop_map(|target| Node::Symlink { target }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        btree_map(name(), inner, 0..6).prop_map(Node::Directory)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn reads_what_nix_dumps(node in tree()) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_tree(&src, &node);
        let nar = nix_dump(&src);

        prop_assert_eq!(read_tree(&nar[..]).unwrap(), node);
        prop_assert_eq!(validate(&nar[..]).unwrap().nar_size, nar.len() as u64);

        let back = tmp.path().join("back");
        restore(&nar[..], &back).unwrap();
        prop_assert!(nix_dump(&back) == nar, "restored tree dumps differently");
    }
}

#[test]
fn reads_and_restores_store_paths() {
    // Whatever this machine's store holds: real packages, scripts, symlinks.
    // Only valid paths: others may be half-built by concurrent tests.
    let mut paths: Vec<_> = fs::read_dir("/nix/store")
        .expect("/nix/store: the NAR reader tests need Nix")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.len() > 33 && name.as_bytes()[32] == b'-' && !name.ends_with(".lock")
        })
        .collect();
    paths.sort();
    paths.truncate(40);
    let invalid = crate::common::hermetic_nix(
        Command::new("nix-store")
            .args(["--check-validity", "--print-invalid"])
            .args(&paths),
    )
    .output()
    .expect("running nix-store --check-validity");
    assert!(
        invalid.status.success(),
        "{}",
        String::from_utf8_lossy(&invalid.stderr)
    );
    let invalid = String::from_utf8(invalid.stdout).unwrap();
    paths.retain(|p| !invalid.lines().any(|l| Path::new(l) == p));
    assert!(!paths.is_empty(), "the Nix store is empty");
    let tmp = tempfile::tempdir().unwrap();
    for (i, path) in paths.iter().enumerate() {
        let nar = nix_dump(path);
        let summary = validate(&nar[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(summary.nar_size, nar.len() as u64);
        let back = tmp.path().join(i.to_string());
        restore(&nar[..], &back).unwrap();
        assert!(
            nix_dump(&back) == nar,
            "{} restores differently",
            path.display()
        );
    }
}
