//! The settings of a write, resolved in one place: what `mkBinaryCache`'s
//! attributes ([`super::attrs`]) or `build`'s flags ask for, with every
//! default filled in, as the [`Options`] the writer takes.
//!
//! An option of `mkBinaryCache` is one field of [`Settings`] (its name is
//! the attribute's, in camelCase; `None` or absent is the default), one line
//! here in [`Settings::resolve`], and, on the Nix side, one default in
//! `nix/mk-binary-cache.nix`; `build` gives the same field from its flag.
//!
//! The store directory is Nix's rule: a builder is told it by `NIX_STORE`
//! (Nix sets it in every build's environment), and Nix outside a build reads
//! `NIX_STORE_DIR` ([`crate::input::local_store::store_dir`]). Worker
//! threads: a number given, or every core ([`jobs`]).

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::format::cache_info::{MAX_PRIORITY, Upstreams};
use crate::format::compression::{Compression, CompressionError};
use crate::format::store_path::StorePath;
use crate::ops::write::Options;

/// What a write asks for; `None` is the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// zstd (the default), xz or none.
    #[serde(default, deserialize_with = "compression")]
    pub compression: Option<Compression>,
    /// The compressor's level (default: what `nix copy` uses, zstd 3, xz 6).
    pub compression_level: Option<i64>,
    /// `Priority:` in `nix-cache-info` (none by default).
    pub priority: Option<u64>,
    /// `WantMassQuery:` in `nix-cache-info` (none by default).
    pub want_mass_query: Option<bool>,
    /// A `<hash>.ls` listing beside each narinfo (default: no).
    pub write_nar_listing: Option<bool>,
    /// A `debuginfo/` index of `lib/debug/.build-id` files (default: no).
    pub index_debug_info: Option<bool>,
}

/// A setting that no cache can have.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{0}")]
    Level(CompressionError),
    #[error("priority {0} is not an integer from 0 to {MAX_PRIORITY} (Nix reads it as a C int)")]
    Priority(u64),
}

impl SettingsError {
    /// The attribute of `mkBinaryCache` at fault.
    pub fn attribute(&self) -> &'static str {
        match self {
            SettingsError::Level(_) => "compressionLevel",
            SettingsError::Priority(_) => "priority",
        }
    }
}

/// What a write needs beside its settings.
#[derive(Debug, Clone)]
pub struct Context {
    pub store_dir: String,
    /// Worker threads, resolved ([`jobs`]).
    pub jobs: usize,
    /// What `store-paths` lists.
    pub root_paths: Vec<StorePath>,
}

impl Settings {
    /// The options of a write with these settings.
    pub fn resolve(self, context: Context) -> Result<Options, SettingsError> {
        let compression = self.compression.unwrap_or_default();
        let level = match self.compression_level {
            None => compression.default_level(),
            Some(level) => compression
                .check_level(i32::try_from(level).unwrap_or(i32::MAX))
                .map_err(SettingsError::Level)?,
        };
        let priority = match self.priority {
            Some(p) if p > MAX_PRIORITY => return Err(SettingsError::Priority(p)),
            p => p,
        };
        Ok(Options {
            compression,
            level,
            jobs: context.jobs,
            store_dir: context.store_dir,
            priority,
            want_mass_query: self.want_mass_query,
            root_paths: context.root_paths,
            write_nar_listing: self.write_nar_listing.unwrap_or(false),
            index_debug_info: self.index_debug_info.unwrap_or(false),
            // Only `build --to` and `publish` leave out what upstreams serve.
            upstreams: Upstreams::default(),
        })
    }
}

/// Worker threads: `requested` (at least one), or every core for none.
pub fn jobs(requested: Option<usize>) -> usize {
    match requested {
        Some(n) => n.max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// A compression by its name, or none for a null.
fn compression<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Compression>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|name| name.parse().map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            store_dir: "/nix/store".to_owned(),
            jobs: 2,
            root_paths: Vec::new(),
        }
    }

    #[test]
    fn no_settings_is_what_mk_binary_cache_does_by_default() {
        let options = Settings::default().resolve(context()).unwrap();
        let default = Options::default();
        assert_eq!(
            (options.compression, options.level),
            (default.compression, default.level)
        );
        assert_eq!(options.priority, None);
        assert_eq!(options.want_mass_query, None);
        assert!(!options.write_nar_listing && !options.index_debug_info);
    }

    #[test]
    fn the_level_defaults_to_that_of_the_compression_and_is_checked_against_it() {
        let xz = Settings {
            compression: Some(Compression::Xz),
            ..Settings::default()
        };
        assert_eq!(xz.clone().resolve(context()).unwrap().level, 6);
        let too_high = Settings {
            compression_level: Some(10),
            ..xz.clone()
        };
        let e = too_high.resolve(context()).unwrap_err();
        assert_eq!(e.attribute(), "compressionLevel");
        // Far out of an i32's range is out of range too, not wrapped round.
        let huge = Settings {
            compression_level: Some(1 << 40),
            ..xz
        };
        assert!(huge.resolve(context()).is_err());
    }

    #[test]
    fn a_priority_nix_cannot_read_is_refused() {
        let settings = Settings {
            priority: Some(MAX_PRIORITY + 1),
            ..Settings::default()
        };
        let e = settings.resolve(context()).unwrap_err();
        assert_eq!(e.attribute(), "priority");
        assert!(e.to_string().contains("2147483648"), "{e}");
    }

    #[test]
    fn no_jobs_means_every_core_and_zero_means_one() {
        assert_eq!(jobs(Some(3)), 3);
        assert_eq!(jobs(Some(0)), 1);
        assert!(jobs(None) >= 1);
    }
}
