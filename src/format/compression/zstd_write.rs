//! zstd as Nix 2.35 and later write it: a series of independent frames, a
//! new one every [`FRAME_SIZE`] bytes of NAR. Each frame is compressed whole,
//! its size pledged so that its header carries `Frame_Content_Size` (and no
//! checksum), by a context with worker threads (`NbWorkers` of 1): Nix turns
//! them on by default, and their output is the same for any number of
//! workers but differs from the single-threaded mode's. Any zstd decoder
//! reads the series as one stream; one that knows where frames start can
//! decode them in parallel (`super::zstd_read`).
//!
//! A frame is compressed on the writing thread with the worker's context
//! ([`Scratch`]) or, for a NAR of several frames given several threads, by a
//! pool of threads with a context each, and written in order: the same bytes
//! either way.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

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
    fn context(&mut self, level: i32) -> io::Result<()> {
        if let Some(context) = &mut self.context
            && configure(context, level).is_ok()
        {
            return Ok(());
        }
        // None yet, or one that a failed frame left unusable.
        let mut context = new_context()?;
        configure(&mut context, level)?;
        self.context = Some(context);
        Ok(())
    }
}

fn new_context() -> io::Result<CCtx<'static>> {
    CCtx::try_create()
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate a zstd context"))
}

/// Sets `context` up as Nix does: the level, and worker threads. One worker
/// gives the bytes of any other number of them; a frame of up to 512 KiB is
/// compressed on the calling thread all the same.
fn configure(context: &mut CCtx<'static>, level: i32) -> io::Result<()> {
    context
        .reset(ResetDirective::SessionAndParameters)
        .map_err(zstd_error)?;
    context
        .set_parameter(CParameter::CompressionLevel(level))
        .map_err(zstd_error)?;
    context
        .set_parameter(CParameter::NbWorkers(1))
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
    /// The pool, when frames are compressed on threads of their own.
    pool: Option<Pool>,
    wrote_a_frame: bool,
}

impl<'w, W: Write> Frames<'w, W> {
    /// A writer of a NAR of about `nar_size` bytes (which only sizes
    /// buffers and picks the threads) at `level`. With `threads` above one
    /// and more than one frame to write, frames are compressed `threads` at
    /// a time.
    pub(super) fn new(
        sink: W,
        level: i32,
        nar_size: u64,
        threads: u32,
        scratch: &'w mut Scratch,
    ) -> io::Result<Self> {
        let pool = if threads > 1 && nar_size > FRAME_SIZE as u64 {
            Some(Pool::new(level, threads as usize)?)
        } else {
            scratch.context(level)?;
            None
        };
        scratch.frame.clear();
        scratch
            .frame
            .reserve(nar_size.min(FRAME_SIZE as u64) as usize);
        Ok(Frames {
            sink,
            scratch,
            pool,
            wrote_a_frame: false,
        })
    }

    /// Compresses the frame filled so far and writes it, or hands it to the
    /// pool.
    fn end_frame(&mut self) -> io::Result<()> {
        self.wrote_a_frame = true;
        match &mut self.pool {
            Some(pool) => {
                let next = pool
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(FRAME_SIZE));
                let frame = std::mem::replace(&mut self.scratch.frame, next);
                pool.submit(frame, &mut self.sink)
            }
            None => {
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
        }
    }

    /// Writes the last frame (an empty one if the NAR was empty: a zstd
    /// file has at least one) and waits for the pool; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.scratch.frame.is_empty() || !self.wrote_a_frame {
            self.end_frame()?;
        }
        if let Some(pool) = &mut self.pool {
            pool.drain(&mut self.sink)?;
        }
        let Frames { sink, pool, .. } = self;
        drop(pool);
        Ok(sink)
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

/// A frame to compress, a buffer for its compressed bytes, and where they
/// go.
struct Job {
    frame: Vec<u8>,
    compressed: Vec<u8>,
    done: SyncSender<io::Result<Done>>,
}

/// A compressed frame, and the frame's buffer for the next one.
struct Done {
    compressed: Vec<u8>,
    frame: Vec<u8>,
}

/// Threads compressing frames, each with a context of its own, while the
/// writer fills the next frame. At most `threads` frames are in flight
/// (compressing is slower than filling, so that keeps every thread busy),
/// so memory is bounded whatever the NAR's size: about 70 MiB a thread at
/// the default level, frames and contexts together.
struct Pool {
    jobs: Option<Sender<Job>>,
    /// The results of the frames in flight, in the order they are written.
    in_flight: VecDeque<Receiver<io::Result<Done>>>,
    /// Buffers of frames written already, for the next frames: no frame
    /// costs fresh memory (and its page faults) once the first few are
    /// written.
    spare: Vec<Vec<u8>>,
    spare_compressed: Vec<Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    limit: usize,
}

impl Pool {
    fn new(level: i32, threads: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut pool = Pool {
            jobs: Some(jobs),
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            spare_compressed: Vec::new(),
            workers: Vec::new(),
            limit: threads,
        };
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let worker = thread::Builder::new()
                .name("zstd frames".into())
                .spawn(move || compress_jobs(&queue, level))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Hands `frame` to a thread, first writing finished frames to `sink`
    /// while too many are in flight.
    fn submit(&mut self, frame: Vec<u8>, sink: &mut impl Write) -> io::Result<()> {
        while self.in_flight.len() >= self.limit {
            self.write_next(sink)?;
        }
        let (done, result) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().expect("jobs are taken only on drop");
        let compressed = self.spare_compressed.pop().unwrap_or_default();
        jobs.send(Job {
            frame,
            compressed,
            done,
        })
        .map_err(|_| pool_died())?;
        self.in_flight.push_back(result);
        Ok(())
    }

    /// Writes the oldest frame in flight to `sink` once it is compressed.
    fn write_next(&mut self, sink: &mut impl Write) -> io::Result<()> {
        let Some(result) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let Done {
            compressed,
            mut frame,
        } = result.recv().map_err(|_| pool_died())??;
        sink.write_all(&compressed)?;
        frame.clear();
        self.spare.push(frame);
        self.spare_compressed.push(compressed);
        Ok(())
    }

    fn drain(&mut self, sink: &mut impl Write) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.write_next(sink)?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Stops the threads: they finish the frame at hand and see no more.
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn pool_died() -> io::Error {
    io::Error::other("a zstd compression thread stopped")
}

/// A pool thread: compresses the frames it takes from `queue` until the
/// writer is gone.
fn compress_jobs(queue: &Mutex<Receiver<Job>>, level: i32) {
    let mut context = None;
    let mut out = Vec::new();
    loop {
        let job = queue
            .lock()
            .map_err(drop)
            .and_then(|q| q.recv().map_err(drop));
        let Ok(Job {
            frame,
            mut compressed,
            done,
        }) = job
        else {
            return;
        };
        let result = (|| {
            let context = match &mut context {
                Some(context) => context,
                empty => {
                    let mut context = new_context()?;
                    configure(&mut context, level)?;
                    empty.insert(context)
                }
            };
            compressed.clear();
            compress_frame(context, &frame, &mut out, |bytes| {
                compressed.extend_from_slice(bytes);
                Ok(())
            })?;
            Ok(compressed)
        })();
        // A context whose frame failed is not used again (zstd may leave
        // it unusable); the next frame gets a new one.
        if result.is_err() {
            context = None;
        }
        let _ = done.send(result.map(|compressed| Done { compressed, frame }));
    }
}
