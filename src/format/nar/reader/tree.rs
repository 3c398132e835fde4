//! A NAR read into memory as a tree, for small NARs and tests.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};

use super::{BUFFER, NarError, RegularFile, Visitor, parse};

/// A NAR's contents as a tree in memory. It holds every file's contents: use
/// it for small NARs and tests only; [`parse`] streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Regular { executable: bool, contents: Vec<u8> },
    Symlink { target: Vec<u8> },
    Directory(Entries),
}

/// Reads a whole NAR into a [`Node`] tree. Memory grows with the contents
/// actually present, never with a size the NAR merely claims.
pub fn read_tree(reader: impl Read) -> Result<Node, NarError> {
    let mut builder = TreeBuilder::default();
    parse(BufReader::with_capacity(BUFFER, reader), &mut builder)?;
    Ok(builder.root.expect("a parsed NAR has a root node"))
}

/// A directory's entries in a [`Node`] tree, by name (so in NAR order).
pub type Entries = BTreeMap<Vec<u8>, Node>;

#[derive(Default)]
struct TreeBuilder {
    /// Open directories, each with the name it will have in its parent.
    open: Vec<(Option<Vec<u8>>, Entries)>,
    /// The name of the entry whose node comes next.
    name: Option<Vec<u8>>,
    root: Option<Node>,
}

impl TreeBuilder {
    fn place(&mut self, name: Option<Vec<u8>>, node: Node) {
        match (self.open.last_mut(), name) {
            (Some((_, entries)), Some(name)) => {
                entries.insert(name, node);
            }
            _ => self.root = Some(node),
        }
    }
}

impl Visitor for TreeBuilder {
    fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)?;
        let name = self.name.take();
        let executable = file.executable();
        self.place(
            name,
            Node::Regular {
                executable,
                contents,
            },
        );
        Ok(())
    }

    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        let name = self.name.take();
        self.place(
            name,
            Node::Symlink {
                target: target.to_vec(),
            },
        );
        Ok(())
    }

    fn directory_start(&mut self) -> io::Result<()> {
        let name = self.name.take();
        self.open.push((name, BTreeMap::new()));
        Ok(())
    }

    fn entry(&mut self, name: &[u8]) -> io::Result<()> {
        self.name = Some(name.to_vec());
        Ok(())
    }

    fn directory_end(&mut self) -> io::Result<()> {
        let (name, entries) = self
            .open
            .pop()
            .expect("directory_end after directory_start");
        self.place(name, Node::Directory(entries));
        Ok(())
    }
}
