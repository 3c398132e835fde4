//! The Nix Archive (NAR) format: a deterministic serialisation of a file,
//! symlink or directory tree, the unit a binary cache stores and hashes.
//!
//! ```text
//! nar   = str("nix-archive-1") node
//! node  = str("(") str("type") body str(")")
//! body  = str("regular") [ str("executable") str("") ] str("contents") str(bytes)
//!       | str("symlink") str("target") str(target)
//!       | str("directory") { str("entry") str("(") str("name") str(name)
//!                                           str("node") node str(")") }
//! str(s) = u64 little-endian length of s, s, zero bytes up to a multiple of 8
//! ```
//!
//! Only the owner's execute bit of a regular file is recorded; no other mode
//! bits, times or owners. Directory entries appear in strictly increasing byte
//! order of their names, and a name is never empty, `.`, `..`, nor contains
//! `/` or NUL.

pub mod dump;
pub mod listing;
pub mod reader;
pub mod writer;

/// The magic string a NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";

pub(crate) mod token {
    pub const OPEN: &[u8] = b"(";
    pub const CLOSE: &[u8] = b")";
    pub const TYPE: &[u8] = b"type";
    pub const REGULAR: &[u8] = b"regular";
    pub const EXECUTABLE: &[u8] = b"executable";
    pub const CONTENTS: &[u8] = b"contents";
    pub const SYMLINK: &[u8] = b"symlink";
    pub const TARGET: &[u8] = b"target";
    pub const DIRECTORY: &[u8] = b"directory";
    pub const ENTRY: &[u8] = b"entry";
    pub const NAME: &[u8] = b"name";
    pub const NODE: &[u8] = b"node";
}

/// Bytes of zero padding after a string of `len` bytes.
pub const fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Whether `name` may name a directory entry in a NAR.
pub fn is_valid_entry_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}
