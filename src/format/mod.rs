//! The Nix formats: what the bytes of a binary cache mean. Nothing here
//! reads the input or knows about the commands.

pub mod cache_info;
pub mod compression;
pub mod debuginfo;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod pin;
pub mod signing;
pub mod store_path;
