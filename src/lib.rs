//! mk-binary-cache writes flat-file Nix binary caches.
//!
//! Data flows one way: the closure handed over by Nix ([`attrs`]) becomes a list
//! of [`store_path::PathInfo`]s; each path is serialised as a NAR ([`nar`]),
//! hashed ([`hash`]) and compressed ([`compression`]) in one streaming pass, and
//! described by a [`narinfo`]. [`cache`] drives that work in parallel and lays
//! out the cache directory.

pub mod attrs;
pub mod build;
pub mod cache;
pub mod cache_info;
pub mod closure;
pub mod compression;
pub mod debuginfo;
pub mod exclude;
pub mod hash;
pub mod listing;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod progress;
pub mod prune;
pub mod schedule;
pub mod sign_cache;
pub mod signing;
pub mod store_path;
pub mod verify;
