//! The compressions a cache can use, streaming encoders for them, and a
//! decoder for every compression a narinfo may name.
//!
//! Output must be the same bytes whatever the number of cores, or
//! `nix-build --check` fails. Small NARs get single-threaded encoders; a NAR
//! of at least [`Compression::multithread_threshold`] bytes gets the
//! multithreaded encoder, whose output does not depend on its thread count
//! (xz: fixed block size; zstd: the output of `nbWorkers >= 1` is the same for
//! every worker count). The choice depends on the NAR's size, never on cores.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use liblzma::stream::{Check, MtStreamBuilder, Stream};
use liblzma::write::XzEncoder;
use thiserror::Error;
use zstd::stream::raw;
use zstd::zstd_safe::{self, CCtx, CParameter, ResetDirective};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Xz,
    #[default]
    Zstd,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CompressionError {
    #[error("unknown compression {0:?}: expected \"zstd\", \"xz\" or \"none\"")]
    Unknown(String),
    #[error("compression level {level} is out of range for {compression}, which takes {}", levels(*.min, *.max))]
    Level {
        compression: Compression,
        level: i32,
        min: i32,
        max: i32,
    },
}

/// The levels from `min` to `max`, in words.
fn levels(min: i32, max: i32) -> String {
    if min == max {
        format!("{min} only")
    } else {
        format!("{min} to {max}")
    }
}

/// xz block size for multithreaded compression: what liblzma picks by
/// itself at the default preset 6 (three times its 8 MiB dictionary), and so
/// what `nix copy` with `parallel-compression=true` writes. A NAR below one
/// block is compressed single-threaded, as `nix copy` does without it. Each
/// block is compressed on its own, so smaller blocks cost ratio: on the
/// benchmark's 1 GiB file 4 MiB blocks wrote 19% more (BENCHMARKS.md). The
/// price is memory, as for Nix: each encoder thread holds a block in and a
/// block out beside its match finder, about 130 MiB a thread.
const XZ_BLOCK_SIZE: u64 = 24 << 20;

impl Compression {
    /// The value of the narinfo `Compression:` field.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// What follows `.nar` in the file name.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// The level used when none is given: what `nix copy` uses.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Xz => 6,
            Compression::Zstd => 3,
        }
    }

    pub fn check_level(self, level: i32) -> Result<i32, CompressionError> {
        let (min, max) = match self {
            Compression::None => (0, 0),
            Compression::Xz => (0, 9),
            Compression::Zstd => (1, 19),
        };
        if (min..=max).contains(&level) {
            Ok(level)
        } else {
            Err(CompressionError::Level {
                compression: self,
                level,
                min,
                max,
            })
        }
    }

    /// NARs this large are compressed by several threads.
    pub fn multithread_threshold(self) -> u64 {
        match self {
            Compression::None => u64::MAX,
            // Below one block, xz's output is the single-threaded stream
            // `nix copy` writes, byte for byte.
            Compression::Xz => XZ_BLOCK_SIZE,
            // zstd's window at the default level is 2 MiB. Past that, the
            // single-threaded stream wraps its input buffer and matches
            // across the wrap in a slower mode; the multithreaded encoder
            // keeps each job's input contiguous, and so is cheaper per byte
            // even with one worker.
            Compression::Zstd => 2 << 20,
        }
    }

    /// An encoder writing to `w`, using (and leaving for the next NAR)
    /// `workspace`. `threads` is used only when `nar_size` reaches the
    /// multithread threshold, and never changes the output.
    pub fn encoder<'w, W: Write>(
        self,
        w: W,
        level: i32,
        nar_size: u64,
        threads: u32,
        workspace: &'w mut Workspace,
    ) -> io::Result<Encoder<'w, W>> {
        let threaded = nar_size >= self.multithread_threshold();
        let threads = threads.max(1);
        Ok(match self {
            Compression::None => Encoder::None(w),
            Compression::Xz => {
                let stream = if threaded {
                    MtStreamBuilder::new()
                        .preset(level as u32)
                        .check(Check::Crc64)
                        .block_size(XZ_BLOCK_SIZE)
                        .threads(threads)
                        .encoder()?
                } else {
                    Stream::new_easy_encoder(level as u32, Check::Crc64)?
                };
                Encoder::Xz(XzEncoder::new_stream(w, stream))
            }
            Compression::Zstd => {
                let encoder = if threaded {
                    // A context of its own: its worker threads and job
                    // buffers are not worth keeping for the small NARs that
                    // follow.
                    let mut encoder = raw::Encoder::new(level)?;
                    encoder.set_parameter(CParameter::NbWorkers(threads))?;
                    encoder
                } else {
                    workspace.zstd_encoder(level)?
                };
                Encoder::Zstd(zstd::stream::write::Encoder::with_encoder(w, encoder))
            }
        })
    }
}

/// What a worker keeps from one NAR to the next: the single-threaded zstd
/// context. Making a context and clearing its tables cost more than
/// compressing a NAR of a few KiB, so a closure of many small paths spent
/// most of its compression time there.
#[derive(Default)]
pub struct Workspace {
    zstd: Option<CCtx<'static>>,
}

impl Workspace {
    /// A single-threaded zstd encoder on this workspace's context, set up
    /// afresh: nothing of the previous NAR's parameters or session is left,
    /// so the output is the very bytes a new context writes. (Giving zstd
    /// the NAR's size as a hint saved another tenth of the time on 10,000
    /// small paths, but made their files 0.4% larger and different from
    /// earlier releases'; it is not done.)
    fn zstd_encoder(&mut self, level: i32) -> io::Result<raw::Encoder<'_>> {
        let context = match &mut self.zstd {
            Some(context) => context,
            empty => empty.insert(CCtx::try_create().ok_or_else(|| {
                io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate a zstd context")
            })?),
        };
        context
            .reset(ResetDirective::SessionAndParameters)
            .map_err(zstd_error)?;
        let mut encoder = raw::Encoder::with_context(context);
        encoder.set_parameter(CParameter::CompressionLevel(level))?;
        Ok(encoder)
    }
}

fn zstd_error(code: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

impl FromStr for Compression {
    type Err = CompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "xz" => Ok(Compression::Xz),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(CompressionError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compressing writer; [`Encoder::finish`] ends the stream.
pub enum Encoder<'w, W: Write> {
    None(W),
    Xz(XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'w, W>),
}

impl<W: Write> Encoder<'_, W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.write_all(buf),
            Encoder::Xz(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A reader that decompresses `input` as a narinfo's `Compression:` says
/// (any compression Nix writes, not only those this crate writes); `None`
/// for a compression we cannot read. Missing or empty means bzip2, to Nix.
pub fn decoder<'a>(
    compression: &str,
    input: impl BufRead + 'a,
) -> Option<io::Result<Box<dyn Read + 'a>>> {
    Some(Ok(match compression {
        "none" => Box::new(input),
        "xz" => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        "zstd" => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(decoder) => Box::new(decoder),
            Err(e) => return Some(Err(e)),
        },
        "bzip2" | "" => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic, moderately compressible data.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b"nix store path "[i % 15]
                }
            })
            .collect()
    }

    fn compress(c: Compression, data: &[u8], threads: u32) -> Vec<u8> {
        compress_at(c, c.default_level(), data, threads)
    }

    fn compress_at(c: Compression, level: i32, data: &[u8], threads: u32) -> Vec<u8> {
        let mut workspace = Workspace::default();
        let mut e = c
            .encoder(
                Vec::new(),
                level,
                data.len() as u64,
                threads,
                &mut workspace,
            )
            .unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn names_and_extensions_are_nixs() {
        assert_eq!("zstd".parse(), Ok(Compression::Zstd));
        assert_eq!(Compression::Zstd.extension(), ".zst");
        assert_eq!(Compression::Xz.extension(), ".xz");
        assert_eq!(Compression::None.extension(), "");
        assert!(matches!(
            "gzip".parse::<Compression>(),
            Err(CompressionError::Unknown(_))
        ));
    }

    #[test]
    fn levels_are_checked() {
        assert!(Compression::Xz.check_level(10).is_err());
        assert!(Compression::Zstd.check_level(19).is_ok());
        assert!(Compression::Zstd.check_level(0).is_err());
    }

    #[test]
    fn multithreaded_output_does_not_depend_on_thread_count() {
        // Low levels keep the test quick; the block logic is the same. The
        // data spans several xz blocks and several zstd jobs (8 MiB each).
        for (c, level) in [(Compression::Xz, 1), (Compression::Zstd, 3)] {
            let data = sample(2 * c.multithread_threshold().max(8 << 20) as usize + 3_000_000);
            let one = compress_at(c, level, &data, 1);
            assert_eq!(one, compress_at(c, level, &data, 3), "{c}");
        }
    }

    #[test]
    fn a_reused_workspace_writes_what_a_fresh_one_writes() {
        // Whatever the workspace compressed before (at another level, or a
        // NAR abandoned half-way when its path failed), the next NAR's
        // bytes are those of a fresh context.
        let (first, second) = (sample(300_000), sample(70_000));
        let mut workspace = Workspace::default();
        let mut abandoned = Compression::Zstd
            .encoder(Vec::new(), 19, first.len() as u64, 1, &mut workspace)
            .unwrap();
        abandoned.write_all(&first).unwrap();
        drop(abandoned);
        for level in [3, 3, 7] {
            let mut e = Compression::Zstd
                .encoder(Vec::new(), level, second.len() as u64, 1, &mut workspace)
                .unwrap();
            e.write_all(&second).unwrap();
            let reused = e.finish().unwrap();
            assert_eq!(reused, compress_at(Compression::Zstd, level, &second, 1));
        }
    }

    #[test]
    fn round_trips() {
        let data = sample(100_000);
        let xz = compress(Compression::Xz, &data, 2);
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new(&xz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let zst = compress(Compression::Zstd, &data, 2);
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), data);
        assert_eq!(compress(Compression::None, &data, 2), data);
    }
}
