//! The bucket's root files, `store-paths` and `pins/NAME`: what publishes
//! add to and prunes take from, each change a compare-and-swap.
//!
//! Publishers and pruners on other machines change these files at the same
//! moment, and S3 has no lock. So a change is: read the object with its
//! ETag, compute the new text from what was read, and PUT it with
//! `If-Match: <ETag>` (`If-None-Match: *` when there was none). If another
//! writer changed the object in between, the store refuses the PUT (412)
//! and the change is computed again from a fresh read: a merge adds to what
//! is there now, a prune takes from what is there now what the policy
//! drops now. At most [`ATTEMPTS`] reads, with growing, jittered pauses;
//! then an error naming the object. Nothing is ever written unconditionally:
//! a store that does not do conditional writes (`501 Not Implemented`) is
//! an error naming the store and the object, since a blind write could
//! lose a concurrent writer's root or revision.
//!
//! - `publish` merges: `store-paths` gains the cache's roots it lacks, each
//!   pin the cache's revisions it lacks (`Pin::merged_with`). The cache's
//!   files count as a local `prune` would leave them: without the
//!   revisions their policy drops, and without the roots only those name.
//!   So a revision that a prune of the bucket removed is not added back
//!   (renumbered as the newest) by a publish from a cache that still holds
//!   it.
//! - `prune s3://…` removes what the pins' policies drop, as the local
//!   prune does to a directory (the same functions, `ops::pins::files`):
//!   first, from `store-paths`, the roots that only dropped revisions name;
//!   then, from each pin, the dropped revisions. In that order a run killed
//!   between the two leaves the revisions in the pin, and the next run
//!   drops them, and their roots, again; the other order could leave in
//!   `store-paths` roots that no pin drops any more, kept for ever.

use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::bucket::Bucket;
pub use super::bucket::Tagged;
use super::plan::{File, Plan};
use super::{PublishError, Report};
use crate::cache::STORE_PATHS;
use crate::format::pin::{self, Pin};
use crate::format::store_path::{self, StorePath};
use crate::ops::pins::files::{dropped_roots, without_dropped_revisions, without_dropped_roots};

/// Reads of a root file, each followed by a conditional write, before a
/// change gives up.
pub(super) const ATTEMPTS: u32 = 20;

/// What the root files need of a bucket: a read with the ETag and a
/// conditional write. [`Bucket`] is the real one; a prune's tests may hand
/// another (`sweep::Objects` requires it). Names are relative to the
/// cache's prefix.
pub trait RootFiles {
    /// `name`'s bytes and its ETag.
    fn get_tagged(&self, name: &str) -> impl Future<Output = Result<Tagged, PublishError>>;

    /// Puts `bytes` as `name` only if the object there is still the one
    /// read: the one with ETag `read`, or none when `read` is None.
    /// Ok(false) if another writer changed it first.
    fn put_if(
        &self,
        name: &str,
        bytes: Vec<u8>,
        read: Option<&str>,
    ) -> impl Future<Output = Result<bool, PublishError>>;
}

impl RootFiles for Bucket {
    async fn get_tagged(&self, name: &str) -> Result<Tagged, PublishError> {
        Bucket::get_tagged(self, name).await
    }

    async fn put_if(
        &self,
        name: &str,
        bytes: Vec<u8>,
        read: Option<&str>,
    ) -> Result<bool, PublishError> {
        Bucket::put_if(self, name, bytes, read).await
    }
}

/// Changes the object `name` of the cache at `url` by compare-and-swap:
/// `change` gets what the bucket holds (None if nothing) and returns the
/// new bytes, or None to leave it as it is; it is called again, on a fresh
/// read, whenever another writer got in between. Returns the bytes
/// written, if any.
pub(super) async fn swap(
    files: &impl RootFiles,
    url: &str,
    name: &str,
    change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, PublishError>,
) -> Result<Option<u64>, PublishError> {
    swap_within(files, url, name, ATTEMPTS, change).await
}

/// [`swap`], giving up after `attempts` reads.
async fn swap_within(
    files: &impl RootFiles,
    url: &str,
    name: &str,
    attempts: u32,
    mut change: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, PublishError>,
) -> Result<Option<u64>, PublishError> {
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(pause(attempt)).await;
        }
        let read = files.get_tagged(name).await?;
        let Some(bytes) = change(read.as_ref().map(|(b, _)| b.as_slice()))? else {
            return Ok(None);
        };
        let etag = match &read {
            None => None,
            Some((_, Some(etag))) => Some(etag.as_str()),
            Some((_, None)) => {
                return Err(PublishError::NoETag {
                    url: url.to_owned(),
                    name: name.to_owned(),
                });
            }
        };
        let size = bytes.len() as u64;
        if files.put_if(name, bytes, etag).await? {
            return Ok(Some(size));
        }
    }
    Err(PublishError::Contended {
        url: url.to_owned(),
        name: name.to_owned(),
        attempts,
    })
}

/// The pause before attempt `attempt` (from 1): 50 ms, doubling up to
/// 2 s, each between half and all of that at random, so that writers that
/// collided do not collide again in step.
fn pause(attempt: u32) -> Duration {
    let ceiling = (25u64 << attempt.min(7)).min(2_000);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(ceiling / 2 + random % (ceiling / 2 + 1))
}

/// Phase 3 of a publish: merges the cache's `store-paths` and pins into
/// the bucket's, each by [`swap`], `store-paths` first.
pub(super) async fn publish(
    bucket: &Bucket,
    plan: &Plan,
    now: u64,
    report: &mut Report,
) -> Result<(), PublishError> {
    let url = bucket.location.to_string();
    let store_dir = plan.store_dir.as_str();
    let bad = |path: String, e: &dyn std::fmt::Display| PublishError::Cache {
        path: path.into(),
        message: e.to_string(),
    };
    // The cache's pins as a local prune would leave them.
    let mut pins = Vec::new();
    for file in &plan.pins {
        let text = read(file).await?;
        let pin =
            Pin::parse(&text, store_dir).map_err(|e| bad(file.path.display().to_string(), &e))?;
        pins.push((file, pin));
    }
    let all: Vec<Pin> = pins.iter().map(|(_, p)| p.clone()).collect();
    let dropped = dropped_roots(&all, now);
    let mut written = |size: Option<u64>| match size {
        Some(bytes) => {
            report.uploaded += 1;
            report.uploaded_bytes += bytes;
        }
        None => report.skipped += 1,
    };

    if let Some(file) = &plan.store_paths {
        let text = read(file).await?;
        let ours: Vec<&str> = text
            .lines()
            .filter(|line| {
                !line.is_empty()
                    && StorePath::parse(line, store_dir).map_or(true, |p| !dropped.contains(&p))
            })
            .collect();
        let size = swap(bucket, &url, STORE_PATHS, |theirs| {
            Ok(merge_lines(theirs.unwrap_or_default(), &ours))
        })
        .await?;
        written(size);
    }

    for (file, pin) in &pins {
        let ours = without_dropped_revisions(pin, now).unwrap_or_else(|| pin.clone());
        let size = swap(bucket, &url, &file.name, |theirs| {
            let Some(theirs) = theirs else {
                return Ok(Some(ours.to_string().into_bytes()));
            };
            let theirs = Pin::parse(&String::from_utf8_lossy(theirs), store_dir)
                .map_err(|e| bad(format!("{url}/{}", file.name), &e))?;
            let merged = theirs.merged_with(&ours);
            Ok((merged != theirs).then(|| merged.to_string().into_bytes()))
        })
        .await?;
        written(size);
    }
    Ok(())
}

async fn read(file: &File) -> Result<String, PublishError> {
    let bytes = tokio::fs::read(&file.path)
        .await
        .map_err(|source| PublishError::Io {
            path: file.path.clone(),
            source,
        })?;
    String::from_utf8(bytes).map_err(|e| PublishError::Cache {
        path: file.path.clone(),
        message: format!("not UTF-8: {e}"),
    })
}

/// `theirs` followed by the lines of `ours` it lacks; None if it lacks none.
pub(super) fn merge_lines(theirs: &[u8], ours: &[&str]) -> Option<Vec<u8>> {
    let have: BTreeSet<&[u8]> = theirs.split(|&b| b == b'\n').collect();
    let mut missing: Vec<&[u8]> = Vec::new();
    for line in ours.iter().map(|l| l.as_bytes()) {
        if !line.is_empty() && !have.contains(line) && !missing.contains(&line) {
            missing.push(line);
        }
    }
    if missing.is_empty() {
        return None;
    }
    let mut merged = theirs.to_vec();
    if !merged.is_empty() && !merged.ends_with(b"\n") {
        merged.push(b'\n');
    }
    for line in missing {
        merged.extend_from_slice(line);
        merged.push(b'\n');
    }
    Some(merged)
}

/// What a prune did (would do, with `dry_run`) to the root files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Per pin that lost any: its name and the revisions removed from its
    /// file, newest first.
    pub revisions: Vec<(String, Vec<u64>)>,
    /// Roots removed from `store-paths`.
    pub roots: usize,
    /// Requests sent (that would be sent).
    pub requests: usize,
}

/// The end of `prune s3://…`: removes from the pins among `names` (the
/// `pins/NAME` the listing found; other names are left alone) the
/// revisions their policies drop at `now`, and before that from
/// `store-paths` the roots that only those revisions name, each by
/// [`swap`] on fresh reads. With `dry_run` it only reads, and says what
/// it would remove.
pub(super) async fn drop_revisions(
    files: &impl RootFiles,
    url: &str,
    store_dir: &str,
    names: &[String],
    now: u64,
    dry_run: bool,
) -> Result<Dropped, PublishError> {
    let parse = |name: &str, bytes: &[u8]| {
        Pin::parse(&String::from_utf8_lossy(bytes), store_dir).map_err(|e| PublishError::Cache {
            path: format!("{url}/{name}").into(),
            message: e.to_string(),
        })
    };
    let mut dropped = Dropped::default();
    // The pins as they are now, which decide what goes.
    let mut pins: Vec<(&str, Pin)> = Vec::new();
    for name in names
        .iter()
        .filter(|n| n.starts_with(&format!("{}/", pin::DIR)))
    {
        dropped.requests += 1;
        if let Some((bytes, _)) = files.get_tagged(name).await? {
            pins.push((name, parse(name, &bytes)?));
        }
    }
    let all: Vec<Pin> = pins.iter().map(|(_, p)| p.clone()).collect();
    let roots = dropped_roots(&all, now);
    let goes = |pin: &Pin| {
        let (_, gone) = pin.split(now);
        (pin.name.clone(), gone.iter().map(|r| r.number).collect())
    };
    if dry_run {
        dropped.revisions = all
            .iter()
            .map(goes)
            .filter(|(_, gone): &(String, Vec<u64>)| !gone.is_empty())
            .collect();
        if !roots.is_empty() {
            dropped.requests += 1;
            if let Some((bytes, _)) = files.get_tagged(STORE_PATHS).await? {
                let listed = parse_store_paths(url, store_dir, &bytes)?;
                dropped.roots = listed.len() - without_dropped_roots(&listed, &roots).len();
            }
        }
        return Ok(dropped);
    }

    if !roots.is_empty() {
        let mut removed = 0;
        swap(files, url, STORE_PATHS, |theirs| {
            dropped.requests += 1;
            removed = 0;
            let Some(theirs) = theirs else {
                return Ok(None);
            };
            let listed = parse_store_paths(url, store_dir, theirs)?;
            let kept = without_dropped_roots(&listed, &roots);
            removed = listed.len() - kept.len();
            if removed == 0 {
                return Ok(None);
            }
            dropped.requests += 1;
            let text: String = kept.iter().map(|p| format!("{p}\n")).collect();
            Ok(Some(text.into_bytes()))
        })
        .await?;
        dropped.roots = removed;
    }

    for (name, pin) in &pins {
        // The revisions whose roots left store-paths above.
        let decided: BTreeSet<(u64, u64)> = pin
            .split(now)
            .1
            .iter()
            .map(|r| (r.number, r.time))
            .collect();
        if decided.is_empty() {
            continue;
        }
        let mut gone = Vec::new();
        swap(files, url, name, |theirs| {
            dropped.requests += 1;
            gone.clear();
            // A pin deleted since: nothing to drop from.
            let Some(theirs) = theirs else {
                return Ok(None);
            };
            let theirs = parse(name, theirs)?;
            let Some(retained) = without_dropped_revisions(&theirs, now) else {
                return Ok(None);
            };
            // The policy applied to the pin as it is now, but only to the
            // revisions decided on above: one it drops only now keeps its
            // roots in store-paths until the next run, so it stays until
            // then too.
            let mut kept = theirs.clone();
            kept.revisions.retain(|r| {
                retained.revisions.contains(r) || !decided.contains(&(r.number, r.time))
            });
            if kept == theirs {
                return Ok(None);
            }
            dropped.requests += 1;
            gone = theirs
                .revisions
                .iter()
                .filter(|r| !kept.revisions.contains(r))
                .map(|r| r.number)
                .collect();
            Ok(Some(kept.to_string().into_bytes()))
        })
        .await?;
        if !gone.is_empty() {
            dropped.revisions.push((pin.name.clone(), gone));
        }
    }
    Ok(dropped)
}

/// The lines of a bucket's `store-paths`, each a store path in `store_dir`.
pub(super) fn parse_store_paths(
    url: &str,
    store_dir: &str,
    bytes: &[u8],
) -> Result<Vec<StorePath>, PublishError> {
    let mut paths = Vec::new();
    for line in String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let path = StorePath::parse(line, store_dir).map_err(|_| PublishError::Cache {
            path: format!("{url}/{STORE_PATHS}").into(),
            message: format!("'{line}' is not a store path in {store_dir}"),
        })?;
        store_path::append_new(&mut paths, [path]);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

    use super::super::bucket::not_implemented;
    use super::super::location::Location;
    use super::*;

    const URL: &str = "s3://roots?endpoint=http://127.0.0.1:9";

    /// A bucket in memory: it does conditional writes as S3 does.
    fn bucket() -> Bucket {
        Bucket {
            store: Arc::new(InMemory::new()),
            location: Location::parse(URL).unwrap(),
            credentials: String::new(),
            part_size: 5 << 20,
        }
    }

    /// Another writer's PUT, unconditional, from inside a change.
    fn overwrite(store: &Arc<dyn ObjectStore>, name: &str, text: &str) {
        let key = object_store::path::Path::from(name);
        futures::executor::block_on(store.put(&key, PutPayload::from(text.as_bytes().to_vec())))
            .unwrap();
    }

    fn text(bucket: &Bucket, name: &str) -> String {
        let bytes = futures::executor::block_on(bucket.get(name)).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn a_write_another_writer_got_in_before_is_merged_again_and_loses_nothing() {
        let bucket = bucket();
        overwrite(&bucket.store, STORE_PATHS, "/nix/store/a\n");
        let mut seen = Vec::new();
        let written = swap(&bucket, URL, STORE_PATHS, |theirs| {
            let theirs = String::from_utf8(theirs.unwrap().to_vec()).unwrap();
            if seen.is_empty() {
                // Between this read and the write: another publish's root.
                overwrite(&bucket.store, STORE_PATHS, "/nix/store/a\n/nix/store/b\n");
            }
            seen.push(theirs.clone());
            Ok(merge_lines(theirs.as_bytes(), &["/nix/store/c"]))
        })
        .await
        .unwrap();
        assert_eq!(seen, ["/nix/store/a\n", "/nix/store/a\n/nix/store/b\n"]);
        let merged = "/nix/store/a\n/nix/store/b\n/nix/store/c\n";
        assert_eq!(written, Some(merged.len() as u64));
        assert_eq!(text(&bucket, STORE_PATHS), merged);
    }

    #[tokio::test]
    async fn an_object_created_by_another_writer_meanwhile_is_read_and_merged() {
        // Absent when read: the write is If-None-Match, and loses to the
        // other writer's, which the next read merges.
        let bucket = bucket();
        let mut calls = 0;
        swap(&bucket, URL, STORE_PATHS, |theirs| {
            calls += 1;
            if theirs.is_none() {
                overwrite(&bucket.store, STORE_PATHS, "/nix/store/b\n");
            }
            Ok(merge_lines(theirs.unwrap_or_default(), &["/nix/store/c"]))
        })
        .await
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(text(&bucket, STORE_PATHS), "/nix/store/b\n/nix/store/c\n");
    }

    #[tokio::test]
    async fn a_change_that_always_loses_gives_up_naming_the_object() {
        let bucket = bucket();
        overwrite(&bucket.store, "pins/release", "x");
        let mut n = 0;
        let error = swap_within(&bucket, URL, "pins/release", 3, |_| {
            n += 1;
            overwrite(&bucket.store, "pins/release", &format!("other {n}"));
            Ok(Some(b"ours".to_vec()))
        })
        .await
        .unwrap_err();
        assert_eq!(n, 3);
        assert!(
            matches!(&error, PublishError::Contended { name, attempts: 3, .. } if name == "pins/release"),
            "{error}"
        );
        assert_eq!(text(&bucket, "pins/release"), "other 3");
    }

    #[tokio::test]
    async fn nothing_to_change_writes_nothing() {
        let bucket = bucket();
        overwrite(&bucket.store, STORE_PATHS, "/nix/store/a\n");
        let written = swap(&bucket, URL, STORE_PATHS, |theirs| {
            Ok(merge_lines(theirs.unwrap(), &["/nix/store/a"]))
        })
        .await
        .unwrap();
        assert_eq!(written, None);
    }

    #[test]
    fn a_store_without_conditional_writes_is_told_apart() {
        let answer = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 501 Not Implemented: \
                     <Error><Code>NotImplemented</Code></Error>"
                .into(),
        };
        assert!(not_implemented(&answer));
        let refused = object_store::Error::NotImplemented {
            operation: "put_opts".into(),
            implementer: "S3".into(),
        };
        assert!(not_implemented(&refused));
        let other = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 500 Internal Server Error".into(),
        };
        assert!(!not_implemented(&other));
    }

    #[test]
    fn store_paths_merge_keeps_the_bucket_s_roots() {
        assert_eq!(merge_lines(b"/nix/store/a\n", &["/nix/store/a"]), None);
        assert_eq!(
            merge_lines(b"/nix/store/a\n", &["/nix/store/b", "/nix/store/a"]).unwrap(),
            b"/nix/store/a\n/nix/store/b\n"
        );
        assert_eq!(
            merge_lines(b"", &["/nix/store/b"]).unwrap(),
            b"/nix/store/b\n"
        );
    }
}
