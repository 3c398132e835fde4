//! Which path is written when, and by how many threads.
//!
//! Paths go largest first, so that no core idles at the end waiting for one
//! big path. A path big enough for a multithreaded encoder goes to the
//! *large lane*: one at a time, each with an encoder of `jobs` threads. The
//! other paths go to `jobs - 1` *small-lane* workers, each with a
//! single-threaded encoder, running beside the large lane; the large-lane
//! thread joins them once it is done. So every core has work even while a
//! large path's last block is compressed, and at most one multithreaded
//! encoder exists at a time, which bounds memory whatever the closure.
//!
//! Encoders' output does not depend on their thread count, so none of this
//! changes a byte of the cache.

use std::cmp::Reverse;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `work(item, threads)` on every item, sized by `size`, in the order
/// and lanes described above; items of at least `threshold` go to the large
/// lane. Stops taking new work at the first error and returns that error.
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
    let split = order.partition_point(|(s, _)| *s >= threshold);
    let (large, small) = order.split_at(split);

    let next_small = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let attempt = |item: &T, threads: u32| {
        if let Err(e) = work(item, threads) {
            failed.store(true, Ordering::Relaxed);
            first_error.lock().unwrap().get_or_insert(e);
        }
    };
    let small_lane = || {
        while !failed.load(Ordering::Relaxed) {
            match small.get(next_small.fetch_add(1, Ordering::Relaxed)) {
                Some((_, item)) => attempt(item, 1),
                None => break,
            }
        }
    };

    std::thread::scope(|scope| {
        let helpers = if large.is_empty() {
            jobs - 1
        } else {
            (jobs - 1).max(1)
        };
        for _ in 0..helpers.min(small.len()) {
            scope.spawn(small_lane);
        }
        for (_, item) in large {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            attempt(item, jobs as u32);
        }
        small_lane();
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_item_runs_once_large_ones_with_every_thread() {
        let items = [5, 100, 1, 300, 7, 200];
        let seen = record(&items, 100, 3);
        assert_eq!(
            seen,
            vec![(1, 1), (5, 1), (7, 1), (100, 3), (200, 3), (300, 3)]
        );
    }

    #[test]
    fn large_items_run_largest_first_and_one_at_a_time() {
        let running = AtomicUsize::new(0);
        let order = Mutex::new(Vec::new());
        let items = [10u64, 30, 20, 1, 2];
        run(
            &items,
            |&s| s,
            10,
            2,
            |&s, threads| {
                if threads > 1 {
                    assert_eq!(
                        running.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two large items at once"
                    );
                    order.lock().unwrap().push(s);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                }
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        assert_eq!(order.into_inner().unwrap(), vec![30, 20, 10]);
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
