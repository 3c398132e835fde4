//! What to upload: the cache on disk, read and sorted into the phases of a
//! publish (other files, then narinfos by depth, then `store-paths` and the
//! pins).

use std::collections::BTreeMap;
use std::path::Path;

use super::PublishError;
use crate::cache::{CacheDir, CacheDirError, PINS_DIR, STORE_PATHS, narinfo_hash_part};
use crate::format::cache_info;
use crate::format::narinfo::NarInfo;
use crate::format::store_path::ReferenceCycle;
use crate::support::graph::{Cycle, Graph, Levels};

/// A file of the cache to upload.
pub(super) use crate::cache::CacheFile as File;

/// The cache on disk, sorted into the phases of the upload.
pub(super) struct Plan {
    pub(super) store_dir: String,
    pub(super) cache_info: File,
    /// NARs, listings, debug info, logs: anything no narinfo is.
    pub(super) files: Vec<File>,
    /// Narinfos by depth: those of level 0 refer to no other path of the
    /// cache; those of level n only to paths of lower levels.
    pub(super) narinfo_levels: Vec<Vec<(File, Vec<u8>)>>,
    pub(super) store_paths: Option<File>,
    /// `pins/…`: uploaded last, after the narinfos they name.
    pub(super) pins: Vec<File>,
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
    for (node, (file, bytes, _)) in narinfos.into_values().enumerate() {
        let level = levels.of(node);
        if narinfo_levels.len() <= level {
            narinfo_levels.resize_with(level + 1, Vec::new);
        }
        narinfo_levels[level].push((file, bytes));
    }
    Ok(Plan {
        store_dir,
        cache_info: cache_info.expect("read above"),
        files,
        narinfo_levels,
        store_paths,
        pins,
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
