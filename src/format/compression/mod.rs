//! The compressions a cache can use, streaming encoders for them, and a
//! decoder for every compression a narinfo may name.
//!
//! The encoders write what `nix copy` writes with parallel compression on,
//! which Nix 2.35 and later do by default for zstd: zstd as independent
//! frames of 16 MiB of NAR ([`zstd_write`]), xz by liblzma's multithreaded
//! encoder in blocks of the size liblzma picks for the preset, for every
//! NAR, small ones included. Neither output depends on the number of
//! threads, so the bytes are the same whatever the number of cores, as
//! `nix-build --check` needs; threads only change how soon they are written.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;
use thiserror::Error;

mod zstd_read;
mod zstd_write;

pub use zstd_read::FrameDecoder;
pub use zstd_write::{FRAME_SIZE as ZSTD_FRAME_SIZE, Frames};

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

/// The xz block at the default preset 6, where liblzma picks the block
/// size (three times the 8 MiB dictionary), as `nix copy` lets it. Each
/// block is compressed on its own, so smaller blocks cost ratio: on the
/// benchmark's 1 GiB file 4 MiB blocks wrote 19% more (BENCHMARKS.md). The
/// price is memory, as for Nix: each encoder thread holds a block in and a
/// block out beside its match finder, about 130 MiB a thread.
const XZ_DEFAULT_BLOCK_SIZE: u64 = 24 << 20;

/// The input of one zstd job at the default level 3: four times its 2 MiB
/// window. A frame of more is compressed by several zstd workers at once.
const ZSTD_DEFAULT_JOB_SIZE: u64 = 8 << 20;

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

    /// NARs this large can be compressed by several threads: more than one
    /// zstd job (zstd's unit of work within a frame) or one xz block, at the
    /// default level (a heuristic for scheduling only: it changes no byte).
    pub fn multithread_threshold(self) -> u64 {
        match self {
            Compression::None => u64::MAX,
            Compression::Xz => XZ_DEFAULT_BLOCK_SIZE + 1,
            Compression::Zstd => ZSTD_DEFAULT_JOB_SIZE + 1,
        }
    }

    /// An encoder writing to `w`, using (and leaving for the next NAR)
    /// `workspace`. `nar_size`, what the NAR should measure, sizes buffers;
    /// `threads` says how many threads may compress at once. Neither
    /// changes the output.
    pub fn encoder<'w, W: Write>(
        self,
        w: W,
        level: i32,
        nar_size: u64,
        threads: u32,
        workspace: &'w mut Workspace,
    ) -> io::Result<Encoder<'w, W>> {
        let threads = threads.max(1);
        Ok(match self {
            Compression::None => Encoder::None(w),
            Compression::Xz => {
                // Block size 0: liblzma's own choice for the preset, as
                // Nix's parallel compression asks for it.
                let stream = MtStreamBuilder::new()
                    .preset(level as u32)
                    .check(Check::Crc64)
                    .block_size(0)
                    .threads(threads)
                    .encoder()?;
                Encoder::Xz(XzEncoder::new_stream(w, stream))
            }
            Compression::Zstd => Encoder::Zstd(Frames::new(
                w,
                level,
                nar_size,
                threads,
                &mut workspace.zstd,
            )?),
        })
    }
}

/// What a worker keeps from one NAR to the next: its zstd context and
/// buffers (see `zstd_write::Scratch`).
#[derive(Default)]
pub struct Workspace {
    zstd: zstd_write::Scratch,
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
    Zstd(Frames<'w, W>),
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
/// A zstd file's frames are decoded on up to `threads` threads at once
/// ([`FrameDecoder`]); other compressions are decoded on the caller's.
pub fn decoder<'a>(
    compression: &str,
    input: impl BufRead + 'a,
    threads: usize,
) -> Option<io::Result<Box<dyn Read + 'a>>> {
    Some(Ok(match compression {
        "none" => Box::new(input),
        "xz" => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        "zstd" if threads > 1 => Box::new(FrameDecoder::new(input, threads)),
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
    pub(super) fn sample(len: usize) -> Vec<u8> {
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

    pub(super) fn compress_at(c: Compression, level: i32, data: &[u8], threads: u32) -> Vec<u8> {
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
    fn output_does_not_depend_on_thread_count() {
        // Low levels keep the test quick; the block logic is the same. The
        // data spans several xz blocks (3 MiB at level 1) and three zstd
        // frames of several zstd jobs each.
        for (c, level, len) in [
            (Compression::Xz, 1, 7_000_000),
            (Compression::Zstd, 1, 2 * ZSTD_FRAME_SIZE + 3_000_000),
        ] {
            let data = sample(len);
            let one = compress_at(c, level, &data, 1);
            assert!(one == compress_at(c, level, &data, 3), "{c}");
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
    fn scheduling_counts_more_than_the_xz_block_liblzma_picks_as_large() {
        let block = liblzma::stream::Filters::new()
            .lzma2(&liblzma::stream::LzmaOptions::new_preset(6).unwrap())
            .mt_block_size();
        assert_eq!(Compression::Xz.multithread_threshold(), block + 1);
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
