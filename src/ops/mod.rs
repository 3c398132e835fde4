//! The operations on a cache: write it, sign it, verify it, pin its releases,
//! prune it, and (with the `publish` feature) upload it to object storage.

pub mod pins;
pub mod prune;
#[cfg(feature = "publish")]
pub mod publish;
pub mod sign;
pub mod verify;
pub mod write;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::format::cache_info::{self, CacheInfo, CacheInfoError};

/// Why an existing cache could not be opened.
#[derive(Debug, Error)]
pub enum OpenCacheError {
    #[error("'{0}' is not a binary cache: it has no nix-cache-info")]
    NotACache(PathBuf),
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("'{path}': {source}")]
    CacheInfo {
        path: PathBuf,
        source: CacheInfoError,
    },
}

/// The `nix-cache-info` of the cache at `dir`, which an operation on an
/// existing cache reads first: a directory without one is not a cache.
pub fn read_cache_info(dir: &Path) -> Result<CacheInfo, OpenCacheError> {
    let path = dir.join(cache_info::FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(OpenCacheError::NotACache(dir.to_owned()));
        }
        Err(source) => return Err(OpenCacheError::Read { path, source }),
    };
    text.parse()
        .map_err(|source| OpenCacheError::CacheInfo { path, source })
}
