//! Named pins (`mk-binary-cache pin` and `pins`): the roots of a cache's
//! releases under a name, one revision per release, each pin with the
//! retention policy `prune` applies (see `format::pin` for the file).
//!
//! [`pin`] records paths the cache holds already as a new revision (or
//! only changes a pin's policy); `build --to --pin` records the paths it
//! writes (`ops::write::update_cache_pinned`). Both add the roots to
//! `store-paths` too, which in a cache with pins lists the roots of the
//! retained revisions (and those added without a pin). [`list`] says what
//! each pin and revision holds: its paths, their bytes, and the bytes only
//! it holds, which a prune would free without it.

pub mod files;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cache::{CacheDir, CacheDirError, CacheLock};
use crate::format::pin::Pin;
use crate::format::store_path::StorePath;
use crate::input::local_store::{self, BuildError};
use crate::ops::prune::PruneError;
use crate::ops::prune::plan::{closure, holding, read_narinfos};
use crate::support::progress::human_bytes;

use files::{PinRequest, PinsError};

#[derive(Debug, Error)]
pub enum PinError {
    #[error(transparent)]
    Pins(#[from] PinsError),
    #[error(transparent)]
    Cache(#[from] CacheDirError),
    #[error(transparent)]
    Paths(#[from] Box<BuildError>),
    #[error(transparent)]
    Read(#[from] Box<PruneError>),
    #[error("nothing to do: give the paths of a new revision, or --keep-revisions/--keep-days")]
    Nothing,
}

/// Records `paths` (store paths, paths inside them or symlinks to them),
/// which the cache at `dir` must hold, as a new revision of the pin
/// `request.name`; with no paths, only stores the requested policy.
pub fn pin(dir: &Path, request: &PinRequest, paths: &[PathBuf]) -> Result<Pin, PinError> {
    if paths.is_empty() && request.retention.is_none() {
        return Err(PinError::Nothing);
    }
    let cache = CacheDir::open(dir)?;
    let roots = local_store::resolve_roots(paths, cache.store_dir()).map_err(Box::new)?;
    if roots.is_empty() {
        return Ok(files::record(&cache, request, &[], files::now())?);
    }
    // Shared, as `build --to` holds it: no prune decides what the cache
    // keeps between the check below and the roots' recording.
    let _cache_lock = cache.lock(CacheLock::Shared, || {})?;
    for path in &roots {
        if !cache.has_narinfo(path.hash_part())? {
            return Err(PinsError::NotCached {
                name: request.name.clone(),
                path: path.clone(),
                narinfo: cache.narinfo_path(path.hash_part()),
            }
            .into());
        }
    }
    let pin = files::record(&cache, request, &roots, files::now())?;
    cache.add_store_paths(&roots)?;
    Ok(pin)
}

/// What a pin, or one of its revisions, holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Paths in its closure that the cache has a narinfo for.
    pub paths: usize,
    /// Their narinfos and NARs, in bytes.
    pub bytes: u64,
    /// The bytes of the paths nothing else in the cache keeps: what a prune
    /// frees once it goes.
    pub only_bytes: u64,
}

/// One revision, as [`list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionListing {
    pub number: u64,
    pub time: u64,
    pub roots: usize,
    /// Whether the pin's policy retains it now.
    pub retained: bool,
    pub holding: Holding,
}

/// One pin, as [`list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinListing {
    pub pin: Pin,
    pub holding: Holding,
    /// Newest first.
    pub revisions: Vec<RevisionListing>,
}

/// What [`list`] found, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub now: u64,
    pub pins: Vec<PinListing>,
}

/// The pins of the cache at `dir` with their revisions, sizes and the bytes
/// only they hold.
pub fn list(dir: &Path) -> Result<Listing, PinError> {
    let cache = CacheDir::open(dir)?;
    let pins = cache.pins()?;
    let narinfos = read_narinfos(&cache).map_err(Box::new)?;
    let store_paths = cache.store_paths()?;
    let now = files::now();

    // What `mine` holds that no other root (of store-paths, or of a
    // revision `is_mine` does not claim) keeps.
    let holding_of = |mine: &BTreeSet<&StorePath>, is_mine: &dyn Fn(&str, u64) -> bool| {
        let others = store_paths
            .iter()
            .filter(|r| !mine.contains(r))
            .chain(pins.iter().flat_map(|p| {
                p.revisions
                    .iter()
                    .filter(|r| !is_mine(&p.name, r.number))
                    .flat_map(|r| r.roots.iter())
            }))
            .map(StorePath::hash_part);
        let held = closure(mine.iter().map(|r| r.hash_part()), &narinfos);
        let kept_by_others = closure(others, &narinfos);
        let only: BTreeSet<String> = held.difference(&kept_by_others).cloned().collect();
        let (paths, bytes) = holding(&held, &narinfos);
        Holding {
            paths,
            bytes,
            only_bytes: holding(&only, &narinfos).1,
        }
    };
    let mut listed = Vec::new();
    for pin in &pins {
        let all: BTreeSet<&StorePath> = pin.revisions.iter().flat_map(|r| r.roots.iter()).collect();
        let holding = holding_of(&all, &|name, _| name == pin.name);
        let revisions = pin
            .revisions
            .iter()
            .enumerate()
            .map(|(i, revision)| RevisionListing {
                number: revision.number,
                time: revision.time,
                roots: revision.roots.len(),
                retained: pin.retains(i, now),
                holding: holding_of(&revision.roots.iter().collect(), &|name, n| {
                    name == pin.name && n == revision.number
                }),
            })
            .collect();
        listed.push(PinListing {
            pin: pin.clone(),
            holding,
            revisions,
        });
    }
    Ok(Listing { now, pins: listed })
}

/// `3 h ago`, `2 d ago`: how long before `now` a revision was recorded.
fn age(now: u64, time: u64) -> String {
    let seconds = now.saturating_sub(time);
    match seconds {
        s if s < 120 => format!("{s} s ago"),
        s if s < 2 * 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86400),
    }
}

impl fmt::Display for Holding {
    /// `12 paths, 1.2 MiB (1234567 bytes), 20.0 KiB (20480 bytes) only here`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} paths, {} ({} bytes), {} ({} bytes) only here",
            self.paths,
            human_bytes(self.bytes),
            self.bytes,
            human_bytes(self.only_bytes),
            self.only_bytes
        )
    }
}

impl fmt::Display for Listing {
    /// One line per pin, then one per revision, indented.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pins.is_empty() {
            return writeln!(f, "no pins");
        }
        for listed in &self.pins {
            writeln!(
                f,
                "pin {} (keeps {}): {} revisions, {}",
                listed.pin.name,
                listed.pin.retention,
                listed.revisions.len(),
                listed.holding
            )?;
            for revision in &listed.revisions {
                writeln!(
                    f,
                    "  revision {}, {} ({}){}: {} roots, {}",
                    revision.number,
                    age(self.now, revision.time),
                    revision.time,
                    if revision.retained {
                        ""
                    } else {
                        ", dropped by the next prune"
                    },
                    revision.roots,
                    revision.holding
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_sensible_unit() {
        assert_eq!(age(100, 40), "60 s ago");
        assert_eq!(age(10_000, 0), "2 h ago");
        assert_eq!(age(3 * 86400, 0), "3 d ago");
        // A revision from a clock ahead of ours is not in the future.
        assert_eq!(age(0, 50), "0 s ago");
    }
}
