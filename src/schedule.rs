//! Which path is written when, and by how many threads.
//!
//! `jobs` workers take paths from one queue, largest first, so that the
//! paths left for the end are the small ones and no core idles long while
//! another finishes. A worker normally gives its path one encoder thread:
//! with several paths in flight that keeps every core busy without any
//! thread waiting on another. A path is *wide*, and gets an encoder of
//! `jobs` threads, when it is at least `threshold` bytes (big enough for a
//! multithreaded encoder) and more than a `jobs`-th of the bytes still
//! outstanding: the other workers could not keep their cores busy until it
//! is done, as with one 1 GiB file. At most one path is wide at a time,
//! which bounds the threads, and so the memory, whatever the closure.
//!
//! Encoders' output does not depend on their thread count, so none of this
//! changes a byte of the cache.

use std::cmp::Reverse;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the workers share: the queue and the bytes not yet done.
struct Queue<'a, T> {
    order: std::slice::Iter<'a, (u64, &'a T)>,
    /// Bytes of the paths not yet finished, including those in progress.
    outstanding: u128,
    wide_in_progress: bool,
}

/// Runs `work(item, threads)` on every item, sized by `size`, as described
/// above. Stops taking new work at the first error and returns that error.
pub fn run<T, E, S, F>(items: &[T], size: S, threshold: u64, jobs: usize, work: F) -> Result<(), E>
where
    T: Sync,
    E: Send,
    S: Fn(&T) -> u64,
    F: Fn(&T, u32) -> Result<(), E> + Sync,
{
    let jobs = jobs.max(1);
    let mut order: Vec<(u64, &T)> = items.iter().map(|item| (size(item), item)).collect();
    // Stable, so equal sizes keep the caller's order.
    order.sort_by_key(|&(size, _)| Reverse(size));
    let queue = Mutex::new(Queue {
        order: order.iter(),
        outstanding: order.iter().map(|&(size, _)| u128::from(size)).sum(),
        wide_in_progress: false,
    });
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);

    let worker = || {
        while !failed.load(Ordering::Relaxed) {
            let (size, item, wide) = {
                let mut q = queue.lock().unwrap();
                let Some(&(size, item)) = q.order.next() else {
                    break;
                };
                let wide = jobs > 1
                    && size >= threshold
                    && !q.wide_in_progress
                    && u128::from(size) * jobs as u128 > q.outstanding;
                q.wide_in_progress |= wide;
                (size, item, wide)
            };
            let threads = if wide { jobs as u32 } else { 1 };
            if let Err(e) = work(item, threads) {
                failed.store(true, Ordering::Relaxed);
                first_error.lock().unwrap().get_or_insert(e);
            }
            let mut q = queue.lock().unwrap();
            q.outstanding -= u128::from(size);
            if wide {
                q.wide_in_progress = false;
            }
        }
    };

    std::thread::scope(|scope| {
        for _ in 1..jobs.min(order.len()) {
            scope.spawn(worker);
        }
        worker();
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn record(items: &[u64], threshold: u64, jobs: usize) -> Vec<(u64, u32)> {
        let seen = Mutex::new(Vec::new());
        run(
            items,
            |&s| s,
            threshold,
            jobs,
            |&s, threads| {
                seen.lock().unwrap().push((s, threads));
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn every_item_runs_exactly_once() {
        let items: Vec<u64> = (0..500).map(|i| (i * 7919) % 1000).collect();
        let mut want: Vec<u64> = items.clone();
        want.sort();
        for jobs in [1, 2, 3, 8] {
            let got: Vec<u64> = record(&items, 100, jobs)
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            assert_eq!(got, want, "jobs = {jobs}");
        }
    }

    #[test]
    fn paths_start_largest_first() {
        let order = Mutex::new(Vec::new());
        run(
            &[3u64, 9, 1, 7],
            |&s| s,
            5,
            1,
            |&s, _| {
                order.lock().unwrap().push(s);
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        assert_eq!(order.into_inner().unwrap(), vec![9, 7, 3, 1]);
    }

    #[test]
    fn a_lone_big_path_gets_every_thread() {
        assert_eq!(record(&[1000], 100, 4), vec![(1000, 4)]);
    }

    #[test]
    fn a_path_the_others_cannot_balance_gets_every_thread() {
        // 1000 of 1006 bytes: the other worker runs out of work long before.
        assert_eq!(
            record(&[1, 1000, 2, 3], 100, 2),
            vec![(1, 1), (2, 1), (3, 1), (1000, 2)]
        );
    }

    #[test]
    fn a_path_below_the_threshold_gets_one_thread_however_big_its_share() {
        assert_eq!(record(&[50, 1], 100, 2), vec![(1, 1), (50, 1)]);
    }

    /// Runs `items` with `jobs` workers; the items in `together` wait for
    /// each other, so they are surely in progress at the same time.
    fn record_together(items: &[u64], together: &[u64], jobs: usize) -> Vec<(u64, u32)> {
        let barrier = std::sync::Barrier::new(together.len());
        let seen = Mutex::new(Vec::new());
        run(
            items,
            |&s| s,
            10,
            jobs,
            |&s, threads| {
                seen.lock().unwrap().push((s, threads));
                if together.contains(&s) {
                    barrier.wait();
                }
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        seen
    }

    #[test]
    fn paths_the_other_workers_can_balance_get_one_thread_each() {
        assert_eq!(
            record_together(&[300, 300, 10, 10], &[300, 300], 2),
            vec![(10, 1), (10, 1), (300, 1), (300, 1)]
        );
    }

    #[test]
    fn only_one_path_is_wide_at_a_time() {
        // With three workers both big paths are more than a third of the
        // bytes outstanding, but the second starts while the first is wide.
        assert_eq!(
            record_together(&[1000, 900, 10], &[1000, 900], 3),
            vec![(10, 1), (900, 1), (1000, 3)]
        );
    }

    #[test]
    fn one_job_still_does_everything() {
        assert_eq!(record(&[1, 50, 2], 10, 1), vec![(1, 1), (2, 1), (50, 1)]);
    }

    #[test]
    fn stops_at_the_first_error_and_returns_it() {
        let items: Vec<u64> = (0..1000).collect();
        let done = AtomicUsize::new(0);
        let result = run(
            &items,
            |&s| s,
            u64::MAX,
            2,
            |&s, _| {
                done.fetch_add(1, Ordering::Relaxed);
                if s == 990 { Err(s) } else { Ok(()) }
            },
        );
        assert_eq!(result, Err(990));
        assert!(done.load(Ordering::Relaxed) < 1000);
    }
}
