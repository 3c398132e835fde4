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
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::format::pin::{self, Pin, PinError, Retention};
use crate::format::store_path::StorePath;
use crate::support::files::{self, DirLock, TempNames};

#[derive(Debug, Error)]
pub enum PinsError {
    #[error("'{path}': {source}")]
    Bad { path: PathBuf, source: PinError },
    #[error("'{path}' names the pin '{name}': a pin file is named after its pin")]
    Misnamed { path: PathBuf, name: String },
    #[error("'{0}' is a symlink or not a file: a pin is a plain file in the cache")]
    NotAFile(PathBuf),
    #[error("'{0}' is larger than a pin file can be")]
    TooLarge(PathBuf),
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Name(#[from] PinError),
    #[error(
        "pin '{name}': the cache has no narinfo for '{path}' ('{narinfo}'); add it with `build --to`"
    )]
    NotCached {
        name: String,
        path: StorePath,
        narinfo: PathBuf,
    },
}

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

/// Every pin of the cache at `dir`, by name; none if it has no `pins/`.
pub fn read_pins(dir: &Path, store_dir: &str) -> Result<Vec<Pin>, PinsError> {
    let pins_dir = dir.join(pin::DIR);
    let entries = match fs::read_dir(&pins_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PinsError::Read {
                path: pins_dir,
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PinsError::Read {
            path: pins_dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        if TempNames::owner(&name).is_some() {
            continue;
        }
        names.push(name.to_string_lossy().into_owned());
    }
    names.sort();
    let mut pins = Vec::new();
    for name in names {
        let path = pins_dir.join(&name);
        pin::check_name(&name).map_err(|source| PinsError::Bad {
            path: path.clone(),
            source,
        })?;
        if let Some(pin) = read_pin(dir, &name, store_dir)? {
            pins.push(pin);
        }
    }
    Ok(pins)
}

/// The pin `name` of the cache at `dir`, if there is one. Read without
/// following a symlink, and no further than a pin file can be.
pub fn read_pin(dir: &Path, name: &str, store_dir: &str) -> Result<Option<Pin>, PinsError> {
    let path = dir.join(Pin::file_name(name));
    let read_error = |source| PinsError::Read {
        path: path.clone(),
        source,
    };
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PinsError::NotAFile(path));
        }
        Err(e) => return Err(read_error(e)),
    };
    if !file.metadata().map_err(read_error)?.is_file() {
        return Err(PinsError::NotAFile(path));
    }
    let mut text = String::new();
    file.take(pin::MAX_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > pin::MAX_SIZE {
        return Err(PinsError::TooLarge(path));
    }
    let pin = Pin::parse(&text, store_dir).map_err(|source| PinsError::Bad {
        path: path.clone(),
        source,
    })?;
    if pin.name != name {
        return Err(PinsError::Misnamed {
            path,
            name: pin.name,
        });
    }
    Ok(Some(pin))
}

/// Replaces the file of `pin` in the cache at `dir`, atomically and durably
/// (the caller holds the directory lock).
pub fn write_pin(dir: &Path, pin: &Pin) -> Result<(), PinsError> {
    let pins_dir = dir.join(pin::DIR);
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| PinsError::Write { path, source }
    };
    if !pins_dir.exists() {
        fs::create_dir(&pins_dir).map_err(write_error(&pins_dir))?;
        files::sync_dir(dir).map_err(write_error(dir))?;
    }
    let path = dir.join(Pin::file_name(&pin.name));
    files::replace(&path, pin.to_string().as_bytes()).map_err(write_error(&path))
}

/// Takes the lock of the cache directory, which guards `store-paths` and
/// the pins: runs take turns to read and replace them.
pub fn lock_dir(dir: &Path) -> Result<DirLock, PinsError> {
    File::open(dir)
        .and_then(DirLock::exclusive)
        .map_err(|source| PinsError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Records `roots` as a new revision of the pin `request.name` at `time`,
/// creating the pin if need be, and stores the requested policy with it.
/// With no roots it only changes the policy. Returns the pin as written.
pub fn record(
    dir: &Path,
    request: &PinRequest,
    roots: &[StorePath],
    time: u64,
    store_dir: &str,
) -> Result<Pin, PinsError> {
    let _lock = lock_dir(dir)?;
    let mut pin = match read_pin(dir, &request.name, store_dir)? {
        Some(pin) => pin,
        None => Pin::new(&request.name, Retention::default())?,
    };
    if let Some(retention) = request.retention {
        pin.retention = retention;
    }
    if !roots.is_empty() {
        pin.add_revision(time, roots.to_vec());
    }
    write_pin(dir, &pin)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::store_path::DEFAULT_STORE_DIR;

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
        record(
            dir.path(),
            &request("r", Some(2)),
            &[path("a")],
            10,
            DEFAULT_STORE_DIR,
        )
        .unwrap();
        // A later run that does not restate the policy keeps it.
        let pin = record(
            dir.path(),
            &request("r", None),
            &[path("bb")],
            20,
            DEFAULT_STORE_DIR,
        )
        .unwrap();
        assert_eq!(pin.retention.keep_revisions, Some(2));
        assert_eq!(pin.revisions.len(), 2);
        assert_eq!(read_pins(dir.path(), DEFAULT_STORE_DIR).unwrap(), vec![pin]);
    }

    #[test]
    fn a_dropped_revision_s_roots_stay_roots_if_a_retained_one_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let r = request("r", Some(1));
        record(
            dir.path(),
            &r,
            &[path("a"), path("bb")],
            10,
            DEFAULT_STORE_DIR,
        )
        .unwrap();
        let pin = record(dir.path(), &r, &[path("bb")], 20, DEFAULT_STORE_DIR).unwrap();
        assert_eq!(retained_roots(std::slice::from_ref(&pin), 30), [path("bb")]);
        assert_eq!(dropped_roots(&[pin], 30), BTreeSet::from([path("a")]));
    }

    #[test]
    fn a_pin_file_named_for_another_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pins")).unwrap();
        fs::write(dir.path().join("pins/one"), "Pin: two\n").unwrap();
        let error = read_pins(dir.path(), DEFAULT_STORE_DIR).unwrap_err();
        assert!(matches!(error, PinsError::Misnamed { .. }), "{error}");
    }

    #[test]
    fn a_symlinked_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pins")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("pins/one")).unwrap();
        let error = read_pins(dir.path(), DEFAULT_STORE_DIR).unwrap_err();
        assert!(matches!(error, PinsError::NotAFile(_)), "{error}");
    }
}
