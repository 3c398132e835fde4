//! Property tests: random inputs against the claims each format module makes.
//!
//! - File trees on disk (non-UTF-8 and 255-byte names, deep nesting, empty
//!   and sparse files, executables and other modes, symlinks to anywhere)
//!   dump to exactly the NAR `nix-store --dump` writes, of the size
//!   `nar_size` predicts, and read back as the tree that was made.
//! - Every parser (NAR, narinfo, nix-cache-info, closure JSON and legacy
//!   file, structured attrs, keys and signatures), given arbitrary or mutated
//!   input, returns a value or an error, never panics, and allocates in
//!   proportion to its input at most ([`peak_bytes`]). The NAR reader accepts
//!   nothing but the canonical NAR of a tree.
//! - What we write reads back unchanged: nix32, NAR hashes in all three
//!   notations (also as Nix writes them), narinfo text, nix-cache-info, keys
//!   and signatures.
//!
//! The seed is fixed, so every run checks the same cases and a failure is
//! reproducible; change [`SEED`] to look at others. Tests comparing with Nix
//! need it installed and fail saying so otherwise.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mk_binary_cache::format::cache_info::CacheInfo;
use mk_binary_cache::format::hash::Sha256;
use mk_binary_cache::format::nar::reader::{self, Node};
use mk_binary_cache::format::nar::{dump, is_valid_entry_name, padding, writer};
use mk_binary_cache::format::narinfo::{self, NarInfo, Sig};
use mk_binary_cache::format::nixbase32::{self, DecodeError};
use mk_binary_cache::format::signing::{PublicKey, SecretKey, Signature};
use mk_binary_cache::format::store_path::StorePath;
use mk_binary_cache::input::{attrs, closure};
use mk_binary_cache::ops::write::{self, Options};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::RngSeed;
use serde_json::{Value, json};

use crate::common;
use crate::peak_alloc::peak_bytes;

/// The seed of every property here.
pub const SEED: u64 = 0x6d6b_6263_2d70_726f;

/// `cases` cases from [`SEED`].
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(SEED),
        ..ProptestConfig::default()
    }
}

const STORE: &str = "/nix/store";

// ---------------------------------------------------------------------------
// Writing NARs for the tests.

/// The NAR of `node`, written by the crate's writer.
pub fn write_nar(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    write_node(writer::open(&mut out).unwrap(), node);
    out
}

fn write_node<W: Write>(n: writer::Node<'_, W>, node: &Node) {
    match node {
        Node::Regular {
            executable,
            contents,
        } => n
            .regular(*executable, contents.len() as u64, &mut &contents[..])
            .unwrap(),
        Node::Symlink { target } => n.symlink(target).unwrap(),
        Node::Directory(entries) => {
            let mut dir = n.directory().unwrap();
            for (name, child) in entries {
                write_node(dir.entry(name).unwrap(), child);
            }
            dir.close().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// File trees on disk.

/// A file tree to create on disk.
#[derive(Debug, Clone)]
enum Spec {
    File {
        mode: u32,
        contents: Vec<u8>,
    },
    /// A file made by writing `pieces` at their offsets, then `set_len(len)`:
    /// holes in between read as zeros.
    Sparse {
        mode: u32,
        len: u64,
        pieces: Vec<(u64, Vec<u8>)>,
    },
    Symlink(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Spec>),
}

impl Spec {
    fn create(&self, path: &Path) {
        match self {
            Spec::File { mode, contents } => {
                fs::write(path, contents).unwrap();
                fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Spec::Sparse { mode, len, pieces } => {
                let file = File::create(path).unwrap();
                for (at, bytes) in pieces {
                    file.write_all_at(bytes, *at).unwrap();
                }
                file.set_len(*len).unwrap();
                fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Spec::Symlink(target) => symlink(OsStr::from_bytes(target), path).unwrap(),
            Spec::Dir(entries) => {
                fs::create_dir(path).unwrap();
                for (name, child) in entries {
                    child.create(&path.join(OsStr::from_bytes(name)));
                }
            }
        }
    }

    /// The tree a NAR of it holds.
    fn expected(&self) -> Node {
        match self {
            Spec::File { mode, contents } => Node::Regular {
                executable: mode & 0o100 != 0,
                contents: contents.clone(),
            },
            Spec::Sparse { mode, len, pieces } => {
                let mut contents = Vec::new();
                for (at, bytes) in pieces {
                    let (at, end) = (*at as usize, *at as usize + bytes.len());
                    if contents.len() < end {
                        contents.resize(end, 0);
                    }
                    contents[at..end].copy_from_slice(bytes);
                }
                contents.resize(*len as usize, 0);
                Node::Regular {
                    executable: mode & 0o100 != 0,
                    contents,
                }
            }
            Spec::Symlink(target) => Node::Symlink {
                target: target.clone(),
            },
            Spec::Dir(entries) => Node::Directory(
                entries
                    .iter()
                    .map(|(name, child)| (name.clone(), child.expected()))
                    .collect(),
            ),
        }
    }
}

/// Modes of regular files. Only the owner's execute bit reaches a NAR: not
/// g+x alone (0o654), setuid, or the lack of read permission (root reads).
const FILE_MODES: &[u32] = &[
    0o644, 0o755, 0o700, 0o100, 0o000, 0o654, 0o4755, 0o444, 0o711,
];

fn file_mode() -> impl Strategy<Value = u32> {
    select(FILE_MODES)
}

const NAME_BYTES: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCZ0189._-+ ~";

/// A valid entry name: mostly short and printable, often any bytes but
/// `/` and NUL (so non-UTF-8), sometimes up to `NAME_MAX` long.
fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(select(NAME_BYTES), 1..12),
        3 => vec(1u8..=255, 1..16),
        1 => vec(1u8..=255, 200..=255),
    ]
    .prop_map(|mut name| {
        for b in &mut name {
            if *b == b'/' {
                *b = b'_';
            }
        }
        name
    })
    .prop_filter("not . or ..", |name| is_valid_entry_name(name))
}

const TARGETS: &[&str] = &[
    "/",
    "/etc/passwd",
    "/nix/store/00000000000000000000000000000000-gone",
    "..",
    ".",
    "../../../..",
    "loop",
    "does-not-exist/at/all",
    "a//b/./c/",
];

/// A symlink target: absolute, relative, dangling, up and out, any bytes
/// but NUL, up to the longest Linux allows.
fn symlink_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => select(TARGETS).prop_map(|t| t.as_bytes().to_vec()),
        3 => vec(1u8..=255, 1..64),
        1 => vec(1u8..=255, 4000..=4095),
    ]
}

fn contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => vec(any::<u8>(), 1..600),
        1 => vec(any::<u8>(), 4096..20_000),
    ]
}

fn spec_leaf() -> impl Strategy<Value = Spec> {
    prop_oneof![
        5 => (file_mode(), contents()).prop_map(|(mode, contents)| Spec::File { mode, contents }),
        1 => (
            file_mode(),
            0u64..=1 << 20,
            vec((0u64..1 << 20, vec(any::<u8>(), 1..32)), 0..3),
        )
            .prop_map(|(mode, len, pieces)| Spec::Sparse { mode, len, pieces }),
        2 => symlink_target().prop_map(Spec::Symlink),
    ]
}

/// A tree whose root is anything (a single file or symlink too), sometimes
/// at the bottom of a chain of up to 48 nested directories.
fn spec_tree() -> impl Strategy<Value = Spec> {
    let dirs = spec_leaf().prop_recursive(5, 80, 8, |inner| {
        btree_map(entry_name(), inner, 0..8).prop_map(Spec::Dir)
    });
    let tree = prop_oneof![4 => dirs, 1 => spec_leaf()];
    let chain = prop_oneof![3 => Just(0usize), 1 => 1usize..48];
    (tree, chain).prop_map(|(mut tree, depth)| {
        for level in 0..depth {
            tree = Spec::Dir(BTreeMap::from([(
                format!("level-{level}").into_bytes(),
                tree,
            )]));
        }
        tree
    })
}

/// Creates `spec` in a fresh temporary directory; returns it and the root.
fn on_disk(spec: &Spec) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("mkbc-props-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("root");
    spec.create(&root);
    (tmp, root)
}

fn our_dump(root: &Path) -> Vec<u8> {
    let mut nar = Vec::new();
    dump::dump(root, &mut nar).unwrap_or_else(|e| panic!("dump: {e}"));
    nar
}

/// Where two byte strings first differ, for readable failures.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    format!(
        "ours {} bytes, Nix's {} bytes, first difference at {:?}",
        a.len(),
        b.len(),
        at.or((a.len() != b.len()).then_some(a.len().min(b.len())))
    )
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn dump_writes_the_nar_nix_store_dump_writes(spec in spec_tree()) {
        let (_tmp, root) = on_disk(&spec);
        let ours = our_dump(&root);
        let nix = common::dump(root.to_str().unwrap());
        prop_assert!(ours == nix, "{}", first_difference(&ours, &nix));
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn nar_size_is_the_length_of_the_dump(spec in spec_tree()) {
        let (_tmp, root) = on_disk(&spec);
        let nar = our_dump(&root);
        prop_assert_eq!(dump::nar_size(&root).unwrap(), nar.len() as u64);
    }

    #[test]
    fn the_reader_reads_back_the_tree_that_was_dumped(spec in spec_tree()) {
        let (_tmp, root) = on_disk(&spec);
        let nar = our_dump(&root);
        let tree = reader::read_tree(&nar[..]).unwrap();
        prop_assert!(tree == spec.expected(), "read {tree:?}");
    }
}

// ---------------------------------------------------------------------------
// Mutations: what goes wrong with bytes on disks and wires, and what an
// attacker might write.

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// Copies `len` bytes from one place to another, as a splice.
    Duplicate(Index, Index, usize),
    /// Overwrites an 8-aligned word, where a NAR keeps its lengths.
    SetWord(Index, u64),
}

impl Mutation {
    fn apply(&self, data: &mut Vec<u8>) {
        let len = data.len();
        match self {
            Mutation::FlipBit(at, bit) if len > 0 => data[at.index(len)] ^= 1 << (bit % 8),
            Mutation::Truncate(at) => data.truncate(at.index(len + 1)),
            Mutation::Insert(at, bytes) => {
                let at = at.index(len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = at.index(len + 1);
                data.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(from, to, n) if len > 0 => {
                let from = from.index(len);
                let piece = data[from..(from + n).min(len)].to_vec();
                let to = to.index(len + 1);
                data.splice(to..to, piece);
            }
            Mutation::SetWord(at, value) if len >= 8 => {
                let at = at.index(len / 8) * 8;
                data[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            _ => {}
        }
    }
}

const WORDS: &[u64] = &[
    0,
    1,
    7,
    8,
    13,
    255,
    256,
    4095,
    4096,
    1 << 32,
    1 << 40,
    u64::MAX / 2,
    u64::MAX,
];

/// A mutation whose inserted bytes are random or taken from `dictionary`.
fn mutation(dictionary: Vec<Vec<u8>>) -> impl Strategy<Value = Mutation> {
    let insert = prop_oneof![vec(any::<u8>(), 1..16), select(dictionary)];
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), insert).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => (any::<Index>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..80)
            .prop_map(|(a, b, n)| Mutation::Duplicate(a, b, n)),
        2 => (any::<Index>(), select(WORDS)).prop_map(|(at, v)| Mutation::SetWord(at, v)),
    ]
}

/// One mutation, often, or a few.
fn how_many() -> impl Strategy<Value = proptest::collection::SizeRange> {
    prop_oneof![3 => Just(1..2), 2 => Just(2..6)].prop_map(Into::into)
}

/// `base` with one to five byte-level mutations applied.
fn mutated(base: Vec<u8>, dictionary: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    how_many()
        .prop_flat_map(move |n| vec(mutation(dictionary.clone()), n))
        .prop_map(move |mutations| {
            let mut data = base.clone();
            for m in &mutations {
                m.apply(&mut data);
            }
            data
        })
}

/// An edit of a sequence of parts (the strings of a NAR, the lines of a
/// text): the grammar-level mistakes that byte-level ones rarely make.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index),
    Duplicate(Index, Index),
    Swap(Index, Index),
    Replace(Index, Vec<u8>),
    Insert(Index, Vec<u8>),
}

impl Edit {
    fn apply(&self, parts: &mut Vec<Vec<u8>>) {
        let len = parts.len();
        match self {
            _ if len == 0 => {}
            Edit::Delete(at) => {
                parts.remove(at.index(len));
            }
            Edit::Duplicate(from, to) => {
                let part = parts[from.index(len)].clone();
                parts.insert(to.index(len + 1), part);
            }
            Edit::Swap(a, b) => parts.swap(a.index(len), b.index(len)),
            Edit::Replace(at, part) => parts[at.index(len)] = part.clone(),
            Edit::Insert(at, part) => parts.insert(at.index(len + 1), part.clone()),
        }
    }
}

/// `parts` with one to five edits applied, new parts taken from `dictionary`.
fn edited(parts: Vec<Vec<u8>>, dictionary: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let part = select(dictionary);
    let edit = prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        (any::<Index>(), part.clone()).prop_map(|(at, p)| Edit::Replace(at, p)),
        (any::<Index>(), part).prop_map(|(at, p)| Edit::Insert(at, p)),
    ];
    how_many()
        .prop_flat_map(move |n| vec(edit.clone(), n))
        .prop_map(move |edits| {
            let mut parts = parts.clone();
            for e in &edits {
                e.apply(&mut parts);
            }
            parts
        })
}

fn lines(text: &str) -> Vec<Vec<u8>> {
    text.split('\n').map(|l| l.as_bytes().to_vec()).collect()
}

fn unlines(parts: Vec<Vec<u8>>) -> String {
    String::from_utf8_lossy(&parts.join(&b'\n')).into_owned()
}

/// Either arbitrary text, or one of `valid` with its bytes or its lines
/// mutated (as UTF-8, lossily), inserting `dictionary`'s words and lines.
fn text_input(
    valid: Vec<String>,
    dictionary: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let dictionary: Vec<Vec<u8>> = dictionary.iter().map(|w| w.as_bytes().to_vec()).collect();
    let words = dictionary.clone();
    let mutants = select(valid.clone()).prop_flat_map(move |base| {
        mutated(base.into_bytes(), words.clone())
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    });
    let edits = select(valid)
        .prop_flat_map(move |base| edited(lines(&base), dictionary.clone()).prop_map(unlines));
    prop_oneof![
        1 => any::<String>(),
        1 => "[ -~\n]{0,300}",
        4 => mutants,
        2 => edits,
    ]
}

/// Memory a text parser may use: a constant plus a multiple of its input
/// (a JSON document becomes a tree of values several times its size).
fn text_budget(input: usize) -> usize {
    64 * 1024 + 64 * input
}

// ---------------------------------------------------------------------------
// The NAR reader on mutated and arbitrary input.

/// Small trees in memory; contents and targets short, so that mutations
/// land on structure as often as on data.
fn small_tree() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (any::<bool>(), vec(any::<u8>(), 0..24)).prop_map(|(executable, contents)| {
            Node::Regular {
                executable,
                contents,
            }
        }),
        vec(1u8..=255, 1..24).prop_map(|target| Node::Symlink { target }),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        btree_map(vec(select(NAME_BYTES), 1..6), inner, 0..5)
            .prop_filter("valid names", |entries| {
                entries.keys().all(|n| is_valid_entry_name(n))
            })
            .prop_map(Node::Directory)
    })
}

/// Strings an attacker would splice into a NAR.
const NAR_TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b"type",
    b"regular",
    b"executable",
    b"",
    b"contents",
    b"symlink",
    b"target",
    b"directory",
    b"entry",
    b"name",
    b"node",
    b"..",
    b".",
    b"/",
    b"a/b",
    b"\0",
    b"nix-archive-1",
];

/// [`NAR_TOKENS`] as NAR strings, with their lengths and padding.
fn nar_dictionary() -> Vec<Vec<u8>> {
    NAR_TOKENS
        .iter()
        .map(|t| nar_from_strings(vec![t.to_vec()]))
        .collect()
}

/// The strings a (valid) NAR is made of.
fn nar_strings(mut nar: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    while !nar.is_empty() {
        let len = u64::from_le_bytes(nar[..8].try_into().unwrap()) as usize;
        parts.push(nar[8..8 + len].to_vec());
        nar = &nar[8 + len + padding(len as u64)..];
    }
    parts
}

fn nar_from_strings(parts: Vec<Vec<u8>>) -> Vec<u8> {
    let mut nar = Vec::new();
    for part in parts {
        nar.extend_from_slice(&(part.len() as u64).to_le_bytes());
        nar.extend_from_slice(&part);
        nar.resize(nar.len() + padding(part.len() as u64), 0);
    }
    nar
}

/// A valid NAR with its bytes, or its strings, mutated.
fn mutated_nar() -> impl Strategy<Value = Vec<u8>> {
    small_tree().prop_flat_map(|tree| {
        let nar = write_nar(&tree);
        let tokens: Vec<Vec<u8>> = NAR_TOKENS.iter().map(|t| t.to_vec()).collect();
        prop_oneof![
            mutated(nar.clone(), nar_dictionary()),
            edited(nar_strings(&nar), tokens).prop_map(nar_from_strings),
        ]
    })
}

/// Bytes after a valid magic: whatever the grammar makes of noise.
fn noise_after_magic() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..512).prop_map(|noise| {
        let mut nar = write_nar(&Node::Symlink { target: vec![b'x'] });
        nar.truncate(24);
        nar.extend(noise);
        nar
    })
}

/// Memory reading a NAR may take: buffers and names, never what the NAR
/// claims. Building a tree in memory adds what the NAR actually holds.
const VALIDATE_BUDGET: usize = 512 * 1024;

fn read_tree_budget(nar_len: usize) -> usize {
    VALIDATE_BUDGET + 16 * nar_len
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn the_nar_reader_accepts_only_the_canonical_nar_of_a_tree(
        nar in prop_oneof![4 => mutated_nar(), 1 => noise_after_magic()]
    ) {
        let (tree, peak) = peak_bytes(|| reader::read_tree(&nar[..]));
        prop_assert!(peak <= read_tree_budget(nar.len()), "read_tree took {peak} bytes");
        let (summary, peak) = peak_bytes(|| reader::validate(&nar[..]));
        prop_assert!(peak <= VALIDATE_BUDGET, "validate took {peak} bytes");
        match (tree, summary) {
            (Ok(tree), Ok(summary)) => {
                prop_assert_eq!(summary.nar_size, nar.len() as u64);
                // Anything accepted is exactly what the writer makes of it:
                // no slack in padding, order, or spelling of the tokens.
                prop_assert!(write_nar(&tree) == nar, "accepted a non-canonical NAR");
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (tree, summary) => prop_assert!(false, "read_tree: {tree:?}, validate: {summary:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn restoring_a_mutated_nar_writes_only_inside_its_destination(nar in mutated_nar()) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let restored = reader::restore(&nar[..], &dest);
        let left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        prop_assert!(left.is_empty() || left == [OsString::from("dest")], "{left:?}");
        if restored.is_ok() {
            // And what it unpacked is the tree the NAR holds.
            prop_assert!(our_dump(&dest) == nar, "restored tree dumps differently");
        }
    }
}

// ---------------------------------------------------------------------------
// The text and JSON parsers.

const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
const B: &str = "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb";
const DRV: &str = "/nix/store/sbi569kby1xympi1rxrny9nv9vr9151n-appa.drv";
const HASH: &str = "sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq";

/// Written by `nix copy` (Nix 2.8), and the signed fixture with `CA:`.
const NARINFOS: [&str; 2] = [
    include_str!("../fixtures/nix-copy-xz.narinfo"),
    include_str!("../fixtures/keys/signed-with-references.narinfo"),
];

const TEXT_WORDS: &[&str] = &[
    "\n",
    ": ",
    " ",
    "\r",
    "StorePath: ",
    "References: ",
    "NarSize: ",
    "CA: ",
    "Deriver: ",
    "unknown-deriver",
    "sha256:",
    "sha256-",
    "md5:",
    "/nix/store/",
    "ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb",
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "..",
    "é",
    "\0",
    "NarSize: 0",
    "NarSize: 1",
    "References: ",
    "References: ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb",
    "Compression: ",
    "URL: ",
    "CA: fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
    "Sig: k:abc=",
    "Deriver: unknown-deriver",
    "StorePath: /nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb",
    "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb",
];

/// Words and lines for the legacy closure file: numbers above all.
const LEGACY_WORDS: &[&str] = &[
    "\n",
    "",
    "0",
    "1",
    "9",
    "65536",
    "1000000",
    "4294967296",
    "18446744073709551615",
    "-1",
    A,
    B,
    DRV,
    "/nix/store/",
];

const JSON_WORDS: &[&str] = &[
    "\"",
    "null",
    "true",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "-1",
    "0",
    "1e999",
    "18446744073709551616",
    "\"zstd\"",
    "\"none\"",
    "\"sha256-",
    "/nix/store/",
    "\"\"",
    "\\u0000",
    "..",
];

fn sorted_references(mut info: NarInfo) -> NarInfo {
    info.references.sort();
    info
}

fn narinfo_input() -> impl Strategy<Value = String> {
    text_input(NARINFOS.map(str::to_owned).to_vec(), TEXT_WORDS)
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn narinfo_parse_returns_a_value_or_an_error_for_any_text(text in narinfo_input()) {
        let (parsed, peak) = peak_bytes(|| NarInfo::parse(&text, STORE));
        prop_assert!(peak <= text_budget(text.len()), "took {peak} bytes");
        if let Ok(info) = parsed {
            prop_assert!(info.nar_size > 0);
        }
    }

    #[test]
    fn a_parsed_narinfo_writes_text_that_parses_back_to_it(text in narinfo_input()) {
        if let Ok(info) = NarInfo::parse(&text, STORE) {
            let written = info.to_string();
            let again = NarInfo::parse(&written, STORE);
            prop_assert_eq!(again, Ok(sorted_references(info)), "wrote {:?}", written);
        }
    }

    #[test]
    fn the_legacy_closure_parser_returns_a_value_or_an_error_for_any_text(
        text in text_input(
            vec![
                format!("{A}\n\n1\n{B}\n{B}\n{DRV}\n0\n"),
                format!("{A}\n{DRV}\n2\n{A}\n{B}\n\n{B}\n\n0\n"),
            ],
            LEGACY_WORDS,
        )
    ) {
        let (parsed, peak) = peak_bytes(|| closure::from_legacy_graph(&text, STORE));
        prop_assert!(peak <= text_budget(text.len()), "took {peak} bytes");
        if let Ok(infos) = parsed {
            prop_assert!(infos.windows(2).all(|w| w[0].path < w[1].path), "not sorted and unique");
            prop_assert!(infos.iter().all(|i| i.path.store_dir() == STORE));
        }
    }

    #[test]
    fn the_path_info_parser_returns_a_value_or_an_error_for_any_text(
        text in prop_oneof![
            3 => text_input(path_info_texts(), JSON_WORDS),
            1 => json_value().prop_map(|v| v.to_string()),
        ]
    ) {
        let (parsed, peak) = peak_bytes(|| closure::from_path_info_json(&text, STORE));
        prop_assert!(peak <= text_budget(text.len()), "took {peak} bytes");
        if let Ok(infos) = parsed {
            prop_assert!(infos.windows(2).all(|w| w[0].path < w[1].path), "not sorted and unique");
            prop_assert!(infos.iter().all(|i| i.nar_hash.is_some() && i.nar_size.is_some()));
        }
    }

    #[test]
    fn the_attrs_reader_returns_a_job_or_an_error_for_any_json(
        value in prop_oneof![
            3 => text_input(vec![attrs_text()], JSON_WORDS)
                .prop_filter_map("not JSON", |t| serde_json::from_str::<Value>(&t).ok()),
            1 => json_value(),
        ]
    ) {
        let size = value.to_string().len();
        let (job, peak) = peak_bytes(|| attrs::from_json(value, STORE, 2));
        prop_assert!(peak <= text_budget(size), "took {peak} bytes");
        if let Ok(job) = job {
            let o = &job.options;
            prop_assert_eq!(o.compression.check_level(o.level), Ok(o.level));
            prop_assert!(job.closure.windows(2).all(|w| w[0].path < w[1].path));
        }
    }
}

/// Lines and words that change how a narinfo is cut into fields. Not content
/// addresses or base64 hashes: Nix checks those more closely than we do.
const NARINFO_STRUCTURE: &[&str] = &[
    "\n",
    "",
    ":",
    ": ",
    " ",
    "\r",
    "garbage",
    "System: x86_64-linux",
    "References: ",
    "References: ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb",
    "URL:nar/x.nar",
    "URL: ",
    "NarSize: +504",
    "NarSize: 0",
    "Compression: ",
    "Sig: k:abc=",
    "Deriver: unknown-deriver",
];

/// Whether Nix reads `text` as the narinfo of [`A`], from a cache holding it.
fn nix_reads_narinfo(text: &str) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    fs::create_dir(&cache).unwrap();
    fs::write(cache.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    let hash_part = &A["/nix/store/".len()..][..32];
    fs::write(cache.join(format!("{hash_part}.narinfo")), text).unwrap();
    let mut cmd = common::nix_new(&["path-info", "--store"]);
    cmd.arg(format!("file://{}", cache.display()))
        .arg(A)
        // Nix keeps what it learns of caches in ~/.cache; not of this one.
        .env("XDG_CACHE_HOME", tmp.path().join("xdg"));
    cmd.output()
        .unwrap_or_else(|e| panic!("running `{}`: {e}", common::show(&cmd)))
        .status
        .success()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn narinfo_parse_accepts_exactly_what_nix_accepts(
        text in text_input(vec![NARINFOS[0].to_owned()], NARINFO_STRUCTURE)
    ) {
        let ours = NarInfo::parse(&text, STORE);
        let ours_ok = ours.as_ref().is_ok_and(|info| info.store_path.to_string() == A);
        let nix_ok = nix_reads_narinfo(&text);
        prop_assert_eq!(ours_ok, nix_ok, "Nix {} it; we say {:?}",
            if nix_ok { "reads" } else { "refuses" }, ours);
    }
}

fn path_info_texts() -> Vec<String> {
    let sri = HASH.parse::<Sha256>().unwrap().to_sri();
    vec![
        // Nix 2.4 to 2.18: a list, SRI hashes.
        json!([
            {"path": A, "narHash": sri, "narSize": 504, "references": [B],
             "deriver": DRV, "registrationTime": 1, "valid": true},
            {"path": B, "narHash": sri, "narSize": 456, "references": []},
        ])
        .to_string(),
        // Nix 2.19 on: a map keyed by path, nulls for absent fields.
        json!({
            A: {"narHash": sri, "narSize": 504, "references": [B, A], "ca": null,
                "deriver": null, "signatures": []},
            B: {"narHash": HASH, "narSize": 456, "references": [], "ca": "fixed:r:sha256:abc"},
        })
        .to_string(),
        // --json-format 2 (Nix 2.33 on) and 3 (2.35 on): base names, `ca` as
        // an object, signatures as strings (2) or objects (3).
        json!({"version": 2, "storeDir": "/nix/store", "info": {
            &A[11..]: {"narHash": sri, "narSize": 504, "references": [&B[11..], &A[11..]],
                       "ca": null, "deriver": &DRV[11..], "signatures": ["k-1:c2ln"]},
            &B[11..]: {"narHash": sri, "narSize": 456, "references": [],
                       "ca": {"method": "nar", "hash": sri}, "signatures": []},
        }})
        .to_string(),
        json!({"version": 3, "storeDir": "/nix/store", "info": {
            &A[11..]: {"narHash": {"algorithm": "sha256", "format": "base64", "hash": &sri[7..]},
                       "narSize": 504, "references": [&B[11..]], "ca": null,
                       "signatures": [{"keyName": "k-1", "sig": "c2ln"}]},
            &B[11..]: {"narHash": sri, "narSize": 456, "references": [],
                       "ca": {"method": "text", "hash": {"algorithm": "sha256",
                              "format": "nix32", "hash": &HASH[7..]}}},
        }})
        .to_string(),
    ]
}

fn attrs_text() -> String {
    json!({
        "outputs": {"out": "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-binary-cache"},
        "closure": [
            {"path": A, "narHash": HASH, "narSize": 504, "references": [B], "closureSize": 960},
            {"path": B, "narHash": HASH, "narSize": 456, "references": [], "closureSize": 456},
        ],
        "rootPaths": [format!("{A}/bin/app")],
        "compression": "xz",
        "compressionLevel": 3,
        "priority": 30,
        "wantMassQuery": true,
    })
    .to_string()
}

const JSON_KEYS: &[&str] = &[
    "path",
    "narHash",
    "narSize",
    "references",
    "deriver",
    "ca",
    "outputs",
    "out",
    "closure",
    "compression",
    "compressionLevel",
    "priority",
    "wantMassQuery",
    "rootPaths",
    "version",
    "storeDir",
    "info",
    "signatures",
    "keyName",
    "sig",
    "method",
    "algorithm",
    "format",
    "hash",
];

const JSON_STRINGS: &[&str] = &[
    A,
    B,
    DRV,
    HASH,
    "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "zstd",
    "xz",
    "none",
    "",
    "/nix/store",
    "/nix/store/../etc",
];

/// Any JSON, its keys and strings often the ones the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(JSON_STRINGS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    let key = prop_oneof![3 => select(JSON_KEYS).prop_map(str::to_owned), 1 => ".{0,6}"];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// nix-cache-info.

const CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

const CACHE_INFO_WORDS: &[&str] = &[
    "\n",
    ":",
    ": ",
    " ",
    "StoreDir: ",
    "StoreDir: /nix/store",
    "WantMassQuery: 0",
    "Priority: ",
    "-1",
    "9223372036854775808",
    "2147483648",
    "1",
];

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn the_cache_info_parser_returns_a_value_or_an_error_for_any_text(
        text in text_input(vec![CACHE_INFO.to_owned()], CACHE_INFO_WORDS)
    ) {
        let (parsed, peak) = peak_bytes(|| text.parse::<CacheInfo>());
        prop_assert!(peak <= text_budget(text.len()), "took {peak} bytes");
        if let Ok(CacheInfo { store_dir: Some(dir), .. }) = parsed {
            prop_assert!(dir.starts_with('/'), "{dir:?}");
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn nix_cache_info_reads_back_what_the_cache_writer_writes(
        store_dir in "(/[a-z0-9._+-]{1,12}){1,4}",
        // Nix reads Priority as an int.
        priority in proptest::option::of(0..=i32::MAX as u64),
        want_mass_query in proptest::option::of(any::<bool>()),
    ) {
        let options = Options {
            store_dir: store_dir.clone(),
            priority,
            want_mass_query,
            ..Options::default()
        };
        let text = write::cache_info(&options).to_string();
        let read: CacheInfo = text.parse().unwrap();
        prop_assert_eq!(read, CacheInfo {
            store_dir: Some(store_dir),
            want_mass_query,
            priority: priority.map(|p| p as i64),
            ..CacheInfo::default()
        });
    }
}

// ---------------------------------------------------------------------------
// Keys and signatures.

const SECRET: &str = include_str!("../fixtures/keys/secret.key");
const PUBLIC: &str = include_str!("../fixtures/keys/public.key");

fn key_input() -> impl Strategy<Value = String> {
    let sig = NARINFOS[1]
        .lines()
        .find_map(|l| l.strip_prefix("Sig: "))
        .unwrap();
    text_input(
        vec![SECRET.to_owned(), PUBLIC.to_owned(), sig.to_owned()],
        &[":", "=", "==", "+", "/", "\n", " ", "A", "-", "_"],
    )
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn key_and_signature_parsers_return_a_value_or_an_error_for_any_text(text in key_input()) {
        let (parsed, peak) = peak_bytes(|| {
            (
                text.parse::<SecretKey>(),
                text.parse::<PublicKey>(),
                text.parse::<Signature>(),
            )
        });
        prop_assert!(peak <= text_budget(text.len()), "took {peak} bytes");
        let (secret, public, signature) = parsed;
        if let Ok(secret) = secret {
            // Anything accepted as a secret key signs what its public half verifies.
            let sig = secret.sign("1;x");
            prop_assert!(secret.public().verify("1;x", &sig));
        }
        if let Ok(public) = public {
            prop_assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
        }
        if let Ok(signature) = signature {
            prop_assert_eq!(signature.to_string().parse::<Signature>(), Ok(signature));
        }
    }
}

/// A name as `nix-store --generate-binary-cache-key` takes it.
fn key_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.-][a-zA-Z0-9._-]{0,30}"
}

proptest! {
    // Few cases: ed25519 is slow without optimisation.
    #![proptest_config(config(32))]

    #[test]
    fn keys_and_signatures_read_back_what_they_write(
        name in key_name(),
        seed in any::<[u8; 32]>(),
        message in ".{0,200}",
    ) {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let mut bytes = seed.to_vec();
        bytes.extend_from_slice(public.as_bytes());
        let secret: SecretKey = format!("{name}:{}\n", STANDARD.encode(&bytes)).parse().unwrap();
        prop_assert_eq!(secret.name(), name.as_str());
        let public = secret.public();
        prop_assert_eq!(&public.to_string().parse::<PublicKey>().unwrap(), &public);
        let signature = secret.sign(&message);
        prop_assert_eq!(&signature.to_string().parse::<Signature>().unwrap(), &signature);
        prop_assert!(public.verify(&message, &signature));
    }
}

// ---------------------------------------------------------------------------
// Round trips of nix32, hashes and narinfo text.

const NIX32_CHARS: &[u8] = nixbase32::ALPHABET;

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn nix32_decodes_what_it_encodes(bytes in vec(any::<u8>(), 0..80)) {
        let text = nixbase32::encode(&bytes);
        prop_assert_eq!(text.len(), nixbase32::encoded_len(bytes.len()));
        prop_assert_eq!(nixbase32::decode(&text, bytes.len()), Ok(bytes));
    }

    #[test]
    fn nix32_has_one_spelling_per_value(
        (len, text) in (0usize..40).prop_flat_map(|len| {
            (Just(len), vec(select(NIX32_CHARS), nixbase32::encoded_len(len)))
        })
    ) {
        // A string of the right length either carries bits beyond the value
        // and is refused, or encodes back to itself.
        let text = String::from_utf8(text).unwrap();
        if let Ok(bytes) = nixbase32::decode(&text, len) {
            prop_assert_eq!(nixbase32::encode(&bytes), text);
        }
    }

    #[test]
    fn nix32_decode_returns_a_value_or_an_error_for_any_text(text in ".{0,60}", len in 0usize..40) {
        // Each error names the one thing wrong, checked in this order:
        // the length, then each character, then the bits beyond the value.
        let expected_len = nixbase32::encoded_len(len);
        let all_nix32 = text.bytes().all(|b| NIX32_CHARS.contains(&b));
        match nixbase32::decode(&text, len) {
            Ok(bytes) => prop_assert_eq!(nixbase32::encode(&bytes), text),
            Err(DecodeError::InvalidLength { expected, actual }) => {
                prop_assert_ne!(text.len(), expected_len);
                prop_assert_eq!(expected, expected_len);
                prop_assert_eq!(actual, text.chars().count());
            }
            Err(DecodeError::InvalidChar(c)) => {
                prop_assert_eq!(text.len(), expected_len);
                prop_assert!(!all_nix32);
                prop_assert!(!NIX32_CHARS.iter().any(|&a| char::from(a) == c), "{c:?}");
            }
            Err(DecodeError::NonZeroPadding) => {
                prop_assert_eq!(text.len(), expected_len);
                prop_assert!(all_nix32);
            }
        }
    }

    #[test]
    fn a_nar_hash_reads_back_from_each_notation(digest in any::<[u8; 32]>()) {
        let hash = Sha256(digest);
        for text in [hash.to_string(), format!("sha256:{}", hash.to_hex()), hash.to_sri()] {
            prop_assert_eq!(text.parse::<Sha256>(), Ok(hash), "{}", text);
        }
        prop_assert_eq!(
            format!("sha256:{}", hash.to_hex().to_uppercase()).parse::<Sha256>(),
            Ok(hash)
        );
    }

    #[test]
    fn a_nar_hash_is_read_only_from_the_three_notations(
        text in text_input(
            vec![
                HASH.to_owned(),
                "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_owned(),
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            ],
            &["=", "+", "/", "-", ":", "sha256", "a", "0", "z", "e"],
        )
    ) {
        if let Ok(hash) = text.parse::<Sha256>() {
            let hex = format!("sha256:{}", hash.to_hex());
            prop_assert!(
                text == hash.to_string() || text.eq_ignore_ascii_case(&hex) || text == hash.to_sri(),
                "{text:?} read as {hash}"
            );
        }
    }
}

/// A store path with a random hash part and name.
fn store_path() -> impl Strategy<Value = StorePath> {
    (
        vec(select(NIX32_CHARS), 32),
        "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,40}",
    )
        .prop_map(|(hash, name)| {
            let base = format!("{}-{name}", String::from_utf8(hash).unwrap());
            StorePath::from_base_name(&base, STORE).unwrap()
        })
}

fn nar_hash() -> impl Strategy<Value = Sha256> {
    any::<[u8; 32]>().prop_map(Sha256)
}

/// A narinfo value as we may write one: one line per field, references
/// unique (in any order), a compression named.
fn narinfo() -> impl Strategy<Value = NarInfo> {
    let value = "[!-~][ -~]{0,60}";
    let references = btree_set(store_path(), 0..5)
        .prop_flat_map(|set| Just(set.into_iter().collect::<Vec<_>>()).prop_shuffle());
    (
        (store_path(), nar_hash(), 1u64.., references),
        (value, "[a-z0-9]{1,8}", proptest::option::of(nar_hash())),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(store_path()),
            vec(value, 0..3),
            proptest::option::of(value),
        ),
    )
        .prop_map(
            |(
                (store_path, nar_hash, nar_size, references),
                (url, compression, file_hash),
                (file_size, deriver, signatures, ca),
            )| NarInfo {
                store_path,
                nar_hash,
                nar_size,
                references,
                url,
                compression,
                file_hash,
                file_size,
                deriver,
                signatures: signatures.iter().map(|s| Sig::read(s)).collect(),
                ca,
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn a_narinfo_reads_back_from_the_text_it_writes(info in narinfo()) {
        let text = info.to_string();
        prop_assert!(text.ends_with('\n'));
        // References come back sorted, as Nix writes them.
        prop_assert_eq!(NarInfo::parse(&text, STORE), Ok(sorted_references(info)));
    }

    #[test]
    fn a_fingerprint_names_full_paths_and_sorted_references(info in narinfo()) {
        let fingerprint = info.fingerprint();
        let mut references: Vec<String> = info.references.iter().map(|r| r.to_string()).collect();
        references.sort();
        prop_assert_eq!(
            fingerprint,
            format!("1;{};{};{};{}", info.store_path, info.nar_hash, info.nar_size, references.join(","))
        );
        let mut shuffled = info.references.clone();
        shuffled.sort();
        shuffled.reverse();
        prop_assert_eq!(
            info.fingerprint(),
            narinfo::fingerprint(&info.store_path, &info.nar_hash, info.nar_size, &shuffled)
        );
    }
}

// ---------------------------------------------------------------------------
// Hash notations against Nix itself, many at once to keep it quick.

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn nar_hashes_are_written_as_nix_writes_them(digests in vec(any::<[u8; 32]>(), 32)) {
        let hashes: Vec<Sha256> = digests.into_iter().map(Sha256).collect();
        let hex: Vec<String> = hashes.iter().map(Sha256::to_hex).collect();
        let nix32 = common::run(
            common::nix_cmd("nix-hash").args(["--type", "sha256", "--to-base32"]).args(&hex),
        );
        let ours: Vec<String> = hashes.iter().map(Sha256::to_nix32).collect();
        prop_assert_eq!(nix32.lines().collect::<Vec<_>>(), ours);
        let sri = common::run(common::nix_new(&["hash", "to-sri", "--type", "sha256"]).args(&hex));
        let ours: Vec<String> = hashes.iter().map(Sha256::to_sri).collect();
        prop_assert_eq!(sri.lines().collect::<Vec<_>>(), ours);
    }
}
