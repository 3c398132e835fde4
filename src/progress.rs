//! What the user sees while a cache is written: one line per path and a
//! summary, the form that reads well in a Nix build log.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::narinfo::NarInfo;

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

/// Totals over a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub paths: usize,
    pub nar_bytes: u64,
    pub file_bytes: u64,
}

impl Totals {
    pub fn add(&mut self, info: &NarInfo) {
        self.paths += 1;
        self.nar_bytes += info.nar_size;
        self.file_bytes += info.file_size.unwrap_or(info.nar_size);
    }
}

/// Prints progress to stderr.
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            start: Instant::now(),
            quiet,
        }
    }

    pub fn path_done(&self, info: &NarInfo) {
        if self.quiet {
            return;
        }
        let line = format!(
            "cached {}: NAR {} -> {} {}\n",
            info.store_path.name(),
            human_bytes(info.nar_size),
            info.compression,
            human_bytes(info.file_size.unwrap_or(info.nar_size)),
        );
        // One write per line, so lines from parallel workers never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn finish(&self, verb: &str, totals: &Totals) {
        if self.quiet {
            return;
        }
        let secs = self.elapsed().as_secs_f64();
        let rate = totals.nar_bytes as f64 / secs.max(1e-3);
        eprintln!(
            "{verb} {} paths in {secs:.2} s: NAR {} -> {} ({}/s)",
            totals.paths,
            human_bytes(totals.nar_bytes),
            human_bytes(totals.file_bytes),
            human_bytes(rate as u64),
        );
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
}
