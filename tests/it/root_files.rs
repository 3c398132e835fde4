//! The bucket's root files, `store-paths` and `pins/NAME`, under
//! concurrent writers: each change is a compare-and-swap (read with the
//! ETag, merge, PUT with `If-Match` or `If-None-Match: *`, read again on a
//! conflict), so no writer loses another's root or revision.
//!
//! What is specified here: many rounds of publishes of different releases,
//! under the same pin and under different pins, started together through a
//! proxy that delays every request, leave every root of every publish in
//! the bucket's `store-paths` and every revision in its pin file; a write
//! of `store-paths` or of a pin whose object another writer changed since
//! it was read is refused by the store, and the change is made again on
//! what is there now (the proxy changes the object, deterministically,
//! while it holds the PUT); a publish racing a prune that drops revisions
//! keeps its new revision and root; a publish from a cache that still holds
//! a revision a prune removed from the bucket does not add it back; a store
//! that answers a conditional write with `501 Not Implemented` is an error
//! naming the store and the object, and nothing is written unconditionally.
//!
//! The caches are synthetic (a narinfo and an 8-byte NAR per path, as in
//! `prune_bucket`'s large test): these tests are about the root files, which
//! Nix does not read; `prune_bucket` has Nix read what a prune leaves.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::*;
use crate::prune_bucket::{nix32, number_after, prune};
use crate::publish::{Bucket, FlakyProxy, Moto, publisher, read_request};

/// The store path of synthetic path number `n`.
fn path(n: u64) -> String {
    format!("/nix/store/{}-p{n}", nix32(n, 32))
}

/// A cache of the paths `pinned` (the one revision, at `time`, of the pin
/// `pin`, with `policy` lines) and `plain` (a root without a pin), each a
/// narinfo naming an 8-byte NAR; `store-paths` lists both.
fn release(pin: &str, policy: &str, pinned: u64, plain: u64, time: u64) -> tempfile::TempDir {
    let dir = tempdir();
    fs::write(dir.path().join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    fs::create_dir(dir.path().join("nar")).unwrap();
    for n in [pinned, plain] {
        let file = nix32(n, 52);
        fs::write(dir.path().join(format!("nar/{file}.nar")), n.to_le_bytes()).unwrap();
        fs::write(
            dir.path().join(format!("{}.narinfo", nix32(n, 32))),
            format!(
                "StorePath: {}\nURL: nar/{file}.nar\nCompression: none\n\
                 FileHash: sha256:{file}\nFileSize: 8\nNarHash: sha256:{file}\nNarSize: 8\nReferences: \n",
                path(n)
            ),
        )
        .unwrap();
    }
    fs::write(
        dir.path().join("store-paths"),
        format!("{}\n{}\n", path(pinned), path(plain)),
    )
    .unwrap();
    fs::create_dir(dir.path().join("pins")).unwrap();
    fs::write(
        dir.path().join("pins").join(pin),
        format!(
            "Pin: {pin}\n{policy}\nRevision: 1\nTime: {time}\nRoot: {}\n",
            path(pinned)
        ),
    )
    .unwrap();
    dir
}

/// A revision of a pin file: (number, time, roots).
type Revision = (u64, u64, Vec<String>);

/// The revisions of the bucket's pin `name`, newest first.
fn revisions(bucket: &Bucket, name: &str) -> Vec<Revision> {
    let copy = bucket.download();
    let text = fs::read_to_string(copy.path().join("pins").join(name)).unwrap();
    let mut out: Vec<Revision> = Vec::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("Revision: ") {
            out.push((n.parse().unwrap(), 0, Vec::new()));
        } else if let Some(t) = line.strip_prefix("Time: ") {
            out.last_mut().unwrap().1 = t.parse().unwrap();
        } else if let Some(root) = line.strip_prefix("Root: ") {
            out.last_mut().unwrap().2.push(root.to_owned());
        }
    }
    out
}

/// The lines of the bucket's `store-paths`.
fn store_paths(bucket: &Bucket) -> BTreeSet<String> {
    let copy = bucket.download();
    fs::read_to_string(copy.path().join("store-paths"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits for `child`; its standard output, after checking it succeeded.
fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A pseudo-random number below `bound`, the same each run.
fn spread(seed: u64, bound: u64) -> u64 {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % bound
}

#[test]
fn publishes_started_together_lose_no_root_and_no_revision() {
    let moto = Moto::shared();
    let bucket = moto.bucket("roots-race");
    // Requests take up to 150 ms more, and one in 23 fails (and is retried):
    // the publishes read and write the root files at overlapping moments.
    let proxy = FlakyProxy::start_delaying(moto.port(), 23, 150);
    let url = format!(
        "s3://{}?endpoint=http://127.0.0.1:{}",
        bucket.name, proxy.port
    );
    const PUBLISHERS: u64 = 4;
    let mut expected: Vec<(&str, u64, String)> = Vec::new();
    let mut roots = BTreeSet::new();
    for round in 0..6u64 {
        let mut caches = Vec::new();
        for i in 0..PUBLISHERS {
            let n = 1 + 2 * (round * PUBLISHERS + i);
            // Two publishers per pin, and a plain root each.
            let pin = if i % 2 == 0 { "release" } else { "nightly" };
            let time = 1_700_000_000 + n;
            caches.push(release(pin, "", n, n + 1, time));
            expected.push((pin, time, path(n)));
            roots.extend([path(n), path(n + 1)]);
        }
        let children: Vec<Child> = caches
            .iter()
            .enumerate()
            .map(|(i, cache)| {
                std::thread::sleep(Duration::from_millis(spread(round * 7 + i as u64, 60)));
                spawn(publisher().arg(cache.path()).arg(&url))
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            finish(child, &format!("round {round}, publish {i}"));
        }
    }
    let held = store_paths(&bucket);
    let lost: Vec<&String> = roots.difference(&held).collect();
    assert!(lost.is_empty(), "store-paths lost {lost:?}");
    for pin in ["release", "nightly"] {
        let revisions = revisions(&bucket, pin);
        let numbers: BTreeSet<u64> = revisions.iter().map(|r| r.0).collect();
        assert_eq!(numbers.len(), revisions.len(), "{pin}: {revisions:?}");
        let lost: Vec<_> = expected
            .iter()
            .filter(|(p, time, root)| {
                *p == pin
                    && !revisions
                        .iter()
                        .any(|(_, t, roots)| t == time && roots == std::slice::from_ref(root))
            })
            .collect();
        assert!(
            lost.is_empty(),
            "pins/{pin} lost the revisions {lost:?}; it holds {revisions:?}"
        );
    }
}

/// A proxy in front of moto that, when the first request whose request
/// line starts with `line` comes, runs `meanwhile` (another writer) before
/// it forwards that request; it counts those requests.
struct Interposing {
    port: u16,
    seen: Arc<AtomicU32>,
}

impl Interposing {
    fn start(
        upstream: u16,
        line: String,
        meanwhile: impl FnOnce() + Send + 'static,
    ) -> Interposing {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicU32::new(0));
        let counted = seen.clone();
        let meanwhile = Arc::new(std::sync::Mutex::new(Some(meanwhile)));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let (seen, meanwhile, line) = (counted.clone(), meanwhile.clone(), line.clone());
                std::thread::spawn(move || -> std::io::Result<()> {
                    let Some((head, body)) = read_request(&mut client)? else {
                        return Ok(());
                    };
                    if head.starts_with(line.as_bytes()) {
                        seen.fetch_add(1, Ordering::SeqCst);
                        if let Some(write) = meanwhile.lock().unwrap().take() {
                            write();
                        }
                    }
                    let mut server = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
                    server.write_all(&head)?;
                    server.write_all(&body)?;
                    std::io::copy(&mut server, &mut client)?;
                    Ok(())
                });
            }
        });
        Interposing { port, seen }
    }
}

/// Publishes `cache` to `bucket` through a proxy that, while it holds the
/// first PUT of `key`, has another writer put `theirs` there; returns how
/// many PUTs of `key` the publish sent.
fn publish_while_another_writes(bucket: &Bucket, cache: &Path, key: &str, theirs: String) -> u32 {
    let moto = Moto::shared();
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), theirs).unwrap();
    let (name, key_owned) = (bucket.name.clone(), key.to_owned());
    let file_path = file.path().to_str().unwrap().to_owned();
    let proxy = Interposing::start(moto.port(), format!("PUT /{name}/{key} "), move || {
        moto.s3(&["put", &name, &key_owned, &file_path]);
    });
    let url = format!(
        "s3://{}?endpoint=http://127.0.0.1:{}",
        bucket.name, proxy.port
    );
    run(publisher().arg(cache).arg(&url));
    proxy.seen.load(Ordering::SeqCst)
}

#[test]
fn a_store_paths_changed_between_read_and_write_is_merged_again() {
    let bucket = Moto::shared().bucket("roots-store-paths");
    run(publisher()
        .arg(release("release", "", 1, 2, 1_700_000_001).path())
        .arg(bucket.url()));
    // Between this publish's read of store-paths and its write, another
    // writer adds a root: the conditional PUT is refused, and the merge is
    // made again on the other writer's store-paths.
    let theirs = format!("{}\n{}\n{}\n", path(1), path(2), path(100));
    let cache = release("release", "", 3, 4, 1_700_000_003);
    let puts = publish_while_another_writes(&bucket, cache.path(), "store-paths", theirs);
    assert_eq!(puts, 2, "the refused PUT and the one after the new read");
    assert_eq!(
        store_paths(&bucket),
        BTreeSet::from([path(1), path(2), path(100), path(3), path(4)])
    );
}

#[test]
fn a_pin_changed_between_read_and_write_is_merged_again() {
    let bucket = Moto::shared().bucket("roots-pin");
    run(publisher()
        .arg(release("release", "", 1, 2, 1_700_000_001).path())
        .arg(bucket.url()));
    // Another publish adds its revision 2 meanwhile.
    let theirs = format!(
        "Pin: release\n\nRevision: 2\nTime: 1700000100\nRoot: {}\n\n\
         Revision: 1\nTime: 1700000001\nRoot: {}\n",
        path(100),
        path(1)
    );
    let cache = release("release", "", 3, 4, 1_700_000_003);
    let puts = publish_while_another_writes(&bucket, cache.path(), "pins/release", theirs);
    assert_eq!(puts, 2, "the refused PUT and the one after the new read");
    assert_eq!(
        revisions(&bucket, "release"),
        [
            (3, 1_700_000_003, vec![path(3)]),
            (2, 1_700_000_100, vec![path(100)]),
            (1, 1_700_000_001, vec![path(1)]),
        ]
    );
}

#[test]
fn a_publish_racing_a_prune_keeps_its_new_revision_and_root() {
    let moto = Moto::shared();
    let bucket = moto.bucket("roots-prune-race");
    let proxy = FlakyProxy::start_delaying(moto.port(), 23, 150);
    let url = format!(
        "s3://{}?endpoint=http://127.0.0.1:{}",
        bucket.name, proxy.port
    );
    // A pin that keeps one revision: every prune drops all but the newest.
    let keep = "KeepRevisions: 1\n";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    run(publisher()
        .arg(release("release", keep, 1, 2, now).path())
        .arg(&url));
    let mut removed = 0;
    for round in 1..8u64 {
        let n = 1 + 2 * round;
        let cache = release("release", keep, n, n + 1, now + round);
        // A grace far longer than the test: the prunes delete nothing, they
        // only drop revisions.
        let mut pruning = prune(&url, &["--grace", "3600"]);
        let mut publishing = publisher();
        publishing.arg(cache.path()).arg(&url);
        let (first, second) = if round % 2 == 0 {
            (&mut publishing, &mut pruning)
        } else {
            (&mut pruning, &mut publishing)
        };
        let a = spawn(first);
        std::thread::sleep(Duration::from_millis(spread(round, 400)));
        let b = spawn(second);
        for child in [a, b] {
            let out = finish(child, &format!("round {round}"));
            removed += out.matches("removed revisions").count();
        }
        let revisions = revisions(&bucket, "release");
        assert!(
            revisions.iter().any(|r| r.2 == [path(n)]),
            "round {round}: the publish's revision is gone: {revisions:?}"
        );
        assert_eq!(
            revisions[0].2,
            [path(n)],
            "round {round}: the publish's revision is not the newest"
        );
        let held = store_paths(&bucket);
        assert!(held.contains(&path(n)), "round {round}: {held:?}");
        assert!(held.contains(&path(n + 1)), "round {round}: {held:?}");
    }
    assert!(
        removed > 0,
        "no prune removed a revision: the rounds prove nothing"
    );
    // A last prune leaves the newest revision alone, and store-paths
    // without the roots of the others (but the plain roots).
    let out = run(&mut prune(&bucket.url(), &["--grace", "3600"]));
    let revisions = revisions(&bucket, "release");
    assert_eq!(revisions.len(), 1, "{out}{revisions:?}");
    assert_eq!(revisions[0].2, [path(15)]);
    let held = store_paths(&bucket);
    for round in 0..7u64 {
        assert!(!held.contains(&path(1 + 2 * round)), "{held:?}");
        assert!(held.contains(&path(2 + 2 * round)), "{held:?}");
    }
    assert_eq!(number_after(&out, "deleted "), 0, "{out}");
}

#[test]
fn a_publish_does_not_add_back_a_revision_a_prune_removed() {
    let bucket = Moto::shared().bucket("roots-no-resurrection");
    let keep = "KeepRevisions: 1\n";
    // A cache of one release, published; then its second release (the
    // cache keeps both revisions: no local prune), published.
    let cache = release("release", keep, 1, 2, 1_700_000_001);
    run(publisher().arg(cache.path()).arg(bucket.url()));
    let second = release("release", keep, 3, 4, 1_700_000_003);
    for file in fs::read_dir(second.path()).unwrap() {
        let file = file.unwrap().path();
        if file.extension().is_some_and(|e| e == "narinfo") {
            fs::copy(&file, cache.path().join(file.file_name().unwrap())).unwrap();
        }
    }
    for nar in fs::read_dir(second.path().join("nar")).unwrap() {
        let nar = nar.unwrap().path();
        fs::copy(
            &nar,
            cache.path().join("nar").join(nar.file_name().unwrap()),
        )
        .unwrap();
    }
    fs::write(
        cache.path().join("store-paths"),
        format!("{}\n{}\n{}\n{}\n", path(1), path(2), path(3), path(4)),
    )
    .unwrap();
    fs::write(
        cache.path().join("pins/release"),
        format!(
            "Pin: release\n{keep}\nRevision: 2\nTime: 1700000003\nRoot: {}\n\n\
             Revision: 1\nTime: 1700000001\nRoot: {}\n",
            path(3),
            path(1)
        ),
    )
    .unwrap();
    run(publisher().arg(cache.path()).arg(bucket.url()));
    // The prune removes revision 1 from the bucket.
    let out = run(&mut prune(&bucket.url(), &["--grace", "3600"]));
    assert!(
        out.contains("pin release: removed revisions [1] from the bucket's pin file"),
        "{out}"
    );
    // Publishing the same cache again, which still holds revision 1, does
    // not add it back as a new newest revision.
    run(publisher().arg(cache.path()).arg(bucket.url()));
    assert_eq!(
        revisions(&bucket, "release"),
        [(2, 1_700_000_003, vec![path(3)])]
    );
    assert_eq!(
        store_paths(&bucket),
        BTreeSet::from([path(2), path(3), path(4)])
    );
}

/// A proxy in front of moto that answers every conditional request
/// (`If-Match`, `If-None-Match`) with `501 Not Implemented`, as a store
/// without conditional writes does, and forwards the others.
fn without_conditional_writes(upstream: u16) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            std::thread::spawn(move || -> std::io::Result<()> {
                let Some((head, body)) = read_request(&mut client)? else {
                    return Ok(());
                };
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if text.contains("\r\nif-match:") || text.contains("\r\nif-none-match:") {
                    let error = "<Error><Code>NotImplemented</Code></Error>";
                    write!(
                        client,
                        "HTTP/1.1 501 Not Implemented\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{error}",
                        error.len()
                    )?;
                    return Ok(());
                }
                let mut server = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
                server.write_all(&head)?;
                server.write_all(&body)?;
                std::io::copy(&mut server, &mut client)?;
                Ok(())
            });
        }
    });
    port
}

#[test]
fn a_store_without_conditional_writes_is_an_error_naming_it_and_the_object() {
    let moto = Moto::shared();
    let bucket = moto.bucket("roots-no-cas");
    let port = without_conditional_writes(moto.port());
    let url = format!("s3://{}?endpoint=http://127.0.0.1:{port}", bucket.name);
    let cache = release("release", "", 1, 2, 1_700_000_001);
    let started = std::time::Instant::now();
    let error = run_failing(publisher().arg(cache.path()).arg(&url));
    eprintln!("failed after {:?}: {error}", started.elapsed());
    assert!(
        error.contains(&format!("s3://{}", bucket.name)) && error.contains("/store-paths: "),
        "{error}"
    );
    assert!(error.contains("does not do conditional writes"), "{error}");
    // Nothing was written to it unconditionally instead.
    assert!(!bucket.objects().contains_key("store-paths"));
}
