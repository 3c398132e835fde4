//! Group commit: when updating a cache, narinfos are made durable in
//! batches, with one filesystem sync for many paths rather than a few
//! fsyncs for each.
//!
//! A narinfo whose references are published ([`super::publication`])
//! becomes *pending*. A batch of pending narinfos is committed by the thread
//! that finds it due ([`BatchPolicy`]), and the rest at the end of the run:
//! 1. each narinfo is written to a temporary file, unsynced;
//! 2. one `syncfs` makes durable every NAR, listing and debug-info entry
//!    written so far, and the narinfos' temporary files;
//! 3. the narinfos are renamed into place by [`levels`], the cache directory
//!    synced after each level, so that no narinfo's rename is durable before
//!    those of its references in the batch (references in earlier batches
//!    are committed already: batches are committed one after the other);
//! 4. only then are they reported as done.
//!
//! This module holds the whole of it: the batching ([`GroupCommit`]), the
//! order ([`levels`]) and the writing ([`commit`]).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use super::CacheError;
use crate::cache::{CacheDir, TEMP_FILE_DIRS, read_error, write_error};
use crate::format::narinfo::NarInfo;
use crate::format::store_path::{ReferenceCycle, StorePath};
use crate::support::files::{self, TempNames};
use crate::support::graph::{Cycle, Graph};

/// When a batch of pending narinfos is due to be committed.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchPolicy {
    /// A batch this long is committed.
    pub(super) max_len: usize,
    /// A batch whose first narinfo waited this long is committed when
    /// another one arrives, so that a slow run's progress is durable too.
    pub(super) max_age: Duration,
}

impl Default for BatchPolicy {
    /// On 10,000 small paths a batch takes a tenth of a second to write,
    /// and a run loses at most a second of work to a crash.
    fn default() -> Self {
        BatchPolicy {
            max_len: 1000,
            max_age: Duration::from_secs(1),
        }
    }
}

impl BatchPolicy {
    /// Whether a batch of `len` narinfos, the first pending since `since`,
    /// is due at `now`.
    fn is_due(&self, len: usize, since: Instant, now: Instant) -> bool {
        len >= self.max_len || now.saturating_duration_since(since) >= self.max_age
    }
}

/// Narinfos waiting to be committed, in the order they became pending (a
/// path's after those of its references).
pub(super) struct GroupCommit {
    policy: BatchPolicy,
    pending: Mutex<Pending>,
    /// Held while a batch is taken and committed: batches are committed in
    /// the order they are taken, one at a time.
    committing: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    batch: Vec<NarInfo>,
    /// When the first narinfo of `batch` arrived.
    since: Option<Instant>,
}

impl GroupCommit {
    pub(super) fn new(policy: BatchPolicy) -> Self {
        GroupCommit {
            policy,
            pending: Mutex::new(Pending::default()),
            committing: Mutex::new(()),
        }
    }

    /// Adds `info`, whose references are committed or pending; if that
    /// makes the batch due, commits it with `commit`, unless another thread
    /// is committing (the batch is then due at the next arrival, or at
    /// [`Self::finish`]), so that workers do not queue behind a sync.
    pub(super) fn add(
        &self,
        info: NarInfo,
        commit: impl FnOnce(Vec<NarInfo>) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let now = Instant::now();
        {
            let mut pending = self.pending.lock().unwrap();
            pending.batch.push(info);
            let since = *pending.since.get_or_insert(now);
            if !self.policy.is_due(pending.batch.len(), since, now) {
                return Ok(());
            }
        }
        let _turn = match self.committing.try_lock() {
            Ok(turn) => turn,
            Err(TryLockError::WouldBlock) => return Ok(()),
            Err(TryLockError::Poisoned(e)) => panic!("a commit panicked: {e}"),
        };
        let batch = self.take();
        if batch.is_empty() {
            return Ok(());
        }
        commit(batch)
    }

    /// Commits what is pending, after any batch being committed.
    pub(super) fn finish(
        &self,
        commit: impl FnOnce(Vec<NarInfo>) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let _turn = self.committing.lock().unwrap();
        let batch = self.take();
        if batch.is_empty() {
            return Ok(());
        }
        commit(batch)
    }

    fn take(&self) -> Vec<NarInfo> {
        let mut pending = self.pending.lock().unwrap();
        pending.since = None;
        std::mem::take(&mut pending.batch)
    }
}

/// Commits a batch of narinfos whose references are committed or in the
/// batch: on return, they are durable (steps 1 to 3 above). On failure,
/// the temporary files are removed and the narinfos renamed so far stay:
/// their references are in place.
pub(super) fn commit(
    cache: &CacheDir,
    temp: &TempNames,
    batch: &[NarInfo],
) -> Result<(), CacheError> {
    let dest = |info: &NarInfo| cache.narinfo_path(info.store_path.hash_part());
    let mut temps = Vec::with_capacity(batch.len());
    let written = batch.iter().try_for_each(|info| {
        let dest = dest(info);
        let tmp = temp.next(&dest);
        // Pushed first, so that a partial one is removed too.
        temps.push(Some(tmp.clone()));
        fs::write(&tmp, info.to_string()).map_err(write_error(&dest))
    });
    let renamed = written
        .map_err(CacheError::from)
        .and_then(|()| sync_filesystems(cache))
        .and_then(|()| {
            for level in levels(batch)? {
                for i in level {
                    let dest = dest(&batch[i]);
                    let tmp = temps[i].take().expect("each narinfo is renamed once");
                    if let Err(e) = fs::rename(&tmp, &dest) {
                        temps[i] = Some(tmp);
                        return Err(write_error(&dest)(e).into());
                    }
                }
                // The next level's narinfos must not outlive these in a crash.
                files::sync_dir(cache.root()).map_err(write_error(cache.root()))?;
            }
            Ok(())
        });
    if renamed.is_err() {
        for tmp in temps.into_iter().flatten() {
            let _ = fs::remove_file(tmp);
        }
    }
    renamed
}

/// Syncs the filesystem of the cache, and those of `nar/` and `debuginfo/`
/// where they are others (a mount of their own).
fn sync_filesystems(cache: &CacheDir) -> Result<(), CacheError> {
    let mut synced = Vec::new();
    for dir in TEMP_FILE_DIRS.map(|sub| cache.root().join(sub)) {
        let device = fs::metadata(&dir).map_err(read_error(&dir))?.dev();
        if !synced.contains(&device) {
            files::sync_filesystem(&dir).map_err(write_error(&dir))?;
            synced.push(device);
        }
    }
    Ok(())
}

/// The order to rename a batch's narinfos in: indices into `batch`, by
/// level ([`crate::support::graph`]). Level 0 holds those none of whose
/// references are in the batch; level n those whose references in the batch
/// are all in levels below n. Within a level, the batch's order.
///
/// Cycle policy: an error, and no narinfo of the batch is renamed. The
/// batch comes from a [`super::publication::Publication`], which refuses a
/// closure with a cycle before anything is written, so this is a second
/// guard, never a panic.
pub(super) fn levels(batch: &[NarInfo]) -> Result<Vec<Vec<usize>>, ReferenceCycle> {
    let paths: Vec<&StorePath> = batch.iter().map(|info| &info.store_path).collect();
    match Graph::by_key(&paths, |i| &batch[i].references).levels() {
        Ok(levels) => Ok(levels.groups()),
        Err(Cycle(nodes)) => Err(ReferenceCycle(
            nodes
                .into_iter()
                .map(|i| batch[i].store_path.clone())
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::write::testing::narinfo;
    use std::thread;

    fn names(batch: &[NarInfo], levels: &[Vec<usize>]) -> Vec<Vec<String>> {
        levels
            .iter()
            .map(|l| {
                l.iter()
                    .map(|&i| batch[i].store_path.name().to_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_batch_without_references_among_its_paths_is_one_level() {
        // References outside the batch (committed earlier) and to itself
        // do not hold a narinfo back.
        let batch = [
            narinfo("a", &["earlier", "a"]),
            narinfo("b", &["earlier"]),
            narinfo("c", &[]),
        ];
        assert_eq!(names(&batch, &levels(&batch).unwrap()), [["a", "b", "c"]]);
    }

    #[test]
    fn a_narinfo_is_renamed_a_level_after_its_deepest_reference_in_the_batch() {
        // top -> {mid, leaf}, mid -> leaf, other -> leaf: top waits for mid,
        // which waits for leaf; `other` need only wait for leaf.
        let batch = [
            narinfo("leaf", &[]),
            narinfo("mid", &["leaf"]),
            narinfo("other", &["leaf", "earlier"]),
            narinfo("top", &["mid", "leaf", "top"]),
        ];
        assert_eq!(
            names(&batch, &levels(&batch).unwrap()),
            [vec!["leaf"], vec!["mid", "other"], vec!["top"]]
        );
    }

    #[test]
    fn levels_do_not_depend_on_the_order_of_the_batch() {
        let batch = [
            narinfo("top", &["mid"]),
            narinfo("mid", &["leaf"]),
            narinfo("leaf", &[]),
        ];
        assert_eq!(
            names(&batch, &levels(&batch).unwrap()),
            [["leaf"], ["mid"], ["top"]]
        );
    }

    #[test]
    fn an_empty_batch_has_no_levels() {
        assert!(levels(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_cycle_in_a_batch_is_an_error_naming_its_paths_not_a_panic() {
        let batch = [narinfo("a", &["b"]), narinfo("b", &["a"])];
        let ReferenceCycle(paths) = levels(&batch).unwrap_err();
        let names: Vec<&str> = paths.iter().map(StorePath::name).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_batch_is_due_when_full_or_when_its_first_narinfo_waited_long_enough() {
        let policy = BatchPolicy {
            max_len: 3,
            max_age: Duration::from_secs(1),
        };
        let start = Instant::now();
        assert!(!policy.is_due(2, start, start + Duration::from_millis(999)));
        assert!(policy.is_due(3, start, start));
        assert!(policy.is_due(1, start, start + Duration::from_secs(1)));
    }

    /// Commits recorded as the names in each batch.
    fn recorder(
        commits: &Mutex<Vec<Vec<String>>>,
    ) -> impl Fn(Vec<NarInfo>) -> Result<(), CacheError> + '_ {
        |batch| {
            let names = batch.iter().map(|i| i.store_path.name().to_owned());
            commits.lock().unwrap().push(names.collect());
            Ok(())
        }
    }

    #[test]
    fn narinfos_are_committed_in_full_batches_and_the_rest_at_the_end() {
        let group = GroupCommit::new(BatchPolicy {
            max_len: 2,
            max_age: Duration::from_secs(3600),
        });
        let commits = Mutex::new(Vec::new());
        for name in ["a", "b", "c"] {
            group.add(narinfo(name, &[]), recorder(&commits)).unwrap();
        }
        assert_eq!(*commits.lock().unwrap(), [["a", "b"]]);
        group.finish(recorder(&commits)).unwrap();
        group.finish(recorder(&commits)).unwrap();
        // Nothing is lost, and an empty batch is no commit (no sync).
        assert_eq!(*commits.lock().unwrap(), [vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn a_batch_waiting_longer_than_its_age_is_committed_when_the_next_arrives() {
        let group = GroupCommit::new(BatchPolicy {
            max_len: 1000,
            max_age: Duration::from_millis(50),
        });
        let commits = Mutex::new(Vec::new());
        group.add(narinfo("a", &[]), recorder(&commits)).unwrap();
        thread::sleep(Duration::from_millis(60));
        assert!(
            commits.lock().unwrap().is_empty(),
            "committed with no arrival"
        );
        group.add(narinfo("b", &[]), recorder(&commits)).unwrap();
        assert_eq!(*commits.lock().unwrap(), [["a", "b"]]);
    }

    #[test]
    fn a_due_batch_is_left_to_the_next_arrival_while_another_is_being_committed() {
        // A worker that finds the batch due while a commit runs goes on
        // working; the batch goes with the next arrival after that commit.
        let group = GroupCommit::new(BatchPolicy {
            max_len: 1,
            max_age: Duration::from_secs(3600),
        });
        let commits = Mutex::new(Vec::new());
        group
            .add(narinfo("a", &[]), |first| {
                group.add(narinfo("b", &[]), recorder(&commits))?;
                assert!(commits.lock().unwrap().is_empty(), "two commits at once");
                recorder(&commits)(first)
            })
            .unwrap();
        group.add(narinfo("c", &[]), recorder(&commits)).unwrap();
        assert_eq!(*commits.lock().unwrap(), [vec!["a"], vec!["b", "c"]]);
    }

    #[test]
    fn a_failed_commit_is_reported_to_the_thread_that_made_it() {
        let group = GroupCommit::new(BatchPolicy {
            max_len: 1,
            max_age: Duration::from_secs(3600),
        });
        let e = group
            .add(narinfo("a", &[]), |_| {
                Err(CacheError::OutputExists("/the/cache".into()))
            })
            .unwrap_err();
        assert!(matches!(e, CacheError::OutputExists(_)), "{e}");
    }
}
