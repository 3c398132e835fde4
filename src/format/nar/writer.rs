//! A NAR writer whose types admit only well-formed archives.
//!
//! [`open`] writes the magic and hands out the root [`Node`]. A node is
//! consumed by saying what it is; a [`Directory`] hands out one entry node at
//! a time (the mutable borrow keeps siblings from interleaving) and checks at
//! run time what types cannot: that entry names are valid and strictly
//! increasing. A builder's whole job is correct bytes, so order is an error,
//! not a debug assertion.

use std::io::{self, Read, Write};

use thiserror::Error;

use super::{MAGIC, is_valid_entry_name, padding, token};

#[derive(Debug, Error)]
pub enum WriteError {
    /// Writing the archive failed: the sink's fault (a full disk, say).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Reading a file's contents failed: the file's fault.
    #[error("reading the contents: {0}")]
    Read(io::Error),
    #[error("invalid directory entry name {0:?}")]
    InvalidName(String),
    #[error("directory entry {name:?} does not sort after {previous:?}")]
    NameOrder { previous: String, name: String },
    #[error("file contents were {actual} bytes, not the {expected} announced")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("the file grew past the {expected} bytes announced while it was read")]
    Grew { expected: u64 },
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Writes one NAR string: length, bytes, zero padding.
fn write_str<W: Write>(w: &mut W, s: &[u8]) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s)?;
    w.write_all(&[0; 8][..padding(s.len() as u64)])
}

fn write_tokens<W: Write>(w: &mut W, tokens: &[&[u8]]) -> io::Result<()> {
    tokens.iter().try_for_each(|t| write_str(w, t))
}

/// Starts a NAR on `w`; the returned node is the archive's root.
pub fn open<W: Write>(w: &mut W) -> io::Result<Node<'_, W>> {
    write_str(w, MAGIC)?;
    Ok(Node { w, in_entry: false })
}

/// A node still to be written: the root, or a directory entry's.
#[must_use = "a NAR node must be written, or the archive is truncated"]
pub struct Node<'w, W: Write> {
    w: &'w mut W,
    /// Whether the node sits in a directory entry, whose `)` follows it.
    in_entry: bool,
}

impl<'w, W: Write> Node<'w, W> {
    fn finish(self) -> io::Result<()> {
        write_str(self.w, token::CLOSE)?;
        if self.in_entry {
            write_str(self.w, token::CLOSE)?;
        }
        Ok(())
    }

    /// A regular file of exactly `size` bytes, read from `contents`.
    pub fn regular(
        self,
        executable: bool,
        size: u64,
        contents: &mut impl Read,
    ) -> Result<(), WriteError> {
        self.file(executable, size)?.copy_from(contents)
    }

    /// Starts a regular file of exactly `size` bytes, whose contents are
    /// then written through the returned [`Contents`].
    ///
    /// Splitting the header from the contents lets a caller learn where the
    /// contents start (a listing's `narOffset`) from the underlying writer.
    pub fn file(self, executable: bool, size: u64) -> io::Result<Contents<'w, W>> {
        write_tokens(self.w, &[token::OPEN, token::TYPE, token::REGULAR])?;
        if executable {
            write_tokens(self.w, &[token::EXECUTABLE, b""])?;
        }
        write_str(self.w, token::CONTENTS)?;
        self.w.write_all(&size.to_le_bytes())?;
        Ok(Contents { node: self, size })
    }

    pub fn symlink(self, target: &[u8]) -> io::Result<()> {
        write_tokens(
            self.w,
            &[
                token::OPEN,
                token::TYPE,
                token::SYMLINK,
                token::TARGET,
                target,
            ],
        )?;
        self.finish()
    }

    pub fn directory(self) -> io::Result<Directory<'w, W>> {
        write_tokens(self.w, &[token::OPEN, token::TYPE, token::DIRECTORY])?;
        Ok(Directory {
            node: self,
            previous: None,
        })
    }
}

/// The contents of a regular file, announced to be `size` bytes long.
#[must_use = "a regular file's contents must be written, or the archive is truncated"]
pub struct Contents<'w, W: Write> {
    node: Node<'w, W>,
    size: u64,
}

impl<W: Write> Contents<'_, W> {
    /// The writer the archive goes to; its next byte is the contents' first.
    pub fn get_ref(&self) -> &W {
        self.node.w
    }

    /// Copies the contents from `source`, which must hold exactly the size
    /// announced: a short read, or a byte more, is an error. A failure to
    /// read `source` is a [`WriteError::Read`], one to write the archive a
    /// [`WriteError::Io`].
    pub fn copy_from(self, source: &mut impl Read) -> Result<(), WriteError> {
        let size = self.size;
        let mut buf =
            vec![0; usize::try_from(size).map_or(COPY_BUFFER, |s| s.clamp(1, COPY_BUFFER))];
        let mut copied = 0;
        while copied < size {
            let want = buf
                .len()
                .min(usize::try_from(size - copied).unwrap_or(usize::MAX));
            let n = read(source, &mut buf[..want])?;
            if n == 0 {
                return Err(WriteError::SizeMismatch {
                    expected: size,
                    actual: copied,
                });
            }
            self.node.w.write_all(&buf[..n])?;
            copied += n as u64;
        }
        // One more byte means the file grew after its size was taken.
        if read(source, &mut buf[..1])? != 0 {
            return Err(WriteError::Grew { expected: size });
        }
        self.node.w.write_all(&[0; 8][..padding(size)])?;
        Ok(self.node.finish()?)
    }
}

/// Largest piece of a file's contents read at once.
const COPY_BUFFER: usize = 64 * 1024;

/// One read, retried if interrupted.
fn read(source: &mut impl Read, buf: &mut [u8]) -> Result<usize, WriteError> {
    loop {
        match source.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result.map_err(WriteError::Read),
        }
    }
}

/// A directory being written; entries must come in increasing byte order.
#[must_use = "a NAR directory must be closed"]
pub struct Directory<'w, W: Write> {
    node: Node<'w, W>,
    previous: Option<Vec<u8>>,
}

impl<'w, W: Write> Directory<'w, W> {
    pub fn entry(&mut self, name: &[u8]) -> Result<Node<'_, W>, WriteError> {
        if !is_valid_entry_name(name) {
            return Err(WriteError::InvalidName(lossy(name)));
        }
        if let Some(previous) = &self.previous {
            if name <= previous.as_slice() {
                return Err(WriteError::NameOrder {
                    previous: lossy(previous),
                    name: lossy(name),
                });
            }
        }
        self.previous = Some(name.to_vec());
        let w = &mut *self.node.w;
        write_tokens(
            w,
            &[token::ENTRY, token::OPEN, token::NAME, name, token::NODE],
        )?;
        Ok(Node { w, in_entry: true })
    }

    pub fn close(self) -> io::Result<()> {
        self.node.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            write_str(&mut v, p).unwrap();
        }
        v
    }

    #[test]
    fn strings_are_length_prefixed_and_padded_to_eight() {
        let mut v = Vec::new();
        write_str(&mut v, b"abc").unwrap();
        assert_eq!(v, b"\x03\0\0\0\0\0\0\0abc\0\0\0\0\0");
        v.clear();
        write_str(&mut v, b"12345678").unwrap();
        assert_eq!(v.len(), 16);
    }

    #[test]
    fn writes_a_single_symlink() {
        let mut out = Vec::new();
        open(&mut out).unwrap().symlink(b"../x").unwrap();
        assert_eq!(
            out,
            strs(&[
                b"nix-archive-1",
                b"(",
                b"type",
                b"symlink",
                b"target",
                b"../x",
                b")"
            ])
        );
    }

    #[test]
    fn writes_an_executable_file() {
        let mut out = Vec::new();
        let node = open(&mut out).unwrap();
        node.regular(true, 2, &mut &b"hi"[..]).unwrap();
        let mut expected = strs(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
            b"hi",
        ]);
        expected.extend(strs(&[b")"]));
        assert_eq!(out, expected);
    }

    #[test]
    fn rejects_entries_out_of_order() {
        let mut out = Vec::new();
        let mut dir = open(&mut out).unwrap().directory().unwrap();
        dir.entry(b"b").unwrap().symlink(b"x").unwrap();
        assert!(matches!(dir.entry(b"a"), Err(WriteError::NameOrder { .. })));
        assert!(matches!(dir.entry(b"b"), Err(WriteError::NameOrder { .. })));
    }

    #[test]
    fn rejects_invalid_names() {
        let mut out = Vec::new();
        let mut dir = open(&mut out).unwrap().directory().unwrap();
        for name in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(
                matches!(dir.entry(name), Err(WriteError::InvalidName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn rejects_contents_shorter_or_longer_than_announced() {
        let mut out = Vec::new();
        let short = open(&mut out).unwrap().regular(false, 5, &mut &b"abc"[..]);
        assert!(matches!(
            short,
            Err(WriteError::SizeMismatch {
                expected: 5,
                actual: 3
            })
        ));
        let mut out = Vec::new();
        let long = open(&mut out).unwrap().regular(false, 2, &mut &b"abc"[..]);
        assert!(matches!(long, Err(WriteError::Grew { expected: 2 })));
    }

    /// Fails every read, or every write, with `kind`.
    struct Failing(io::ErrorKind);

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
    }

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(self.0.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tells_a_failed_read_from_a_failed_write() {
        let mut out = Vec::new();
        let contents = open(&mut out).unwrap().file(false, 5).unwrap();
        let read = contents.copy_from(&mut Failing(io::ErrorKind::PermissionDenied));
        assert!(
            matches!(&read, Err(WriteError::Read(e)) if e.kind() == io::ErrorKind::PermissionDenied),
            "{read:?}"
        );
        // The header fits in the buffer; the contents do not.
        let mut full = io::BufWriter::with_capacity(128, Failing(io::ErrorKind::StorageFull));
        let contents = open(&mut full).unwrap().file(false, 1000).unwrap();
        let write = contents.copy_from(&mut &[7u8; 1000][..]);
        assert!(
            matches!(&write, Err(WriteError::Io(e)) if e.kind() == io::ErrorKind::StorageFull),
            "{write:?}"
        );
    }
}
