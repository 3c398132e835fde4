//! What to upload: the cache on disk, read and sorted into the phases of a
//! publish (other files, then narinfos by depth, then `store-paths` and the
//! pins).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::PublishError;
use crate::cache::{self, CacheDir, CacheDirError, PINS_DIR, STORE_PATHS, narinfo_hash_part};
use crate::format::cache_info::{self, CacheInfo};
use crate::format::narinfo::{self, NarInfo};
use crate::format::store_path::ReferenceCycle;
use crate::support::graph::{Cycle, Graph, Levels};

/// A file of the cache to upload.
pub(super) use crate::cache::CacheFile as File;

/// The cache on disk, sorted into the phases of the upload.
pub(super) struct Plan {
    pub(super) store_dir: String,
    pub(super) cache_info: File,
    /// What the cache's `nix-cache-info` says.
    pub(super) info: CacheInfo,
    /// NARs, listings, debug info, logs: anything no narinfo is.
    pub(super) files: Vec<File>,
    /// Narinfos by depth: those of level 0 refer to no other path of the
    /// cache; those of level n only to paths of lower levels.
    pub(super) narinfo_levels: Vec<Vec<(File, Vec<u8>)>>,
    pub(super) store_paths: Option<File>,
    /// `pins/…`: uploaded last, after the narinfos they name.
    pub(super) pins: Vec<File>,
    /// Every narinfo of the levels, by hash part.
    pub(super) narinfos: BTreeMap<String, NarInfo>,
}

impl Plan {
    /// Uploads nothing of the paths `hash_parts` names: their narinfos,
    /// their listings, the NARs no other narinfo names, and the `debuginfo/`
    /// entries that point into those.
    pub(super) fn leave_out(&mut self, hash_parts: &BTreeSet<String>) -> Result<(), PublishError> {
        let mut gone: BTreeSet<String> = BTreeSet::new();
        let mut nars: BTreeSet<String> = BTreeSet::new();
        for hash in hash_parts {
            if let Some(info) = self.narinfos.remove(hash) {
                gone.insert(narinfo::file_name(hash));
                gone.insert(format!("{hash}.ls"));
                nars.insert(info.url);
            }
        }
        for kept in self.narinfos.values() {
            nars.remove(&kept.url);
        }
        for file in &self.files {
            if file.name.starts_with("debuginfo/")
                && !nars.is_empty()
                && nars.contains(&debug_archive(file)?)
            {
                gone.insert(file.name.clone());
            }
        }
        gone.extend(nars);
        for level in &mut self.narinfo_levels {
            level.retain(|(file, _)| !gone.contains(&file.name));
        }
        self.files.retain(|file| !gone.contains(&file.name));
        Ok(())
    }
}

/// The NAR a `debuginfo/` entry points into (`nar/…`, as a narinfo's `URL:`
/// names it), or "" if it names none. Read as the cache reads its small
/// files: bounded, never through a symlink.
fn debug_archive(file: &File) -> Result<String, PublishError> {
    let bytes = cache::read_bounded(&file.path).map_err(PublishError::CacheDir)?;
    let entry: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| cache_error(&file.path, e))?;
    let archive = entry["archive"].as_str().unwrap_or_default();
    Ok(archive.strip_prefix("../").unwrap_or(archive).to_owned())
}

pub(super) fn cache_error(path: &Path, message: impl ToString) -> PublishError {
    PublishError::Cache {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

pub(super) fn read_plan(cache: &Path) -> Result<Plan, PublishError> {
    let dir = CacheDir::open(cache).map_err(|e| match e {
        CacheDirError::NotACache(dir) => PublishError::NotACache(dir),
        other => PublishError::CacheDir(other),
    })?;
    let store_dir = dir.store_dir().to_owned();
    // Every regular file; a symlink anywhere is an error naming it.
    let all = dir.files().map_err(PublishError::CacheDir)?;

    let mut cache_info = None;
    let mut files = Vec::new();
    let mut narinfos = BTreeMap::new();
    let mut store_paths = None;
    let mut pins = Vec::new();
    for file in all {
        if file.name == cache_info::FILE_NAME {
            cache_info = Some(file);
        } else if file.name == STORE_PATHS {
            store_paths = Some(file);
        } else if file.name.starts_with(&format!("{PINS_DIR}/")) {
            pins.push(file);
        } else if let Some(hash) = narinfo_hash_part(&file.name) {
            let bytes = dir
                .read_narinfo_bytes(hash)
                .map_err(PublishError::CacheDir)?;
            let text = std::str::from_utf8(&bytes).map_err(|e| cache_error(&file.path, e))?;
            let narinfo =
                NarInfo::parse(text, &store_dir).map_err(|e| cache_error(&file.path, e))?;
            narinfos.insert(
                narinfo.store_path.hash_part().to_string(),
                (file, bytes, narinfo),
            );
        } else {
            files.push(file);
        }
    }

    // Cycle policy: refuse, before anything is uploaded. No order would
    // upload a narinfo on the cycle after those of its references.
    let levels = levels(&narinfos).map_err(|cycle| cache_error(cache, cycle))?;
    let mut narinfo_levels: Vec<Vec<(File, Vec<u8>)>> = Vec::new();
    let mut parsed = BTreeMap::new();
    for (node, (hash, (file, bytes, narinfo))) in narinfos.into_iter().enumerate() {
        let level = levels.of(node);
        if narinfo_levels.len() <= level {
            narinfo_levels.resize_with(level + 1, Vec::new);
        }
        narinfo_levels[level].push((file, bytes));
        parsed.insert(hash, narinfo);
    }
    Ok(Plan {
        store_dir,
        cache_info: cache_info.expect("read above"),
        info: dir.info().clone(),
        files,
        narinfo_levels,
        store_paths,
        pins,
        narinfos: parsed,
    })
}

/// The level of each narinfo, as nodes in the order of `narinfos`: 0
/// without references to other paths of the cache, else one more than the
/// highest of them; or the paths on a cycle.
pub(super) fn levels(
    narinfos: &BTreeMap<String, (File, Vec<u8>, NarInfo)>,
) -> Result<Levels, ReferenceCycle> {
    let infos: Vec<&NarInfo> = narinfos.values().map(|(_, _, info)| info).collect();
    let hashes: Vec<&str> = narinfos.keys().map(String::as_str).collect();
    Graph::by_key(&hashes, |i| {
        infos[i].references.iter().map(|r| r.hash_part())
    })
    .levels()
    .map_err(|Cycle(nodes)| {
        ReferenceCycle(
            nodes
                .into_iter()
                .map(|i| infos[i].store_path.clone())
                .collect(),
        )
    })
}
