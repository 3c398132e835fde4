//! mk-binary-cache writes flat-file Nix binary caches.
//!
//! Data flows one way: the closure handed over by Nix ([`input::attrs`]) becomes a list
//! of [`format::store_path::PathInfo`]s; each path is serialised as a NAR ([`format::nar`]),
//! hashed ([`format::hash`]) and compressed ([`format::compression`]) in one streaming pass, and
//! described by a [`format::narinfo`]. [`ops::write`] drives that work in parallel and lays
//! out the cache directory.

pub mod format;
pub mod input;
pub mod ops;
pub mod support;
