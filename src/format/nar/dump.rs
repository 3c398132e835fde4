//! Serialising a filesystem tree as a NAR.
//!
//! Symlinks are recorded, never followed. Files are streamed in chunks, never
//! held whole, and a file whose size changes while it is read is an error:
//! the store is supposed to be immutable, so it means corruption or a race.
//!
//! [`dump_recording`] also records each node as it goes, as a [`Record`]
//! says (the NAR listing is one): what it needs is learnt in the same pass,
//! without reading anything twice.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::writer::{self, Node, WriteError};
use super::{MAGIC, padding, token};

#[derive(Debug, Error)]
pub enum DumpError {
    #[error("cannot read '{path}': {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("'{path}' is a {kind}, which a NAR cannot hold")]
    Unsupported { path: PathBuf, kind: &'static str },
    /// Writing the NAR failed, while at `path`: the sink's fault, not the file's.
    #[error("cannot write the NAR of '{path}': {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("'{path}': {source}")]
    Write { path: PathBuf, source: WriteError },
}

/// Writes the NAR of `path` (file, symlink or directory) to `w`.
///
/// `w` should be buffered: the archive is written in many small tokens.
pub fn dump<W: Write>(path: &Path, w: &mut W) -> Result<(), DumpError> {
    dump_recording::<W, ()>(path, w)
}

/// What a dump learns of each node besides its bytes, built bottom-up:
/// a directory's entries are added in NAR order once each is complete.
pub trait Record: Sized {
    /// A regular file whose contents start `nar_offset` bytes into the NAR.
    fn regular(executable: bool, size: u64, nar_offset: u64) -> Self;
    fn symlink(target: &[u8]) -> Self;
    fn directory() -> Self;
    fn entry(&mut self, name: &[u8], node: Self);
}

/// Records nothing, at no cost.
impl Record for () {
    fn regular(_: bool, _: u64, _: u64) {}
    fn symlink(_: &[u8]) {}
    fn directory() {}
    fn entry(&mut self, _: &[u8], _: ()) {}
}

/// Writes the NAR of `path` to `w`, as [`dump`] does, and returns what `R`
/// records of it.
pub fn dump_recording<W: Write, R: Record>(path: &Path, w: &mut W) -> Result<R, DumpError> {
    let mut w = Counting {
        inner: w,
        written: 0,
    };
    let root = writer::open(&mut w).map_err(|e| write_error(path, e.into()))?;
    dump_node(path, root)
}

/// Counts the bytes written, which are the NAR offsets a listing records.
struct Counting<'a, W> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DumpError + '_ {
    move |source| DumpError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_error(path: &Path, source: WriteError) -> DumpError {
    match source {
        WriteError::Io(source) => DumpError::Output {
            path: path.to_owned(),
            source,
        },
        WriteError::Read(source) => DumpError::Io {
            path: path.to_owned(),
            source,
        },
        source => DumpError::Write {
            path: path.to_owned(),
            source,
        },
    }
}

type CountingNode<'n, 'a, W> = Node<'n, Counting<'a, W>>;

fn dump_node<W: Write, R: Record>(
    path: &Path,
    node: CountingNode<'_, '_, W>,
) -> Result<R, DumpError> {
    let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(io_error(path))?;
        let target = target.as_os_str().as_bytes();
        node.symlink(target)
            .map_err(|e| write_error(path, e.into()))?;
        Ok(R::symlink(target))
    } else if file_type.is_file() {
        dump_file(path, &meta, node)
    } else if file_type.is_dir() {
        dump_directory(path, node)
    } else {
        Err(DumpError::Unsupported {
            path: path.to_owned(),
            kind: unsupported_kind(&meta),
        })
    }
}

fn dump_file<W: Write, R: Record>(
    path: &Path,
    meta: &Metadata,
    node: CountingNode<'_, '_, W>,
) -> Result<R, DumpError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let executable = meta.permissions().mode() & 0o100 != 0;
    let size = meta.len();
    let contents = node
        .file(executable, size)
        .map_err(|e| write_error(path, e.into()))?;
    let nar_offset = contents.get_ref().written;
    contents
        .copy_from(&mut file)
        .map_err(|e| write_error(path, e))?;
    Ok(R::regular(executable, size, nar_offset))
}

fn dump_directory<W: Write, R: Record>(
    path: &Path,
    node: CountingNode<'_, '_, W>,
) -> Result<R, DumpError> {
    let mut names = fs::read_dir(path)
        .map_err(io_error(path))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_error(path))?;
    // NAR order is byte order, which is what OsString's Ord compares on Unix.
    names.sort_unstable();
    let mut record = R::directory();
    let mut dir = node.directory().map_err(|e| write_error(path, e.into()))?;
    for name in names {
        let child = path.join(&name);
        let entry = dir
            .entry(name.as_bytes())
            .map_err(|e| write_error(&child, e))?;
        record.entry(name.as_bytes(), dump_node(&child, entry)?);
    }
    dir.close().map_err(|e| write_error(path, e.into()))?;
    Ok(record)
}

/// The exact size of the NAR of `path`, from metadata alone.
///
/// Deciding how to compress a NAR before writing it needs its size; Nix
/// hands it over in the closure, but the legacy closure file does not.
pub fn nar_size(path: &Path) -> Result<u64, DumpError> {
    fn str_len(len: u64) -> u64 {
        8 + len + padding(len) as u64
    }
    fn tokens(ts: &[&[u8]]) -> u64 {
        ts.iter().map(|t| str_len(t.len() as u64)).sum()
    }
    fn node(path: &Path) -> Result<u64, DumpError> {
        let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
        let t = meta.file_type();
        let body = if t.is_symlink() {
            let target = fs::read_link(path).map_err(io_error(path))?;
            tokens(&[token::SYMLINK, token::TARGET]) + str_len(target.as_os_str().len() as u64)
        } else if t.is_file() {
            let exec = if meta.permissions().mode() & 0o100 != 0 {
                tokens(&[token::EXECUTABLE, b""])
            } else {
                0
            };
            tokens(&[token::REGULAR, token::CONTENTS]) + exec + str_len(meta.len())
        } else if t.is_dir() {
            let mut sum = tokens(&[token::DIRECTORY]);
            for entry in fs::read_dir(path).map_err(io_error(path))? {
                let name = entry.map_err(io_error(path))?.file_name();
                sum += tokens(&[
                    token::ENTRY,
                    token::OPEN,
                    token::NAME,
                    token::NODE,
                    token::CLOSE,
                ]) + str_len(name.len() as u64)
                    + node(&path.join(&name))?;
            }
            sum
        } else {
            return Err(DumpError::Unsupported {
                path: path.to_owned(),
                kind: unsupported_kind(&meta),
            });
        };
        Ok(tokens(&[token::OPEN, token::TYPE, token::CLOSE]) + body)
    }
    Ok(str_len(MAGIC.len() as u64) + node(path)?)
}

fn unsupported_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_socket() {
        "socket"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn refuses_a_fifo_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = dump(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, DumpError::Unsupported { kind: "fifo", .. }));
        assert!(err.to_string().contains("pipe"), "{err}");
    }

    #[test]
    fn records_a_dangling_symlink_without_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        symlink("/does/not/exist", &link).unwrap();
        let mut out = Vec::new();
        dump(&link, &mut out).unwrap();
        assert!(out.windows(15).any(|w| w == b"/does/not/exist"));
    }

    #[test]
    fn nar_size_matches_the_dumped_length() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b/empty")).unwrap();
        fs::write(root.join("a/b/f"), vec![7u8; 1234]).unwrap();
        fs::write(root.join("x y"), b"").unwrap();
        fs::write(root.join("exe"), b"#!").unwrap();
        fs::set_permissions(root.join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("a/b", root.join("link")).unwrap();
        for p in [root.to_path_buf(), root.join("a/b/f"), root.join("link")] {
            let mut out = Vec::new();
            dump(&p, &mut out).unwrap();
            assert_eq!(nar_size(&p).unwrap(), out.len() as u64, "{}", p.display());
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let err = dump(&missing, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }

    /// Takes `room` bytes, then fails as a full disk does.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::StorageFull.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_sink_is_a_write_error_not_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        fs::write(&file, vec![1u8; 100_000]).unwrap();
        let err = dump(dir.path(), &mut Full { room: 50_000 }).unwrap_err();
        assert!(matches!(err, DumpError::Output { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot write the NAR of '{}': ", file.display())),
            "{err}"
        );
    }
}
