//! Delta caches: leaving out of a cache the paths its consumers already have.
//!
//! A machine that already holds a base system, or a previous release, or
//! can reach another cache, needs only the rest of a closure. An
//! [`Exclusion`] is the set of paths to leave out: the closure of some paths
//! (`mkBinaryCache { exclude = …; }`, through a second
//! `exportReferencesGraph`, or `build --to --exclude PATH`), and the paths
//! another flat-file cache holds (`build --to --exclude-cache DIR`).
//! [`Exclusion::apply`] removes them from the closure to write; the narinfos
//! of the paths that remain still name every reference, so a consumer
//! substitutes the delta from the cache and finds the rest where it already
//! is. `store-paths` still lists the roots, excluded or not.
//!
//! Paths are told apart by their hash part, as a cache names its narinfos.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::cache::{CacheDir, CacheDirError};
use crate::format::store_path::{PathInfo, StorePath};
use crate::input::closure::{self, ClosureError};
use crate::input::local_store::{self, BuildError};

#[derive(Debug, Error)]
pub enum ExcludeError {
    #[error("--exclude: {0}")]
    Paths(Box<BuildError>),
    #[error("--exclude-cache '{0}' is not a binary cache: it has no nix-cache-info")]
    NotACache(PathBuf),
    #[error("--exclude-cache: {0}")]
    Cache(CacheDirError),
}

/// The paths to leave out of a cache, by hash part.
#[derive(Debug, Clone, Default)]
pub struct Exclusion {
    hash_parts: HashSet<String>,
}

impl Exclusion {
    /// Leaves out every path of `closure`.
    pub fn add_closure(&mut self, closure: &[PathInfo]) {
        self.hash_parts
            .extend(closure.iter().map(|p| p.path.hash_part().to_owned()));
    }

    /// Leaves out the closure that `exportReferencesGraph` put in the
    /// structured attrs (`mkBinaryCache`'s `exclude`).
    pub fn from_export_references_graph(
        graph: &Value,
        store_dir: &str,
    ) -> Result<Self, ClosureError> {
        let mut exclusion = Exclusion::default();
        exclusion.add_closure(&closure::from_export_references_graph(graph, store_dir)?);
        Ok(exclusion)
    }

    /// Leaves out the closure of `paths` in the local store (store paths,
    /// paths inside them, or symlinks to them), as `nix path-info` gives it.
    pub fn add_local_closure(
        &mut self,
        paths: &[PathBuf],
        store_dir: &str,
    ) -> Result<(), ExcludeError> {
        if paths.is_empty() {
            return Ok(());
        }
        let input = local_store::from_local_store(paths, store_dir)
            .map_err(|e| ExcludeError::Paths(Box::new(e)))?;
        self.add_closure(&input.closure);
        Ok(())
    }

    /// Leaves out every path the flat-file cache at `dir` has a narinfo for
    /// (as [`CacheDir::narinfos`] finds them; one that is a symlink, or
    /// too large to be a narinfo, is an error naming it).
    pub fn add_cache(&mut self, dir: &Path) -> Result<(), ExcludeError> {
        let cache = CacheDir::open(dir).map_err(|e| match e {
            CacheDirError::NotACache(dir) => ExcludeError::NotACache(dir),
            other => ExcludeError::Cache(other),
        })?;
        for hash in cache.narinfos().map_err(ExcludeError::Cache)? {
            cache.has_narinfo(&hash).map_err(ExcludeError::Cache)?;
            self.hash_parts.insert(hash);
        }
        Ok(())
    }

    /// Whether `path` is left out.
    pub fn contains(&self, path: &StorePath) -> bool {
        self.hash_parts.contains(path.hash_part())
    }

    /// `closure` without the paths left out.
    pub fn apply(&self, closure: Vec<PathInfo>) -> Vec<PathInfo> {
        closure
            .into_iter()
            .filter(|p| !self.contains(&p.path))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
    const B: &str = "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb";
    const HASH: &str = "sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq";

    fn entry(path: &str, references: &[&str]) -> Value {
        json!({"path": path, "narHash": HASH, "narSize": 504, "references": references})
    }

    #[test]
    fn the_excluded_closure_leaves_the_rest_with_its_references() {
        let closure = closure::from_export_references_graph(
            &json!([entry(A, &[B]), entry(B, &[])]),
            "/nix/store",
        )
        .unwrap();
        let exclusion =
            Exclusion::from_export_references_graph(&json!([entry(B, &[])]), "/nix/store").unwrap();
        let delta = exclusion.apply(closure);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].path.to_string(), A);
        // The narinfo will still name B: consumers find it where they have it.
        assert_eq!(delta[0].references[0].to_string(), B);
    }

    #[test]
    fn an_empty_exclusion_leaves_everything() {
        let closure =
            closure::from_export_references_graph(&json!([entry(A, &[])]), "/nix/store").unwrap();
        assert_eq!(Exclusion::default().apply(closure.clone()), closure);
    }

    #[test]
    fn another_cache_excludes_what_it_has_narinfos_for() {
        let dir = tempfile::tempdir().unwrap();
        let e = Exclusion::default().add_cache(dir.path()).unwrap_err();
        assert!(e.to_string().contains("has no nix-cache-info"), "{e}");
        fs::write(dir.path().join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
        fs::write(
            dir.path().join("ipsh9v6k9mlsb5lw4amy6gjn9bpdww97.narinfo"),
            "",
        )
        .unwrap();
        fs::write(dir.path().join("not-a-hash.narinfo"), "").unwrap();
        let mut exclusion = Exclusion::default();
        exclusion.add_cache(dir.path()).unwrap();
        assert!(exclusion.contains(&StorePath::parse(B, "/nix/store").unwrap()));
        assert!(!exclusion.contains(&StorePath::parse(A, "/nix/store").unwrap()));
    }
}
