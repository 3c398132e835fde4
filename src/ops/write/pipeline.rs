//! One path's pass: dump the NAR, hash it (NarHash, NarSize), compress it,
//! and hash what is written (FileHash, FileSize), with nothing held whole.

use std::cell::RefCell;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{CacheError, Options};
use crate::format::compression::{Compression, Workspace};
use crate::format::hash::{HashingWriter, Sha256};
use crate::format::nar::dump;
use crate::format::nar::listing;
use crate::format::store_path::PathInfo;
use crate::support::progress::Progress;

/// The paths to write with their NAR sizes, largest first, in store-path
/// order among equal sizes.
pub(super) fn plan(closure: &[PathInfo]) -> Result<Vec<(u64, &PathInfo)>, CacheError> {
    let mut sized = closure
        .iter()
        .map(|p| Ok((nar_size_of(p)?, p)))
        .collect::<Result<Vec<_>, CacheError>>()?;
    sized.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    Ok(sized)
}

fn nar_size_of(p: &PathInfo) -> Result<u64, CacheError> {
    match p.nar_size {
        Some(size) => Ok(size),
        None => Ok(dump::nar_size(Path::new(&p.path.to_absolute()))?),
    }
}

/// What one pass over a store path learnt about its NAR.
pub(super) struct Nar {
    pub(super) hash: Sha256,
    pub(super) size: u64,
    pub(super) listing: Option<listing::Node>,
}

/// What one pass wrote: the file (FileHash, FileSize) and the NAR in it.
pub(super) struct NarFile {
    pub(super) hash: Sha256,
    pub(super) size: u64,
    pub(super) nar: Nar,
}

impl NarFile {
    /// Its place in the cache, named for its FileHash: `nar/<hash>.nar<ext>`.
    pub(super) fn url(&self, compression: Compression) -> String {
        format!(
            "nar/{}.nar{}",
            self.hash.to_nix32(),
            compression.extension()
        )
    }
}

thread_local! {
    /// Each worker's compressor state, kept from one path to the next.
    static WORKSPACE: RefCell<Workspace> = RefCell::default();
}

/// One path's pass: what it needs, handed down the calls that write it.
pub(super) struct Pass<'a> {
    pub(super) path: &'a PathInfo,
    /// What the NAR's size should be, as [`plan`] found: it sizes buffers
    /// and picks the encoder.
    pub(super) nar_size: u64,
    pub(super) opts: &'a Options,
    pub(super) threads: u32,
    pub(super) progress: &'a Progress,
}

impl Pass<'_> {
    /// Streams the NAR of the path through its compressor into `sink` (the
    /// file `sink_path`, named in errors), hashing both what goes in and
    /// what comes out.
    pub(super) fn compress_and_hash<S: Write>(
        &self,
        sink: S,
        sink_path: &Path,
    ) -> Result<(S, NarFile), CacheError> {
        WORKSPACE.with_borrow_mut(|workspace| match self.opts.compression {
            // The file is the NAR itself: hashing it again would be wasted work.
            Compression::None => {
                self.compress_nar(sink, sink_path, workspace)
                    .map(|(sink, nar)| {
                        let file = NarFile {
                            hash: nar.hash,
                            size: nar.size,
                            nar,
                        };
                        (sink, file)
                    })
            }
            _ => self
                .compress_nar(HashingWriter::new(sink), sink_path, workspace)
                .map(|(sink, nar)| {
                    let (sink, hash, size) = sink.finish();
                    (sink, NarFile { hash, size, nar })
                }),
        })
    }

    /// Streams the NAR of the path through `sink`'s compressor, returning
    /// the sink and what was learnt of the NAR. A listing is recorded when
    /// the options need one.
    fn compress_nar<S: Write>(
        &self,
        sink: S,
        sink_path: &Path,
        workspace: &mut Workspace,
    ) -> Result<(S, Nar), CacheError> {
        let Pass {
            path,
            nar_size: expected_size,
            opts,
            threads,
            progress,
        } = *self;
        let source = PathBuf::from(path.path.to_absolute());
        let nar_error = |source| CacheError::WriteNar {
            path: path.path.clone(),
            file: sink_path.to_owned(),
            source,
        };
        let encoder = opts
            .compression
            .encoder(sink, opts.level, expected_size, threads, workspace)
            .map_err(nar_error)?;
        // The NAR comes in many small tokens; batch them before hashing, in a
        // buffer no larger than the NAR needs.
        let capacity = expected_size.clamp(4 << 10, 256 << 10) as usize;
        let mut nar = BufWriter::with_capacity(
            capacity,
            Reporting {
                inner: HashingWriter::new(encoder),
                progress,
            },
        );
        let listing = if opts.write_nar_listing || opts.index_debug_info {
            Some(listing::dump(&source, &mut nar)?)
        } else {
            dump::dump(&source, &mut nar)?;
            None
        };
        let (encoder, hash, size) = nar
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(nar_error)?
            .inner
            .finish();
        let sink = encoder.finish().map_err(nar_error)?;
        Ok((
            sink,
            Nar {
                hash,
                size,
                listing,
            },
        ))
    }

    /// Compares what was read with what Nix recorded when the path was made.
    pub(super) fn check(&self, nar: &Nar) -> Result<(), CacheError> {
        let path = self.path;
        if let Some(expected) = path.nar_size.filter(|&s| s != nar.size) {
            return Err(CacheError::SizeMismatch {
                path: path.path.clone(),
                expected,
                actual: nar.size,
            });
        }
        if let Some(expected) = path.nar_hash.filter(|&h| h != nar.hash) {
            return Err(CacheError::HashMismatch {
                path: path.path.clone(),
                expected,
                actual: nar.hash,
            });
        }
        Ok(())
    }
}

/// Tells the progress display how many NAR bytes went through.
struct Reporting<'p, W> {
    inner: W,
    progress: &'p Progress,
}

impl<W: Write> Write for Reporting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
