//! The operations on a cache: write it, sign it, verify it, prune it, and (with the
//! `publish` feature) upload it to object storage.

pub mod prune;
#[cfg(feature = "publish")]
pub mod publish;
pub mod sign;
pub mod verify;
pub mod write;
