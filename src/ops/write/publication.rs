//! The order narinfos appear in: a path's after those of its references.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::CacheError;
use crate::format::narinfo::NarInfo;
use crate::format::store_path::{PathInfo, StorePath};

/// Publishes narinfos references first: a path's narinfo is published once
/// its NAR is ready and the narinfos of all its references are published, so
/// that a consumer, or a run killed part-way, never sees a path whose
/// references the cache lacks. References outside the paths being written
/// are taken to be in the cache already. To publish is to write the narinfo
/// into a new output ([`super::target::NewOutput`]), and to make it pending
/// in a group commit ([`super::commit`]) in an existing cache
/// ([`super::target::ExistingCache`]), which keeps the
/// order among the narinfos it commits together.
pub(super) struct Publication {
    state: Mutex<PublicationState>,
}

struct PublicationState {
    /// For each path being written, how many of its references (itself
    /// aside) have no narinfo yet.
    waiting_for: HashMap<StorePath, usize>,
    /// For each path, the paths that refer to it.
    dependents: HashMap<StorePath, Vec<StorePath>>,
    /// Narinfos whose NAR is written, waiting for their references.
    ready: HashMap<StorePath, NarInfo>,
}

impl Publication {
    pub(super) fn new(closure: &[PathInfo]) -> Self {
        let writing: HashSet<&StorePath> = closure.iter().map(|p| &p.path).collect();
        let mut waiting_for = HashMap::with_capacity(closure.len());
        let mut dependents: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
        for info in closure {
            let references: HashSet<&StorePath> = info
                .references
                .iter()
                .filter(|r| **r != info.path && writing.contains(r))
                .collect();
            for reference in &references {
                dependents
                    .entry((*reference).clone())
                    .or_default()
                    .push(info.path.clone());
            }
            waiting_for.insert(info.path.clone(), references.len());
        }
        Publication {
            state: Mutex::new(PublicationState {
                waiting_for,
                dependents,
                ready: HashMap::new(),
            }),
        }
    }

    /// `info`'s NAR is written: publishes it with `publish` if its references
    /// are published, and then every ready path that was waiting only for it.
    /// Narinfos are written outside the lock, by the thread that completes
    /// the last reference.
    pub(super) fn ready(
        &self,
        info: NarInfo,
        publish: impl Fn(NarInfo) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let mut publishable = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            if state.waiting_for[&info.store_path] == 0 {
                publishable.push(info);
            } else {
                state.ready.insert(info.store_path.clone(), info);
            }
        }
        while let Some(info) = publishable.pop() {
            let path = info.store_path.clone();
            publish(info)?;
            let mut state = self.state.lock().unwrap();
            for dependent in state.dependents.remove(&path).unwrap_or_default() {
                let waiting = state.waiting_for.get_mut(&dependent).unwrap();
                *waiting -= 1;
                if *waiting == 0 {
                    publishable.extend(state.ready.remove(&dependent));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::write::testing::{narinfo_of, path_info};

    #[test]
    fn narinfos_are_published_after_those_of_their_references() {
        // top -> {left, right, top}, left -> leaf, right -> {leaf, cached};
        // `cached` is already in the cache, so nobody waits for it.
        let closure = [
            path_info("top", &["left", "right", "top"]),
            path_info("left", &["leaf"]),
            path_info("right", &["leaf", "cached"]),
            path_info("leaf", &[]),
        ];
        let publication = Publication::new(&closure);
        let published = Mutex::new(Vec::new());
        let publish = |i: NarInfo| {
            published
                .lock()
                .unwrap()
                .push(i.store_path.name().to_owned());
            Ok(())
        };
        // NARs finish in the worst order: every dependent before its references.
        for p in &closure {
            publication.ready(narinfo_of(p), publish).unwrap();
            if p.path.name() != "leaf" {
                assert!(published.lock().unwrap().is_empty());
            }
        }
        let published = published.into_inner().unwrap();
        assert_eq!(published.len(), 4);
        let at = |name: &str| published.iter().position(|n| n == name).unwrap();
        assert!(
            at("leaf") < at("left") && at("leaf") < at("right"),
            "{published:?}"
        );
        assert!(
            at("left") < at("top") && at("right") < at("top"),
            "{published:?}"
        );
    }
}
