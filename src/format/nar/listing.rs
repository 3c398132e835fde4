//! NAR listings: the `<hashpart>.ls` file that `nix copy` writes next to a
//! narinfo with `write-nar-listing=true`, so that `nix store ls` and
//! `nix store cat` can browse a cache without fetching whole NARs.
//!
//! ```text
//! {"version":1,"root":NODE}
//! NODE = {"type":"directory","entries":{NAME:NODE,…}}
//!      | {"type":"regular","size":N[,"executable":true],"narOffset":N}
//!      | {"type":"symlink","target":"…"}
//! ```
//!
//! The text is byte-identical to what Nix 2.8 writes (checked against
//! `nix copy` in tests/it/listing.rs): no whitespace, keys in the order above,
//! `executable` only when true, entries in NAR (byte) order, and `narOffset`
//! the offset of the file's contents in the uncompressed NAR. Strings are
//! escaped as Nix escapes them: `"` and `\` with a backslash, newline,
//! carriage return and tab as `\n`, `\r`, `\t`, other bytes below 0x20 as
//! `\u00xx`; every other byte, invalid UTF-8 included, is written as is.
//!
//! A listing is recorded while the NAR is written ([`dump`]), so files are
//! read once.

use std::io::Write;
use std::path::Path;

use super::dump::{self as nar_dump, DumpError, Record};

/// Writes the NAR of `path` to `w`, as [`nar_dump::dump`] does, and returns
/// its listing.
pub fn dump<W: Write>(path: &Path, w: &mut W) -> Result<Node, DumpError> {
    nar_dump::dump_recording(path, w)
}

/// One node of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Regular {
        size: u64,
        executable: bool,
        /// Offset of the contents in the uncompressed NAR.
        nar_offset: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Entries in NAR order: strictly increasing bytes of their names.
    Directory {
        entries: Vec<(Vec<u8>, Node)>,
    },
}

impl Node {
    /// The node at `path`, a sequence of entry names from this node;
    /// symlinks are not followed.
    pub fn get(&self, path: &[&[u8]]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match self {
            Node::Directory { entries } => entries
                .binary_search_by(|(name, _)| name.as_slice().cmp(first))
                .ok()
                .and_then(|i| entries[i].1.get(rest)),
            _ => None,
        }
    }

    /// The entries of a directory; none for a file or symlink.
    pub fn entries(&self) -> &[(Vec<u8>, Node)] {
        match self {
            Node::Directory { entries } => entries,
            _ => &[],
        }
    }

    /// The `.ls` file's text for a NAR whose root is this node.
    pub fn to_ls_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"version":1,"root":"#);
        self.write_json(&mut out);
        out.push(b'}');
        out
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Node::Regular {
                size,
                executable,
                nar_offset,
            } => {
                out.extend_from_slice(format!(r#"{{"type":"regular","size":{size}"#).as_bytes());
                if *executable {
                    out.extend_from_slice(br#","executable":true"#);
                }
                out.extend_from_slice(format!(r#","narOffset":{nar_offset}}}"#).as_bytes());
            }
            Node::Symlink { target } => {
                out.extend_from_slice(br#"{"type":"symlink","target":"#);
                write_json_string(out, target);
                out.push(b'}');
            }
            Node::Directory { entries } => {
                out.extend_from_slice(br#"{"type":"directory","entries":{"#);
                for (i, (name, node)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(out, name);
                    out.push(b':');
                    node.write_json(out);
                }
                out.extend_from_slice(b"}}");
            }
        }
    }
}

impl Record for Node {
    fn regular(executable: bool, size: u64, nar_offset: u64) -> Self {
        Node::Regular {
            size,
            executable,
            nar_offset,
        }
    }

    fn symlink(target: &[u8]) -> Self {
        Node::Symlink {
            target: target.to_vec(),
        }
    }

    fn directory() -> Self {
        Node::Directory {
            entries: Vec::new(),
        }
    }

    fn entry(&mut self, name: &[u8], node: Self) {
        if let Node::Directory { entries } = self {
            entries.push((name.to_vec(), node));
        }
    }
}

/// A JSON string of raw bytes, escaped the way Nix 2.8 escapes it.
fn write_json_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x20 => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn file(size: u64, executable: bool, nar_offset: u64) -> Node {
        Node::Regular {
            size,
            executable,
            nar_offset,
        }
    }

    fn escaped(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        out
    }

    #[test]
    fn escapes_strings_as_nix_2_8_does() {
        // As `nix copy` wrote these names (see tests/it/listing.rs for the
        // comparison with Nix itself).
        assert_eq!(escaped(b"a\"b\\c"), br#""a\"b\\c""#);
        assert_eq!(escaped(b"\n\r\t"), br#""\n\r\t""#);
        assert_eq!(
            escaped(b"\x01\x08\x0c\x1b"),
            br#""\u0001\u0008\u000c\u001b""#
        );
        assert_eq!(
            escaped(b"del\x7f caf\xe9 gr\xc3\xbcn"),
            b"\"del\x7f caf\xe9 gr\xc3\xbcn\""
        );
    }

    #[test]
    fn writes_keys_in_nix_order_and_executable_only_when_true() {
        let root = Node::Directory {
            entries: vec![
                (
                    b"bin".to_vec(),
                    Node::Directory {
                        entries: vec![(b"run".to_vec(), file(18, true, 1040))],
                    },
                ),
                (b"empty".to_vec(), Node::Directory { entries: vec![] }),
                (b"file".to_vec(), file(6, false, 432)),
                (
                    b"link".to_vec(),
                    Node::Symlink {
                        target: b"file".to_vec(),
                    },
                ),
            ],
        };
        assert_eq!(
            String::from_utf8(root.to_ls_json()).unwrap(),
            concat!(
                r#"{"version":1,"root":{"type":"directory","entries":{"#,
                r#""bin":{"type":"directory","entries":{"run":{"type":"regular","size":18,"executable":true,"narOffset":1040}}},"#,
                r#""empty":{"type":"directory","entries":{}},"#,
                r#""file":{"type":"regular","size":6,"narOffset":432},"#,
                r#""link":{"type":"symlink","target":"file"}}}}"#,
            )
        );
    }

    #[test]
    fn a_single_file_or_symlink_is_the_root_itself() {
        assert_eq!(
            file(0, false, 96).to_ls_json(),
            br#"{"version":1,"root":{"type":"regular","size":0,"narOffset":96}}"#
        );
        let link = Node::Symlink {
            target: b"/nix/store/x".to_vec(),
        };
        assert_eq!(
            link.to_ls_json(),
            br#"{"version":1,"root":{"type":"symlink","target":"/nix/store/x"}}"#
        );
    }

    #[test]
    fn get_walks_directories_only() {
        let root = Node::Directory {
            entries: vec![
                (
                    b"a".to_vec(),
                    Node::Directory {
                        entries: vec![(b"f".to_vec(), file(1, false, 8))],
                    },
                ),
                (
                    b"l".to_vec(),
                    Node::Symlink {
                        target: b"a".to_vec(),
                    },
                ),
            ],
        };
        assert_eq!(root.get(&[b"a", b"f"]), Some(&file(1, false, 8)));
        assert_eq!(root.get(&[]), Some(&root));
        assert_eq!(root.get(&[b"l", b"f"]), None);
        assert_eq!(root.get(&[b"b"]), None);
    }

    #[test]
    fn dump_writes_the_same_nar_and_records_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"hello").unwrap();
        fs::write(root.join("exe"), b"#!").unwrap();
        fs::set_permissions(root.join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("d/f", root.join("link")).unwrap();
        let (mut plain, mut listed) = (Vec::new(), Vec::new());
        nar_dump::dump(root, &mut plain).unwrap();
        let listing = dump(root, &mut listed).unwrap();
        assert_eq!(plain, listed);
        let contents_at = |node: &Node, len: usize| match node {
            Node::Regular {
                nar_offset, size, ..
            } => {
                assert_eq!(*size as usize, len);
                plain[*nar_offset as usize..][..len].to_vec()
            }
            other => panic!("not a regular file: {other:?}"),
        };
        assert_eq!(
            contents_at(listing.get(&[b"d", b"f"]).unwrap(), 5),
            b"hello"
        );
        assert_eq!(contents_at(listing.get(&[b"exe"]).unwrap(), 2), b"#!");
        assert!(matches!(
            listing.get(&[b"exe"]),
            Some(Node::Regular {
                executable: true,
                ..
            })
        ));
        assert_eq!(
            listing.get(&[b"link"]),
            Some(&Node::Symlink {
                target: b"d/f".to_vec()
            })
        );
    }
}
