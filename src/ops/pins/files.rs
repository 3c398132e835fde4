//! The pin files of a cache on disk: reading `pins/`, recording a revision, and
//! the roots the pins retain (the file format is `format::pin`).
//!
//! A revision is recorded under the lock of the cache directory, the one
//! that guards `store-paths`, so that runs into the same cache take turns
//! to read and replace a pin; each pin file is replaced atomically and
//! durably. `build --to --pin` records its revision while it holds the
//! cache lock shared, after its narinfos and before its roots join
//! `store-paths`, so a prune never sees the paths of a revision without
//! the revision that roots them.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::CacheDir;
pub use crate::cache::PinsError;
use crate::format::pin::{Pin, Retention};
use crate::format::store_path::StorePath;

/// What `build --to --pin` and `pin` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    pub name: String,
    /// The policy to store with the pin; `None` keeps the pin's own (a new
    /// pin's is to retain every revision).
    pub retention: Option<Retention>,
}

/// Seconds since 1970 now, as revisions record their time.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records `roots` as a new revision of the pin `request.name` at `time`,
/// creating the pin if need be, and stores the requested policy with it.
/// With no roots it only changes the policy. Returns the pin as written.
pub fn record(
    cache: &CacheDir,
    request: &PinRequest,
    roots: &[StorePath],
    time: u64,
) -> Result<Pin, PinsError> {
    let _lock = cache.lock_pins()?;
    let mut pin = match cache.read_pin(&request.name)? {
        Some(pin) => pin,
        None => Pin::new(&request.name, Retention::default())?,
    };
    if let Some(retention) = request.retention {
        pin.retention = retention;
    }
    if !roots.is_empty() {
        pin.add_revision(time, roots.to_vec());
    }
    cache.write_pin(&pin)?;
    Ok(pin)
}

/// The roots of the revisions the pins retain at `now`.
pub fn retained_roots(pins: &[Pin], now: u64) -> Vec<StorePath> {
    let mut roots = Vec::new();
    for pin in pins {
        for revision in pin.split(now).0 {
            crate::format::store_path::append_new(&mut roots, revision.roots.iter().cloned());
        }
    }
    roots
}

/// The roots of the revisions the pins drop at `now` that no retained
/// revision names: a path added under a pin is a root through its pin
/// alone, so these leave `store-paths` too.
pub fn dropped_roots(pins: &[Pin], now: u64) -> BTreeSet<StorePath> {
    let retained: BTreeSet<StorePath> = retained_roots(pins, now).into_iter().collect();
    pins.iter()
        .flat_map(|pin| pin.split(now).1)
        .flat_map(|revision| revision.roots.iter())
        .filter(|root| !retained.contains(*root))
        .cloned()
        .collect()
}

/// `pin` without the revisions its policy drops at `now`: what `prune`
/// writes back, to a cache or to a bucket; None if it drops none.
pub fn without_dropped_revisions(pin: &Pin, now: u64) -> Option<Pin> {
    let (retained, dropped) = pin.split(now);
    if dropped.is_empty() {
        return None;
    }
    let mut kept = pin.clone();
    kept.revisions = retained.into_iter().cloned().collect();
    Some(kept)
}

/// `roots` (a `store-paths`) without the roots of `dropped`
/// ([`dropped_roots`]), in their order: what `prune` writes back.
pub fn without_dropped_roots(roots: &[StorePath], dropped: &BTreeSet<StorePath>) -> Vec<StorePath> {
    roots
        .iter()
        .filter(|r| !dropped.contains(*r))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::store_path::DEFAULT_STORE_DIR;
    use std::fs;

    fn path(name: &str) -> StorePath {
        let hash = format!("{:0>32}", name.len());
        StorePath::parse(
            &format!("{DEFAULT_STORE_DIR}/{hash}-{name}"),
            DEFAULT_STORE_DIR,
        )
        .unwrap()
    }

    fn request(name: &str, keep_revisions: Option<u64>) -> PinRequest {
        PinRequest {
            name: name.to_owned(),
            retention: keep_revisions.map(|n| Retention {
                keep_revisions: Some(n),
                keep_days: None,
            }),
        }
    }

    #[test]
    fn recording_adds_a_revision_and_keeps_the_stored_policy() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::unchecked(dir.path());
        record(&cache, &request("r", Some(2)), &[path("a")], 10).unwrap();
        // A later run that does not restate the policy keeps it.
        let pin = record(&cache, &request("r", None), &[path("bb")], 20).unwrap();
        assert_eq!(pin.retention.keep_revisions, Some(2));
        assert_eq!(pin.revisions.len(), 2);
        assert_eq!(cache.pins().unwrap(), vec![pin]);
    }

    #[test]
    fn a_dropped_revision_s_roots_stay_roots_if_a_retained_one_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let r = request("r", Some(1));
        record(
            &CacheDir::unchecked(dir.path()),
            &r,
            &[path("a"), path("bb")],
            10,
        )
        .unwrap();
        let pin = record(&CacheDir::unchecked(dir.path()), &r, &[path("bb")], 20).unwrap();
        assert_eq!(retained_roots(std::slice::from_ref(&pin), 30), [path("bb")]);
        assert_eq!(dropped_roots(&[pin], 30), BTreeSet::from([path("a")]));
    }

    #[test]
    fn a_pin_file_named_for_another_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pins")).unwrap();
        fs::write(dir.path().join("pins/one"), "Pin: two\n").unwrap();
        let error = CacheDir::unchecked(dir.path()).pins().unwrap_err();
        assert!(matches!(error, PinsError::Misnamed { .. }), "{error}");
    }

    #[test]
    fn a_symlinked_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pins")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("pins/one")).unwrap();
        let error = CacheDir::unchecked(dir.path()).pins().unwrap_err();
        assert!(matches!(error, PinsError::NotAFile(_)), "{error}");
    }
}
