//! What a prune removes, and in what order: the narinfos read without
//! following symlinks, the closure to keep, and the stages of removal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::{Kind, MAX_NARINFO_SIZE, PruneError, Removal, read_error};
use crate::format::narinfo::{self, NarInfo};
use crate::format::store_path::{StorePath, is_hash_part};
use crate::support::files::TempNames;

/// A narinfo in the cache: the file's size, and what it says (or why it
/// cannot be read).
pub(crate) struct Entry {
    pub(crate) bytes: u64,
    pub(crate) info: Result<NarInfo, String>,
}

/// Every `<hash>.narinfo` in `dir`, by hash part.
pub(crate) fn read_narinfos(
    dir: &Path,
    store_dir: &str,
) -> Result<BTreeMap<String, Entry>, PruneError> {
    let mut narinfos = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(read_error(dir))? {
        let entry = entry.map_err(read_error(dir))?;
        let name = entry.file_name();
        let Some(hash) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".narinfo"))
            .filter(|h| is_hash_part(h))
        else {
            continue;
        };
        let meta = entry.metadata().map_err(read_error(&entry.path()))?;
        if meta.is_dir() {
            continue;
        }
        let info = read_narinfo(&entry.path(), store_dir);
        narinfos.insert(
            hash.to_owned(),
            Entry {
                bytes: meta.len(),
                info,
            },
        );
    }
    Ok(narinfos)
}

/// Reads a narinfo without following a symlink (it would lead outside the
/// cache) and without reading more than a narinfo can hold.
pub(super) fn read_narinfo(file: &Path, store_dir: &str) -> Result<NarInfo, String> {
    let mut text = String::new();
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .and_then(|f| f.take(MAX_NARINFO_SIZE + 1).read_to_string(&mut text))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "it is a symlink".to_owned(),
            _ => e.to_string(),
        })?;
    if text.len() as u64 > MAX_NARINFO_SIZE {
        return Err(format!("it is larger than {MAX_NARINFO_SIZE} bytes"));
    }
    NarInfo::parse(&text, store_dir).map_err(|e| e.to_string())
}

/// The hash parts of the paths to keep: the roots and everything their
/// narinfos refer to, transitively, that has a narinfo here. A reference
/// without one is outside this cache (as in a delta cache), not an error.
pub(super) fn kept_closure(
    dir: &Path,
    roots: &[StorePath],
    narinfos: &BTreeMap<String, Entry>,
) -> Result<BTreeSet<String>, PruneError> {
    let kept = closure(roots.iter().map(StorePath::hash_part), narinfos);
    match kept
        .iter()
        .find_map(|h| Some((h, narinfos[h].info.as_ref().err()?)))
    {
        Some((hash, reason)) => Err(PruneError::UnreadableKept {
            path: dir.join(narinfo::file_name(hash)),
            reason: reason.clone(),
        }),
        None => Ok(kept),
    }
}

/// The hash parts of `roots` and of everything their narinfos refer to,
/// transitively, that has a narinfo here (an unreadable one is in it, but
/// what it refers to is unknown).
pub(crate) fn closure<'a>(
    roots: impl IntoIterator<Item = &'a str>,
    narinfos: &BTreeMap<String, Entry>,
) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().map(str::to_owned).collect();
    while let Some(hash) = todo.pop() {
        let Some(entry) = narinfos.get(&hash) else {
            continue;
        };
        if !kept.insert(hash) {
            continue;
        }
        if let Ok(info) = &entry.info {
            todo.extend(info.references.iter().map(|r| r.hash_part().to_owned()));
        }
    }
    kept
}

/// The paths and bytes of the cache's files that `paths` (hash parts) hold:
/// their narinfos, and the NARs they name (a NAR two of them share counted
/// once), by the `FileSize` the narinfos give.
pub(crate) fn holding(
    paths: &BTreeSet<String>,
    narinfos: &BTreeMap<String, Entry>,
) -> (usize, u64) {
    let mut nars = BTreeSet::new();
    let mut bytes = 0;
    for hash in paths {
        let Some(entry) = narinfos.get(hash) else {
            continue;
        };
        bytes += entry.bytes;
        if let Ok(info) = &entry.info
            && nars.insert(info.url.as_str())
        {
            bytes += info.file_size.unwrap_or(0);
        }
    }
    (paths.len(), bytes)
}

/// What goes, in stages, each to be durable before the next: narinfos in
/// levels (a path's before its references'), then listings and debug-info
/// entries, then NARs and temporary files.
pub(super) fn plan(
    dir: &Path,
    narinfos: &BTreeMap<String, Entry>,
    kept: &BTreeSet<String>,
) -> Result<Vec<Vec<Removal>>, PruneError> {
    let mut stages = narinfo_levels(narinfos, kept);

    let kept_nars: BTreeSet<String> = kept
        .iter()
        .filter_map(|h| narinfos[h].info.as_ref().ok())
        .filter_map(|info| nar_file_name(Path::new(&info.url), 0))
        .collect();

    let mut second = Vec::new();
    let mut last = Vec::new();
    for entry in list(dir)? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        if let Some(hash) = name.strip_suffix(".ls")
            && is_hash_part(hash)
            && !kept.contains(hash)
            && !entry.is_dir
        {
            second.push(entry.removal(PathBuf::from(name), Kind::Listing));
        } else if is_stale_temp_file(name) && !entry.is_dir {
            last.push(entry.removal(PathBuf::from(name), Kind::TempFile));
        }
    }
    for entry in list(&dir.join("debuginfo"))? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let file = Path::new("debuginfo").join(name);
        if entry.is_dir {
            continue;
        }
        if is_stale_temp_file(name) {
            last.push(entry.removal(file, Kind::TempFile));
        } else if let Some(nar) = debug_info_archive(&dir.join(&file))
            && !kept_nars.contains(&nar)
        {
            second.push(entry.removal(file, Kind::DebugInfo));
        }
    }
    for entry in list(&dir.join("nar"))? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let file = Path::new("nar").join(name);
        if entry.is_dir {
            continue;
        }
        if is_stale_temp_file(name) {
            last.push(entry.removal(file, Kind::TempFile));
        } else if is_nar_name(name) && !kept_nars.contains(name) {
            last.push(entry.removal(file, Kind::Nar));
        }
    }
    stages.push(second);
    stages.push(last);
    stages.retain(|s| !s.is_empty());
    Ok(stages)
}

/// The narinfos that go, in levels: each level holds the paths that no
/// narinfo still there (but themselves) refers to, so that removing a level
/// leaves the remaining narinfos closed under references.
pub(super) fn narinfo_levels(
    narinfos: &BTreeMap<String, Entry>,
    kept: &BTreeSet<String>,
) -> Vec<Vec<Removal>> {
    let doomed: BTreeMap<&String, &Entry> = narinfos
        .iter()
        .filter(|(h, _)| !kept.contains(*h))
        .collect();
    let references = |hash: &String| -> Vec<String> {
        match &doomed[hash].info {
            Ok(info) => info
                .references
                .iter()
                .map(|r| r.hash_part().to_owned())
                .filter(|r| r != hash && doomed.contains_key(r))
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let mut referrers: HashMap<String, usize> = HashMap::new();
    for hash in doomed.keys() {
        for r in references(hash) {
            *referrers.entry(r).or_default() += 1;
        }
    }
    let mut left: BTreeSet<&String> = doomed.keys().copied().collect();
    let mut levels = Vec::new();
    while !left.is_empty() {
        let mut level: Vec<&String> = left
            .iter()
            .copied()
            .filter(|h| referrers.get(*h).copied().unwrap_or(0) == 0)
            .collect();
        if level.is_empty() {
            // A reference cycle (Nix makes none): no order is safe, take all.
            level = left.iter().copied().collect();
        }
        for hash in &level {
            left.remove(*hash);
            for r in references(hash) {
                if let Some(n) = referrers.get_mut(&r) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        levels.push(
            level
                .into_iter()
                .map(|hash| Removal {
                    file: PathBuf::from(narinfo::file_name(hash)),
                    kind: Kind::Narinfo(
                        doomed[hash]
                            .info
                            .as_ref()
                            .ok()
                            .map(|i| i.store_path.clone()),
                    ),
                    bytes: doomed[hash].bytes,
                })
                .collect(),
        );
    }
    levels
}

/// A directory entry, as listed (never followed).
pub(super) struct Listed {
    pub(super) name: std::ffi::OsString,
    pub(super) is_dir: bool,
    pub(super) bytes: u64,
}

impl Listed {
    fn removal(&self, file: PathBuf, kind: Kind) -> Removal {
        Removal {
            file,
            kind,
            bytes: self.bytes,
        }
    }
}

/// The entries of `dir`; none if the cache lacks it (a cache of no path
/// may have no `nar/`, and only indexed ones have `debuginfo/`).
pub(super) fn list(dir: &Path) -> Result<Vec<Listed>, PruneError> {
    let mut listed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listed),
        Err(e) => return Err(read_error(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(read_error(dir))?;
        // DirEntry::metadata does not follow symlinks.
        let meta = entry.metadata().map_err(read_error(&entry.path()))?;
        listed.push(Listed {
            name: entry.file_name(),
            is_dir: meta.is_dir(),
            bytes: meta.len(),
        });
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listed)
}

/// The name of the file in `nar/` that `url` names, with `up` the number of
/// `..` that lead from where it is read back to the cache (0 for a narinfo's
/// `URL`, which is relative to the cache; 1 for a debug-info `archive`).
pub(super) fn nar_file_name(url: &Path, up: usize) -> Option<String> {
    let parts: Vec<Component> = url
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    match parts.strip_prefix(&vec![Component::ParentDir; up][..])? {
        [Component::Normal(nar), Component::Normal(name)] if *nar == "nar" => {
            name.to_str().map(str::to_owned)
        }
        _ => None,
    }
}

/// The NAR a `debuginfo/<build-id>.debug` entry points into
/// (`{"archive": "../nar/….nar.xz", "member": …}`), if it can be read.
pub(super) fn debug_info_archive(file: &Path) -> Option<String> {
    let mut text = String::new();
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .and_then(|f| f.take(MAX_NARINFO_SIZE).read_to_string(&mut text))
        .ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    nar_file_name(Path::new(value.get("archive")?.as_str()?), 1)
}

/// `<name>.nar` or `<name>.nar.<compression>`, as writers name NAR files.
pub(super) fn is_nar_name(name: &str) -> bool {
    !name.starts_with('.')
        && match name.rsplit_once(".nar") {
            Some((stem, ext)) => {
                !stem.is_empty()
                    && (ext.is_empty()
                        || ext.strip_prefix('.').is_some_and(|e| {
                            !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric())
                        }))
            }
            None => false,
        }
}

pub(super) fn is_stale_temp_file(name: &str) -> bool {
    TempNames::is_stale(std::ffi::OsStr::new(name))
}

pub(super) fn in_dir(file: &Path, sub: &str) -> bool {
    match file.parent() {
        Some(p) if p.as_os_str().is_empty() => sub == ".",
        Some(p) => p == Path::new(sub),
        None => false,
    }
}
