//! Checking one NAR file against its narinfo, in one streaming pass: the
//! file is hashed, decompressed, and the NAR hashed and parsed.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::report::{Problem, ProblemKind};
use super::resolve::{Unreachable, open_no_follow, resolve};
use crate::format::compression;
use crate::format::hash::{HashingReader, Sha256};
use crate::format::nar;
use crate::format::narinfo::NarInfo;

/// Buffer size of each stage of the NAR pipeline.
const BUFFER: usize = 64 * 1024;

/// Bytes read while checking one NAR.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct BytesRead {
    pub(super) file: u64,
    pub(super) nar: u64,
}

/// Checks the NAR file of `info`: that it is in the cache, has the size and
/// hash the narinfo gives, and holds the NAR it describes. `threads` may
/// decode the file (see `compression::decoder`).
pub(super) fn check_nar(
    root: &Path,
    info: &NarInfo,
    subject: &str,
    threads: usize,
) -> (Vec<Problem>, BytesRead) {
    let problem = |kind, message: String| Problem::new(subject, kind, message);
    let file = match open_nar_file(root, &info.url) {
        Ok(file) => file,
        Err((kind, message)) => return (vec![problem(kind, message)], BytesRead::default()),
    };
    let reading = read_nar(file, &info.compression, info.nar_size, threads);
    let read = BytesRead {
        file: reading.file_size,
        nar: reading.nar_size,
    };
    if let Some(e) = reading.file_error {
        let message = format!("reading {} failed: {e}", info.url);
        return (vec![problem(ProblemKind::Io, message)], read);
    }
    let problems = file_problems(info, &reading)
        .into_iter()
        .chain(nar_problems(info, reading.outcome))
        .map(|(kind, message)| problem(kind, message))
        .collect();
    (problems, read)
}

/// The file `url` names, opened; or what stops it being read.
fn open_nar_file(root: &Path, url: &str) -> Result<File, (ProblemKind, String)> {
    let path = resolve(root, url).map_err(|e| {
        let kind = match e {
            Unreachable::NotRelative { .. } | Unreachable::Escapes { .. } => {
                ProblemKind::OutsideCache
            }
            Unreachable::Io { .. } => ProblemKind::Io,
            _ => ProblemKind::MissingNar,
        };
        (kind, format!("URL {url}: {e}"))
    })?;
    open_no_follow(&path).map_err(|e| (ProblemKind::Io, format!("cannot open {url}: {e}")))
}

/// How the file, as read, differs from the narinfo's `FileSize` and `FileHash`.
fn file_problems(info: &NarInfo, reading: &NarReading) -> Vec<(ProblemKind, String)> {
    let url = &info.url;
    let mut problems = Vec::new();
    if let Some(expected) = info.file_size
        && expected != reading.file_size
    {
        problems.push((
            ProblemKind::FileSize,
            format!(
                "{url} is {} bytes, the narinfo says FileSize: {expected}",
                reading.file_size
            ),
        ));
    }
    if let Some(expected) = info.file_hash
        && expected != reading.file_hash
    {
        problems.push((
            ProblemKind::FileHash,
            format!(
                "{url} has hash {}, the narinfo says FileHash: {expected}",
                reading.file_hash
            ),
        ));
    }
    problems
}

/// What is wrong with the NAR the file decompressed to.
fn nar_problems(info: &NarInfo, outcome: NarOutcome) -> Vec<(ProblemKind, String)> {
    let url = &info.url;
    let expected_size = info.nar_size;
    match outcome {
        NarOutcome::Unsupported => vec![(
            ProblemKind::UnsupportedCompression,
            format!(
                "Compression: {}: cannot decompress {url} to check the NAR (known: xz, zstd, bzip2, none)",
                info.compression
            ),
        )],
        NarOutcome::Decompression(e) => vec![(
            ProblemKind::Decompression,
            format!("{url} is not valid {} data: {e}", info.compression),
        )],
        NarOutcome::TooLong => vec![(
            ProblemKind::NarSize,
            format!(
                "{url} decompresses to more than NarSize: {expected_size} bytes; stopped after {}",
                expected_size.saturating_add(1)
            ),
        )],
        NarOutcome::Read { size, hash, parsed } => {
            let mut problems = Vec::new();
            if let Err(e) = parsed {
                problems.push((
                    ProblemKind::BadNar,
                    format!("{url} is not a valid NAR: {e}"),
                ));
            }
            if size != expected_size {
                problems.push((
                    ProblemKind::NarSize,
                    format!("the NAR is {size} bytes, the narinfo says NarSize: {expected_size}"),
                ));
            }
            if hash != info.nar_hash {
                problems.push((
                    ProblemKind::NarHash,
                    format!(
                        "the NAR has hash {hash}, the narinfo says NarHash: {}",
                        info.nar_hash
                    ),
                ));
            }
            problems
        }
    }
}

/// What reading a NAR file found.
struct NarReading {
    /// Length and hash of the whole file, as read.
    file_size: u64,
    file_hash: Sha256,
    /// Reading the file itself failed; nothing else is meaningful then.
    file_error: Option<io::Error>,
    /// Decompressed bytes read.
    nar_size: u64,
    outcome: NarOutcome,
}

enum NarOutcome {
    /// The compression is not one we can read.
    Unsupported,
    /// The decompressor failed.
    Decompression(io::Error),
    /// It decompressed to more than the NAR size; reading stopped there.
    TooLong,
    /// The NAR was read to its end: its length, hash and parse result.
    Read {
        size: u64,
        hash: Sha256,
        parsed: Result<(), nar::reader::NarError>,
    },
}

/// Reads a NAR file in one pass: `file` is hashed, decompressed (on up to
/// `threads` threads), the NAR hashed and parsed; no more than `nar_size + 1`
/// bytes are decompressed.
/// The file is read to its end even when the NAR is not, so that its hash
/// covers all of it.
fn read_nar(file: impl Read, compression: &str, nar_size: u64, threads: usize) -> NarReading {
    let mut file_side = HashingReader::new(Latch::new(file));
    let mut decoded = 0;
    let outcome = match compression::decoder(
        compression,
        BufReader::with_capacity(BUFFER, &mut file_side),
        threads,
    ) {
        None => NarOutcome::Unsupported,
        Some(Err(e)) => NarOutcome::Decompression(e),
        Some(Ok(decoder)) => {
            let limited = Latch::new(decoder).take(nar_size.saturating_add(1));
            let mut nar_side = HashingReader::new(limited);
            let parsed = nar::reader::validate(&mut nar_side).map(drop);
            // Hash the rest of the stream, up to the limit, unless the
            // decompressor has given up already.
            if parsed.is_err() && nar_side.get_ref().get_ref().error.is_none() {
                let _ = io::copy(&mut nar_side, &mut io::sink());
            }
            let (limited, hash, size) = nar_side.finish();
            decoded = size;
            if let Some(e) = limited.into_inner().error {
                NarOutcome::Decompression(e)
            } else if size > nar_size {
                NarOutcome::TooLong
            } else {
                NarOutcome::Read { size, hash, parsed }
            }
        }
    };
    if file_side.get_ref().error.is_none() {
        let _ = io::copy(&mut file_side, &mut io::sink());
    }
    let (latch, file_hash, file_size) = file_side.finish();
    NarReading {
        file_size,
        file_hash,
        file_error: latch.error,
        nar_size: decoded,
        outcome,
    }
}

/// Passes reads on, remembering the first error, so that a failure further
/// down the pipeline can be put down to the stage that caused it.
struct Latch<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R> Latch<R> {
    fn new(inner: R) -> Self {
        Latch { inner, error: None }
    }
}

impl<R: Read> Read for Latch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted && self.error.is_none() {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::format::compression::{Compression, Workspace};

    /// A NAR of one regular file holding `len` zero bytes.
    fn zeros_nar(len: u64) -> Vec<u8> {
        let mut nar = Vec::new();
        nar::writer::open(&mut nar)
            .unwrap()
            .regular(false, len, &mut io::repeat(0).take(len))
            .unwrap();
        nar
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut workspace = Workspace::default();
        let mut e = c
            .encoder(
                Vec::new(),
                c.default_level(),
                data.len() as u64,
                1,
                &mut workspace,
            )
            .unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_ok(reading: &NarReading) -> (u64, Sha256) {
        match &reading.outcome {
            NarOutcome::Read {
                size,
                hash,
                parsed: Ok(()),
            } => (*size, *hash),
            NarOutcome::Read { parsed: Err(e), .. } => panic!("parse failed: {e}"),
            NarOutcome::Unsupported => panic!("unsupported"),
            NarOutcome::Decompression(e) => panic!("decompression: {e}"),
            NarOutcome::TooLong => panic!("too long"),
        }
    }

    #[test]
    fn reads_every_supported_compression_to_the_same_nar() {
        let nar = zeros_nar(100_000);
        for (name, file) in [
            ("none", nar.clone()),
            ("xz", compress(Compression::Xz, &nar)),
            ("zstd", compress(Compression::Zstd, &nar)),
            ("bzip2", bzip2(&nar)),
            ("", bzip2(&nar)),
        ] {
            let reading = read_nar(&file[..], name, nar.len() as u64, 1);
            assert_eq!(
                read_ok(&reading),
                (nar.len() as u64, Sha256::digest(&nar)),
                "{name:?}"
            );
            assert_eq!(reading.file_size, file.len() as u64, "{name:?}");
            assert_eq!(reading.file_hash, Sha256::digest(&file), "{name:?}");
        }
    }

    #[test]
    fn stops_decompressing_one_byte_after_the_nar_size() {
        // 64 MiB of NAR in a few KiB of zstd, claimed to be 1000 bytes long.
        let nar = zeros_nar(64 << 20);
        let bomb = compress(Compression::Zstd, &nar);
        for threads in [1, 2] {
            let reading = read_nar(&bomb[..], "zstd", 1000, threads);
            assert!(matches!(reading.outcome, NarOutcome::TooLong));
            assert_eq!(reading.nar_size, 1001);
            // The file is still read whole, for its hash.
            assert_eq!(reading.file_hash, Sha256::digest(&bomb));
        }
    }

    #[test]
    fn a_zstd_nar_of_several_frames_reads_the_same_on_several_threads() {
        let nar = zeros_nar(40 << 20);
        let file = compress(Compression::Zstd, &nar);
        for threads in [1, 2, 3] {
            let reading = read_nar(&file[..], "zstd", nar.len() as u64, threads);
            assert_eq!(
                read_ok(&reading),
                (nar.len() as u64, Sha256::digest(&nar)),
                "{threads}"
            );
            assert_eq!(reading.file_hash, Sha256::digest(&file));
        }
    }

    #[test]
    fn data_after_the_nar_is_more_than_nar_size() {
        let mut file = zeros_nar(10);
        let nar_size = file.len() as u64;
        file.extend_from_slice(&[0; 8]);
        let reading = read_nar(&file[..], "none", nar_size, 1);
        assert!(matches!(reading.outcome, NarOutcome::TooLong));
    }

    #[test]
    fn a_short_nar_is_read_whole_and_reported_with_its_size_and_hash() {
        let nar = zeros_nar(1000);
        let cut = &nar[..500];
        let reading = read_nar(cut, "none", nar.len() as u64, 1);
        let NarOutcome::Read { size, hash, parsed } = reading.outcome else {
            panic!("expected a NAR read to its end");
        };
        assert!(matches!(
            parsed,
            Err(nar::reader::NarError::Truncated { .. })
        ));
        assert_eq!(size, 500);
        assert_eq!(hash, Sha256::digest(cut));
    }

    #[test]
    fn a_cut_compressed_file_is_a_decompression_error() {
        let nar = zeros_nar(100_000);
        for (c, threads) in [
            (Compression::Xz, 1),
            (Compression::Zstd, 1),
            (Compression::Zstd, 2),
        ] {
            let file = compress(c, &nar);
            let cut = &file[..file.len() - 9];
            let reading = read_nar(cut, c.name(), nar.len() as u64, threads);
            assert!(
                matches!(reading.outcome, NarOutcome::Decompression(_)),
                "{c} on {threads}"
            );
            assert_eq!(reading.file_size, cut.len() as u64);
            assert!(reading.file_error.is_none());
        }
    }

    #[test]
    fn an_unknown_compression_still_gets_its_file_hashed() {
        let reading = read_nar(&b"whatever"[..], "br", 8, 1);
        assert!(matches!(reading.outcome, NarOutcome::Unsupported));
        assert_eq!(reading.file_hash, Sha256::digest(b"whatever"));
    }

    #[test]
    fn a_failing_file_is_an_io_error_not_a_decompression_error() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let reading = read_nar(Failing, "xz", 100, 1);
        assert!(
            reading
                .file_error
                .unwrap()
                .to_string()
                .contains("disk on fire")
        );
    }
}
