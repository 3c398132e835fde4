//! `prune s3://…`: shrinking a published bucket by mark, wait and sweep.
//!
//! What is specified here: a first run only marks what the roots and the
//! retained pin revisions do not keep; a run after the grace period deletes
//! it, and Nix 2.34 still reads every narinfo left; `publish` uploads pins
//! after the narinfos, merged with the bucket's; a prune removes from the
//! bucket's pin files the revisions their policies drop, and from its
//! `store-paths` the roots only those name, and says so per pin (a dry run
//! says what it would remove and changes neither file; concurrent writers
//! of those files are `root_files`' topic); a prune refuses a bucket
//! without `nix-cache-info` or without roots, and never touches objects
//! outside the cache's prefix; many rounds of a publish and a prune started
//! together, through a proxy that delays and fails requests, leave a bucket
//! whose every narinfo Nix reads; a prune killed at any request leaves a
//! bucket Nix reads, which the next prune finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::build::{build_into, closure_of, mk_binary_cache};
use crate::common::*;
use crate::prune::{left_file, top};
use crate::publish::{Bucket, FlakyProxy, Moto, credentials, publisher, read_request};

/// `mk-binary-cache-publish prune URL ARGS…`.
pub(crate) fn prune(url: &str, args: &[&str]) -> Command {
    let mut cmd = publisher();
    cmd.arg("prune").arg(url).args(args);
    cmd
}

/// A local cache of one release of the pin `release`, which keeps one.
fn release(root: &str) -> tempfile::TempDir {
    let cache = tempdir();
    run(&mut build_into(
        cache.path(),
        &["-q", "--pin", "release", "--keep-revisions", "1", root],
    ));
    cache
}

/// Every narinfo in the copy `dir` of a bucket: hash part -> fields.
fn narinfos(dir: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let hash = name.strip_suffix(".narinfo")?.to_owned();
            Some((hash, narinfo(&dir.join(&name))))
        })
        .collect()
}

/// Checks that every narinfo in the bucket names a NAR and references that
/// are there; returns the store paths of its narinfos.
fn assert_closed(bucket: &Bucket) -> Vec<String> {
    let copy = bucket.download();
    let infos = narinfos(copy.path());
    for (hash, info) in &infos {
        assert!(
            copy.path().join(&info["URL"]).is_file(),
            "{hash}: its NAR {} is missing",
            info["URL"]
        );
        for reference in info["References"].split_whitespace() {
            assert!(
                infos.contains_key(hash_part(reference)),
                "{hash} refers to {reference}, whose narinfo is missing"
            );
        }
    }
    infos.values().map(|i| i["StorePath"].clone()).collect()
}

/// Nix 2.34 realises every path with a narinfo in the bucket into a fresh
/// store, substituting only (its disk cache of narinfos off, as the bucket
/// changes under it).
fn assert_nix_reads_every_narinfo(bucket: &Bucket, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let nix = crate::nix_versions::nix_2_34::nix();
    let options = [
        "--option",
        "require-sigs",
        "false",
        "--option",
        "narinfo-cache-positive-ttl",
        "0",
        "--option",
        "narinfo-cache-negative-ttl",
        "0",
    ];
    nix.realise_from(&bucket.url(), &options, &[], paths)
        .assert_success(nix);
}

/// The number that follows `prefix` in `text`; 0 if `prefix` is not there.
pub(crate) fn number_after(text: &str, prefix: &str) -> usize {
    text.split_once(prefix).map_or(0, |(_, rest)| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    })
}

fn hashes_of(paths: &BTreeSet<String>) -> BTreeSet<String> {
    paths.iter().map(|p| hash_part(p).to_owned()).collect()
}

#[test]
fn a_bucket_keeps_what_its_pins_retain_and_loses_the_rest_after_the_grace_period() {
    let bucket = Moto::shared().bucket("prune");
    let url = bucket.url();
    // Two releases of one pin that keeps one: the first's paths are garbage.
    let first_release = release(top());
    run(publisher().arg(first_release.path()).arg(&url));
    let second = release(left_file());
    run(publisher().arg(second.path()).arg(&url));
    let pin = String::from_utf8(fs::read(bucket.download().path().join("pins/release")).unwrap())
        .unwrap();
    assert_eq!(pin.matches("Revision: ").count(), 2, "{pin}");
    // The bucket's times are in seconds: a mark covers what is older.
    std::thread::sleep(Duration::from_secs(1));

    // A first run marks, deletes nothing.
    let out = run(&mut prune(&url, &["--grace", "1"]));
    assert!(out.contains("; deleted 0 objects"), "{out}");
    let everything = hashes_of(&closure_of(&[top(), left_file()]));
    let held: BTreeSet<String> = narinfos(bucket.download().path()).into_keys().collect();
    assert_eq!(held, everything);

    // After the grace period the next run deletes what is still garbage.
    std::thread::sleep(Duration::from_secs(2));
    let out = run(&mut prune(&url, &["--grace", "1"]));
    let kept = hashes_of(&closure_of(&[left_file()]));
    let gone = everything.difference(&kept).count();
    assert!(
        out.contains(&format!("deleted {} objects", 2 * gone)),
        "{out}"
    );
    let copy = bucket.download();
    let held: BTreeSet<String> = narinfos(copy.path()).into_keys().collect();
    assert_eq!(held, kept);
    let nars: BTreeSet<String> = fs::read_dir(copy.path().join("nar"))
        .unwrap()
        .map(|e| format!("nar/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let named: BTreeSet<String> = narinfos(copy.path())
        .values()
        .map(|i| i["URL"].clone())
        .collect();
    assert_eq!(nars, named);
    let paths = assert_closed(&bucket);
    assert_nix_reads_every_narinfo(&bucket, &paths);
}

#[test]
fn a_dry_run_says_what_it_would_delete_and_writes_nothing() {
    let bucket = Moto::shared().bucket("prune-dry");
    let url = bucket.url();
    run(publisher().arg(release(top()).path()).arg(&url));
    run(publisher().arg(release(left_file()).path()).arg(&url));
    let before = bucket.objects();
    let out = run(&mut prune(&url, &["--dry-run"]));
    assert_eq!(bucket.objects(), before, "a dry run changed the bucket");
    let gone = closure_of(&[top()])
        .difference(&closure_of(&[left_file()]))
        .count();
    assert!(
        out.contains(&format!("would mark {} objects", 2 * gone)),
        "{out}"
    );
    assert!(out.contains(" requests"), "{out}");
}

/// The numbers of the revisions of the pin file `pins/NAME` in the copy
/// `dir` of a bucket, newest first.
fn revision_numbers(dir: &Path, name: &str) -> Vec<u64> {
    fs::read_to_string(dir.join("pins").join(name))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Revision: "))
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn a_prune_removes_the_dropped_revisions_from_the_pin_file_and_their_roots_from_store_paths() {
    let bucket = Moto::shared().bucket("prune-pin-file");
    let url = bucket.url();
    run(publisher().arg(release(top()).path()).arg(&url));
    run(publisher().arg(release(left_file()).path()).arg(&url));
    std::thread::sleep(Duration::from_secs(1));
    let out = run(&mut prune(&url, &["--grace", "1"]));
    assert!(
        out.contains("pin release: removed revisions [1] from the bucket's pin file\n"),
        "{out}"
    );
    assert!(
        out.contains("store-paths: removed 1 roots that only dropped revisions name\n"),
        "{out}"
    );
    let copy = bucket.download();
    assert_eq!(revision_numbers(copy.path(), "release"), [2]);
    assert_eq!(
        fs::read_to_string(copy.path().join("store-paths")).unwrap(),
        format!("{}\n", left_file())
    );

    // After the grace period the next run deletes what only revision 1
    // held, and has no revision left to remove; Nix reads what is left.
    std::thread::sleep(Duration::from_secs(2));
    let out = run(&mut prune(&url, &["--grace", "1"]));
    assert!(!out.contains("removed revisions"), "{out}");
    let held: BTreeSet<String> = narinfos(bucket.download().path()).into_keys().collect();
    assert_eq!(held, hashes_of(&closure_of(&[left_file()])));
    let paths = assert_closed(&bucket);
    assert_nix_reads_every_narinfo(&bucket, &paths);
}

#[test]
fn a_dry_run_says_which_revisions_would_leave_the_pin_file_and_changes_no_root_file() {
    let bucket = Moto::shared().bucket("prune-pin-dry");
    let url = bucket.url();
    run(publisher().arg(release(top()).path()).arg(&url));
    run(publisher().arg(release(left_file()).path()).arg(&url));
    let root_files =
        |dir: &Path| ["pins/release", "store-paths"].map(|f| fs::read(dir.join(f)).unwrap());
    let before = root_files(bucket.download().path());
    let out = run(&mut prune(&url, &["--dry-run"]));
    assert!(
        out.contains("pin release: would remove revisions [1] from the bucket's pin file\n"),
        "{out}"
    );
    assert!(
        out.contains("store-paths: would remove 1 roots that only dropped revisions name\n"),
        "{out}"
    );
    assert_eq!(root_files(bucket.download().path()), before);
}

#[test]
fn mk_binary_cache_prune_of_an_s3_url_hands_over_to_the_publisher() {
    let bucket = Moto::shared().bucket("prune-cli");
    run(publisher().arg(release(top()).path()).arg(bucket.url()));
    let mut cmd = mk_binary_cache();
    credentials(&mut cmd, "testing", "testing");
    let out = run(cmd.arg("prune").arg(bucket.url()).arg("--dry-run"));
    assert!(out.contains("would delete 0 objects"), "{out}");
}

#[test]
fn a_bucket_without_nix_cache_info_or_roots_is_refused() {
    let bucket = Moto::shared().bucket("prune-refused");
    let error = run_failing(&mut prune(&bucket.url(), &[]));
    assert!(error.contains("has no nix-cache-info"), "{error}");

    // A cache without store-paths or pins: pruning it would delete all.
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", left_file()]));
    fs::remove_file(cache.path().join("store-paths")).unwrap();
    run(publisher().arg(cache.path()).arg(bucket.url()));
    let error = run_failing(&mut prune(&bucket.url(), &[]));
    assert!(error.contains("no pin names a root"), "{error}");
}

#[test]
fn objects_outside_the_cache_s_prefix_are_never_touched() {
    let bucket = Moto::shared().bucket("prune-prefix");
    let url = bucket.url_of_prefix("cache");
    run(publisher().arg(release(top()).path()).arg(&url));
    run(publisher().arg(release(left_file()).path()).arg(&url));
    // Garbage by its name, but outside the prefix.
    let stray = tempdir();
    let file = stray.path().join("x");
    fs::write(&file, "StorePath: /nix/store/x\n").unwrap();
    let outside = format!("{}.narinfo", hash_part(top()));
    bucket.put(&outside, &file);
    bucket.put("nar/stray.nar", &file);
    std::thread::sleep(Duration::from_secs(1));
    run(&mut prune(&url, &["--grace", "0"]));
    std::thread::sleep(Duration::from_secs(1));
    run(&mut prune(&url, &["--grace", "0"]));
    let objects = bucket.objects();
    assert!(objects.contains_key(&outside), "{objects:?}");
    assert!(objects.contains_key("nar/stray.nar"), "{objects:?}");
    assert!(
        !objects.contains_key(&format!("cache/{outside}")),
        "{objects:?}"
    );
}

#[test]
fn publishes_and_prunes_started_together_never_leave_a_narinfo_without_what_it_names() {
    let moto = Moto::shared();
    let bucket = moto.bucket("prune-race");
    // Requests take up to 150 ms more, and one in 23 fails (and is retried).
    let proxy = FlakyProxy::start_delaying(moto.port(), 23, 150);
    let url = format!(
        "s3://{}?endpoint=http://127.0.0.1:{}",
        bucket.name, proxy.port
    );
    let first_release = release(top());
    run(publisher().arg(first_release.path()).arg(&url));
    // Then the rounds publish the second release, whose revision is the
    // pin's newest from round 0 on, and the first one's paths again without
    // their roots (no pin, no store-paths): garbage, which the bucket holds
    // marked (publishing the first release's pin again would make it the
    // newest revision once a prune has removed it).
    let unrooted = tempdir();
    run(Command::new("cp")
        .args(["-r", "--no-preserve=mode"])
        .arg(first_release.path())
        .arg(unrooted.path().join("cache")));
    let unrooted = unrooted.path().join("cache");
    fs::remove_dir_all(unrooted.join("pins")).unwrap();
    fs::remove_file(unrooted.join("store-paths")).unwrap();
    let second_release = release(left_file());
    let releases = [unrooted.as_path(), second_release.path()];
    // What the rounds did, to show that they raced: objects the prunes
    // deleted, and objects the publishes wrote again because of a mark.
    let (mut deleted, mut rewritten) = (0, 0);
    for round in 0..8u64 {
        // Publish the other release (most of which the bucket holds as
        // garbage, marked) while a prune with a short grace sweeps.
        let cache = releases[(round as usize + 1) % 2];
        let mut publish = publisher();
        publish
            .arg(cache)
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut pruning = prune(&url, &["--grace", "1", "--sweep-within", "2"]);
        pruning.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (first, second) = if round % 2 == 0 {
            (&mut publish, &mut pruning)
        } else {
            (&mut pruning, &mut publish)
        };
        let a = first.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(137 * round % 400));
        let b = second.spawn().unwrap();
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "round {round}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            deleted += number_after(&stdout, "; deleted ");
            rewritten += number_after(&stdout, "; wrote again ");
        }
        let paths = assert_closed(&bucket);
        assert_nix_reads_every_narinfo(&bucket, &paths);
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(
        deleted > 0,
        "no prune deleted anything: the rounds prove nothing"
    );
    assert!(
        rewritten > 0,
        "no publish relied on a marked object: the rounds prove nothing"
    );
    // Whatever the interleaving, the release published last (in round 7,
    // the first) is whole.
    let last = top();
    let held: BTreeSet<String> = narinfos(bucket.download().path()).into_keys().collect();
    assert!(held.is_superset(&hashes_of(&closure_of(&[last]))));
}

/// A proxy that forwards the first `allowed` requests and holds every later
/// one unanswered, so that the client can be killed "at" that request.
struct Stopping {
    port: u16,
    seen: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Stopping {
    fn start(upstream: u16, allowed: u32) -> Stopping {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let seen = counted.clone();
                std::thread::spawn(move || -> std::io::Result<()> {
                    let Some((head, body)) = read_request(&mut client)? else {
                        return Ok(());
                    };
                    if seen.fetch_add(1, Ordering::SeqCst) >= allowed {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                    let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
                    server.write_all(&head)?;
                    server.write_all(&body)?;
                    std::io::copy(&mut server, &mut client)?;
                    Ok(())
                });
            }
        });
        Stopping { port, seen }
    }
}

#[test]
fn a_prune_killed_at_any_request_leaves_a_bucket_nix_reads_and_the_next_finishes() {
    let moto = Moto::shared();
    for allowed in 0.. {
        let bucket = moto.bucket("prune-kill");
        run(publisher().arg(release(top()).path()).arg(bucket.url()));
        run(publisher()
            .arg(release(left_file()).path())
            .arg(bucket.url()));
        // The bucket's times are in seconds: a mark covers what is older.
        std::thread::sleep(Duration::from_secs(1));
        run(&mut prune(&bucket.url(), &["--grace", "0"]));
        std::thread::sleep(Duration::from_secs(1));
        // The sweeping run, stopped at request `allowed` and killed there.
        let stopping = Stopping::start(moto.port(), allowed);
        let url = format!(
            "s3://{}?endpoint=http://127.0.0.1:{}",
            bucket.name, stopping.port
        );
        let mut child = prune(&url, &["--grace", "0", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if stopping.seen.load(std::sync::atomic::Ordering::SeqCst) > allowed {
                // Give the held request's siblings a moment, then kill.
                std::thread::sleep(Duration::from_millis(200));
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "the prune neither finished nor reached request {allowed}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        let paths = assert_closed(&bucket);
        // Nix reads it (checked at a few points: each read takes seconds).
        if allowed % 4 == 0 {
            assert_nix_reads_every_narinfo(&bucket, &paths);
        }
        // The next prune finishes the job.
        let out = prune(&bucket.url(), &["--grace", "0"]).output().unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let held: BTreeSet<String> = narinfos(bucket.download().path()).into_keys().collect();
        assert_eq!(
            held,
            hashes_of(&closure_of(&[left_file()])),
            "killed at request {allowed}; the next prune said: {out}"
        );
        if finished {
            break;
        }
    }
}

/// `n` in Nix's base32 digits, `len` long (leading zeros).
pub(crate) fn nix32(mut n: u64, len: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 32) as usize];
        n /= 32;
    }
    String::from_utf8(out).unwrap()
}

/// A cache of `n` small paths with no references (narinfos that name an
/// 8-byte NAR each), whose `store-paths` lists the first `roots`.
fn synthetic_cache(n: u64, roots: u64) -> tempfile::TempDir {
    let dir = tempdir();
    fs::write(dir.path().join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    fs::create_dir(dir.path().join("nar")).unwrap();
    let mut store_paths = String::new();
    for i in 0..n {
        let hash = nix32(i, 32);
        let file = nix32(i, 52);
        let path = format!("/nix/store/{hash}-p{i}");
        fs::write(dir.path().join(format!("nar/{file}.nar")), i.to_le_bytes()).unwrap();
        fs::write(
            dir.path().join(format!("{hash}.narinfo")),
            format!(
                "StorePath: {path}\nURL: nar/{file}.nar\nCompression: none\n\
                 FileHash: sha256:{file}\nFileSize: 8\nNarHash: sha256:{file}\nNarSize: 8\nReferences: \n"
            ),
        )
        .unwrap();
        if i < roots {
            store_paths += &format!("{path}\n");
        }
    }
    fs::write(dir.path().join("store-paths"), store_paths).unwrap();
    dir
}

#[test]
fn a_bucket_of_10_000_paths_is_listed_once_and_deleted_in_batches_of_1000() {
    // A server of its own: its log holds this test's requests alone, and
    // the shared server's log stays short for the tests that poll it.
    let moto = Moto::start();
    let bucket = moto.bucket("prune-10k");
    let cache = synthetic_cache(10_000, 5_000);
    run(publisher().arg(cache.path()).arg(bucket.url()).arg("-q"));
    std::thread::sleep(Duration::from_secs(1));
    let mark = Instant::now();
    let marked = run(&mut prune(&bucket.url(), &["--grace", "0"]));
    let mark = mark.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let before = moto.requests().len();
    let sweep = Instant::now();
    let swept = run(&mut prune(&bucket.url(), &["--grace", "0"]));
    let sweep = sweep.elapsed();
    let requests: Vec<(String, String)> = moto.requests().split_off(before);
    let count = |method: &str, query: &str| {
        requests
            .iter()
            .filter(|(m, t)| m == method && t.contains(query))
            .count()
    };
    eprintln!(
        "10,000 paths, 5,000 of them garbage: marking run {:.2} s: {marked}sweeping run {:.2} s, {} requests: {swept}",
        mark.as_secs_f64(),
        sweep.as_secs_f64(),
        requests.len()
    );
    assert!(marked.contains("marked 10000 objects"), "{marked}");
    assert!(swept.contains("deleted 10000 objects"), "{swept}");
    // One listing of 20,000 objects: 20 pages of 1,000.
    assert_eq!(count("GET", "list-type=2"), 20 + 1);
    // Deletes: 5 batches of narinfos, 5 of NARs, and the spent mark.
    assert_eq!(count("POST", "delete"), 11);
    // Reads: every narinfo once, and a few small files.
    let gets = count("GET", "") - count("GET", "list-type=2");
    assert!((10_000..10_010).contains(&gets), "{gets} GETs");
    let held: BTreeSet<String> = narinfos(bucket.download().path()).into_keys().collect();
    assert_eq!(held.len(), 5_000);
}
