//! What the user sees while a cache is written (or checked).
//!
//! Two forms, picked by [`Style::for_stderr`]:
//! - [`Style::Lines`], for build logs and anything that is not a terminal:
//!   one line per path as it is done, then a summary with totals and
//!   throughput. The lines gather in a buffer that goes out a few times a
//!   second, whole lines in one `write`: a closure of 10,000 small paths
//!   would otherwise cost 10,000 writes, and as many wake-ups of whatever
//!   reads the log (Nix), on the cores the work needs.
//! - [`Style::Bar`], on a terminal: one line redrawn in place a few times a
//!   second, with paths and bytes done, the rate and the time left, then the
//!   same summary.
//!
//! The work reports through a shared `&Progress`: [`Progress::begin`] with
//! what there is to do, [`Progress::advance`] as bytes go through,
//! [`Progress::item_done`] per path (or, where a path's line comes later
//! than its bytes, as a narinfo waits for its references,
//! [`Progress::path_done`] when the bytes are through and
//! [`Progress::log`] with the line), and [`Progress::finish`] at the end.
//!
//! The bar's time left comes from the pace of the last few seconds
//! ([`Pace`]), not from each redraw's: a path that stalls the bytes for a
//! moment does not make it jump.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::interrupt;

/// How often the bar is redrawn, or gathered lines written.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// Sizes in the binary units Nix prints.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `n` things, the word in the singular for one: `1 path`, `2 paths`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration as `m:ss`, or `h:mm:ss` from an hour on.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Totals over a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub paths: usize,
    pub nar_bytes: u64,
    pub file_bytes: u64,
}

impl Totals {
    /// Counts one path of `nar_bytes`, stored in `file_bytes`.
    pub fn add(&mut self, nar_bytes: u64, file_bytes: u64) {
        self.paths += 1;
        self.nar_bytes += nar_bytes;
        self.file_bytes += file_bytes;
    }
}

/// The form progress takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Nothing at all.
    Quiet,
    /// One line per path and a summary.
    Lines,
    /// A bar redrawn in place, and a summary.
    Bar,
}

impl Style {
    /// A bar when stderr is a terminal, lines otherwise.
    pub fn for_stderr() -> Self {
        if io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// Counters shared with the redrawing thread.
#[derive(Default)]
struct Counters {
    total_paths: AtomicUsize,
    total_bytes: AtomicU64,
    done_paths: AtomicUsize,
    done_bytes: AtomicU64,
    stop: AtomicBool,
}

/// Reports progress on stderr; see the module documentation.
pub struct Progress {
    style: Style,
    start: Instant,
    counters: Arc<Counters>,
    /// Lines not yet written, in lines style.
    lines: Arc<Mutex<String>>,
    /// The thread that redraws the bar, or writes the gathered lines.
    redraw: Mutex<Option<JoinHandle<()>>>,
}

impl Progress {
    /// Lines, or nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self::with_style(if quiet { Style::Quiet } else { Style::Lines })
    }

    pub fn with_style(style: Style) -> Self {
        Progress {
            style,
            start: Instant::now(),
            counters: Arc::default(),
            lines: Arc::default(),
            redraw: Mutex::new(None),
        }
    }

    /// Says how much work there is: `paths` items of `bytes` in all. May be
    /// called again to add more.
    pub fn begin(&self, paths: usize, bytes: u64) {
        let c = &self.counters;
        c.total_paths.fetch_add(paths, Ordering::Relaxed);
        c.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut redraw = self.redraw.lock().unwrap();
        if redraw.is_some() {
            return;
        }
        let counters = Arc::clone(&self.counters);
        let start = self.start;
        *redraw = match self.style {
            Style::Quiet => None,
            Style::Lines => {
                let lines = Arc::clone(&self.lines);
                Some(thread::spawn(move || {
                    while !counters.stop.load(Ordering::Relaxed) {
                        write_lines(&lines);
                        thread::park_timeout(REDRAW_EVERY);
                    }
                }))
            }
            Style::Bar => Some(thread::spawn(move || {
                let mut pace = Pace::default();
                // After an interrupt, its line is the last word.
                while !counters.stop.load(Ordering::Relaxed) && !interrupt::requested() {
                    let elapsed = start.elapsed();
                    let done = counters.done_bytes.load(Ordering::Relaxed);
                    let rate = pace.update(elapsed, done);
                    draw(&bar_line(&counters, rate, terminal_width()));
                    thread::park_timeout(REDRAW_EVERY);
                }
            })),
        };
    }

    /// Counts `bytes` more of work done.
    pub fn advance(&self, bytes: u64) {
        self.counters.done_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One item is done; in lines style, `line` says what.
    pub fn item_done(&self, line: impl fmt::Display) {
        self.path_done();
        self.log(line);
    }

    /// Counts one item whose bytes are all through, in the bar.
    pub fn path_done(&self) {
        self.counters.done_paths.fetch_add(1, Ordering::Relaxed);
    }

    /// In lines style, a line about an item [`Self::path_done`] counted.
    pub fn log(&self, line: impl fmt::Display) {
        if self.style == Style::Lines {
            use fmt::Write as _;
            let _ = writeln!(self.lines.lock().unwrap(), "{line}");
        }
    }

    /// A line of its own, above the bar if there is one.
    pub fn message(&self, line: &str) {
        match self.style {
            Style::Quiet => {}
            // After the lines gathered before it, and at once: messages are
            // few, and say what the run is about to do.
            Style::Lines => {
                let mut lines = self.lines.lock().unwrap();
                lines.push_str(line);
                lines.push('\n');
                drop(lines);
                write_lines(&self.lines);
            }
            // The next redraw puts the bar back under the line.
            Style::Bar => write_line(&format!("\r\x1b[2K{line}")),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops the bar, if any, and prints the summary:
    /// `<verb> N paths in S s: NAR X -> Y (R/s)`.
    pub fn finish(&self, verb: &str, totals: &Totals) {
        self.finish_with(verb, totals, None);
    }

    /// [`Self::finish`], with `tail` after the summary, on the same line.
    pub fn finish_with(&self, verb: &str, totals: &Totals, tail: Option<&str>) {
        self.stop_redrawing();
        if self.style == Style::Quiet {
            return;
        }
        let mut line = summary_line(verb, totals, self.elapsed());
        if let Some(tail) = tail {
            line.push_str("; ");
            line.push_str(tail);
        }
        write_line(&line);
    }

    /// Stops the bar and clears its line, or writes the lines gathered.
    fn stop_redrawing(&self) {
        if let Some(handle) = self.redraw.lock().unwrap().take() {
            self.counters.stop.store(true, Ordering::Relaxed);
            handle.thread().unpark();
            let _ = handle.join();
            if self.style == Style::Bar {
                draw("");
            }
        }
        write_lines(&self.lines);
    }
}

impl Drop for Progress {
    /// Leaves the terminal clean, and the log whole, when the work stops
    /// early, on an error.
    fn drop(&mut self) {
        self.stop_redrawing();
    }
}

/// The summary line: `<verb> N paths in S s: NAR X -> Y (ratio R, T/s)`,
/// the ratio being NAR bytes over file bytes.
pub fn summary_line(verb: &str, totals: &Totals, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = totals.nar_bytes as f64 / secs.max(1e-3);
    let ratio = if totals.file_bytes == 0 {
        String::new()
    } else {
        format!(
            "ratio {:.2}, ",
            totals.nar_bytes as f64 / totals.file_bytes as f64
        )
    };
    format!(
        "{verb} {} in {secs:.2} s: NAR {} -> {} ({ratio}{}/s)",
        count(totals.paths, "path", "paths"),
        human_bytes(totals.nar_bytes),
        human_bytes(totals.file_bytes),
        human_bytes(rate as u64),
    )
}

/// How many seconds it takes the pace of the past to count half as much
/// as it did: long enough to ride over a stall, short enough to follow a
/// lasting change (a run of small paths after large ones).
const PACE_HALF_LIFE: f64 = 4.0;

/// The rate of bytes done, averaged over the last few seconds, with weights
/// halving every [`PACE_HALF_LIFE`] seconds into the past.
#[derive(Debug, Default)]
struct Pace {
    /// When the last count was taken, and what it was.
    last: Option<(Duration, u64)>,
    /// Bytes per second; none before two counts.
    rate: Option<f64>,
}

impl Pace {
    /// Takes the count `done` at `elapsed` since the start; returns the
    /// rate in bytes per second, 0 while it is not known yet.
    fn update(&mut self, elapsed: Duration, done: u64) -> f64 {
        let Some((then, before)) = self.last else {
            self.last = Some((elapsed, done));
            return 0.0;
        };
        let dt = elapsed.saturating_sub(then).as_secs_f64();
        if dt > 0.0 {
            let sample = done.saturating_sub(before) as f64 / dt;
            self.rate = Some(match self.rate {
                // The first: the average since the start.
                None => done as f64 / elapsed.as_secs_f64(),
                Some(rate) => {
                    let weight = 1.0 - 0.5f64.powf(dt / PACE_HALF_LIFE);
                    rate + weight * (sample - rate)
                }
            });
            self.last = Some((elapsed, done));
        }
        self.rate.unwrap_or(0.0)
    }
}

/// The bar's text: `[####----] 3/10 paths  1.0 MiB/4.0 MiB  512.0 KiB/s  0:06 left`,
/// at `rate` bytes a second, the bar itself shortened to fit `width` columns.
fn bar_line(c: &Counters, rate: f64, width: usize) -> String {
    let total_paths = c.total_paths.load(Ordering::Relaxed);
    let done_paths = c.done_paths.load(Ordering::Relaxed);
    let total_bytes = c.total_bytes.load(Ordering::Relaxed);
    // Nothing counts past the total, even if the estimate was short.
    let done_bytes = c.done_bytes.load(Ordering::Relaxed).min(total_bytes);
    let left = if done_bytes == 0 || rate < 1.0 {
        "--:--".to_owned()
    } else {
        human_duration(Duration::from_secs_f64(
            (total_bytes - done_bytes) as f64 / rate,
        ))
    };
    let text = format!(
        " {done_paths}/{total_paths} paths  {}/{}  {}/s  {left} left",
        human_bytes(done_bytes),
        human_bytes(total_bytes),
        human_bytes(rate as u64),
    );
    let bar_width = width.saturating_sub(text.len() + 3).min(40);
    if bar_width < 5 {
        return text
            .trim_start()
            .chars()
            .take(width.saturating_sub(1))
            .collect();
    }
    let fraction = if total_bytes == 0 {
        if total_paths == 0 {
            1.0
        } else {
            done_paths as f64 / total_paths as f64
        }
    } else {
        done_bytes as f64 / total_bytes as f64
    };
    let filled = ((fraction * bar_width as f64) as usize).min(bar_width);
    format!(
        "[{}{}]{text}",
        "#".repeat(filled),
        "-".repeat(bar_width - filled)
    )
}

/// Replaces the current terminal line with `text`.
fn draw(text: &str) {
    let _ = write!(io::stderr().lock(), "\r\x1b[2K{text}");
}

fn write_line(line: &str) {
    let _ = io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

/// Writes the lines gathered in `lines`, if any, and empties it. The lock
/// is held while writing, so that two writers keep the lines' order.
fn write_lines(lines: &Mutex<String>) {
    let mut lines = lines.lock().unwrap();
    if !lines.is_empty() {
        let _ = io::stderr().lock().write_all(lines.as_bytes());
        lines.clear();
    }
}

/// Columns of the terminal on stderr; 80 when it cannot be told.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes one winsize into the zeroed struct given.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(150 << 20), "150.0 MiB");
    }

    #[test]
    fn human_duration_shows_hours_only_when_needed() {
        assert_eq!(human_duration(Duration::from_secs(7)), "0:07");
        assert_eq!(human_duration(Duration::from_secs(754)), "12:34");
        assert_eq!(human_duration(Duration::from_secs(3723)), "1:02:03");
    }

    fn counters(paths: (usize, usize), bytes: (u64, u64)) -> Counters {
        let c = Counters::default();
        c.done_paths.store(paths.0, Ordering::Relaxed);
        c.total_paths.store(paths.1, Ordering::Relaxed);
        c.done_bytes.store(bytes.0, Ordering::Relaxed);
        c.total_bytes.store(bytes.1, Ordering::Relaxed);
        c
    }

    #[test]
    fn bar_shows_paths_bytes_rate_and_time_left() {
        // A quarter of the bytes in 2 s: 6 more seconds at that rate.
        let c = counters((3, 10), (1 << 20, 4 << 20));
        let line = bar_line(&c, 512.0 * 1024.0, 80);
        let bar = format!("[{}{}]", "#".repeat(6), "-".repeat(19));
        assert_eq!(
            line,
            format!("{bar} 3/10 paths  1.0 MiB/4.0 MiB  512.0 KiB/s  0:06 left")
        );
        assert_eq!(line.len(), 79);
    }

    #[test]
    fn bar_fits_narrow_terminals_and_knows_no_rate_at_first() {
        let c = counters((0, 10), (0, 4 << 20));
        let line = bar_line(&c, 0.0, 30);
        assert!(line.chars().count() < 30, "{line:?}");
        assert!(line.starts_with("0/10 paths"), "{line:?}");
        let wide = bar_line(&c, 0.0, 200);
        assert!(wide.ends_with("--:-- left"), "{wide:?}");
        assert!(
            wide.starts_with(&format!("[{}]", "-".repeat(40))),
            "{wide:?}"
        );
    }

    #[test]
    fn summary_gives_totals_and_throughput() {
        let totals = Totals {
            paths: 4,
            nar_bytes: 3 << 20,
            file_bytes: 1 << 20,
        };
        assert_eq!(
            summary_line("cached", &totals, Duration::from_secs(2)),
            "cached 4 paths in 2.00 s: NAR 3.0 MiB -> 1.0 MiB (ratio 3.00, 1.5 MiB/s)"
        );
    }

    #[test]
    fn summary_of_one_path_says_path() {
        let totals = Totals {
            paths: 1,
            nar_bytes: 2048,
            file_bytes: 1024,
        };
        assert_eq!(
            summary_line("cached", &totals, Duration::from_secs(1)),
            "cached 1 path in 1.00 s: NAR 2.0 KiB -> 1.0 KiB (ratio 2.00, 2.0 KiB/s)"
        );
    }

    // Bytes arriving in bursts, 10 MB in one redraw and none in the next
    // four, are 10 MB/s; the redraws' own rates go from 0 to 50 MB/s.
    #[test]
    fn pace_rides_over_bursts() {
        let mut pace = Pace::default();
        let mut done = 0;
        let mut rates = Vec::new();
        for tick in 1..=200u32 {
            if tick % 5 == 0 {
                done += 10_000_000;
            }
            rates.push(pace.update(Duration::from_millis(200) * tick, done));
        }
        for rate in &rates[100..] {
            assert!((8e6..12e6).contains(rate), "{rate} in {rates:?}");
        }
    }

    // A narinfo waits for its references; the bar must not: the path counts
    // once its bytes are through, and its line comes when it is published.
    #[test]
    fn a_path_counts_in_the_bar_before_its_line() {
        let progress = Progress::with_style(Style::Quiet);
        progress.begin(2, 10);
        progress.advance(10);
        progress.path_done();
        progress.path_done();
        let c = &progress.counters;
        assert_eq!(c.done_paths.load(Ordering::Relaxed), 2);
        assert!(bar_line(c, 1.0, 80).contains(" 2/2 paths "));
        // The line of a path already counted adds no count.
        progress.log("cached a");
        assert_eq!(c.done_paths.load(Ordering::Relaxed), 2);
    }

    // A lasting change of pace shows within a few half-lives.
    #[test]
    fn pace_follows_a_lasting_change() {
        let mut pace = Pace::default();
        let mut done = 0u64;
        let mut rate = 0.0;
        for tick in 1..=300u32 {
            done += if tick <= 100 { 2_000_000 } else { 200_000 };
            rate = pace.update(Duration::from_millis(200) * tick, done);
        }
        // 40 s at 1 MB/s after 20 s at 10 MB/s.
        assert!((0.9e6..1.1e6).contains(&rate), "{rate}");
    }
}
