//! Which path is written when, and by how many threads.
//!
//! `jobs` workers take paths from one queue, largest first, so that the
//! paths left for the end are the small ones and no core idles long while
//! another finishes. A worker normally gives its path one encoder thread:
//! with several paths in flight that keeps every core busy without any
//! thread waiting on another.
//!
//! A *large* path (at least `threshold` bytes, big enough for a
//! multithreaded encoder) is *wide*, and gets an encoder of `jobs` threads,
//! when it is more than a `jobs`-th of the bytes still outstanding: the
//! other workers could not keep their cores busy until it is done, as with
//! one 1 GiB file. A path only becomes wide when no other large path is in
//! progress, and while it is, the other workers take only small paths (or
//! wait). So at any moment there is either one wide encoder beside small
//! ones, or one single-threaded encoder per worker, which bounds memory
//! whatever the closure.
//!
//! Encoders' output does not depend on their thread count, so none of this
//! changes a byte of the cache.

use std::cmp::Reverse;
use std::slice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// One path's turn: its size, the item and its encoder threads.
struct Turn<'a, T> {
    size: u64,
    item: &'a T,
    large: bool,
    threads: u32,
}

/// What the workers share.
struct Queue<'a, T> {
    /// Paths of at least the threshold, then the others; each largest first.
    large: slice::Iter<'a, (u64, &'a T)>,
    small: slice::Iter<'a, (u64, &'a T)>,
    /// Bytes of the paths not yet finished, including those in progress.
    outstanding: u128,
    large_in_progress: usize,
    wide_in_progress: bool,
}

enum Next<'a, T> {
    Run(Turn<'a, T>),
    /// Only large paths are left and one is wide: wait for it to finish.
    Wait,
    Done,
}

impl<'a, T> Queue<'a, T> {
    fn next(&mut self, jobs: usize) -> Next<'a, T> {
        if !self.wide_in_progress
            && let Some(&(size, item)) = self.large.next()
        {
            let wide = jobs > 1
                && self.large_in_progress == 0
                && u128::from(size) * jobs as u128 > self.outstanding;
            self.large_in_progress += 1;
            self.wide_in_progress = wide;
            let threads = if wide { jobs as u32 } else { 1 };
            return Next::Run(Turn {
                size,
                item,
                large: true,
                threads,
            });
        }
        match self.small.next() {
            Some(&(size, item)) => Next::Run(Turn {
                size,
                item,
                large: false,
                threads: 1,
            }),
            None if self.large.len() > 0 => Next::Wait,
            None => Next::Done,
        }
    }

    fn finish(&mut self, turn: &Turn<'a, T>) {
        self.outstanding -= u128::from(turn.size);
        if turn.large {
            self.large_in_progress -= 1;
        }
        if turn.threads > 1 {
            self.wide_in_progress = false;
        }
    }
}

/// Runs `work(item, threads)` on every item, sized by `size`, as described
/// above, an item of at least `threshold` being large. Stops taking new work
/// at the first error and returns that error.
pub fn run<T, E, S, F>(items: &[T], size: S, threshold: u64, jobs: usize, work: F) -> Result<(), E>
where
    T: Sync,
    E: Send,
    S: Fn(&T) -> u64,
    F: Fn(&T, u32) -> Result<(), E> + Sync,
{
    run_by(items, &size, |item| size(item) >= threshold, jobs, work)
}

/// [`run`], with `large` saying which items are large: for work of which
/// only some kinds can use several threads.
pub fn run_by<T, E, S, L, F>(items: &[T], size: S, large: L, jobs: usize, work: F) -> Result<(), E>
where
    T: Sync,
    E: Send,
    S: Fn(&T) -> u64,
    L: Fn(&T) -> bool,
    F: Fn(&T, u32) -> Result<(), E> + Sync,
{
    let jobs = jobs.max(1);
    let mut order: Vec<(u64, &T)> = items.iter().map(|item| (size(item), item)).collect();
    // Stable, so equal sizes keep the caller's order.
    order.sort_by_key(|&(size, _)| Reverse(size));
    let (large, small): (Vec<_>, Vec<_>) =
        order.iter().copied().partition(|&(_, item)| large(item));
    let queue = Mutex::new(Queue {
        large: large.iter(),
        small: small.iter(),
        outstanding: order.iter().map(|&(size, _)| u128::from(size)).sum(),
        large_in_progress: 0,
        wide_in_progress: false,
    });
    let turn_done = Condvar::new();
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);

    let worker = || {
        loop {
            let turn = {
                let mut q = queue.lock().unwrap();
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break None;
                    }
                    match q.next(jobs) {
                        Next::Run(turn) => break Some(turn),
                        Next::Wait => q = turn_done.wait(q).unwrap(),
                        Next::Done => break None,
                    }
                }
            };
            let Some(turn) = turn else { break };
            if let Err(e) = work(turn.item, turn.threads) {
                failed.store(true, Ordering::Relaxed);
                first_error.lock().unwrap().get_or_insert(e);
            }
            queue.lock().unwrap().finish(&turn);
            turn_done.notify_all();
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
        record_together(items, &[], threshold, jobs)
    }

    /// Runs `items` with `jobs` workers and returns (size, threads) of each,
    /// sorted; the items in `together` wait for each other, so they are
    /// surely in progress at the same time.
    fn record_together(
        items: &[u64],
        together: &[u64],
        threshold: u64,
        jobs: usize,
    ) -> Vec<(u64, u32)> {
        let barrier = std::sync::Barrier::new(together.len());
        let seen = Mutex::new(Vec::new());
        run(
            items,
            |&s| s,
            threshold,
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

    #[test]
    fn paths_the_other_workers_can_balance_get_one_thread_each() {
        assert_eq!(
            record_together(&[300, 300, 10, 10], &[300, 300], 10, 2),
            vec![(10, 1), (10, 1), (300, 1), (300, 1)]
        );
    }

    #[test]
    fn no_other_large_path_runs_beside_a_wide_one() {
        let large_running = AtomicUsize::new(0);
        let wide_running = AtomicBool::new(false);
        let seen = Mutex::new(Vec::new());
        run(
            &[1000u64, 900, 5, 6, 7],
            |&s| s,
            10,
            3,
            |&s, threads| {
                seen.lock().unwrap().push((s, threads));
                if s >= 10 {
                    let others = large_running.fetch_add(1, Ordering::SeqCst);
                    if threads > 1 {
                        assert_eq!(others, 0, "a wide path beside another large one");
                        wide_running.store(true, Ordering::SeqCst);
                    } else {
                        assert!(
                            !wide_running.load(Ordering::SeqCst),
                            "a large path beside a wide one"
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    wide_running.store(false, Ordering::SeqCst);
                    large_running.fetch_sub(1, Ordering::SeqCst);
                }
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        // 900 waits for 1000, and is then most of what is left: wide too.
        assert_eq!(seen, vec![(5, 1), (6, 1), (7, 1), (900, 3), (1000, 3)]);
    }

    #[test]
    fn an_error_in_a_wide_path_releases_the_workers_waiting_for_it() {
        let result = run(
            &[1000u64, 900, 1],
            |&s| s,
            10,
            2,
            |&s, _| {
                if s == 1000 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    Err(s)
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(result, Err(1000));
    }

    #[test]
    fn only_items_said_to_be_large_get_every_thread() {
        // Odd sizes are of a kind that cannot use more threads.
        let threads_of = |size: u64| {
            let seen = Mutex::new(0);
            run_by(
                &[size],
                |&s| s,
                |&s| s % 2 == 0,
                2,
                |_, threads| {
                    *seen.lock().unwrap() = threads;
                    Ok::<_, ()>(())
                },
            )
            .unwrap();
            seen.into_inner().unwrap()
        };
        assert_eq!(threads_of(1000), 2);
        assert_eq!(threads_of(1001), 1);
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
