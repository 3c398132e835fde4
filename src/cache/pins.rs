//! The pin files of a cache, `pins/NAME` (the format is `format::pin`):
//! listed, read bounded and never through a symlink, and replaced
//! atomically and durably under the lock of the cache directory.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use thiserror::Error;

use super::{CacheDir, PINS_DIR};
use crate::format::pin::{self, Pin, PinError};
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

impl CacheDir {
    /// `pins/`, where the pin files are.
    pub fn pins_dir(&self) -> PathBuf {
        self.root.join(PINS_DIR)
    }

    /// Every pin of the cache, by name; none if it has no `pins/`.
    pub fn pins(&self) -> Result<Vec<Pin>, PinsError> {
        let pins_dir = self.pins_dir();
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
            if let Some(pin) = self.read_pin(&name)? {
                pins.push(pin);
            }
        }
        Ok(pins)
    }

    /// The pin `name`, if there is one. Read without following a symlink,
    /// and no further than a pin file can be.
    pub fn read_pin(&self, name: &str) -> Result<Option<Pin>, PinsError> {
        let path = self.root.join(Pin::file_name(name));
        let read_error = |source| PinsError::Read {
            path: path.clone(),
            source,
        };
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
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
        let pin = Pin::parse(&text, self.store_dir()).map_err(|source| PinsError::Bad {
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

    /// Replaces the file of `pin`, atomically and durably (the caller holds
    /// [`CacheDir::lock_pins`]).
    pub fn write_pin(&self, pin: &Pin) -> Result<(), PinsError> {
        let pins_dir = self.pins_dir();
        let write_error = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| PinsError::Write { path, source }
        };
        match pins_dir.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(PinsError::NotAFile(pins_dir));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&pins_dir).map_err(write_error(&pins_dir))?;
                files::sync_dir(&self.root).map_err(write_error(&self.root))?;
            }
            Err(e) => return Err(write_error(&pins_dir)(e)),
        }
        let path = self.root.join(Pin::file_name(&pin.name));
        files::replace(&path, pin.to_string().as_bytes()).map_err(write_error(&path))
    }

    /// Takes the lock of the cache directory, which guards `store-paths`
    /// and the pins: runs take turns to read and replace them.
    pub fn lock_pins(&self) -> Result<DirLock, PinsError> {
        File::open(&self.root)
            .and_then(DirLock::exclusive)
            .map_err(|source| PinsError::Write {
                path: self.root.clone(),
                source,
            })
    }
}
