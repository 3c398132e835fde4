//! The operations on a cache: write it, sign it, verify it, prune it.

pub mod prune;
pub mod sign;
pub mod verify;
pub mod write;
