//! Support code that knows no Nix format: scheduling work over threads and
//! reporting progress.

pub mod progress;
pub mod schedule;
