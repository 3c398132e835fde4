//! The parser itself: the NAR grammar read token by token, with the offset
//! and the path inside the archive kept for errors.

use std::io::{self, Read};

use super::{
    MAX_NAME_LEN, MAX_SHOWN_TOKEN, MAX_TARGET_LEN, NarError, ParseOptions, RegularFile, Visitor,
};
use crate::format::nar::token::*;
use crate::format::nar::{MAGIC, is_valid_entry_name, padding};

/// Parses the NAR in `reader` as `options` say, reporting each node to
/// `visitor`; returns the NAR's size in bytes.
pub(super) fn run<R: Read, V: Visitor + ?Sized>(
    reader: R,
    options: &ParseOptions,
    visitor: &mut V,
) -> Result<u64, NarError> {
    Parser {
        input: Input {
            inner: reader,
            offset: 0,
            fault: None,
        },
        path: Vec::new(),
        options,
    }
    .run(visitor)
}

/// Why a read from the NAR failed.
enum Fault {
    /// The input ended at this offset.
    Eof(u64),
    Io(u64, io::Error),
}

/// The reader, and how far into it we are.
struct Input<R> {
    inner: R,
    offset: u64,
    /// A failure met while the visitor was reading contents, kept so that the
    /// error reports the NAR's fault rather than the visitor's.
    fault: Option<Fault>,
}

impl<R: Read> Input<R> {
    /// One read, retried if interrupted; `Ok(0)` at the end of the input.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Fault> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Fault::Io(self.offset, e)),
            }
        }
    }

    fn fill(&mut self, mut buf: &mut [u8]) -> Result<(), Fault> {
        while !buf.is_empty() {
            match self.read_some(buf)? {
                0 => return Err(Fault::Eof(self.offset)),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }
}

/// The contents of one regular file, as handed to the visitor.
struct Contents<'a, R> {
    input: &'a mut Input<R>,
    remaining: u64,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let fault = match self.input.read_some(&mut buf[..want]) {
            Ok(0) => Fault::Eof(self.input.offset),
            Ok(n) => {
                self.remaining -= n as u64;
                return Ok(n);
            }
            Err(fault) => fault,
        };
        let err = match &fault {
            Fault::Eof(offset) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated NAR at offset {offset}"),
            ),
            Fault::Io(offset, e) => {
                io::Error::new(e.kind(), format!("reading NAR at offset {offset}: {e}"))
            }
        };
        self.input.fault = Some(fault);
        Err(err)
    }
}

/// The kind of a node, from the string after `type`.
#[derive(Clone, Copy)]
enum NodeType {
    Regular,
    Symlink,
    Directory,
}

struct Parser<'o, R> {
    input: Input<R>,
    /// Names from the root to the node being read.
    path: Vec<Vec<u8>>,
    options: &'o ParseOptions,
}

impl<R: Read> Parser<'_, R> {
    fn run<V: Visitor + ?Sized>(mut self, visitor: &mut V) -> Result<u64, NarError> {
        self.token(&[MAGIC]).map_err(|e| match e {
            NarError::UnexpectedToken { found, .. } => NarError::BadMagic { found },
            e => e,
        })?;
        // The last entry name of each open directory, innermost last.
        let mut dirs: Vec<Option<Vec<u8>>> = Vec::new();
        let mut next = Some(self.node_header()?);
        loop {
            match next.take() {
                Some(NodeType::Directory) => {
                    self.visit(visitor.directory_start())?;
                    dirs.push(None);
                }
                Some(leaf) => {
                    self.leaf(leaf, visitor)?;
                    if self.close_entry(dirs.is_empty(), visitor)? {
                        break;
                    }
                }
                None => {}
            }
            // Inside the innermost open directory: another entry, or its end.
            if self.token(&[ENTRY, CLOSE])? == 0 {
                let depth = dirs.len();
                let last = dirs.last_mut().expect("inside a directory");
                next = Some(self.entry(last, depth, visitor)?);
            } else {
                dirs.pop();
                self.visit(visitor.directory_end())?;
                if self.close_entry(dirs.is_empty(), visitor)? {
                    break;
                }
            }
        }
        if self.options.require_eof {
            let offset = self.input.offset;
            match self.input.read_some(&mut [0]) {
                Ok(0) => {}
                Ok(_) => return Err(NarError::TrailingData { offset }),
                Err(fault) => return Err(self.fault(fault)),
            }
        }
        Ok(self.input.offset)
    }

    /// `( type <type>`
    fn node_header(&mut self) -> Result<NodeType, NarError> {
        self.token(&[OPEN])?;
        self.token(&[TYPE])?;
        Ok(match self.token(&[REGULAR, SYMLINK, DIRECTORY])? {
            0 => NodeType::Regular,
            1 => NodeType::Symlink,
            _ => NodeType::Directory,
        })
    }

    /// The rest of a regular file or symlink node, its `)` included.
    fn leaf<V: Visitor + ?Sized>(
        &mut self,
        node: NodeType,
        visitor: &mut V,
    ) -> Result<(), NarError> {
        if let NodeType::Symlink = node {
            self.token(&[TARGET])?;
            let (offset, target) = self.string(MAX_TARGET_LEN, "symlink target")?;
            let reason = if target.is_empty() {
                Some("empty")
            } else if target.contains(&0) {
                Some("contains a NUL byte")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(NarError::InvalidTarget {
                    offset,
                    path: self.path_string(),
                    reason,
                });
            }
            self.visit(visitor.symlink(&target))?;
        } else {
            let executable = self.token(&[EXECUTABLE, CONTENTS])? == 0;
            if executable {
                self.token(&[b""])?;
                self.token(&[CONTENTS])?;
            }
            let size = self.u64()?;
            let nar_offset = self.input.offset;
            let mut contents = Contents {
                input: &mut self.input,
                remaining: size,
            };
            let result = visitor.regular(&mut RegularFile {
                executable,
                size,
                nar_offset,
                contents: &mut contents,
            });
            let mut remaining = contents.remaining;
            self.visit(result)?;
            let mut buf = [0; 8192];
            while remaining > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                match self.input.read_some(&mut buf[..want]) {
                    Ok(0) => return Err(self.fault(Fault::Eof(self.input.offset))),
                    Ok(n) => remaining -= n as u64,
                    Err(fault) => return Err(self.fault(fault)),
                }
            }
            self.padding(size)?;
        }
        self.token(&[CLOSE])?;
        Ok(())
    }

    /// `entry ( name <name> node ( type <type>`, the `entry` already read.
    fn entry<V: Visitor + ?Sized>(
        &mut self,
        last: &mut Option<Vec<u8>>,
        depth: usize,
        visitor: &mut V,
    ) -> Result<NodeType, NarError> {
        self.token(&[OPEN])?;
        self.token(&[NAME])?;
        let (offset, name) = self.string(MAX_NAME_LEN, "entry name")?;
        if !is_valid_entry_name(&name) {
            return Err(NarError::InvalidName {
                offset,
                path: self.path_string(),
                name: quote(&name),
            });
        }
        if let Some(previous) = last.as_deref() {
            if name.as_slice() == previous {
                return Err(NarError::DuplicateName {
                    offset,
                    path: self.path_string(),
                    name: quote(&name),
                });
            }
            if name.as_slice() < previous {
                return Err(NarError::NamesOutOfOrder {
                    offset,
                    path: self.path_string(),
                    name: quote(&name),
                    previous: quote(previous),
                });
            }
        }
        *last = Some(name.clone());
        self.path.push(name);
        if depth > self.options.max_depth {
            return Err(NarError::TooDeep {
                offset,
                path: self.path_string(),
                max: self.options.max_depth,
            });
        }
        self.visit(visitor.entry(self.path.last().expect("just pushed")))?;
        self.token(&[NODE])?;
        self.node_header()
    }

    /// After a node: the `)` closing its directory entry, unless it is the root.
    /// Returns whether it was the root.
    fn close_entry<V: Visitor + ?Sized>(
        &mut self,
        root: bool,
        visitor: &mut V,
    ) -> Result<bool, NarError> {
        if root {
            return Ok(true);
        }
        self.token(&[CLOSE])?;
        self.visit(visitor.entry_end())?;
        self.path.pop();
        Ok(false)
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut buf = [0; 8];
        self.input.fill(&mut buf).map_err(|f| self.fault(f))?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Reads the zero padding after a string of `len` bytes.
    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let mut buf = [0; 8];
        let buf = &mut buf[..padding(len)];
        let start = self.input.offset;
        self.input.fill(buf).map_err(|f| self.fault(f))?;
        match buf.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(NarError::NonZeroPadding {
                offset: start + i as u64,
                path: self.path_string(),
            }),
        }
    }

    /// Reads a string that must be one of `expected`; returns its index.
    fn token(&mut self, expected: &[&[u8]]) -> Result<usize, NarError> {
        let offset = self.input.offset;
        let len = self.u64()?;
        let found = match usize::try_from(len) {
            Ok(len) if len <= MAX_SHOWN_TOKEN => {
                let mut buf = [0; MAX_SHOWN_TOKEN];
                self.input
                    .fill(&mut buf[..len])
                    .map_err(|f| self.fault(f))?;
                if let Some(i) = expected.iter().position(|t| *t == &buf[..len]) {
                    self.padding(len as u64)?;
                    return Ok(i);
                }
                quote(&buf[..len])
            }
            _ => format!("a string of {len} bytes"),
        };
        let expected: Vec<String> = expected.iter().map(|t| quote(t)).collect();
        Err(NarError::UnexpectedToken {
            offset,
            path: self.path_string(),
            expected: expected.join(" or "),
            found,
        })
    }

    /// Reads a string of at most `max` bytes; returns its offset and bytes.
    fn string(&mut self, max: usize, what: &'static str) -> Result<(u64, Vec<u8>), NarError> {
        let offset = self.input.offset;
        let len = self.u64()?;
        let Some(n) = usize::try_from(len).ok().filter(|&n| n <= max) else {
            return Err(NarError::TooLong {
                offset,
                path: self.path_string(),
                what,
                len,
                max,
            });
        };
        let mut buf = vec![0; n];
        self.input.fill(&mut buf).map_err(|f| self.fault(f))?;
        self.padding(len)?;
        Ok((offset, buf))
    }

    /// Turns a visitor's result into ours, preferring a fault of the input
    /// met while the visitor read contents.
    fn visit(&mut self, result: io::Result<()>) -> Result<(), NarError> {
        if let Some(fault) = self.input.fault.take() {
            return Err(self.fault(fault));
        }
        result.map_err(|reason| NarError::Visitor {
            path: self.path_string(),
            reason,
        })
    }

    fn fault(&self, fault: Fault) -> NarError {
        let path = self.path_string();
        match fault {
            Fault::Eof(offset) => NarError::Truncated { offset, path },
            Fault::Io(offset, reason) => NarError::Read {
                offset,
                path,
                reason,
            },
        }
    }

    fn path_string(&self) -> String {
        if self.path.is_empty() {
            return "/".to_owned();
        }
        self.path
            .iter()
            .map(|name| format!("/{}", escape(name)))
            .collect()
    }
}

/// `bytes` as text: UTF-8 as it is (escaped like Rust's `{:?}`), other bytes as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", escape(bytes))
}
