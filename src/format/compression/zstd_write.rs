//! zstd as Nix 2.35 and later write it: a series of independent frames, a
//! new one every [`FRAME_SIZE`] bytes of NAR. Each frame is compressed whole,
//! its size pledged so that its header carries `Frame_Content_Size` (and no
//! checksum), by a context with worker threads (`NbWorkers` of 1 or more): Nix turns
//! them on by default, and their output is the same for any number of
//! workers but differs from the single-threaded mode's. Any zstd decoder
//! reads the series as one stream; one that knows where frames start can
//! decode them in parallel (`super::zstd_read`).
//!
//! Frames are compressed one after another by the worker's context
//! ([`Scratch`]) with as many zstd workers as the path is given threads:
//! zstd splits a frame into jobs (8 MiB at the default level) and compresses
//! them at once. That is Nix's own way; compressing several frames at once,
//! each on a context of its own, cost a fifth more CPU and twice the memory
//! on a 1 GiB file for no gain in time (BENCHMARKS.md).

use std::io::{self, Write};

use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

/// Bytes of NAR in each frame but the last, as Nix writes them.
pub const FRAME_SIZE: usize = 16 << 20;

/// What a worker keeps from one NAR to the next: a context, the frame being
/// filled, and the buffer compressed bytes leave through. Making a context
/// and clearing its tables cost more than compressing a NAR of a few KiB, so
/// a closure of many small paths spent most of its compression time there.
#[derive(Default)]
pub(super) struct Scratch {
    context: Option<CCtx<'static>>,
    frame: Vec<u8>,
    out: Vec<u8>,
}

impl Scratch {
    /// Sets the context up afresh for `level`: nothing of the previous NAR's
    /// parameters or session is left, so the bytes are a new context's.
    fn context(&mut self, level: i32, threads: u32) -> io::Result<()> {
        if let Some(context) = &mut self.context
            && configure(context, level, threads).is_ok()
        {
            return Ok(());
        }
        // None yet, or one that a failed frame left unusable.
        let mut context = new_context()?;
        configure(&mut context, level, threads)?;
        self.context = Some(context);
        Ok(())
    }
}

fn new_context() -> io::Result<CCtx<'static>> {
    CCtx::try_create()
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate a zstd context"))
}

/// Sets `context` up as Nix does: the level, and `threads` workers (at
/// least one). Any number of workers gives the same bytes; a frame of up to
/// 512 KiB is compressed on the calling thread all the same.
fn configure(context: &mut CCtx<'static>, level: i32, threads: u32) -> io::Result<()> {
    context
        .reset(ResetDirective::SessionAndParameters)
        .map_err(zstd_error)?;
    context
        .set_parameter(CParameter::CompressionLevel(level))
        .map_err(zstd_error)?;
    context
        .set_parameter(CParameter::NbWorkers(threads.max(1)))
        .map_err(zstd_error)?;
    Ok(())
}

fn zstd_error(code: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

/// Compresses `frame` as one frame pledged at its size, handing the bytes
/// to `emit` in pieces of at most `out.len()`. Like Nix, the whole frame is
/// given with `ZSTD_e_end` through an output buffer of zstd's recommended
/// size, so zstd takes the same paths as Nix's call.
fn compress_frame(
    context: &mut CCtx<'static>,
    frame: &[u8],
    out: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    context
        .reset(ResetDirective::SessionOnly)
        .map_err(zstd_error)?;
    context
        .set_pledged_src_size(Some(frame.len() as u64))
        .map_err(zstd_error)?;
    out.resize(CCtx::out_size(), 0);
    let mut input = InBuffer::around(frame);
    loop {
        let mut output = OutBuffer::around(&mut out[..]);
        let left = context
            .compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_end)
            .map_err(zstd_error)?;
        emit(output.as_slice())?;
        if left == 0 {
            return Ok(());
        }
    }
}

/// A writer of framed zstd; [`Frames::finish`] writes the last frame.
pub struct Frames<'w, W: Write> {
    sink: W,
    scratch: &'w mut Scratch,
    wrote_a_frame: bool,
}

impl<'w, W: Write> Frames<'w, W> {
    /// A writer of a NAR of about `nar_size` bytes (which only sizes the
    /// frame buffer) at `level`, whose context has `threads` workers.
    pub(super) fn new(
        sink: W,
        level: i32,
        nar_size: u64,
        threads: u32,
        scratch: &'w mut Scratch,
    ) -> io::Result<Self> {
        scratch.context(level, threads)?;
        scratch.frame.clear();
        scratch
            .frame
            .reserve(nar_size.min(FRAME_SIZE as u64) as usize);
        Ok(Frames {
            sink,
            scratch,
            wrote_a_frame: false,
        })
    }

    /// Compresses the frame filled so far and writes it.
    fn end_frame(&mut self) -> io::Result<()> {
        self.wrote_a_frame = true;
        let Scratch {
            context,
            frame,
            out,
        } = &mut *self.scratch;
        let context = context.as_mut().expect("set up by Frames::new");
        let sink = &mut self.sink;
        compress_frame(context, frame, out, |bytes| sink.write_all(bytes))?;
        frame.clear();
        Ok(())
    }

    /// Writes the last frame (an empty one if the NAR was empty: a zstd
    /// file has at least one); returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.scratch.frame.is_empty() || !self.wrote_a_frame {
            self.end_frame()?;
        }
        Ok(self.sink)
    }
}

impl<W: Write> Write for Frames<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = FRAME_SIZE - self.scratch.frame.len();
        let n = room.min(buf.len());
        self.scratch.frame.extend_from_slice(&buf[..n]);
        if self.scratch.frame.len() == FRAME_SIZE {
            self.end_frame()?;
        }
        Ok(n)
    }

    /// Frames are written whole: there is nothing to flush before the end.
    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}
