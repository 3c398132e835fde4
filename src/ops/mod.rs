//! The operations on a cache: write it, sign it, verify it.

pub mod sign;
pub mod verify;
pub mod write;
