//! The order narinfos appear in: a path's after those of its references.
//!
//! This is the reference order of [`crate::support::graph`] found online:
//! the levels themselves are never needed, since a narinfo goes as soon as
//! its NAR is written and its references' narinfos have gone, whatever
//! level it is on. So it keeps the graph's [`Countdown`] rather than calling
//! [`Graph::levels`] but once, to refuse a cycle before anything is written.

use std::collections::HashMap;
use std::sync::Mutex;

use super::CacheError;
use crate::format::narinfo::NarInfo;
use crate::format::store_path::{PathInfo, ReferenceCycle, StorePath};
use crate::support::graph::{Countdown, Cycle, Graph};

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
    /// The paths being written, as nodes of `graph`.
    node: HashMap<StorePath, usize>,
    graph: Graph,
    state: Mutex<PublicationState>,
}

struct PublicationState {
    /// Which references of each path have no narinfo yet.
    waiting: Countdown,
    /// Narinfos whose NAR is written, waiting for their references.
    ready: Vec<Option<NarInfo>>,
}

impl Publication {
    /// Cycle policy: an error. No order would publish a path on a cycle,
    /// and a run that waited for one would end with its narinfos unwritten.
    pub(super) fn new(closure: &[PathInfo]) -> Result<Self, ReferenceCycle> {
        let paths: Vec<&StorePath> = closure.iter().map(|p| &p.path).collect();
        let graph = Graph::by_key(&paths, |i| &closure[i].references);
        if let Err(Cycle(nodes)) = graph.levels() {
            return Err(ReferenceCycle(
                nodes.into_iter().map(|i| closure[i].path.clone()).collect(),
            ));
        }
        Ok(Publication {
            node: paths
                .into_iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), i))
                .collect(),
            state: Mutex::new(PublicationState {
                waiting: graph.countdown(),
                ready: vec![None; closure.len()],
            }),
            graph,
        })
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
            let node = self.node[&info.store_path];
            let mut state = self.state.lock().unwrap();
            if state.waiting.is_free(node) {
                publishable.push(info);
            } else {
                state.ready[node] = Some(info);
            }
        }
        let mut freed = Vec::new();
        while let Some(info) = publishable.pop() {
            let node = self.node[&info.store_path];
            publish(info)?;
            let mut state = self.state.lock().unwrap();
            state.waiting.release(&self.graph, node, &mut freed);
            for dependent in freed.drain(..) {
                publishable.extend(state.ready[dependent].take());
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
        let publication = Publication::new(&closure).unwrap();
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

    #[test]
    fn a_closure_with_a_reference_cycle_is_refused_before_anything_is_published() {
        let closure = [path_info("a", &["b"]), path_info("b", &["a"])];
        let ReferenceCycle(paths) = Publication::new(&closure).err().unwrap();
        assert_eq!(paths.len(), 2);
    }
}
