//! Decoding a zstd file's frames on several threads at once, in order.
//!
//! A zstd file is a series of frames (RFC 8878). Nix 2.35 and later, and
//! this crate, cut a frame every 16 MiB of NAR and write its decoded size
//! (`Frame_Content_Size`) in its header. [`FrameDecoder`] reads the file on
//! the calling thread, finds where each frame ends by walking its block
//! headers (each gives its own length), and hands the frame to a thread of
//! its own, which decodes it whole into a buffer of the announced size. The
//! caller gets the frames' bytes in order while the next ones are decoded:
//! at most `threads` frames are in flight, so memory stays bounded.
//!
//! Whatever does not fit that pattern is read by zstd's streaming decoder
//! from there on, as a single-threaded reader would: a frame without a
//! content size (files of Nix before 2.35, and of earlier versions of this
//! crate, are one such frame), one of more than [`MAX_FRAME`] bytes, one
//! that needs a dictionary, a skippable frame, or anything damaged or cut short, which the streaming
//! decoder then reports as it always did.

use std::collections::VecDeque;
use std::io::{self, BufRead, Chain, Cursor, Read};
use std::thread::{self, JoinHandle};

use zstd::zstd_safe::{self, DCtx};

/// The largest frame decoded on a thread of its own, in decoded bytes:
/// twice Nix's frames. Each frame in flight is held whole.
pub const MAX_FRAME: u64 = 32 << 20;

const MAGIC: u32 = 0xFD2F_B528;
/// The largest block a frame may hold (RFC 8878, `Block_Maximum_Size`).
const MAX_BLOCK: usize = 128 << 10;

/// A reader of the decoded bytes of a zstd file, decoding frames ahead on
/// up to `threads` threads.
pub struct FrameDecoder<R: BufRead> {
    state: State<R>,
    /// The decoded frame being read, and how far.
    current: Vec<u8>,
    read: usize,
}

enum State<R: BufRead> {
    Frames(Frames<R>),
    /// What was left after the last frame decoded on a thread.
    Streaming(Box<zstd::stream::read::Decoder<'static, Chain<Cursor<Vec<u8>>, R>>>),
    Taken,
}

struct Frames<R> {
    input: R,
    threads: usize,
    /// Frames being decoded, oldest first.
    in_flight: VecDeque<JoinHandle<io::Result<Decoded>>>,
    /// Bytes of the file before the next frame, for messages.
    offset: u64,
    /// The start of what is left for the streaming decoder, once found.
    rest: Option<Vec<u8>>,
    /// Buffers of frames done with, for the next ones: no frame costs
    /// fresh memory (and its page faults) once the first few are read.
    spare_decoded: Vec<Vec<u8>>,
    spare_compressed: Vec<Vec<u8>>,
}

/// A frame decoded on its thread, and the buffer it was read into.
struct Decoded {
    bytes: Vec<u8>,
    compressed: Vec<u8>,
}

impl<R: BufRead> Frames<R> {
    /// Sets frames decoding until `threads` are, or the frames end.
    fn fill(&mut self) -> io::Result<()> {
        while self.rest.is_none() && self.in_flight.len() < self.threads {
            let buffer = self.spare_compressed.pop().unwrap_or_default();
            match split(&mut self.input, buffer)? {
                Split::End => break,
                Split::Frame {
                    bytes,
                    content_size,
                } => {
                    let offset = self.offset;
                    self.offset += bytes.len() as u64;
                    let out = self.spare_decoded.pop().unwrap_or_default();
                    let decoding = thread::Builder::new()
                        .name("zstd frame".into())
                        .spawn(move || decode(bytes, content_size, offset, out))?;
                    self.in_flight.push_back(decoding);
                }
                Split::Rest(bytes) => self.rest = Some(bytes),
            }
        }
        Ok(())
    }

    /// The next frame decoded on a thread, with `threads` frames after it
    /// decoding while it is read; `None` once there are no more.
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.fill()?;
        let Some(decoding) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let Decoded { bytes, compressed } = decoding
            .join()
            .map_err(|_| io::Error::other("a zstd decoding thread panicked"))??;
        self.spare_compressed.push(compressed);
        self.fill()?;
        Ok(Some(bytes))
    }
}

impl<R: BufRead> FrameDecoder<R> {
    pub fn new(input: R, threads: usize) -> Self {
        FrameDecoder {
            state: State::Frames(Frames {
                input,
                threads: threads.max(1),
                in_flight: VecDeque::new(),
                offset: 0,
                rest: None,
                spare_decoded: Vec::new(),
                spare_compressed: Vec::new(),
            }),
            current: Vec::new(),
            read: 0,
        }
    }
}

impl<R: BufRead> Read for FrameDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.read < self.current.len() {
                let n = buf.len().min(self.current.len() - self.read);
                buf[..n].copy_from_slice(&self.current[self.read..self.read + n]);
                self.read += n;
                return Ok(n);
            }
            match &mut self.state {
                State::Frames(frames) => match frames.next()? {
                    Some(decoded) => {
                        let done = std::mem::replace(&mut self.current, decoded);
                        frames.spare_decoded.push(done);
                        self.read = 0;
                    }
                    None => {
                        let State::Frames(frames) =
                            std::mem::replace(&mut self.state, State::Taken)
                        else {
                            unreachable!("matched above")
                        };
                        match frames.rest {
                            None => return Ok(0),
                            Some(start) => {
                                let input = Cursor::new(start).chain(frames.input);
                                let decoder = zstd::stream::read::Decoder::with_buffer(input)?;
                                self.state = State::Streaming(Box::new(decoder));
                            }
                        }
                    }
                },
                State::Streaming(decoder) => return decoder.read(buf),
                State::Taken => return Ok(0),
            }
        }
    }
}

impl<R: BufRead> Drop for FrameDecoder<R> {
    /// Waits for the frames in flight: no thread outlives the reader.
    fn drop(&mut self) {
        if let State::Frames(frames) = &mut self.state {
            for decoding in frames.in_flight.drain(..) {
                let _ = decoding.join();
            }
        }
    }
}

/// Decodes one whole `frame` of `content_size` bytes into `out`.
fn decode(frame: Vec<u8>, content_size: u64, offset: u64, mut out: Vec<u8>) -> io::Result<Decoded> {
    out.clear();
    out.reserve(content_size as usize);
    let mut context = DCtx::try_create().ok_or_else(|| {
        io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate a zstd context")
    })?;
    // zstd checks the decoded size against the header, and the checksum if
    // there is one.
    context.decompress(&mut out, &frame).map_err(|code| {
        io::Error::other(format!(
            "{} (in the frame at byte {offset})",
            zstd_safe::get_error_name(code)
        ))
    })?;
    Ok(Decoded {
        bytes: out,
        compressed: frame,
    })
}

/// What comes next in the file.
enum Split {
    End,
    /// One whole frame, which announces its decoded size.
    Frame {
        bytes: Vec<u8>,
        content_size: u64,
    },
    /// The start of something to leave to the streaming decoder, as read.
    Rest(Vec<u8>),
}

/// Reads the next frame of `input` whole into `bytes`, if it is one to
/// decode on a thread; otherwise what was read of it.
fn split(input: &mut impl BufRead, mut bytes: Vec<u8>) -> io::Result<Split> {
    bytes.clear();
    if !take(input, 4, &mut bytes)? {
        return Ok(if bytes.is_empty() {
            Split::End
        } else {
            Split::Rest(bytes)
        });
    }
    if u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) != MAGIC
        || !take(input, 1, &mut bytes)?
    {
        return Ok(Split::Rest(bytes));
    }
    let Some(Header {
        length,
        content_size,
        checksum,
    }) = Header::of(bytes[4])
    else {
        return Ok(Split::Rest(bytes));
    };
    if !take(input, length, &mut bytes)? {
        return Ok(Split::Rest(bytes));
    }
    let Some(content_size) =
        content_size.map(|field| field.read(&bytes[bytes.len() - field.len..]))
    else {
        return Ok(Split::Rest(bytes));
    };
    if content_size > MAX_FRAME {
        return Ok(Split::Rest(bytes));
    }
    // No block may be larger than its decoded bytes; a frame that is, is
    // damaged, and the streaming decoder says how.
    let bound = zstd_safe::compress_bound(content_size as usize) as u64 + 64;
    loop {
        if !take(input, 3, &mut bytes)? {
            return Ok(Split::Rest(bytes));
        }
        let n = bytes.len();
        let block = u32::from_le_bytes([bytes[n - 3], bytes[n - 2], bytes[n - 1], 0]);
        let last = block & 1 == 1;
        let size = (block >> 3) as usize;
        let body = match (block >> 1) & 3 {
            // Raw and compressed blocks hold `size` bytes; an RLE block one.
            0 | 2 if size <= MAX_BLOCK => size,
            1 if size <= MAX_BLOCK => 1,
            _ => return Ok(Split::Rest(bytes)),
        };
        if !take(input, body, &mut bytes)? || bytes.len() as u64 > bound {
            return Ok(Split::Rest(bytes));
        }
        if last {
            break;
        }
    }
    if checksum && !take(input, 4, &mut bytes)? {
        return Ok(Split::Rest(bytes));
    }
    Ok(Split::Frame {
        bytes,
        content_size,
    })
}

/// Appends the next `n` bytes of `input` to `bytes`; false if the input
/// ended first (with what there was appended).
fn take(input: &mut impl BufRead, n: usize, bytes: &mut Vec<u8>) -> io::Result<bool> {
    let want = bytes.len() + n;
    while bytes.len() < want {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(false);
        }
        let k = available.len().min(want - bytes.len());
        bytes.extend_from_slice(&available[..k]);
        input.consume(k);
    }
    Ok(true)
}

/// What a frame header's descriptor byte says of the rest of the header.
struct Header {
    /// Bytes of header after the descriptor.
    length: usize,
    /// Where the content size is, if the header has one: the field ends the
    /// header.
    content_size: Option<ContentSize>,
    checksum: bool,
}

struct ContentSize {
    len: usize,
}

impl ContentSize {
    /// The little-endian field's value; a 2-byte one counts from 256.
    fn read(&self, field: &[u8]) -> u64 {
        let mut value = [0u8; 8];
        value[..self.len].copy_from_slice(field);
        let value = u64::from_le_bytes(value);
        if self.len == 2 { value + 256 } else { value }
    }
}

impl Header {
    /// The header a frame descriptor announces; `None` for one with the
    /// reserved bit set or a dictionary, which only the streaming decoder
    /// is to judge.
    fn of(descriptor: u8) -> Option<Header> {
        let reserved = descriptor & 0x08 != 0;
        let dictionary = descriptor & 3 != 0;
        if reserved || dictionary {
            return None;
        }
        let single_segment = descriptor & 0x20 != 0;
        let window = usize::from(!single_segment);
        let content_size = match descriptor >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        Some(Header {
            length: window + content_size,
            content_size: (content_size > 0).then_some(ContentSize { len: content_size }),
            checksum: descriptor & 4 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::format::compression::tests::{compress_at, sample};
    use crate::format::compression::{Compression, ZSTD_FRAME_SIZE as FRAME};

    fn ours(data: &[u8], threads: u32) -> Vec<u8> {
        compress_at(Compression::Zstd, 1, data, threads)
    }

    /// The content sizes of the frames of `file`, as the splitter finds them.
    fn frame_sizes(file: &[u8]) -> Vec<u64> {
        let mut input = file;
        let mut sizes = Vec::new();
        loop {
            match split(&mut input, Vec::new()).unwrap() {
                Split::End => return sizes,
                Split::Frame { content_size, .. } => sizes.push(content_size),
                Split::Rest(_) => panic!("not a frame with a content size"),
            }
        }
    }

    fn decode_with(file: &[u8], threads: usize) -> io::Result<Vec<u8>> {
        let mut decoded = Vec::new();
        FrameDecoder::new(file, threads).read_to_end(&mut decoded)?;
        Ok(decoded)
    }

    #[test]
    fn frames_hold_16_mib_of_nar_each_and_say_so_in_their_headers() {
        let frame = FRAME as u64;
        let data = sample(2 * FRAME + 5);
        assert_eq!(frame_sizes(&ours(&data, 1)), [frame, frame, 5]);
        // Exactly one frame's worth is one frame, no empty one after it.
        assert_eq!(frame_sizes(&ours(&data[..FRAME], 1)), [frame]);
        // An empty NAR still gets a frame, as a zstd file needs one.
        assert_eq!(frame_sizes(&ours(&[], 1)), [0]);
    }

    #[test]
    fn frames_compressed_with_more_zstd_workers_are_the_same_bytes() {
        let data = sample(3 * FRAME + 1000);
        assert!(ours(&data, 1) == ours(&data, 2));
    }

    #[test]
    fn frames_decode_in_order_on_any_number_of_threads() {
        let data = sample(3 * FRAME + 1000);
        let file = ours(&data, 2);
        for threads in [1, 2, 5] {
            assert!(decode_with(&file, threads).unwrap() == data, "{threads}");
        }
    }

    #[test]
    fn a_frame_without_content_size_is_read_by_the_streaming_decoder() {
        // As Nix before 2.35 and this crate before it wrote them: one frame,
        // its size unknown. Then frames of ours after it, also streamed.
        let (old, new) = (sample(3_000_000), sample(FRAME + 10));
        let mut file = Vec::new();
        let mut e = zstd::stream::write::Encoder::new(&mut file, 3).unwrap();
        e.write_all(&old).unwrap();
        e.finish().unwrap();
        file.extend(ours(&new, 1));
        assert!(matches!(
            split(&mut &file[..], Vec::new()).unwrap(),
            Split::Rest(_)
        ));
        assert!(decode_with(&file, 2).unwrap() == [old, new].concat());
    }

    #[test]
    fn frames_after_the_parallel_ones_are_streamed() {
        let (new, old) = (sample(FRAME + 10), sample(100_000));
        let mut file = ours(&new, 1);
        file.extend(zstd::stream::encode_all(&old[..], 3).unwrap());
        assert!(decode_with(&file, 2).unwrap() == [new, old].concat());
    }

    #[test]
    fn a_frame_larger_than_the_limit_is_streamed() {
        let big = vec![7u8; MAX_FRAME as usize + 1];
        let file = zstd::bulk::compress(&big, 1).unwrap();
        assert_eq!(
            zstd_safe::get_frame_content_size(&file).ok(),
            Some(Some(big.len() as u64))
        );
        assert!(matches!(
            split(&mut &file[..], Vec::new()).unwrap(),
            Split::Rest(_)
        ));
        assert!(decode_with(&file, 2).unwrap() == big);
    }

    /// Where the second frame of `file` starts, and the length of its
    /// header after the descriptor.
    fn second_frame(file: &[u8]) -> (usize, usize) {
        let Split::Frame { bytes, .. } = split(&mut &file[..], Vec::new()).unwrap() else {
            panic!("no first frame")
        };
        let start = bytes.len();
        (start, Header::of(file[start + 4]).unwrap().length)
    }

    #[test]
    fn a_frame_that_decodes_to_another_size_than_its_header_says_is_an_error() {
        let data = sample(2 * FRAME + 1000);
        let mut file = ours(&data, 1);
        // The content size ends the header: one less than the frame holds.
        let (start, length) = second_frame(&file);
        let field = start + 5 + length - 4;
        let size = u32::from_le_bytes(file[field..field + 4].try_into().unwrap());
        file[field..field + 4].copy_from_slice(&(size - 1).to_le_bytes());
        let e = decode_with(&file, 2).unwrap_err();
        assert!(
            e.to_string().contains(&format!("frame at byte {start}")),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_block_header_is_an_error() {
        let data = sample(2 * FRAME + 1000);
        let mut file = ours(&data, 1);
        // The first block of the second frame gets the reserved type.
        let (start, length) = second_frame(&file);
        file[start + 5 + length] |= 0b110;
        assert!(decode_with(&file, 2).is_err());
    }

    #[test]
    fn a_cut_file_is_an_error() {
        let data = sample(2 * FRAME + 1000);
        let file = ours(&data, 1);
        for cut in [file.len() - 1, file.len() / 2, 3] {
            assert!(decode_with(&file[..cut], 2).is_err(), "cut at {cut}");
        }
    }
}
