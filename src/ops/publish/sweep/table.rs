//! What a prune knows of a bucket, held compactly: the objects it may
//! delete, as the one listing gave them, and the references between their
//! narinfos.
//!
//! A bucket of a million objects is the scale to plan for, so nothing here
//! owns a string per object: the names share one buffer, kept in the
//! listing's (sorted) order and found by binary search, and every other
//! fact is a number or a flag per object. A narinfo's references are
//! numbers of other objects. The cost is about 25 bytes per object besides
//! its name, and 16 per narinfo and 4 per reference (measured in
//! `tests/it/prune_bucket_scale.rs`).

use crate::format::narinfo;
use crate::format::store_path::is_hash_part;
use crate::support::graph::{Cycle, Graph};

/// An object of the bucket that a prune may delete: a narinfo, a listing
/// or a NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Narinfo,
    Listing,
    Nar,
}

impl Kind {
    /// The kind of the object `name` (relative to the cache's prefix);
    /// None for everything a prune never deletes.
    pub(super) fn of(name: &str) -> Option<Kind> {
        if let Some(nar) = name.strip_prefix("nar/") {
            return (!nar.is_empty() && !nar.contains('/')).then_some(Kind::Nar);
        }
        if name.contains('/') {
            return None;
        }
        match name.rsplit_once('.') {
            Some((hash, "narinfo")) if is_hash_part(hash) => Some(Kind::Narinfo),
            Some((hash, "ls")) if is_hash_part(hash) => Some(Kind::Listing),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Kind::Narinfo => NARINFO,
            Kind::Listing => LISTING,
            Kind::Nar => NAR,
        }
    }
}

/// An object's number in its [`Table`].
pub(super) type Id = u32;

// An object's flags: its kind (two bits), then what the prune found.
const KIND: u8 = 0b11;
const NARINFO: u8 = 1;
const LISTING: u8 = 2;
const NAR: u8 = 3;
/// Reachable from a root, or named by a reachable narinfo.
const LIVE: u8 = 1 << 2;
/// To be deleted by this run's sweep.
const DOOMED: u8 = 1 << 3;
/// Named by a mark whose grace has passed.
const IN_RIPE_MARK: u8 = 1 << 4;
/// Named by a mark whose grace has not passed.
const IN_PENDING_MARK: u8 = 1 << 5;
/// Deleted by this run.
const GONE: u8 = 1 << 6;

/// The objects a prune may delete, sorted by name.
#[derive(Default)]
pub(super) struct Table {
    /// Every name, one after the other.
    names: String,
    /// Where each name ends in `names`.
    ends: Vec<usize>,
    sizes: Vec<u64>,
    /// When the bucket last wrote each, seconds since 1970.
    modified: Vec<i64>,
    flags: Vec<u8>,
}

impl Table {
    /// Adds an object, if it is of a kind a prune may delete; says whether
    /// it was.
    pub(super) fn push(&mut self, name: &str, size: u64, modified: i64) -> bool {
        let Some(kind) = Kind::of(name) else {
            return false;
        };
        self.names.push_str(name);
        self.ends.push(self.names.len());
        self.sizes.push(size);
        self.modified.push(modified);
        self.flags.push(kind.bits());
        true
    }

    /// Sorts the table by name, unless the listing came sorted (S3 lists in
    /// key order) and drops a name listed twice (no S3 does; a synthetic or
    /// odd listing might), then frees what the listing left spare.
    pub(super) fn finish(&mut self) {
        let n = self.len();
        let sorted = (1..n).all(|i| self.name(i as Id - 1) < self.name(i as Id));
        if !sorted {
            let mut order: Vec<Id> = (0..n as Id).collect();
            order.sort_by(|&a, &b| self.name(a).cmp(self.name(b)));
            order.dedup_by(|a, b| self.name(*a) == self.name(*b));
            let mut table = Table::default();
            for &i in &order {
                let i = i as usize;
                table.names.push_str(self.name(i as Id));
                table.ends.push(table.names.len());
                table.sizes.push(self.sizes[i]);
                table.modified.push(self.modified[i]);
                table.flags.push(self.flags[i]);
            }
            *self = table;
        }
        self.names.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.sizes.shrink_to_fit();
        self.modified.shrink_to_fit();
        self.flags.shrink_to_fit();
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = Id> + use<> {
        0..self.len() as Id
    }

    pub(super) fn name(&self, id: Id) -> &str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.names[start..self.ends[id]]
    }

    pub(super) fn size(&self, id: Id) -> u64 {
        self.sizes[id as usize]
    }

    pub(super) fn modified(&self, id: Id) -> i64 {
        self.modified[id as usize]
    }

    pub(super) fn newest(&self) -> Option<i64> {
        self.modified.iter().copied().max()
    }

    pub(super) fn kind(&self, id: Id) -> Kind {
        match self.flags[id as usize] & KIND {
            NARINFO => Kind::Narinfo,
            LISTING => Kind::Listing,
            _ => Kind::Nar,
        }
    }

    /// The object named `name`, if the listing had it.
    pub(super) fn find(&self, name: &str) -> Option<Id> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.name(mid as Id).cmp(name) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Some(mid as Id),
            }
        }
        None
    }

    /// The narinfo of the path with hash part `hash`, if listed.
    pub(super) fn narinfo(&self, hash: &str) -> Option<Id> {
        self.find(&narinfo::file_name(hash))
    }

    /// The hash part of a narinfo or listing.
    pub(super) fn hash_of(&self, id: Id) -> &str {
        let name = self.name(id);
        name.rsplit_once('.').map_or(name, |(hash, _)| hash)
    }

    fn has(&self, id: Id, flag: u8) -> bool {
        self.flags[id as usize] & flag != 0
    }

    fn set(&mut self, id: Id, flag: u8) {
        self.flags[id as usize] |= flag;
    }

    fn clear(&mut self, id: Id, flag: u8) {
        self.flags[id as usize] &= !flag;
    }

    /// Whether nothing live names the object: it may be marked, and swept.
    pub(super) fn is_candidate(&self, id: Id) -> bool {
        !self.has(id, LIVE)
    }

    pub(super) fn is_doomed(&self, id: Id) -> bool {
        self.has(id, DOOMED)
    }

    pub(super) fn is_gone(&self, id: Id) -> bool {
        self.has(id, GONE)
    }

    pub(super) fn set_gone(&mut self, id: Id) {
        self.set(id, GONE);
    }

    /// Notes that a mark names the object: a ripe mark dooms it if it is a
    /// candidate and was written strictly before the mark (the listing's
    /// times are in seconds, and a write in the mark's second may follow
    /// it).
    pub(super) fn named_by_mark(&mut self, id: Id, mark_time: i64, ripe: bool) {
        if !ripe {
            self.set(id, IN_PENDING_MARK);
            return;
        }
        self.set(id, IN_RIPE_MARK);
        if self.modified(id) < mark_time && self.is_candidate(id) {
            self.set(id, DOOMED);
        }
    }

    /// Whether a mark still waits on the object: a pending one, or a ripe
    /// one whose sweep did not finish (`ripe_waits`).
    pub(super) fn is_waiting(&self, id: Id, ripe_waits: bool) -> bool {
        self.has(id, IN_PENDING_MARK) || (ripe_waits && self.has(id, IN_RIPE_MARK))
    }
}

/// What the bucket's narinfos say, as far as a prune needs it: for each,
/// the narinfos of its references and its NAR, by [`Id`].
pub(super) struct Narinfos {
    /// The narinfos of the table, in its order.
    ids: Vec<Id>,
    /// Per narinfo (by position in `ids`): where its references start in
    /// `references`, how many, and its NAR.
    nodes: Vec<Node>,
    references: Vec<Id>,
}

#[derive(Clone, Copy)]
struct Node {
    start: u32,
    count: u32,
    /// `NO_NAR` if it names no NAR object of the listing.
    nar: Id,
}

const NO_NAR: Id = Id::MAX;

impl Narinfos {
    /// Every narinfo of `table`, as yet read as naming nothing.
    pub(super) fn new(table: &Table) -> Narinfos {
        let ids: Vec<Id> = table
            .ids()
            .filter(|&id| table.kind(id) == Kind::Narinfo)
            .collect();
        let nodes = vec![
            Node {
                start: 0,
                count: 0,
                nar: NO_NAR,
            };
            ids.len()
        ];
        Narinfos {
            ids,
            nodes,
            references: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The `k`th narinfo.
    pub(super) fn id(&self, k: usize) -> Id {
        self.ids[k]
    }

    fn position(&self, id: Id) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// Records what the `k`th narinfo names: the hash parts of its
    /// references and its URL. Only what the listing has is kept: a
    /// reference the bucket lacks can neither be reached nor deleted.
    pub(super) fn read<'a>(
        &mut self,
        table: &Table,
        k: usize,
        references: impl IntoIterator<Item = &'a str>,
        url: &str,
    ) {
        let start = self.references.len();
        self.references.extend(
            references
                .into_iter()
                .filter_map(|hash| table.narinfo(hash)),
        );
        let url = url.trim_start_matches("./");
        let nar = (Kind::of(url) == Some(Kind::Nar))
            .then(|| table.find(url))
            .flatten();
        self.nodes[k] = Node {
            start: start as u32,
            count: (self.references.len() - start) as u32,
            nar: nar.unwrap_or(NO_NAR),
        };
    }

    fn node(&self, id: Id) -> Option<Node> {
        self.position(id).map(|k| self.nodes[k])
    }

    fn references_of(&self, node: Node) -> &[Id] {
        &self.references[node.start as usize..][..node.count as usize]
    }

    /// Marks live the narinfos reachable from `roots` (narinfos of the
    /// table), their NARs and listings; returns how many narinfos are.
    pub(super) fn mark_live(
        &self,
        table: &mut Table,
        roots: impl IntoIterator<Item = Id>,
    ) -> usize {
        let mut todo: Vec<Id> = roots.into_iter().collect();
        let mut live = 0;
        while let Some(id) = todo.pop() {
            let Some(node) = self.node(id) else {
                continue;
            };
            if table.has(id, LIVE) {
                continue;
            }
            table.set(id, LIVE);
            live += 1;
            if node.nar != NO_NAR {
                table.set(node.nar, LIVE);
            }
            if let Some(listing) = table.find(&format!("{}.ls", table.hash_of(id))) {
                table.set(listing, LIVE);
            }
            todo.extend(self.references_of(node));
        }
        live
    }

    /// Keeps out of the doomed whatever a narinfo that stays in the bucket
    /// names: its NAR, its listing and the narinfos of its references,
    /// transitively. So no narinfo ever loses what it names, whatever the
    /// marks said.
    pub(super) fn protect(&self, table: &mut Table) {
        let mut seen = vec![false; self.len()];
        let mut todo: Vec<usize> = (0..self.len())
            .filter(|&k| !table.is_doomed(self.ids[k]))
            .collect();
        for &k in &todo {
            seen[k] = true;
        }
        while let Some(k) = todo.pop() {
            let id = self.ids[k];
            let node = self.nodes[k];
            if node.nar != NO_NAR {
                table.clear(node.nar, DOOMED);
            }
            if let Some(listing) = table.find(&format!("{}.ls", table.hash_of(id))) {
                table.clear(listing, DOOMED);
            }
            for &reference in self.references_of(node) {
                if let Some(r) = self.position(reference)
                    && !seen[r]
                {
                    seen[r] = true;
                    table.clear(reference, DOOMED);
                    todo.push(r);
                }
            }
        }
    }

    /// The order the doomed go in: narinfos in levels (a path's before those
    /// of the paths it refers to, the reference order of `support::graph`
    /// walked down), then listings, then NARs.
    ///
    /// Cycle policy: refuse, before anything is deleted (the hash parts on
    /// the cycle are the error). No order would delete a narinfo on a cycle
    /// before what it refers to, and Nix never writes one.
    pub(super) fn deletion_order(&self, table: &Table) -> Result<Vec<Vec<Id>>, Vec<String>> {
        let doomed: Vec<Id> = self
            .ids
            .iter()
            .copied()
            .filter(|&id| table.is_doomed(id))
            .collect();
        let graph = Graph::from_fn(doomed.len(), |i| {
            let node = self
                .node(doomed[i])
                .expect("a doomed narinfo is one of the table's");
            self.references_of(node)
                .iter()
                .filter_map(|r| doomed.binary_search(r).ok())
                .collect::<Vec<usize>>()
        });
        let levels = graph.levels().map_err(|Cycle(on)| {
            on.into_iter()
                .map(|i| table.hash_of(doomed[i]).to_owned())
                .collect::<Vec<_>>()
        })?;
        let mut stages: Vec<Vec<Id>> = levels
            .groups()
            .into_iter()
            .rev()
            .map(|level| level.into_iter().map(|i| doomed[i]).collect())
            .collect();
        drop(graph);
        for kind in [Kind::Listing, Kind::Nar] {
            stages.push(
                table
                    .ids()
                    .filter(|&id| table.kind(id) == kind && table.is_doomed(id))
                    .collect(),
            );
        }
        stages.retain(|s| !s.is_empty());
        Ok(stages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0c4l9ivaa1z6k0bjhl5hbnivl6ysw5qn";
    const B: &str = "1b9p07z77phvv2hf6gm9f28syrdlh7bi";

    fn table(names: &[&str]) -> Table {
        let mut table = Table::default();
        for name in names {
            table.push(name, 1, 0);
        }
        table.finish();
        table
    }

    #[test]
    fn only_narinfos_listings_and_nars_are_ever_candidates() {
        assert_eq!(Kind::of(&format!("{A}.narinfo")), Some(Kind::Narinfo));
        assert_eq!(Kind::of(&format!("{A}.ls")), Some(Kind::Listing));
        assert_eq!(Kind::of("nar/x.nar.zst"), Some(Kind::Nar));
        for other in [
            "nix-cache-info",
            "store-paths",
            "pins/release",
            "prune-marks/1-2",
            "debuginfo/ab.debug",
            "log/x.drv",
            "nar/sub/x.nar",
            "x.narinfo",
            "other/a.narinfo",
        ] {
            assert_eq!(Kind::of(other), None, "{other}");
        }
    }

    #[test]
    fn a_listing_out_of_order_is_sorted_and_every_name_found() {
        let mut t = Table::default();
        for name in ["nar/b.nar", &format!("{B}.narinfo"), "nar/a.nar", "log/x"] {
            t.push(name, 7, 1);
        }
        t.finish();
        assert_eq!(t.len(), 3, "log/x is never a candidate");
        let names: Vec<&str> = t.ids().map(|id| t.name(id)).collect();
        assert_eq!(
            names,
            [&format!("{B}.narinfo") as &str, "nar/a.nar", "nar/b.nar"]
        );
        for (id, name) in names.iter().enumerate() {
            assert_eq!(t.find(name), Some(id as Id));
        }
        assert_eq!(t.find("nar/c.nar"), None);
        assert_eq!(t.narinfo(B), Some(0));
    }

    #[test]
    fn what_a_root_reaches_is_live_with_its_nar_and_listing() {
        let (a, b) = (format!("{A}.narinfo"), format!("{B}.narinfo"));
        let mut t = table(&[&a, &b, &format!("{A}.ls"), "nar/a.nar", "nar/b.nar"]);
        let mut n = Narinfos::new(&t);
        for k in 0..n.len() {
            if t.name(n.id(k)) == b {
                n.read(&t, k, [A, "00000000000000000000000000000000"], "nar/b.nar");
            } else {
                n.read(&t, k, [], "nar/a.nar");
            }
        }
        let root = t.narinfo(A);
        assert_eq!(n.mark_live(&mut t, root), 1);
        let candidates: Vec<&str> = t
            .ids()
            .filter(|&id| t.is_candidate(id))
            .map(|id| t.name(id))
            .collect();
        assert_eq!(candidates, [&b as &str, "nar/b.nar"]);
    }

    #[test]
    fn what_a_narinfo_that_stays_names_is_never_deleted() {
        // B refers to A; A's narinfo is doomed, B's (newer than the mark,
        // say, from a publish under way) is not: A and its NAR stay.
        let (a, b, ls) = (
            format!("{A}.narinfo"),
            format!("{B}.narinfo"),
            format!("{A}.ls"),
        );
        let mut t = table(&[&a, &b, "nar/a.nar", "nar/b.nar", &ls]);
        let mut n = Narinfos::new(&t);
        for k in 0..n.len() {
            if t.name(n.id(k)) == b {
                n.read(&t, k, [A], "nar/b.nar");
            } else {
                n.read(&t, k, [], "./nar/a.nar");
            }
        }
        for name in [&a as &str, "nar/a.nar", &ls] {
            let id = t.find(name).unwrap();
            t.named_by_mark(id, 1, true);
        }
        n.protect(&mut t);
        assert!(!t.ids().any(|id| t.is_doomed(id)));

        // Both doomed: both go, B's narinfo before A's, then the listing,
        // NARs last.
        for name in [&b as &str, "nar/b.nar"] {
            let id = t.find(name).unwrap();
            t.named_by_mark(id, 1, true);
        }
        for name in [&a as &str, "nar/a.nar", &ls] {
            let id = t.find(name).unwrap();
            t.named_by_mark(id, 1, true);
        }
        n.protect(&mut t);
        let order: Vec<Vec<&str>> = n
            .deletion_order(&t)
            .unwrap()
            .into_iter()
            .map(|stage| stage.into_iter().map(|id| t.name(id)).collect())
            .collect();
        assert_eq!(
            order,
            vec![
                vec![&b as &str],
                vec![&a],
                vec![&ls],
                vec!["nar/a.nar", "nar/b.nar"]
            ]
        );
    }

    #[test]
    fn a_mark_dooms_only_what_was_written_before_it_and_is_no_longer_live() {
        let mut t = Table::default();
        t.push("nar/old.nar", 1, 10);
        t.push("nar/same-second.nar", 1, 20);
        t.push("nar/pending.nar", 1, 10);
        t.finish();
        for name in ["nar/old.nar", "nar/same-second.nar"] {
            let id = t.find(name).unwrap();
            t.named_by_mark(id, 20, true);
        }
        let pending = t.find("nar/pending.nar").unwrap();
        t.named_by_mark(pending, 20, false);
        let doomed: Vec<&str> = t
            .ids()
            .filter(|&id| t.is_doomed(id))
            .map(|id| t.name(id))
            .collect();
        assert_eq!(doomed, ["nar/old.nar"]);
        assert!(t.is_waiting(pending, false));
        let same = t.find("nar/same-second.nar").unwrap();
        assert!(!t.is_waiting(same, false) && t.is_waiting(same, true));
    }
}
