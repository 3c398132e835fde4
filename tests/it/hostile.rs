//! Hostile NARs: what someone who controls a cache could hand us. Each one is
//! given to every way the crate reads a NAR ([`validate`], [`read_tree`],
//! [`restore`], and `verify` on a cache holding it); each must refuse it with
//! an error saying what is wrong, allocate no more than a fixed budget
//! whatever lengths the NAR claims, and, for [`restore`], write nothing
//! outside the destination.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use mk_binary_cache::format::hash::Sha256;
use mk_binary_cache::format::nar::padding;
use mk_binary_cache::format::nar::reader::{
    DEFAULT_MAX_DEPTH, NarError, NarSummary, ParseOptions, read_tree, restore, validate,
};
use mk_binary_cache::ops::verify::{self, ProblemKind};
use mk_binary_cache::support::progress::Progress;

use crate::peak_alloc::peak_bytes;

/// Memory any reader may use on a NAR, beyond what [`read_tree`] keeps of
/// the contents actually present.
const BUDGET: usize = 512 * 1024;

/// Builds NARs, valid or not; [`Nar::tracking`] ones remember where every
/// padding byte is.
#[derive(Default)]
struct Nar {
    bytes: Vec<u8>,
    padding: Option<Vec<usize>>,
}

impl Nar {
    fn new() -> Self {
        let mut nar = Nar::default();
        nar.strs(&[b"nix-archive-1"]);
        nar
    }

    fn tracking() -> Self {
        let mut nar = Nar {
            bytes: Vec::new(),
            padding: Some(Vec::new()),
        };
        nar.strs(&[b"nix-archive-1"]);
        nar
    }

    /// Writes each of `parts` as a NAR string.
    fn strs(&mut self, parts: &[&[u8]]) -> &mut Self {
        for part in parts {
            self.len(part.len() as u64);
            self.bytes.extend_from_slice(part);
            let pad = padding(part.len() as u64);
            if let Some(positions) = &mut self.padding {
                positions.extend(self.bytes.len()..self.bytes.len() + pad);
            }
            self.bytes.resize(self.bytes.len() + pad, 0);
        }
        self
    }

    /// Writes a bare length, as if a string of that many bytes followed.
    fn len(&mut self, len: u64) -> &mut Self {
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    fn file(&mut self, contents: &[u8]) -> &mut Self {
        self.strs(&[b"(", b"type", b"regular", b"contents", contents, b")"])
    }

    fn symlink(&mut self, target: &[u8]) -> &mut Self {
        self.strs(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }

    fn dir(&mut self) -> &mut Self {
        self.strs(&[b"(", b"type", b"directory"])
    }

    fn entry(&mut self, name: &[u8]) -> &mut Self {
        self.strs(&[b"entry", b"(", b"name", name, b"node"])
    }

    fn close(&mut self) -> &mut Self {
        self.strs(&[b")"])
    }

    /// A root directory holding `entries`, each a file naming itself.
    fn dir_of_files(names: &[&[u8]]) -> Nar {
        let mut nar = Nar::new();
        nar.dir();
        for name in names {
            nar.entry(name).file(name).close();
        }
        nar.close();
        nar
    }
}

/// Gives `nar` to every reader; each must refuse it with an error `expected`
/// accepts, within [`BUDGET`], and `restore` must write nothing outside its
/// destination. Returns the error of `read_tree`.
fn assert_refused(nar: &[u8], expected: impl Fn(&NarError) -> bool) -> NarError {
    let (result, peak) = peak_bytes(|| validate(nar));
    let e = result.expect_err("validate accepted a hostile NAR");
    assert!(expected(&e), "validate: unexpected error {e:?}");
    assert!(peak <= BUDGET, "validate allocated {peak} bytes");

    let (result, peak) = peak_bytes(|| read_tree(nar));
    let tree_error = match result {
        Ok(tree) => panic!("read_tree accepted a hostile NAR as {tree:?}"),
        Err(e) => e,
    };
    assert!(
        expected(&tree_error),
        "read_tree: unexpected error {tree_error:?}"
    );
    assert!(
        peak <= BUDGET + nar.len(),
        "read_tree allocated {peak} bytes"
    );

    let tmp = tempfile::tempdir().unwrap();
    let (dest, outside) = (tmp.path().join("dest"), tmp.path().join("outside"));
    fs::create_dir(&outside).unwrap();
    let (result, peak) = peak_bytes(|| restore(nar, &dest));
    let e = result.expect_err("restore accepted a hostile NAR");
    assert!(expected(&e), "restore: unexpected error {e:?}");
    assert!(peak <= BUDGET, "restore allocated {peak} bytes");
    let expected: &[&str] = if dest.exists() {
        &["dest", "outside"]
    } else {
        &["outside"]
    };
    assert_eq!(
        listing(tmp.path()),
        expected,
        "restore wrote next to its destination"
    );
    assert!(
        listing(&outside).is_empty(),
        "restore wrote outside its destination"
    );
    assert_verify_refuses(nar, &tree_error);
    tree_error
}

/// Puts `nar` in a cache, uncompressed and with the right hashes and sizes,
/// and checks that `verify` reports it as a bad NAR, with the reader's error.
fn assert_verify_refuses(nar: &[u8], expected: &NarError) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path();
    fs::create_dir(cache.join("nar")).unwrap();
    fs::write(cache.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    let hash = Sha256::digest(nar);
    let url = format!("nar/{}.nar", hash.to_nix32());
    fs::write(cache.join(&url), nar).unwrap();
    let hash_part = "0123456789abcdfghijklmnpqrsvwxyz";
    fs::write(
        cache.join(format!("{hash_part}.narinfo")),
        format!(
            "StorePath: /nix/store/{hash_part}-hostile\nURL: {url}\nCompression: none\n\
             FileHash: {hash}\nFileSize: {len}\nNarHash: {hash}\nNarSize: {len}\nReferences: \n",
            len = nar.len()
        ),
    )
    .unwrap();
    let report = verify::verify(cache, &verify::Options::default(), &Progress::new(true))
        .expect("verify reads the cache");
    assert!(!report.ok, "verify accepted a hostile NAR");
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProblemKind::BadNar], "{:#?}", report.problems);
    let message = &report.problems[0].message;
    assert!(
        message.ends_with(&expected.to_string()),
        "verify says {message:?}, the reader {expected}"
    );
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn invalid_name(e: &NarError) -> bool {
    matches!(e, NarError::InvalidName { .. })
}

#[test]
fn an_entry_named_dot_dot_is_refused() {
    let mut nar = Nar::new();
    nar.dir().entry(b"..").dir();
    nar.entry(b"outside")
        .dir()
        .entry(b"planted")
        .file(b"x")
        .close();
    nar.close().close().close().close();
    let e = assert_refused(&nar.bytes, invalid_name);
    assert_eq!(
        e.to_string(),
        "invalid entry name \"..\" at offset 128 in /"
    );
}

#[test]
fn an_entry_named_dot_is_refused() {
    assert_refused(&Nar::dir_of_files(&[b"."]).bytes, invalid_name);
}

#[test]
fn an_entry_name_holding_a_slash_is_refused() {
    for name in [&b"/"[..], b"a/b", b"../outside/x", b"/etc/passwd", b"a/"] {
        let e = assert_refused(&Nar::dir_of_files(&[b"0", name]).bytes, invalid_name);
        assert!(e.to_string().contains(" in /"), "{e}");
    }
}

#[test]
fn an_empty_entry_name_is_refused() {
    assert_refused(&Nar::dir_of_files(&[b""]).bytes, invalid_name);
}

#[test]
fn an_entry_name_holding_nul_is_refused() {
    assert_refused(&Nar::dir_of_files(&[b"a\0b"]).bytes, invalid_name);
}

#[test]
fn a_second_entry_of_the_same_name_is_refused_before_it_is_followed() {
    // "a" first a symlink out of the tree, then a directory writing through it.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let mut nar = Nar::new();
    nar.dir();
    nar.entry(b"a")
        .symlink(outside.as_os_str().as_bytes())
        .close();
    nar.entry(b"a")
        .dir()
        .entry(b"f")
        .file(b"x")
        .close()
        .close()
        .close();
    nar.close();
    fs::create_dir(&outside).unwrap();
    let e = assert_refused(&nar.bytes, |e| matches!(e, NarError::DuplicateName { .. }));
    assert!(
        e.to_string()
            .starts_with("duplicate entry name \"a\" at offset "),
        "{e}"
    );
    assert!(
        listing(&outside).is_empty(),
        "restore wrote through the symlink"
    );
    // A file twice, as an attempt to overwrite one.
    assert_refused(&Nar::dir_of_files(&[b"a", b"a"]).bytes, |e| {
        matches!(e, NarError::DuplicateName { .. })
    });
}

#[test]
fn entries_out_of_byte_order_are_refused() {
    let out_of_order = |e: &NarError| matches!(e, NarError::NamesOutOfOrder { .. });
    for names in [
        &[&b"b"[..], b"a"][..],
        &[b"a", b"c", b"b"],
        // Byte order, not case-insensitive or locale order.
        &[b"a", b"B"],
        &[b"\xc3\xa9", b"z"],
        // A name sorts after its prefixes.
        &[b"ab", b"a"],
    ] {
        assert_refused(&Nar::dir_of_files(names).bytes, out_of_order);
    }
}

#[test]
fn non_zero_padding_is_refused_wherever_it_is() {
    let mut nar = Nar::tracking();
    nar.dir();
    nar.entry(b"bin").dir();
    nar.entry(b"run").strs(&[
        b"(",
        b"type",
        b"regular",
        b"executable",
        b"",
        b"contents",
        b"#!/bin/sh\n",
        b")",
    ]);
    nar.close().close().close();
    nar.entry(b"link").symlink(b"bin/run").close();
    nar.close();
    validate(&nar.bytes[..]).expect("the NAR is valid before it is spoiled");
    let padding = nar.padding.as_ref().unwrap();
    assert!(padding.len() > 100, "{} padding bytes", padding.len());
    for &at in padding {
        let mut bad = nar.bytes.clone();
        bad[at] = 0x01;
        let e = assert_refused(&bad, |e| matches!(e, NarError::NonZeroPadding { .. }));
        assert_eq!(e.offset(), Some(at as u64), "{e}");
    }
}

#[test]
fn a_huge_claimed_file_size_allocates_nothing_for_it() {
    for claimed in [1u64 << 32, 1 << 62, u64::MAX] {
        let mut nar = Nar::new();
        nar.strs(&[b"(", b"type", b"regular", b"contents"]);
        nar.len(claimed).raw(b"only sixteen byt");
        let e = assert_refused(&nar.bytes, |e| matches!(e, NarError::Truncated { .. }));
        assert_eq!(e.offset(), Some(nar.bytes.len() as u64));
    }
}

#[test]
fn a_huge_claimed_name_target_or_token_length_allocates_nothing_for_it() {
    let too_long = |e: &NarError| matches!(e, NarError::TooLong { .. });
    for claimed in [256, 1 << 40, u64::MAX] {
        let mut name = Nar::new();
        name.dir().strs(&[b"entry", b"(", b"name"]).len(claimed);
        assert_refused(&name.bytes, too_long);
    }
    for claimed in [4096, 1 << 40, u64::MAX] {
        let mut target = Nar::new();
        target
            .strs(&[b"(", b"type", b"symlink", b"target"])
            .len(claimed);
        assert_refused(&target.bytes, too_long);
    }
    for claimed in [65, 1 << 40, u64::MAX] {
        let mut token = Nar::new();
        token.strs(&[b"(", b"type"]).len(claimed);
        let e = assert_refused(&token.bytes, |e| {
            matches!(e, NarError::UnexpectedToken { .. })
        });
        assert!(
            e.to_string()
                .ends_with(&format!("found a string of {claimed} bytes")),
            "{e}"
        );
    }
}

#[test]
fn nesting_beyond_the_depth_limit_is_refused_without_recursing() {
    // 100,000 levels would overflow the stack of a recursive reader.
    let depth = 100_000;
    let mut nar = Nar::new();
    for _ in 0..depth {
        nar.dir().entry(b"d");
    }
    nar.dir().close();
    for _ in 0..depth {
        nar.close().close();
    }
    let e = assert_refused(&nar.bytes, |e| matches!(e, NarError::TooDeep { .. }));
    assert!(
        e.to_string().starts_with(&format!(
            "directories nested deeper than {DEFAULT_MAX_DEPTH} "
        )),
        "{e}"
    );
    // A caller that allows it reads it all, still without recursing.
    let summary = ParseOptions::new()
        .max_depth(depth)
        .parse(&nar.bytes[..], &mut NarSummary::default())
        .unwrap();
    assert_eq!(summary, nar.bytes.len() as u64);
}

#[test]
fn a_directory_of_many_entries_is_validated_in_bounded_memory() {
    let names: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("{i:08}").into_bytes())
        .collect();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let nar = Nar::dir_of_files(&names);
    assert!(nar.bytes.len() > 16 << 20, "{} bytes", nar.bytes.len());
    let (summary, peak) = peak_bytes(|| validate(&nar.bytes[..]));
    assert_eq!(summary.unwrap().regular_files, 100_000);
    assert!(peak <= BUDGET, "validate allocated {peak} bytes");
}
