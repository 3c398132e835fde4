//! Support code that knows no Nix format: files written atomically, scheduling
//! work over threads, and reporting progress.

pub mod files;
pub mod progress;
pub mod schedule;
pub mod shell;
