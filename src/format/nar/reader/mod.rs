//! Reading NARs: a streaming parser that checks the grammar, name order and padding.
//!
//! [`parse`] reads a NAR from any [`Read`] and reports what it finds to a
//! [`Visitor`], in archive order. File contents are never buffered: the
//! visitor gets a [`RegularFile`] to read them from, and whatever it leaves
//! unread is skipped. No allocation depends on a length read from the archive
//! beyond the small bounds below, so a hostile NAR cannot make us allocate.
//!
//! The parser is strict; it rejects, with the byte offset and the path inside
//! the archive:
//! - a wrong magic, any unexpected token, non-zero padding;
//! - entry names that are invalid ([`is_valid_entry_name`]), longer than
//!   [`MAX_NAME_LEN`], duplicated or not in strictly increasing byte order;
//! - symlink targets that are empty, longer than [`MAX_TARGET_LEN`] or hold a NUL;
//! - directories nested deeper than [`DEFAULT_MAX_DEPTH`] (configurable);
//! - truncation, and by default any data after the root node.
//!
//! Built on it: [`validate`] (check and count), [`restore`] (unpack to disk)
//! and [`read_tree`] (an in-memory [`Node`] tree, for small NARs and tests).
//!
//! The parser issues many small reads: give it a buffered reader. The helpers
//! buffer for themselves.

use std::io::{self, BufReader, Read};

use thiserror::Error;

mod parser;
mod restore;
mod tree;

pub use restore::restore;
pub use tree::{Entries, Node, read_tree};

#[cfg(doc)]
use super::is_valid_entry_name;

/// Directories may nest this deep unless [`ParseOptions::max_depth`] says otherwise.
/// The root node has depth 0, an entry of the root depth 1.
pub const DEFAULT_MAX_DEPTH: usize = 256;
/// Longest entry name accepted: `NAME_MAX` on Linux, and Nix's own limit since 2.35.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target accepted (`PATH_MAX` - 1), as in Nix since 2.35.
pub const MAX_TARGET_LEN: usize = 4095;
/// Longest string read where a fixed token is expected, to show it in an error.
const MAX_SHOWN_TOKEN: usize = 64;

/// What is wrong with a NAR, and where: `offset` is the byte offset in the
/// NAR, `path` the node's path inside it (`/` for the root, then `/lib/foo`).
#[derive(Debug, Error)]
pub enum NarError {
    #[error("truncated NAR at offset {offset} in {path}")]
    Truncated { offset: u64, path: String },
    #[error("reading NAR at offset {offset} in {path}: {reason}")]
    Read {
        offset: u64,
        path: String,
        reason: io::Error,
    },
    #[error("not a NAR: expected \"nix-archive-1\" at offset 0, found {found}")]
    BadMagic { found: String },
    #[error("unexpected token at offset {offset} in {path}: expected {expected}, found {found}")]
    UnexpectedToken {
        offset: u64,
        path: String,
        expected: String,
        found: String,
    },
    #[error("non-zero padding at offset {offset} in {path}")]
    NonZeroPadding { offset: u64, path: String },
    #[error("{what} of {len} bytes at offset {offset} in {path}: at most {max} allowed")]
    TooLong {
        offset: u64,
        path: String,
        what: &'static str,
        len: u64,
        max: usize,
    },
    #[error("invalid entry name {name} at offset {offset} in {path}")]
    InvalidName {
        offset: u64,
        path: String,
        name: String,
    },
    #[error("duplicate entry name {name} at offset {offset} in {path}")]
    DuplicateName {
        offset: u64,
        path: String,
        name: String,
    },
    #[error("entry names out of order in {path}: {name} after {previous} at offset {offset}")]
    NamesOutOfOrder {
        offset: u64,
        path: String,
        name: String,
        previous: String,
    },
    #[error("directories nested deeper than {max} at offset {offset} in {path}")]
    TooDeep {
        offset: u64,
        path: String,
        max: usize,
    },
    #[error("invalid symlink target at offset {offset} in {path}: {reason}")]
    InvalidTarget {
        offset: u64,
        path: String,
        reason: &'static str,
    },
    #[error("trailing data after the NAR at offset {offset}")]
    TrailingData { offset: u64 },
    /// The [`Visitor`] failed, e.g. [`restore`] could not write a file.
    #[error("handling {path} of the NAR: {reason}")]
    Visitor { path: String, reason: io::Error },
}

impl NarError {
    /// The byte offset in the NAR the error is about, if it is about one.
    pub fn offset(&self) -> Option<u64> {
        use NarError::*;
        match self {
            Truncated { offset, .. }
            | Read { offset, .. }
            | UnexpectedToken { offset, .. }
            | NonZeroPadding { offset, .. }
            | TooLong { offset, .. }
            | InvalidName { offset, .. }
            | DuplicateName { offset, .. }
            | NamesOutOfOrder { offset, .. }
            | TooDeep { offset, .. }
            | InvalidTarget { offset, .. }
            | TrailingData { offset } => Some(*offset),
            BadMagic { .. } => Some(0),
            Visitor { .. } => None,
        }
    }
}

/// Receives the nodes of a NAR as [`parse`] meets them.
///
/// For the root node, and for the node of each directory entry, the parser
/// calls exactly one of [`regular`](Self::regular), [`symlink`](Self::symlink)
/// or [`directory_start`](Self::directory_start); a directory's entries follow,
/// each as [`entry`](Self::entry)`(name)`, its node, [`entry_end`](Self::entry_end),
/// and then [`directory_end`](Self::directory_end). Names arrive already
/// checked: valid, and in strictly increasing byte order.
///
/// Every method defaults to doing nothing. An error stops the parse and comes
/// back as [`NarError::Visitor`] (or as the NAR's own error, if reading the
/// contents failed first).
pub trait Visitor {
    /// A regular file. Read its contents from `file`, or leave them: what is
    /// not read is skipped.
    fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
        let _ = file;
        Ok(())
    }

    /// A symlink to `target` (1 to [`MAX_TARGET_LEN`] bytes, no NUL).
    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        let _ = target;
        Ok(())
    }

    /// A directory begins; its entries follow.
    fn directory_start(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The next node is the directory entry `name`.
    fn entry(&mut self, name: &[u8]) -> io::Result<()> {
        let _ = name;
        Ok(())
    }

    /// The node of the last [`entry`](Self::entry) is complete.
    fn entry_end(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The directory begun by the matching [`directory_start`](Self::directory_start) is complete.
    fn directory_end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A regular file met by [`parse`]: its metadata, and a reader of its contents
/// that ends after exactly [`size`](Self::size) bytes.
pub struct RegularFile<'a> {
    pub(super) executable: bool,
    pub(super) size: u64,
    pub(super) nar_offset: u64,
    pub(super) contents: &'a mut dyn Read,
}

impl RegularFile<'_> {
    /// Whether the file is executable (the owner's execute bit).
    pub fn executable(&self) -> bool {
        self.executable
    }

    /// Length of the contents in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset of the first byte of the contents in the NAR, the `narOffset`
    /// of a `.ls` listing.
    pub fn nar_offset(&self) -> u64 {
        self.nar_offset
    }
}

impl Read for RegularFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.contents.read(buf)
    }
}

/// Limits and checks of a parse; [`ParseOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub(super) max_depth: usize,
    pub(super) require_eof: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ParseOptions {
    /// Depth at most [`DEFAULT_MAX_DEPTH`], nothing after the root node.
    pub const fn new() -> Self {
        ParseOptions {
            max_depth: DEFAULT_MAX_DEPTH,
            require_eof: true,
        }
    }

    /// How deep directories may nest: the root node has depth 0, an entry of
    /// the root depth 1. The parser's memory use is proportional to it.
    pub const fn max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// Whether the reader must end right after the root node (the default).
    /// Turn it off to read a NAR embedded in a longer stream: the parser then
    /// reads nothing past the NAR's last byte.
    pub const fn require_eof(mut self, require_eof: bool) -> Self {
        self.require_eof = require_eof;
        self
    }

    /// Parses the NAR in `reader`, reporting each node to `visitor`. Returns
    /// the NAR's size in bytes.
    pub fn parse<R: Read, V: Visitor + ?Sized>(
        &self,
        reader: R,
        visitor: &mut V,
    ) -> Result<u64, NarError> {
        parser::run(reader, self, visitor)
    }
}

/// Parses the NAR in `reader` with the default [`ParseOptions`], reporting each
/// node to `visitor`. Returns the NAR's size in bytes.
pub fn parse<R: Read, V: Visitor + ?Sized>(reader: R, visitor: &mut V) -> Result<u64, NarError> {
    ParseOptions::new().parse(reader, visitor)
}

/// What a NAR holds, as counted by [`validate`] and [`restore`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NarSummary {
    /// Length of the NAR in bytes.
    pub nar_size: u64,
    /// Regular files, executables included.
    pub regular_files: u64,
    pub executables: u64,
    pub symlinks: u64,
    /// Directories, the root included if it is one.
    pub directories: u64,
    /// Total length of all regular files' contents.
    pub contents_size: u64,
}

impl NarSummary {
    pub(super) fn count_regular(&mut self, file: &RegularFile<'_>) {
        self.regular_files += 1;
        self.executables += u64::from(file.executable());
        self.contents_size += file.size();
    }
}

impl Visitor for NarSummary {
    fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
        self.count_regular(file);
        Ok(())
    }

    fn symlink(&mut self, _target: &[u8]) -> io::Result<()> {
        self.symlinks += 1;
        Ok(())
    }

    fn directory_start(&mut self) -> io::Result<()> {
        self.directories += 1;
        Ok(())
    }
}

/// Buffer size of the helpers' readers.
pub(super) const BUFFER: usize = 64 * 1024;

/// Checks that `reader` holds exactly one well-formed NAR, and counts what is in it.
pub fn validate(reader: impl Read) -> Result<NarSummary, NarError> {
    let mut summary = NarSummary::default();
    summary.nar_size = parse(BufReader::with_capacity(BUFFER, reader), &mut summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::Path;

    use crate::format::nar::{MAGIC, is_valid_entry_name, padding};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nar");
    // Made by `nix-store --dump` (Nix 2.8); see tests/fixtures/nar/make-fixtures.sh.
    const TREE: &[u8] = include_bytes!("../../../../tests/fixtures/nar/tree.nar");
    const REGULAR: &[u8] = include_bytes!("../../../../tests/fixtures/nar/regular.nar");
    const EXECUTABLE: &[u8] = include_bytes!("../../../../tests/fixtures/nar/executable.nar");
    const SYMLINK: &[u8] = include_bytes!("../../../../tests/fixtures/nar/symlink.nar");
    const EMPTY_DIR: &[u8] = include_bytes!("../../../../tests/fixtures/nar/empty-dir.nar");
    const EMPTY_FILE: &[u8] = include_bytes!("../../../../tests/fixtures/nar/empty-file.nar");
    const GOLDEN: [&[u8]; 6] = [TREE, REGULAR, EXECUTABLE, SYMLINK, EMPTY_DIR, EMPTY_FILE];

    // A NAR encoder for building test input, valid or not. Kept apart from
    // the crate's writer so that each checks the other.
    fn s(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
        out.resize(out.len() + padding(bytes.len() as u64), 0);
    }

    fn strs(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            s(&mut out, p);
        }
        out
    }

    fn encode_node(out: &mut Vec<u8>, node: &Node) {
        s(out, b"(");
        s(out, b"type");
        match node {
            Node::Regular {
                executable,
                contents,
            } => {
                s(out, b"regular");
                if *executable {
                    s(out, b"executable");
                    s(out, b"");
                }
                s(out, b"contents");
                s(out, contents);
            }
            Node::Symlink { target } => {
                s(out, b"symlink");
                s(out, b"target");
                s(out, target);
            }
            Node::Directory(entries) => {
                s(out, b"directory");
                for (name, node) in entries {
                    for t in [&b"entry"[..], b"(", b"name", name, b"node"] {
                        s(out, t);
                    }
                    encode_node(out, node);
                    s(out, b")");
                }
            }
        }
        s(out, b")");
    }

    fn encode(node: &Node) -> Vec<u8> {
        let mut out = Vec::new();
        s(&mut out, MAGIC);
        encode_node(&mut out, node);
        out
    }

    fn file(contents: &[u8]) -> Node {
        Node::Regular {
            executable: false,
            contents: contents.to_vec(),
        }
    }

    fn link(target: &[u8]) -> Node {
        Node::Symlink {
            target: target.to_vec(),
        }
    }

    fn dir<const N: usize>(entries: [(&[u8], Node); N]) -> Node {
        Node::Directory(
            entries
                .into_iter()
                .map(|(n, node)| (n.to_vec(), node))
                .collect(),
        )
    }

    /// A NAR whose root directory has these entries, in this order, each an empty file.
    fn dir_with_names(names: &[&[u8]]) -> Vec<u8> {
        let mut out = strs(&[MAGIC, b"(", b"type", b"directory"]);
        for name in names {
            out.extend(strs(&[b"entry", b"(", b"name", name, b"node"]));
            out.extend(strs(&[
                b"(",
                b"type",
                b"regular",
                b"contents",
                b"",
                b")",
                b")",
            ]));
        }
        out.extend(strs(&[b")"]));
        out
    }

    fn err(nar: &[u8]) -> NarError {
        match read_tree(nar) {
            Ok(tree) => panic!("accepted a bad NAR as {tree:?}"),
            Err(e) => e,
        }
    }

    fn fixture_tree() -> Node {
        dir([
            (b"Z-upper", file(b"upper\n")),
            (b"a-regular.txt", file(b"hello\n")),
            (
                b"abs-link",
                link(b"/nix/store/00000000000000000000000000000000-does-not-exist"),
            ),
            (
                b"bin",
                dir([(
                    b"run",
                    Node::Regular {
                        executable: true,
                        contents: b"#!/bin/sh\necho hi\n".to_vec(),
                    },
                )]),
            ),
            (b"caf\xe9", file(b"latin-1 name\n")),
            (b"eight-bytes", file(b"12345678")),
            (b"empty-dir", dir([])),
            (b"empty-file", file(b"")),
            (b"link", link(b"a-regular.txt")),
            (
                b"nested",
                dir([(
                    b"deeper",
                    dir([
                        (b"deepest", dir([(b"file.txt", file(b"deep\n"))])),
                        (b"up-link", link(b"../../a-regular.txt")),
                    ]),
                )]),
            ),
            (b"nine-bytes", file(b"123456789")),
            ("über".as_bytes(), file(b"utf-8 name\n")),
        ])
    }

    #[test]
    fn reads_nix_dumped_tree() {
        assert_eq!(read_tree(TREE).unwrap(), fixture_tree());
    }

    #[test]
    fn reads_nix_dumped_single_nodes() {
        assert_eq!(read_tree(REGULAR).unwrap(), file(b"single file\n"));
        assert_eq!(
            read_tree(EXECUTABLE).unwrap(),
            Node::Regular {
                executable: true,
                contents: b"#!/bin/sh\n".to_vec()
            }
        );
        assert_eq!(read_tree(SYMLINK).unwrap(), link(b"some/target"));
        assert_eq!(read_tree(EMPTY_DIR).unwrap(), dir([]));
        assert_eq!(read_tree(EMPTY_FILE).unwrap(), file(b""));
    }

    #[test]
    fn test_encoder_matches_nix() {
        for nar in GOLDEN {
            assert_eq!(encode(&read_tree(nar).unwrap()), nar);
        }
    }

    #[test]
    fn validate_counts() {
        let summary = validate(TREE).unwrap();
        assert_eq!(
            summary,
            NarSummary {
                nar_size: TREE.len() as u64,
                regular_files: 9,
                executables: 1,
                symlinks: 3,
                directories: 6,
                contents_size: 6 + 6 + 18 + 13 + 8 + 5 + 9 + 11,
            }
        );
        assert_eq!(validate(SYMLINK).unwrap().symlinks, 1);
    }

    /// Records each regular file's path, size, executable bit and offset.
    #[derive(Default)]
    struct Listing {
        path: Vec<String>,
        files: BTreeMap<String, (u64, bool, u64)>,
    }

    impl Visitor for Listing {
        fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
            let info = (file.size(), file.executable(), file.nar_offset());
            self.files.insert(self.path.join("/"), info);
            Ok(())
        }
        fn entry(&mut self, name: &[u8]) -> io::Result<()> {
            self.path.push(String::from_utf8_lossy(name).into_owned());
            Ok(())
        }
        fn entry_end(&mut self) -> io::Result<()> {
            self.path.pop();
            Ok(())
        }
    }

    fn collect_ls(
        node: &serde_json::Value,
        path: &mut Vec<String>,
        out: &mut BTreeMap<String, (u64, bool, u64)>,
    ) {
        match node["type"].as_str().unwrap() {
            "regular" => {
                let executable = node.get("executable").is_some_and(|e| e.as_bool().unwrap());
                let info = (
                    node["size"].as_u64().unwrap(),
                    executable,
                    node["narOffset"].as_u64().unwrap(),
                );
                out.insert(path.join("/"), info);
            }
            "directory" => {
                for (name, child) in node["entries"].as_object().unwrap() {
                    path.push(name.clone());
                    collect_ls(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    #[test]
    fn nar_offsets_match_nix_listing() {
        // Nix writes the non-UTF-8 name's raw byte into its JSON; read it lossily.
        let ls = std::fs::read(format!("{FIXTURES}/tree.ls")).unwrap();
        let ls: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&ls)).unwrap();
        let mut expected = BTreeMap::new();
        collect_ls(&ls["root"], &mut Vec::new(), &mut expected);
        let mut listing = Listing::default();
        parse(TREE, &mut listing).unwrap();
        assert_eq!(listing.files.len(), 9);
        assert_eq!(listing.files, expected);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for nar in GOLDEN {
            for len in 0..nar.len() {
                match read_tree(&nar[..len]) {
                    Err(NarError::Truncated { offset, .. }) => assert_eq!(offset, len as u64),
                    other => panic!("prefix of {len} bytes: {other:?}"),
                }
                // Also when the visitor is not reading the contents.
                assert!(matches!(
                    validate(&nar[..len]),
                    Err(NarError::Truncated { .. })
                ));
            }
        }
    }

    #[test]
    fn truncated_error_names_the_path() {
        let len = TREE.len() - 100;
        let e = err(&TREE[..len]);
        assert_eq!(
            e.to_string(),
            format!("truncated NAR at offset {len} in /über")
        );
    }

    #[test]
    fn bad_magic() {
        let mut nar = REGULAR.to_vec();
        nar[20] = b'2'; // nix-archive-2
        let e = err(&nar);
        assert!(matches!(e, NarError::BadMagic { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "not a NAR: expected \"nix-archive-1\" at offset 0, found \"nix-archive-2\""
        );
        let e = err(&u64::MAX.to_le_bytes());
        assert_eq!(
            e.to_string(),
            format!(
                "not a NAR: expected \"nix-archive-1\" at offset 0, found a string of {} bytes",
                u64::MAX
            )
        );
        assert!(matches!(err(b"nix-archive-1"), NarError::BadMagic { .. }));
    }

    #[test]
    fn invalid_names() {
        for name in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            match err(&dir_with_names(&[name])) {
                NarError::InvalidName { offset, path, .. } => {
                    assert_eq!((offset, path.as_str()), (128, "/"));
                }
                e => panic!("{name:?}: {e:?}"),
            }
        }
        assert_eq!(
            err(&dir_with_names(&[b".."])).to_string(),
            "invalid entry name \"..\" at offset 128 in /"
        );
        // Longest allowed, and one more.
        let long = [b'x'; MAX_NAME_LEN];
        read_tree(&dir_with_names(&[&long[..]][..])[..]).unwrap();
        let longer = [b'x'; MAX_NAME_LEN + 1];
        assert!(matches!(
            err(&dir_with_names(&[&longer[..]])),
            NarError::TooLong {
                len: 256,
                max: 255,
                ..
            }
        ));
    }

    #[test]
    fn names_must_increase() {
        let e = err(&dir_with_names(&[b"a", b"c", b"b"]));
        assert!(matches!(e, NarError::NamesOutOfOrder { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("entry names out of order in /: \"b\" after \"c\" at offset "),
            "{e}"
        );
        let e = err(&dir_with_names(&[b"a", b"b", b"b"]));
        assert!(matches!(e, NarError::DuplicateName { .. }), "{e:?}");
        // Byte order, not locale order: "B" < "a" < "\xe9".
        read_tree(&dir_with_names(&[b"B", b"a", b"\xe9"])[..]).unwrap();
        assert!(matches!(
            err(&dir_with_names(&[b"a", b"B"])),
            NarError::NamesOutOfOrder { .. }
        ));
        // A prefix sorts first.
        read_tree(&dir_with_names(&[b"a", b"a.b", b"ab"])[..]).unwrap();
        assert!(matches!(
            err(&dir_with_names(&[b"ab", b"a"])),
            NarError::NamesOutOfOrder { .. }
        ));
    }

    #[test]
    fn order_errors_name_the_directory() {
        let inner = dir_with_names(&[b"c", b"b"]);
        // Graft the bad directory's body under /bin.
        let mut nar = strs(&[
            MAGIC,
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"bin",
            b"node",
        ]);
        nar.extend_from_slice(&inner[24..]);
        nar.extend(strs(&[b")", b")"]));
        let e = err(&nar);
        assert!(
            e.to_string()
                .starts_with("entry names out of order in /bin: \"b\" after \"c\""),
            "{e}"
        );
    }

    #[test]
    fn non_zero_padding() {
        // In a token: the padding of "(" right after the magic.
        let mut nar = REGULAR.to_vec();
        nar[24 + 8 + 3] = 1;
        let e = err(&nar);
        assert!(
            matches!(e, NarError::NonZeroPadding { offset: 35, .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "non-zero padding at offset 35 in /");
        // In the magic's padding.
        let mut nar = REGULAR.to_vec();
        nar[23] = 0xff;
        assert!(matches!(
            err(&nar),
            NarError::NonZeroPadding { offset: 23, .. }
        ));
        // After file contents: "single file\n" is 12 bytes, padded with 4.
        let mut nar = REGULAR.to_vec();
        let end = nar.len() - 16 - 1; // last padding byte before the final ")"
        nar[end] = 1;
        let e = err(&nar);
        assert!(matches!(e, NarError::NonZeroPadding { .. }), "{e:?}");
        assert_eq!(e.offset(), Some(end as u64));
        // After a name.
        let mut nar = dir_with_names(&[b"abc"]);
        nar[128 + 8 + 4] = 7;
        assert!(matches!(
            err(&nar),
            NarError::NonZeroPadding { offset: 140, .. }
        ));
    }

    #[test]
    fn unexpected_tokens() {
        // No "(" after the magic.
        let e = err(&strs(&[MAGIC, b"type"]));
        assert_eq!(
            e.to_string(),
            "unexpected token at offset 24 in /: expected \"(\", found \"type\""
        );
        // An unknown node type.
        let e = err(&strs(&[MAGIC, b"(", b"type", b"fifo", b")"]));
        assert_eq!(
            e.to_string(),
            "unexpected token at offset 56 in /: expected \"regular\" or \"symlink\" or \"directory\", found \"fifo\""
        );
        // "executable" must be followed by an empty string.
        let e = err(&strs(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"1",
            b"contents",
            b"",
            b")",
        ]));
        assert!(matches!(e, NarError::UnexpectedToken { .. }), "{e:?}");
        // Only "entry" or ")" inside a directory.
        let e = err(&strs(&[
            MAGIC,
            b"(",
            b"type",
            b"directory",
            b"contents",
            b")",
        ]));
        assert!(
            e.to_string()
                .contains("expected \"entry\" or \")\", found \"contents\""),
            "{e}"
        );
        // A huge length where a token belongs is reported, not read.
        let mut nar = strs(&[MAGIC, b"("]);
        nar.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let e = err(&nar);
        assert!(
            e.to_string()
                .ends_with("found a string of 4611686018427387904 bytes"),
            "{e}"
        );
        // Two root nodes.
        let mut nar = REGULAR.to_vec();
        nar.extend_from_slice(&REGULAR[24..]);
        assert!(matches!(err(&nar), NarError::TrailingData { offset: 128 }));
    }

    #[test]
    fn huge_lengths_do_not_allocate() {
        // A name of u64::MAX bytes.
        let mut nar = strs(&[MAGIC, b"(", b"type", b"directory", b"entry", b"(", b"name"]);
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        let e = err(&nar);
        assert!(
            matches!(
                e,
                NarError::TooLong {
                    what: "entry name",
                    len: u64::MAX,
                    ..
                }
            ),
            "{e:?}"
        );
        // A symlink target of 2^40 bytes.
        let mut nar = strs(&[MAGIC, b"(", b"type", b"symlink", b"target"]);
        nar.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let e = err(&nar);
        assert!(
            matches!(
                e,
                NarError::TooLong {
                    what: "symlink target",
                    ..
                }
            ),
            "{e:?}"
        );
        // Contents of u64::MAX bytes: streamed, so simply truncated.
        let mut nar = strs(&[MAGIC, b"(", b"type", b"regular", b"contents"]);
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        nar.extend_from_slice(b"a few bytes");
        assert!(matches!(err(&nar), NarError::Truncated { offset: 107, .. }));
        assert!(matches!(
            validate(&nar[..]),
            Err(NarError::Truncated { offset: 107, .. })
        ));
    }

    #[test]
    fn symlink_targets() {
        let nar =
            |target: &[u8]| strs(&[MAGIC, b"(", b"type", b"symlink", b"target", target, b")"]);
        assert_eq!(read_tree(&nar(b"x")[..]).unwrap(), link(b"x"));
        let longest = vec![b'a'; MAX_TARGET_LEN];
        assert_eq!(read_tree(&nar(&longest)[..]).unwrap(), link(&longest));
        let e = err(&nar(&[b'a'; MAX_TARGET_LEN + 1]));
        assert_eq!(
            e.to_string(),
            "symlink target of 4096 bytes at offset 88 in /: at most 4095 allowed"
        );
        let e = err(&nar(b""));
        assert_eq!(
            e.to_string(),
            "invalid symlink target at offset 88 in /: empty"
        );
        let e = err(&nar(b"a\0b"));
        assert_eq!(
            e.to_string(),
            "invalid symlink target at offset 88 in /: contains a NUL byte"
        );
    }

    /// `depth` directories nested in the root, each named "d". Built flat:
    /// a deep `Node` would overflow the stack when encoded or dropped.
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = strs(&[MAGIC]);
        let open = strs(&[
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"d",
            b"node",
        ]);
        for _ in 0..depth {
            out.extend_from_slice(&open);
        }
        out.extend(strs(&[b"(", b"type", b"directory", b")"]));
        let close = strs(&[b")", b")"]);
        for _ in 0..depth {
            out.extend_from_slice(&close);
        }
        out
    }

    #[test]
    fn nesting_depth() {
        validate(&nested(DEFAULT_MAX_DEPTH)[..]).unwrap();
        let e = err(&nested(DEFAULT_MAX_DEPTH + 1));
        assert!(matches!(e, NarError::TooDeep { max: 256, .. }), "{e:?}");
        let opts = ParseOptions::new().max_depth(2);
        opts.parse(&nested(2)[..], &mut NarSummary::default())
            .unwrap();
        let e = opts
            .parse(&nested(3)[..], &mut NarSummary::default())
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("directories nested deeper than 2 at offset "),
            "{e}"
        );
        assert!(e.to_string().ends_with(" in /d/d/d"), "{e}");
        // Deep but allowed: the parser does not recurse.
        let opts = ParseOptions::new().max_depth(100_000);
        opts.parse(&nested(100_000)[..], &mut NarSummary::default())
            .unwrap();
    }

    #[test]
    fn trailing_data() {
        let mut nar = TREE.to_vec();
        nar.push(0);
        let e = err(&nar);
        assert_eq!(
            e.to_string(),
            format!("trailing data after the NAR at offset {}", TREE.len())
        );
        // Unless the caller reads a NAR embedded in a stream.
        let mut input = &nar[..];
        let size = ParseOptions::new()
            .require_eof(false)
            .parse(&mut input, &mut NarSummary::default())
            .unwrap();
        assert_eq!(size, TREE.len() as u64);
        assert_eq!(input, &[0]);
    }

    /// Reads only the first `n` bytes of every file.
    struct Peek {
        n: usize,
        seen: Vec<Vec<u8>>,
    }

    impl Visitor for Peek {
        fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
            let mut buf = vec![0; self.n.min(file.size() as usize)];
            file.read_exact(&mut buf)?;
            self.seen.push(buf);
            Ok(())
        }
    }

    #[test]
    fn unread_contents_are_skipped() {
        let mut peek = Peek { n: 3, seen: vec![] };
        assert_eq!(parse(TREE, &mut peek).unwrap(), TREE.len() as u64);
        assert_eq!(peek.seen[0], b"upp");
        assert_eq!(peek.seen[2], b"#!/");
        assert_eq!(peek.seen.len(), 9);
    }

    #[test]
    fn contents_end_at_the_file_size() {
        struct ReadAll(Vec<Vec<u8>>);
        impl Visitor for ReadAll {
            fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
                let mut buf = Vec::new();
                file.read_to_end(&mut buf)?;
                assert_eq!(buf.len() as u64, file.size());
                // Reading on after the end gives nothing.
                assert_eq!(file.read(&mut [0; 4])?, 0);
                self.0.push(buf);
                Ok(())
            }
        }
        let mut all = ReadAll(vec![]);
        parse(TREE, &mut all).unwrap();
        assert_eq!(all.0[5], b""); // empty-file
        assert_eq!(all.0[7], b"123456789");
    }

    #[test]
    fn visitor_errors_carry_the_path() {
        struct Fail;
        impl Visitor for Fail {
            fn symlink(&mut self, _: &[u8]) -> io::Result<()> {
                Err(io::Error::other("no symlinks here"))
            }
        }
        let e = parse(TREE, &mut Fail).unwrap_err();
        assert!(matches!(e, NarError::Visitor { .. }));
        assert_eq!(
            e.to_string(),
            "handling /abs-link of the NAR: no symlinks here"
        );
        assert_eq!(e.offset(), None);
    }

    #[test]
    fn truncation_inside_contents_is_reported_as_such() {
        // The visitor sees an UnexpectedEof error and passes it on; we still
        // report the truncation, not a visitor failure.
        let e = parse(
            &REGULAR[..100],
            &mut Peek {
                n: 100,
                seen: vec![],
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, NarError::Truncated { offset: 100, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn read_errors_are_reported() {
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0.read(buf)
            }
        }
        let e = parse(Failing(&TREE[..500]), &mut NarSummary::default()).unwrap_err();
        assert!(matches!(e, NarError::Read { offset: 500, .. }), "{e:?}");
        assert!(e.to_string().ends_with(": disk on fire"), "{e}");
    }

    #[test]
    fn paths_escape_non_utf8_names() {
        let mut nar = strs(&[
            MAGIC,
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"caf\xe9",
            b"node",
        ]);
        nar.extend(strs(&[b"(", b"type", b"fifo"]));
        let e = err(&nar);
        assert!(e.to_string().contains(" in /caf\\xe9: "), "{e}");
    }

    #[test]
    fn restores_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let summary = restore(TREE, &dest).unwrap();
        assert_eq!(summary, validate(TREE).unwrap());
        assert_eq!(fs::read(dest.join("a-regular.txt")).unwrap(), b"hello\n");
        assert_eq!(
            fs::read(dest.join(OsStr::from_bytes(b"caf\xe9"))).unwrap(),
            b"latin-1 name\n"
        );
        let mode = |p: &str| {
            fs::symlink_metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bin/run"), 0o755);
        assert_eq!(mode("empty-file"), 0o644);
        assert_eq!(
            fs::read_link(dest.join("nested/deeper/up-link")).unwrap(),
            Path::new("../../a-regular.txt")
        );
        assert!(
            fs::read_dir(dest.join("empty-dir"))
                .unwrap()
                .next()
                .is_none()
        );

        // Single-node NARs restore to the destination itself.
        restore(SYMLINK, &tmp.path().join("l")).unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("l")).unwrap(),
            Path::new("some/target")
        );
        restore(EXECUTABLE, &tmp.path().join("x")).unwrap();
        assert_eq!(
            fs::metadata(tmp.path().join("x"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
    }

    #[test]
    fn restore_refuses_an_existing_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let e = restore(TREE, tmp.path()).unwrap_err();
        assert!(matches!(e, NarError::Visitor { .. }), "{e:?}");
        assert!(e.to_string().contains("creating directory"), "{e}");
        // Nor does it follow a symlink planted at the destination.
        let dest = tmp.path().join("planted");
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &dest).unwrap();
        assert!(restore(REGULAR, &dest).is_err());
        assert!(!tmp.path().join("elsewhere").exists());
    }

    mod props {
        use super::*;
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = Vec<u8>> {
            vec(any::<u8>(), 1..12).prop_filter("valid entry name", |n| is_valid_entry_name(n))
        }

        fn node() -> impl Strategy<Value = Node> {
            let leaf = prop_oneof![
                (any::<bool>(), vec(any::<u8>(), 0..40)).prop_map(|(executable, contents)| {
                    Node::Regular {
                        executable,
                        contents,
                    }
                }),
                vec(1u8..=255, 1..40).prop_map(|target| Node::Symlink { target }),
            ];
            leaf.prop_recursive(5, 64, 8, |inner| {
                btree_map(name(), inner, 0..8).prop_map(Node::Directory)
            })
        }

        proptest! {
            #[test]
            fn round_trips(tree in node()) {
                let nar = encode(&tree);
                prop_assert_eq!(read_tree(&nar[..]).unwrap(), tree);
                prop_assert_eq!(validate(&nar[..]).unwrap().nar_size, nar.len() as u64);
            }

            #[test]
            fn corrupt_bytes_never_panic(at in 0..TREE.len(), xor in 1u8..=255) {
                let mut nar = TREE.to_vec();
                nar[at] ^= xor;
                // Most flips are errors; a few (in contents) still parse. An
                // error is about the NAR's bytes, at an offset inside them:
                // reading a slice cannot fail, nor can building the tree.
                if let Err(e) = read_tree(&nar[..]) {
                    prop_assert!(
                        !matches!(e, NarError::Read { .. } | NarError::Visitor { .. }),
                        "{e}"
                    );
                    let offset = e.offset();
                    prop_assert!(offset.is_some_and(|o| o <= nar.len() as u64), "{e}");
                }
            }
        }
    }
}
