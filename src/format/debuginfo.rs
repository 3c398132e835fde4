//! The debug-info index `nix copy` keeps with `index-debug-info=true`: for
//! every regular file `lib/debug/.build-id/<xx>/<38 hex>.debug` in a NAR, a
//! file `debuginfo/<xx><38 hex>.debug` in the cache that says which NAR holds
//! it, so that a debuginfod-style server can find debug symbols by build ID:
//!
//! ```text
//! {"archive":"../nar/<filehash>.nar<ext>","member":"lib/debug/.build-id/<xx>/<38 hex>.debug"}
//! ```
//!
//! As in Nix 2.8 (checked against `nix copy` in tests/it/listing.rs): the
//! `<xx>` directory must be two lower-case hex digits and the file name 38
//! lower-case hex digits and `.debug`; symlinks and directories by those
//! names, and anything under a symlinked `lib`, `debug` or `.build-id`, are
//! not indexed. The file has no final newline. An entry already in the cache
//! is not overwritten (the writer, [`crate::ops::write`], decides that).
//!
//! The files are found in the NAR's listing ([`crate::format::nar::listing`]), recorded
//! while the NAR is written, so indexing costs no extra read.

use crate::format::nar::listing::Node;

/// Where the build-ID tree sits in a store path.
const BUILD_ID_DIR: [&[u8]; 3] = [b"lib", b"debug", b".build-id"];

/// A debug-info file found in a NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugFile {
    /// `<xx><38 hex>.debug`: the name of its entry under `debuginfo/`.
    pub file_name: String,
    /// Its path inside the NAR, `lib/debug/.build-id/<xx>/<38 hex>.debug`.
    pub member: String,
}

impl DebugFile {
    /// The text of its `debuginfo/` entry, for a NAR at `nar_url`
    /// (`nar/<filehash>.nar<ext>`, relative to the cache, as in a narinfo).
    pub fn index_entry(&self, nar_url: &str) -> String {
        // Both strings are ASCII without quotes or backslashes: `nar_url` is
        // made of nix32 characters, `member` of hex digits and fixed names.
        format!(r#"{{"archive":"../{nar_url}","member":"{}"}}"#, self.member)
    }
}

/// The debug-info files in the NAR whose listing is `root`, in NAR order.
pub fn debug_files(root: &Node) -> Vec<DebugFile> {
    let Some(Node::Directory { entries: dirs }) = root.get(&BUILD_ID_DIR) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (prefix, dir) in dirs {
        let (Ok(prefix), Node::Directory { entries: files }) = (std::str::from_utf8(prefix), dir)
        else {
            continue;
        };
        if !is_lower_hex(prefix, 2) {
            continue;
        }
        for (name, file) in files {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let is_debug_name = name
                .strip_suffix(".debug")
                .is_some_and(|id| is_lower_hex(id, 38));
            if is_debug_name && matches!(file, Node::Regular { .. }) {
                found.push(DebugFile {
                    file_name: format!("{prefix}{name}"),
                    member: format!("lib/debug/.build-id/{prefix}/{name}"),
                });
            }
        }
    }
    found
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef012345";

    fn file() -> Node {
        Node::Regular {
            size: 1,
            executable: false,
            nar_offset: 8,
        }
    }

    fn dir(entries: Vec<(&str, Node)>) -> Node {
        Node::Directory {
            entries: entries
                .into_iter()
                .map(|(n, node)| (n.as_bytes().to_vec(), node))
                .collect(),
        }
    }

    fn store_path_with(build_ids: Node) -> Node {
        dir(vec![(
            "lib",
            dir(vec![("debug", dir(vec![(".build-id", build_ids)]))]),
        )])
    }

    #[test]
    fn indexes_regular_files_named_by_lower_case_build_ids() {
        let link = Node::Symlink {
            target: format!("{ID}.debug").into_bytes(),
        };
        let root = store_path_with(dir(vec![
            ("AB", dir(vec![(&format!("{ID}.debug"), file())])),
            (
                "ab",
                dir(vec![
                    (&format!("{ID}.debug"), file()),
                    (&format!("{ID}0.debug"), file()),
                    (&format!("{ID}.txt"), file()),
                ]),
            ),
            ("abc", dir(vec![(&format!("{ID}.debug"), file())])),
            (
                "cd",
                dir(vec![
                    (&format!("{}.debug", ID.to_uppercase()), file()),
                    (&format!("{ID}.debug"), link),
                    ("1111111111111111111111111111111111111a.debug", file()),
                ]),
            ),
            ("ef", file()),
        ]));
        let found = debug_files(&root);
        let names: Vec<&str> = found.iter().map(|f| f.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                format!("ab{ID}.debug"),
                "cd1111111111111111111111111111111111111a.debug".to_owned()
            ]
        );
        assert_eq!(
            found[0].member,
            format!("lib/debug/.build-id/ab/{ID}.debug")
        );
    }

    #[test]
    fn a_symlinked_build_id_directory_is_not_followed() {
        let root = dir(vec![(
            "lib",
            Node::Symlink {
                target: b"elsewhere".to_vec(),
            },
        )]);
        assert!(debug_files(&root).is_empty());
        assert!(debug_files(&file()).is_empty());
    }

    #[test]
    fn index_entry_is_nix_s_json_without_a_final_newline() {
        let f = DebugFile {
            file_name: format!("ab{ID}.debug"),
            member: format!("lib/debug/.build-id/ab/{ID}.debug"),
        };
        assert_eq!(
            f.index_entry("nar/120n9kcz9zmp5j7lc19nv2s8agxiwyy8jpykavm64yjd085jbj8a.nar"),
            format!(
                r#"{{"archive":"../nar/120n9kcz9zmp5j7lc19nv2s8agxiwyy8jpykavm64yjd085jbj8a.nar","member":"lib/debug/.build-id/ab/{ID}.debug"}}"#
            )
        );
    }
}
