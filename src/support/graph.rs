//! The reference order of a set of things that refer to each other: each
//! one's level, or a cycle that leaves no order.
//!
//! Nodes are indices `0..n`; the caller maps its own keys (store paths,
//! hash parts) to them, with [`Graph::by_key`] or by hand. A node's level is
//! 0 if it refers to no other node, else one more than the level of its
//! deepest reference. Walking the levels up visits every node after what it
//! refers to (writing a cache); walking them down, before (removing from
//! one). A node that refers to itself is at no disadvantage: that is no
//! edge (a store path may name itself among its references).
//!
//! Everything here is O(nodes + references) and panics on no input: the
//! references may come from a hostile cache.

use std::collections::HashMap;
use std::hash::Hash;

/// Who refers to whom, among `n` nodes.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Node `i` refers to `references[reference_starts[i]..reference_starts[i + 1]]`.
    reference_starts: Vec<usize>,
    references: Vec<usize>,
    /// Node `i` is referred to by `referrers[referrer_starts[i]..referrer_starts[i + 1]]`.
    referrer_starts: Vec<usize>,
    referrers: Vec<usize>,
}

/// Nodes whose references go round: each refers to the next, the last to
/// the first. Never empty, and never a node referring to itself alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle(pub Vec<usize>);

/// The level of each node of an acyclic [`Graph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    level: Vec<usize>,
    count: usize,
}

impl Graph {
    /// The graph of `n` nodes in which node `i` refers to `references(i)`.
    /// A reference to itself, or to an index of `n` or more (something
    /// outside the set), is no edge. A reference given twice counts once.
    pub fn from_fn<R>(n: usize, mut references: impl FnMut(usize) -> R) -> Graph
    where
        R: IntoIterator<Item = usize>,
    {
        let mut reference_starts = Vec::with_capacity(n + 1);
        let mut targets: Vec<usize> = Vec::new();
        reference_starts.push(0);
        for i in 0..n {
            let start = targets.len();
            targets.extend(references(i).into_iter().filter(|&r| r != i && r < n));
            targets[start..].sort_unstable();
            let mut kept = start;
            for j in start..targets.len() {
                if kept == start || targets[kept - 1] != targets[j] {
                    targets[kept] = targets[j];
                    kept += 1;
                }
            }
            targets.truncate(kept);
            reference_starts.push(targets.len());
        }
        // The same edges, grouped by their target (a counting sort).
        let mut referrer_starts = vec![0; n + 1];
        for &r in &targets {
            referrer_starts[r + 1] += 1;
        }
        for i in 0..n {
            referrer_starts[i + 1] += referrer_starts[i];
        }
        let mut next = referrer_starts.clone();
        let mut referrers = vec![0; targets.len()];
        for i in 0..n {
            for &r in &targets[reference_starts[i]..reference_starts[i + 1]] {
                referrers[next[r]] = i;
                next[r] += 1;
            }
        }
        Graph {
            reference_starts,
            references: targets,
            referrer_starts,
            referrers,
        }
    }

    /// The graph of `keys`, in which the node of `keys[i]` refers to the
    /// nodes of the keys `references(i)` gives; a key that is not in `keys`
    /// is outside the set, no edge. (If a key is in `keys` twice, references
    /// to it are to its last node.)
    pub fn by_key<K, R>(keys: &[K], mut references: impl FnMut(usize) -> R) -> Graph
    where
        K: Eq + Hash,
        R: IntoIterator<Item = K>,
    {
        let index: HashMap<&K, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
        Graph::from_fn(keys.len(), |i| {
            references(i)
                .into_iter()
                .filter_map(|k| index.get(&k).copied())
                .collect::<Vec<_>>()
        })
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.reference_starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nodes `node` refers to (itself aside), in increasing order.
    pub fn references(&self, node: usize) -> &[usize] {
        &self.references[self.reference_starts[node]..self.reference_starts[node + 1]]
    }

    /// The nodes that refer to `node` (itself aside), in increasing order.
    pub fn referrers(&self, node: usize) -> &[usize] {
        &self.referrers[self.referrer_starts[node]..self.referrer_starts[node + 1]]
    }

    /// The level of every node, or a cycle if there is one (then no order
    /// puts every node after its references).
    pub fn levels(&self) -> Result<Levels, Cycle> {
        let mut countdown = self.countdown();
        let mut level = vec![0; self.len()];
        let mut current: Vec<usize> = (0..self.len()).filter(|&i| countdown.is_free(i)).collect();
        let mut placed = 0;
        let mut count = 0;
        while !current.is_empty() {
            placed += current.len();
            let mut next = Vec::new();
            for &node in &current {
                level[node] = count;
                countdown.release(self, node, &mut next);
            }
            current = next;
            count += 1;
        }
        if placed < self.len() {
            return Err(self.cycle_among(|node| !countdown.is_free(node)));
        }
        Ok(Levels { level, count })
    }

    /// A cycle among the nodes `stuck` holds for: those that some
    /// reference, also stuck, keeps from a level. Following such a
    /// reference from any of them must come back to a node already seen.
    fn cycle_among(&self, stuck: impl Fn(usize) -> bool) -> Cycle {
        let Some(start) = (0..self.len()).find(|&n| stuck(n)) else {
            return Cycle(Vec::new());
        };
        let mut seen_at: Vec<Option<usize>> = vec![None; self.len()];
        let mut walk = Vec::new();
        let mut node = start;
        loop {
            if let Some(at) = seen_at[node] {
                walk.drain(..at);
                return Cycle(walk);
            }
            seen_at[node] = Some(walk.len());
            walk.push(node);
            match self.references(node).iter().copied().find(|&r| stuck(r)) {
                Some(next) => node = next,
                // Not reached for nodes that are stuck, since a stuck node
                // has a stuck reference; a walk that ends is no cycle.
                None => return Cycle(Vec::new()),
            }
        }
    }

    /// Every node waiting for its references, to be released one by one
    /// as they are done: the order found online.
    pub fn countdown(&self) -> Countdown {
        Countdown {
            unmet: (0..self.len()).map(|n| self.references(n).len()).collect(),
            released: vec![false; self.len()],
        }
    }
}

/// How many references of each node are not released yet
/// ([`Graph::countdown`]).
#[derive(Debug, Clone)]
pub struct Countdown {
    unmet: Vec<usize>,
    released: Vec<bool>,
}

impl Countdown {
    /// Whether every reference of `node` is released.
    pub fn is_free(&self, node: usize) -> bool {
        self.unmet[node] == 0
    }

    /// Releases `node` (again: no effect), and adds to `freed` the nodes
    /// whose last unreleased reference it was.
    pub fn release(&mut self, graph: &Graph, node: usize, freed: &mut Vec<usize>) {
        if std::mem::replace(&mut self.released[node], true) {
            return;
        }
        for &referrer in graph.referrers(node) {
            self.unmet[referrer] -= 1;
            if self.unmet[referrer] == 0 {
                freed.push(referrer);
            }
        }
    }
}

impl Levels {
    /// The level of `node`.
    pub fn of(&self, node: usize) -> usize {
        self.level[node]
    }

    /// The nodes of each level, from 0 up, each level in increasing order.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.count];
        for (node, &level) in self.level.iter().enumerate() {
            groups[level].push(node);
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(references: &[&[usize]]) -> Graph {
        Graph::from_fn(references.len(), |i| references[i].iter().copied())
    }

    #[test]
    fn a_node_is_one_level_above_its_deepest_reference() {
        // 3 -> {1, 0}, 1 -> 0, 2 -> 0: 3 waits for 1, which waits for 0.
        let levels = graph(&[&[], &[0], &[0], &[1, 0]]).levels().unwrap();
        assert_eq!(levels.groups(), [vec![0], vec![1, 2], vec![3]]);
        assert_eq!(levels.of(3), 2);
    }

    #[test]
    fn a_reference_to_itself_is_no_cycle_and_no_wait() {
        let levels = graph(&[&[0], &[1, 0]]).levels().unwrap();
        assert_eq!(levels.groups(), [[0], [1]]);
    }

    #[test]
    fn references_outside_the_set_and_repeated_ones_are_ignored() {
        let g = graph(&[&[7, 1, 1], &[]]);
        assert_eq!(g.references(0), [1]);
        assert_eq!(g.referrers(1), [0]);
        assert_eq!(g.levels().unwrap().groups(), [[1], [0]]);
    }

    #[test]
    fn a_cycle_is_found_with_its_nodes_in_reference_order() {
        // 0 -> 1 -> 2 -> 1, and 3 -> 0 hangs on the cycle without being on it.
        let Cycle(nodes) = graph(&[&[1], &[2], &[1], &[0]]).levels().unwrap_err();
        assert_eq!(nodes, [1, 2]);
        // Two nodes naming each other, as a hostile cache can.
        assert_eq!(
            graph(&[&[1], &[0]]).levels().unwrap_err(),
            Cycle(vec![0, 1])
        );
    }

    #[test]
    fn a_long_chain_takes_linear_time_and_no_recursion() {
        // 200,000 levels: a quadratic rescan or a recursive walk would not
        // finish, or overflow the stack.
        let n = 200_000;
        let g = Graph::from_fn(n, |i| i.checked_sub(1));
        let levels = g.levels().unwrap();
        assert_eq!(levels.of(n - 1), n - 1);
        let ring = Graph::from_fn(n, |i| Some((i + 1) % n));
        assert_eq!(ring.levels().unwrap_err().0.len(), n);
    }

    #[test]
    fn keys_map_to_nodes_and_unknown_keys_are_outside_the_set() {
        let keys = ["top", "leaf"];
        let refs: [&[&str]; 2] = [&["leaf", "elsewhere", "top"], &[]];
        let g = Graph::by_key(&keys, |i| refs[i].iter().copied());
        assert_eq!(g.levels().unwrap().groups(), [[1], [0]]);
    }

    #[test]
    fn a_countdown_frees_a_node_when_its_last_reference_is_released() {
        let g = graph(&[&[], &[], &[0, 1]]);
        let mut countdown = g.countdown();
        let mut freed = Vec::new();
        assert!(!countdown.is_free(2));
        countdown.release(&g, 0, &mut freed);
        // Released twice, a node counts once.
        countdown.release(&g, 0, &mut freed);
        assert!(freed.is_empty());
        countdown.release(&g, 1, &mut freed);
        assert_eq!(freed, [2]);
        assert!(countdown.is_free(2));
    }

    #[test]
    fn an_empty_graph_has_no_levels() {
        let g = graph(&[]);
        assert!(g.is_empty());
        assert!(g.levels().unwrap().groups().is_empty());
    }
}
