//! Finding a cache's files: its narinfos by the one rule that says what a
//! narinfo is, reading one bounded and without following a symlink, and
//! listing its directories without following anything.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CacheDir, CacheDirError, read_bounded, read_error};
use crate::format::narinfo::{self, NarInfo};
use crate::format::store_path::is_hash_part;
use crate::support::files::TempNames;

/// The hash part a narinfo's file name gives, if `name` is one:
/// `<hash>.narinfo`, with `<hash>` 32 nix32 characters.
pub fn narinfo_hash_part(name: &str) -> Option<&str> {
    name.strip_suffix(".narinfo").filter(|h| is_hash_part(h))
}

/// An entry of a directory of the cache, as listed (never followed).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub path: PathBuf,
    pub is_dir: bool,
    pub is_file: bool,
    pub is_symlink: bool,
    /// The entry's own size (a symlink's, not its target's).
    pub bytes: u64,
}

/// A regular file of the cache, by its name relative to the cache.
#[derive(Debug, Clone)]
pub struct CacheFile {
    /// Relative to the cache's root, with `/`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

impl CacheDir {
    /// The hash parts of the cache's narinfos, sorted: the one listing of
    /// narinfos.
    ///
    /// A narinfo is an entry directly in the cache directory named
    /// `<hash>.narinfo` (see [`narinfo_hash_part`]). Every such entry is
    /// listed whatever its type, so that a symlink or anything else posing
    /// as a narinfo is refused with an error naming it when it is read
    /// ([`Self::read_narinfo`]), never silently skipped. Any other entry is
    /// not a narinfo and is left out: listings, temporary files, names that
    /// are not UTF-8 or not a hash part, and everything in subdirectories.
    pub fn narinfos(&self) -> Result<Vec<String>, CacheDirError> {
        let root = self.root();
        let mut hashes = Vec::new();
        for entry in fs::read_dir(root).map_err(read_error(root))? {
            let name = entry.map_err(read_error(root))?.file_name();
            if let Some(hash) = name.to_str().and_then(narinfo_hash_part) {
                hashes.push(hash.to_owned());
            }
        }
        hashes.sort_unstable();
        Ok(hashes)
    }

    /// Whether the cache has a narinfo for the path with hash part
    /// `hash_part`, without reading it: one that is a symlink, not a regular
    /// file, or larger than a narinfo can be is an error naming it.
    pub fn has_narinfo(&self, hash_part: &str) -> Result<bool, CacheDirError> {
        let path = self.narinfo_path(hash_part);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(read_error(&path)(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(CacheDirError::Symlink(path));
        }
        if !meta.is_file() {
            return Err(CacheDirError::NotAFile(path));
        }
        if meta.len() > narinfo::MAX_SIZE {
            return Err(CacheDirError::TooLarge {
                path,
                max: narinfo::MAX_SIZE,
            });
        }
        Ok(true)
    }

    /// The bytes of the narinfo of `hash_part`: no more than
    /// [`narinfo::MAX_SIZE`] are read, and a symlink is not followed.
    pub fn read_narinfo_bytes(&self, hash_part: &str) -> Result<Vec<u8>, CacheDirError> {
        read_bounded(&self.narinfo_path(hash_part))
    }

    /// The text of the narinfo of `hash_part`, read as
    /// [`Self::read_narinfo_bytes`] reads it.
    pub fn read_narinfo_text(&self, hash_part: &str) -> Result<String, CacheDirError> {
        let bytes = self.read_narinfo_bytes(hash_part)?;
        String::from_utf8(bytes).map_err(|_| CacheDirError::NotText(self.narinfo_path(hash_part)))
    }

    /// The narinfo of `hash_part`, read as [`Self::read_narinfo_bytes`]
    /// reads it and parsed for the cache's store directory.
    pub fn read_narinfo(&self, hash_part: &str) -> Result<NarInfo, CacheDirError> {
        let text = self.read_narinfo_text(hash_part)?;
        NarInfo::parse(&text, self.store_dir()).map_err(|source| CacheDirError::Narinfo {
            path: self.narinfo_path(hash_part),
            source,
        })
    }

    /// The entries of the cache's subdirectory `sub` (`""` for the cache
    /// directory itself), sorted by name and never followed; none when the
    /// cache lacks it (a cache of no path may have no `nar/`).
    pub fn entries(&self, sub: impl AsRef<Path>) -> Result<Vec<Entry>, CacheDirError> {
        let dir = self.root().join(sub);
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_error(&dir)(e)),
        };
        let mut entries = Vec::new();
        for entry in read {
            let entry = entry.map_err(read_error(&dir))?;
            let path = entry.path();
            // DirEntry::metadata does not follow symlinks.
            let meta = entry.metadata().map_err(read_error(&path))?;
            entries.push(Entry {
                name: entry.file_name(),
                path,
                is_dir: meta.is_dir(),
                is_file: meta.is_file(),
                is_symlink: meta.file_type().is_symlink(),
                bytes: meta.len(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Every regular file of the cache, in its subdirectories too, sorted
    /// by name; temporary files are left out. A symlink or other special
    /// file is an error naming it: a cache's writers make none, and what it
    /// leads to is not the cache's.
    pub fn files(&self) -> Result<Vec<CacheFile>, CacheDirError> {
        let mut files = Vec::new();
        self.walk("", &mut files)?;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    fn walk(&self, rel: &str, out: &mut Vec<CacheFile>) -> Result<(), CacheDirError> {
        for entry in self.entries(rel)? {
            if TempNames::owner(&entry.name).is_some() {
                continue;
            }
            let Some(name) = entry.name.to_str() else {
                return Err(CacheDirError::Read {
                    path: entry.path,
                    source: io::Error::other("the name is not UTF-8"),
                });
            };
            let name = match rel {
                "" => name.to_owned(),
                _ => format!("{rel}/{name}"),
            };
            if entry.is_symlink {
                return Err(CacheDirError::Symlink(entry.path));
            } else if entry.is_dir {
                self.walk(&name, out)?;
            } else if entry.is_file {
                out.push(CacheFile {
                    name,
                    path: entry.path,
                    size: entry.bytes,
                });
            } else {
                return Err(CacheDirError::NotAFile(entry.path));
            }
        }
        Ok(())
    }
}
