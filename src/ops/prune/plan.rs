//! What a prune removes, and in what order: the narinfos read without
//! following symlinks, the closure to keep, and the stages of removal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::{Kind, PruneError, Removal};
use crate::cache::{self, CacheDir, DEBUGINFO_DIR, Entry as Listed, NAR_DIR};
use crate::format::narinfo::{self, NarInfo};
use crate::format::store_path::{ReferenceCycle, StorePath, is_hash_part};
use crate::support::files::TempNames;
use crate::support::graph::{Cycle, Graph};

/// A narinfo in the cache: the file's size, and what it says (or why it
/// cannot be parsed).
pub(super) struct Entry {
    pub(super) bytes: u64,
    pub(super) info: Result<NarInfo, String>,
}

/// Every narinfo of the cache, by hash part. One that cannot be read at all
/// (a symlink, a file too large to be one) is an error naming it: prune
/// neither follows it nor decides anything on what it might say. One that
/// is read but does not parse is kept as such: it goes, unless the kept
/// closure needs it.
pub(super) fn read_narinfos(cache: &CacheDir) -> Result<BTreeMap<String, Entry>, PruneError> {
    let mut narinfos = BTreeMap::new();
    for hash in cache.narinfos()? {
        let bytes = cache.read_narinfo_bytes(&hash)?;
        let info = match std::str::from_utf8(&bytes) {
            Ok(text) => NarInfo::parse(text, cache.store_dir()).map_err(|e| e.to_string()),
            Err(_) => Err("it is not UTF-8 text".to_owned()),
        };
        let bytes = bytes.len() as u64;
        narinfos.insert(hash, Entry { bytes, info });
    }
    Ok(narinfos)
}

/// The hash parts of the paths to keep: the roots and everything their
/// narinfos refer to, transitively, that has a narinfo here. A reference
/// without one is outside this cache (as in a delta cache), not an error.
pub(super) fn kept_closure(
    cache: &CacheDir,
    roots: &[StorePath],
    narinfos: &BTreeMap<String, Entry>,
) -> Result<BTreeSet<String>, PruneError> {
    let mut kept = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().map(|r| r.hash_part().to_owned()).collect();
    while let Some(hash) = todo.pop() {
        let Some(entry) = narinfos.get(&hash) else {
            continue;
        };
        if !kept.insert(hash.clone()) {
            continue;
        }
        match &entry.info {
            Ok(info) => todo.extend(info.references.iter().map(|r| r.hash_part().to_owned())),
            Err(reason) => {
                return Err(PruneError::UnreadableKept {
                    path: cache.narinfo_path(&hash),
                    reason: reason.clone(),
                });
            }
        }
    }
    Ok(kept)
}

/// What goes, in stages, each to be durable before the next: narinfos in
/// levels (a path's before its references'), then listings and debug-info
/// entries, then NARs and temporary files.
pub(super) fn plan(
    cache: &CacheDir,
    narinfos: &BTreeMap<String, Entry>,
    kept: &BTreeSet<String>,
) -> Result<Vec<Vec<Removal>>, PruneError> {
    let mut stages = narinfo_levels(narinfos, kept)?;

    let kept_nars: BTreeSet<String> = kept
        .iter()
        .filter_map(|h| narinfos[h].info.as_ref().ok())
        .filter_map(|info| nar_file_name(Path::new(&info.url), 0))
        .collect();

    let mut second = Vec::new();
    let mut last = Vec::new();
    for entry in cache.entries("")? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        if let Some(hash) = name.strip_suffix(".ls")
            && is_hash_part(hash)
            && !kept.contains(hash)
            && !entry.is_dir
        {
            second.push(removal(&entry, PathBuf::from(name), Kind::Listing));
        } else if is_stale_temp_file(name) && !entry.is_dir {
            last.push(removal(&entry, PathBuf::from(name), Kind::TempFile));
        }
    }
    for entry in cache.entries(DEBUGINFO_DIR)? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let file = Path::new(DEBUGINFO_DIR).join(name);
        if entry.is_dir {
            continue;
        }
        if is_stale_temp_file(name) {
            last.push(removal(&entry, file, Kind::TempFile));
        } else if let Some(nar) = debug_info_archive(&entry.path)
            && !kept_nars.contains(&nar)
        {
            second.push(removal(&entry, file, Kind::DebugInfo));
        }
    }
    for entry in cache.entries(NAR_DIR)? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let file = Path::new(NAR_DIR).join(name);
        if entry.is_dir {
            continue;
        }
        if is_stale_temp_file(name) {
            last.push(removal(&entry, file, Kind::TempFile));
        } else if is_nar_name(name) && !kept_nars.contains(name) {
            last.push(removal(&entry, file, Kind::Nar));
        }
    }
    stages.push(second);
    stages.push(last);
    stages.retain(|s| !s.is_empty());
    Ok(stages)
}

/// The narinfos that go, in levels, the reference order walked backward: a
/// path goes before the paths it refers to, so that removing a level leaves
/// the remaining narinfos closed under references. (Kept narinfos refer to
/// none that go: the kept set is closed under references.)
///
/// Cycle policy: refuse, before anything is removed. No order would remove
/// a narinfo on a cycle before what it refers to, and Nix never writes one:
/// the cycle's narinfos were edited, and are for a person to look at.
pub(super) fn narinfo_levels(
    narinfos: &BTreeMap<String, Entry>,
    kept: &BTreeSet<String>,
) -> Result<Vec<Vec<Removal>>, PruneError> {
    let doomed: Vec<(&String, &Entry)> = narinfos
        .iter()
        .filter(|(h, _)| !kept.contains(*h))
        .collect();
    let hashes: Vec<&str> = doomed.iter().map(|(h, _)| h.as_str()).collect();
    // An unreadable narinfo names nothing: it goes in the first level.
    let graph = Graph::by_key(&hashes, |i| {
        doomed[i]
            .1
            .info
            .iter()
            .flat_map(|info| info.references.iter().map(|r| r.hash_part()))
    });
    let levels = graph.levels().map_err(|Cycle(nodes)| {
        PruneError::Cycle(ReferenceCycle(
            nodes
                .into_iter()
                .filter_map(|i| doomed[i].1.info.as_ref().ok())
                .map(|info| info.store_path.clone())
                .collect(),
        ))
    })?;
    Ok(levels
        .groups()
        .into_iter()
        .rev()
        .map(|level| {
            level
                .into_iter()
                .map(|i| {
                    let (hash, entry) = doomed[i];
                    Removal {
                        file: PathBuf::from(narinfo::file_name(hash)),
                        kind: Kind::Narinfo(entry.info.as_ref().ok().map(|i| i.store_path.clone())),
                        bytes: entry.bytes,
                    }
                })
                .collect()
        })
        .collect())
}

/// What goes of a listed entry.
fn removal(entry: &Listed, file: PathBuf, kind: Kind) -> Removal {
    Removal {
        file,
        kind,
        bytes: entry.bytes,
    }
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
    let bytes = cache::read_bounded(file).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
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
