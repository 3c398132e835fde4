//! mk-binary-cache writes flat-file Nix binary caches.
//!
//! Data flows one way: the closure handed over by Nix ([`input`]) becomes a
//! list of [`format::store_path::PathInfo`]s; each path is serialised as a NAR
//! ([`format::nar`]), hashed ([`format::hash`]) and compressed
//! ([`format::compression`]) in one streaming pass, and described by a
//! [`format::narinfo`]. [`ops::write`] drives that work in parallel and lays
//! out the cache directory; [`ops::sign`] and [`ops::verify`] work on a cache
//! that exists. See ARCHITECTURE.md for the map.

pub mod cache;
pub mod format;
pub mod input;
pub mod ops;
pub mod support;
