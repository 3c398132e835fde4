//! Support code that knows no Nix format: files written atomically, scheduling
//! work over threads, reporting progress, interrupts, and handing over to a
//! program installed beside this one.

pub mod error_line;
pub mod files;
pub mod graph;
pub mod interrupt;
pub mod progress;
pub mod schedule;
pub mod shell;
pub mod sibling;
