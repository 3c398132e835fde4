//! Faults while writing a cache: a full disk, store paths that changed since
//! Nix recorded them, files a NAR cannot hold or the builder cannot read, and
//! inputs large enough to show whether memory stays bounded.
//!
//! Each fault must end in an error naming the path at fault, a failing exit
//! in builder mode, and no output at all (when updating a cache, only whole
//! paths): never a narinfo whose NAR is missing or partial. Store paths live in a fake store in a temporary
//! directory (`NIX_STORE` points there), so nothing touches `/nix/store`.
//!
//! Some tests mount a small tmpfs or bind-mount a file, and one runs the
//! builder as `nobody`: they need root, as Nix's builders have, and fail
//! saying so without it. Mounts are undone by a guard, even on panic.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use mk_binary_cache::format::hash::{HashingWriter, Sha256};
use mk_binary_cache::format::nar::dump;
use mk_binary_cache::format::nixbase32;
use mk_binary_cache::input::attrs;
use mk_binary_cache::ops::write::{self, CacheError};
use mk_binary_cache::support::progress::Progress;
use serde_json::{Value, json};

use crate::common;

// ---------------------------------------------------------------------------
// A fake store, and the two ways to write a cache of it.

struct FakeStore {
    /// A tmpfs on the store, if any; unmounted before `tmp` is removed.
    tmpfs: Option<Mount>,
    tmp: tempfile::TempDir,
    store: PathBuf,
}

impl FakeStore {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mkbc-faults-")
            .tempdir()
            .unwrap();
        let store = tmp.path().join("store");
        fs::create_dir(&store).unwrap();
        FakeStore {
            tmpfs: None,
            tmp,
            store,
        }
    }

    /// A store in memory: a disk takes minutes to delete 100,000 files in
    /// directory order, a tmpfs no time at all.
    fn in_tmpfs() -> Self {
        let mut store = FakeStore::new();
        store.tmpfs = Some(Mount::tmpfs(&store.store, "size=1g"));
        store
    }

    /// The temporary directory around the store, for outputs and inputs.
    fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    fn dir(&self) -> &str {
        self.store.to_str().unwrap()
    }

    /// A new store path `name`, made by `make`.
    fn add(&self, name: &str, make: impl FnOnce(&Path)) -> PathBuf {
        let hash = nixbase32::encode(&Sha256::digest(name.as_bytes()).0[..20]);
        let path = self.store.join(format!("{hash}-{name}"));
        make(&path);
        path
    }

    /// A store path holding one file, `data`, of `len` bytes.
    fn add_data(&self, name: &str, len: usize) -> PathBuf {
        self.add(name, |p| {
            fs::create_dir(p).unwrap();
            fs::write(p.join("data"), noise(name, len)).unwrap();
        })
    }
}

/// Incompressible bytes, different for each seed.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut x = u64::from_le_bytes(Sha256::digest(seed.as_bytes()).0[..8].try_into().unwrap()) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The closure entry of `path` as it is on disk now, as Nix would record it.
fn entry(path: &Path) -> Value {
    let mut hasher = HashingWriter::new(io::sink());
    dump::dump(path, &mut hasher).unwrap();
    let (_, hash, size) = hasher.finish();
    entry_with(path, &hash.to_string(), size)
}

fn entry_with(path: &Path, nar_hash: &str, nar_size: u64) -> Value {
    json!({"path": path, "narHash": nar_hash, "narSize": nar_size, "references": []})
}

/// The structured attrs of a `mkBinaryCache` build.
fn attrs_json(out: &Path, closure: Vec<Value>, compression: &str) -> Value {
    json!({"outputs": {"out": out}, "closure": closure, "compression": compression})
}

/// Writes the cache `attrs` describe in this process, with `write::write_cache`
/// and two workers.
fn write_cache(store: &FakeStore, attrs: &Value) -> Result<(), CacheError> {
    write_cache_with(store, attrs, 2)
}

/// Writes the cache `attrs` describe with `jobs` workers (one: in a fixed order).
fn write_cache_with(store: &FakeStore, attrs: &Value, jobs: usize) -> Result<(), CacheError> {
    let job = attrs::from_json(attrs.clone(), store.dir(), jobs).unwrap();
    write::write_cache(&job.out, &job.closure, &job.options, &Progress::new(true)).map(|_| ())
}

/// What a builder run did.
struct Run {
    status: ExitStatus,
    stderr: String,
    /// Peak resident memory of the builder process, in KiB.
    max_rss_kib: u64,
}

/// Runs the static binary as a Nix builder would: structured attrs in
/// `NIX_ATTRS_JSON_FILE`, two cores, `NIX_STORE` the fake store.
fn run_builder(store: &FakeStore, attrs: &Value, as_user: Option<u32>) -> Run {
    let attrs_file = store.tmp().join("attrs.json");
    fs::write(&attrs_file, attrs.to_string()).unwrap();
    let stderr_file = store.tmp().join("builder.stderr");
    let mut program = common::tool_dir().join("bin/mk-binary-cache");
    if as_user.is_some() {
        // Another user may not reach the repository (a clone under /root,
        // say): run a copy from the test's own directory, as Nix runs a
        // builder from the store, which every user can read.
        let copy = store.tmp().join("mk-binary-cache");
        fs::copy(&program, &copy).unwrap();
        program = copy;
    }
    let mut cmd = Command::new(&program);
    cmd.env_clear()
        .env("NIX_ATTRS_JSON_FILE", &attrs_file)
        .env("NIX_BUILD_CORES", "2")
        .env("NIX_STORE", store.dir())
        .env("NIX_BUILD_TOP", store.tmp())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_file).unwrap());
    if let Some(uid) = as_user {
        // Run as root, std also drops the supplementary groups.
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running `{}`: {e}", common::show(&cmd)));
    let (status, max_rss_kib, _) = common::wait_with_peak_rss(&mut child);
    Run {
        status,
        stderr: fs::read_to_string(&stderr_file).unwrap(),
        max_rss_kib,
    }
}

/// Checks a failed builder run: a failing exit, an error naming `names`,
/// and no output.
fn assert_failed_cleanly(run: &Run, out: &Path, names: &[&str]) {
    assert!(
        !run.status.success(),
        "the builder succeeded:\n{}",
        run.stderr
    );
    for name in names {
        assert!(
            run.stderr.contains(name),
            "the error does not name {name:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        out.symlink_metadata().is_err(),
        "the failed builder left {} behind",
        out.display()
    );
}

/// Checks that every narinfo in `cache` names a NAR file that is there and
/// whole: its size and hash are the narinfo's FileSize and FileHash.
fn assert_every_narinfo_has_its_nar(cache: &Path) {
    for part in common::narinfo_hash_parts(cache) {
        let info = common::narinfo(&cache.join(format!("{part}.narinfo")));
        let nar = cache.join(&info["URL"]);
        let len = fs::metadata(&nar)
            .unwrap_or_else(|e| panic!("{part}.narinfo names {}: {e}", nar.display()))
            .len();
        assert_eq!(len.to_string(), info["FileSize"], "{}", nar.display());
        let hash = Sha256::digest(&fs::read(&nar).unwrap());
        assert_eq!(hash.to_string(), info["FileHash"], "{}", nar.display());
    }
}

// ---------------------------------------------------------------------------
// Mounts, undone when the guard goes.

pub(crate) struct Mount(PathBuf);

/// Runs `mount ARGS AT`, panicking with what it said if it fails.
fn mount(args: &[&str], at: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(at)
        .output()
        .unwrap_or_else(|e| panic!("running mount: {e}"));
    assert!(
        out.status.success(),
        "`mount {} {}` failed; the fault tests need root (as Nix builders have) \
         and mount(8): {}",
        args.join(" "),
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Mount {
    fn new(args: &[&str], at: &Path) -> Mount {
        mount(args, at);
        Mount(at.to_owned())
    }

    /// Gives the tmpfs mounted here a new size.
    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.0);
    }

    /// A tmpfs with `options` (size=…, nr_inodes=…) at the directory `at`.
    pub(crate) fn tmpfs(at: &Path, options: &str) -> Mount {
        Mount::new(&["-t", "tmpfs", "-o", options, "tmpfs"], at)
    }

    /// Makes the file `at` show the file `from`.
    fn bind(from: &Path, at: &Path) -> Mount {
        Mount::new(&["--bind", from.to_str().unwrap()], at)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy: detach it now, it goes when its last user does.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

// ---------------------------------------------------------------------------
// The disk fills up.

#[test]
fn a_full_disk_fails_the_builder_naming_the_output_and_leaves_nothing() {
    let store = FakeStore::new();
    let path = store.add_data("incompressible", 3 << 20);
    let mnt = store.tmp().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _mount = Mount::tmpfs(&mnt, "size=2m");
    let out = mnt.join("cache");

    let run = run_builder(&store, &attrs_json(&out, vec![entry(&path)], "zstd"), None);

    assert_failed_cleanly(
        &run,
        &out,
        &[out.to_str().unwrap(), "No space left on device"],
    );
    assert!(!run.stderr.contains("cannot read"), "{}", run.stderr);
    assert!(fs::read_dir(&mnt).unwrap().next().is_none());
}

/// Paths of 1, 30 and 70 kB in `store`, and the mount point and output
/// directory for a cache of them: (closure, mount point, output).
fn three_paths_for_a_small_disk(store: &FakeStore) -> (Vec<Value>, PathBuf, PathBuf) {
    let closure = [("small", 1000), ("medium", 30_000), ("large", 70_000)]
        .iter()
        .map(|&(name, len)| entry(&store.add_data(name, len)))
        .collect();
    let mnt = store.tmp().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = mnt.join("cache");
    (closure, mnt, out)
}

#[test]
fn running_out_of_space_at_any_point_leaves_no_output() {
    let store = FakeStore::new();
    let (closure, mnt, out) = three_paths_for_a_small_disk(&store);
    let attrs = attrs_json(&out, closure, "none");

    // The cache takes about 30 pages of 4 KiB: fill the disk at each of
    // them, with one worker so that files are written in a fixed order.
    let (mut failures, mut successes) = (Vec::new(), 0);
    for pages in 1..=40 {
        let _mount = Mount::tmpfs(&mnt, &format!("size={}k", 4 * pages));
        match write_cache_with(&store, &attrs, 1) {
            Ok(()) => {
                assert_every_narinfo_has_its_nar(&out);
                successes += 1;
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("No space left on device"),
                    "{pages} pages: {message}"
                );
                assert!(
                    !message.contains("cannot read"),
                    "{pages} pages: a failed write reported as a read: {message}"
                );
                assert!(
                    message.contains(mnt.to_str().unwrap()) || message.contains(store.dir()),
                    "{pages} pages: names neither the output nor a store path: {message}"
                );
                assert!(
                    out.symlink_metadata().is_err(),
                    "{pages} pages: the output was left behind after: {message}"
                );
                failures.push(message);
            }
        }
    }
    assert!(successes > 0, "never enough space: {failures:#?}");
    // The disk filled while writing each kind of file.
    assert_each_named(&failures, &[".narinfo", "-small", "-medium", "-large"]);
}

#[test]
fn an_update_cut_short_by_a_full_disk_leaves_only_whole_paths_and_resumes() {
    // `update_cache` (the `build --to` mode) keeps what it wrote: every
    // narinfo it leaves must have its whole NAR, and a second run with room
    // enough must finish the cache.
    let store = FakeStore::new();
    let (closure, mnt, out) = three_paths_for_a_small_disk(&store);
    let job = attrs::from_json(attrs_json(&out, closure, "none"), store.dir(), 2).unwrap();
    let quiet = Progress::new(true);

    let mut failures = 0;
    for pages in 1..=32 {
        let tmpfs = Mount::tmpfs(&mnt, &format!("size={}k", 4 * pages));
        if let Err(e) = write::update_cache(&out, &job.closure, &job.options, &quiet) {
            let message = e.to_string();
            assert!(
                message.contains("No space left on device"),
                "{pages} pages: {message}"
            );
            if out.exists() {
                assert_every_narinfo_has_its_nar(&out);
            }
            failures += 1;
        }
        tmpfs.resize("1m");
        write::update_cache(&out, &job.closure, &job.options, &quiet)
            .unwrap_or_else(|e| panic!("{pages} pages, then resumed: {e}"));
        assert_eq!(common::narinfo_hash_parts(&out).len(), 3, "{pages} pages");
        assert_every_narinfo_has_its_nar(&out);
    }
    assert!(failures > 0, "the disk never filled");
}

#[test]
fn running_out_of_inodes_at_any_point_leaves_no_output() {
    let store = FakeStore::new();
    let closure: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|name| entry(&store.add_data(name, 100)))
        .collect();
    let mnt = store.tmp().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = mnt.join("cache");
    let attrs = attrs_json(&out, closure, "zstd");

    // Fail creating each file in turn, until there are inodes enough.
    let mut failures = Vec::new();
    for inodes in 1.. {
        assert!(inodes < 40, "never enough inodes: {failures:#?}");
        let _mount = Mount::tmpfs(&mnt, &format!("size=1m,nr_inodes={inodes}"));
        match write_cache_with(&store, &attrs, 1) {
            Ok(()) => {
                assert_every_narinfo_has_its_nar(&out);
                break;
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("No space left on device"),
                    "{inodes}: {message}"
                );
                assert!(
                    message.contains(mnt.to_str().unwrap()),
                    "{inodes}: {message}"
                );
                assert!(out.symlink_metadata().is_err(), "{inodes}: left behind");
                failures.push(message);
            }
        }
    }
    assert_each_named(&failures, &["nix-cache-info", "/nar/", ".narinfo"]);
}

/// Every one of `names` appears in some failure message: the fill points
/// covered every kind of file.
fn assert_each_named(failures: &[String], names: &[&str]) {
    for what in names {
        assert!(
            failures.iter().any(|m| m.contains(what)),
            "no failure named {what:?}: {failures:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Store paths that are not what Nix recorded.

#[test]
fn a_file_changed_since_nix_hashed_it_fails_the_nar_hash_check() {
    let store = FakeStore::new();
    let path = store.add_data("changed", 5000);
    let recorded = entry(&path);
    let file = path.join("data");
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(b"X", 2500)
        .unwrap();
    let out = store.tmp().join("cache");

    let run = run_builder(&store, &attrs_json(&out, vec![recorded], "zstd"), None);

    assert_failed_cleanly(&run, &out, &[path.to_str().unwrap(), "NAR hash"]);
}

#[test]
fn a_file_resized_since_nix_hashed_it_fails_the_nar_size_check() {
    let store = FakeStore::new();
    let path = store.add_data("resized", 5000);
    let recorded = entry(&path);
    let mut file = File::options()
        .append(true)
        .open(path.join("data"))
        .unwrap();
    file.write_all(b"one more line\n").unwrap();
    let out = store.tmp().join("cache");

    let e = write_cache(&store, &attrs_json(&out, vec![recorded], "none")).unwrap_err();

    assert!(matches!(e, CacheError::SizeMismatch { .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.contains(path.to_str().unwrap()), "{message}");
    assert!(out.symlink_metadata().is_err());
}

/// The closure entry of a path holding `file`, empty when recorded, whose
/// contents then become those of `shown`: a file whose size and contents
/// disagree, as when it grows or shrinks while it is read.
fn path_with_file_replaced_by(
    store: &FakeStore,
    name: &str,
    shown: &Path,
) -> (PathBuf, Value, Mount) {
    let path = store.add(name, |p| {
        fs::create_dir(p).unwrap();
        let len = fs::metadata(shown).unwrap().len();
        File::create(p.join("file")).unwrap().set_len(len).unwrap();
    });
    let recorded = entry(&path);
    let mount = Mount::bind(shown, &path.join("file"));
    (path, recorded, mount)
}

#[test]
fn a_file_that_grows_while_it_is_read_is_an_error_naming_it() {
    // Files in /proc report a size of 0 and yet have contents.
    let store = FakeStore::new();
    let (path, recorded, _mount) =
        path_with_file_replaced_by(&store, "grows", Path::new("/proc/version"));
    let out = store.tmp().join("cache");

    let e = write_cache(&store, &attrs_json(&out, vec![recorded], "zstd")).unwrap_err();

    let message = e.to_string();
    let file = path.join("file");
    assert!(message.contains(file.to_str().unwrap()), "{message}");
    assert!(
        message.contains("grew past the 0 bytes announced"),
        "{message}"
    );
    assert!(out.symlink_metadata().is_err());
}

#[test]
fn a_file_that_shrinks_while_it_is_read_is_an_error_naming_it() {
    // Files in /sys report a size of 4096 and hold a few bytes.
    let shown = Path::new("/sys/devices/system/cpu/online");
    let mut actual = Vec::new();
    File::open(shown)
        .and_then(|mut f| f.read_to_end(&mut actual))
        .unwrap_or_else(|e| panic!("{}: {e}; this test needs sysfs", shown.display()));
    let store = FakeStore::new();
    let (path, recorded, _mount) = path_with_file_replaced_by(&store, "shrinks", shown);
    let out = store.tmp().join("cache");

    let e = write_cache(&store, &attrs_json(&out, vec![recorded], "zstd")).unwrap_err();

    let message = e.to_string();
    let file = path.join("file");
    assert!(message.contains(file.to_str().unwrap()), "{message}");
    let expected = format!("were {} bytes, not the 4096 announced", actual.len());
    assert!(message.contains(&expected), "{message}");
    assert!(out.symlink_metadata().is_err());
}

#[test]
fn a_store_path_that_vanished_is_an_error_naming_it() {
    let store = FakeStore::new();
    let kept = store.add_data("kept", 100);
    let gone = store.add_data("gone", 100);
    let closure = vec![entry(&kept), entry(&gone)];
    fs::remove_dir_all(&gone).unwrap();
    let out = store.tmp().join("cache");

    let e = write_cache(&store, &attrs_json(&out, closure, "zstd")).unwrap_err();

    let message = e.to_string();
    assert!(message.contains(gone.to_str().unwrap()), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(out.symlink_metadata().is_err());
}

// ---------------------------------------------------------------------------
// Files a NAR cannot hold, or the builder cannot read.

#[test]
fn a_fifo_in_a_store_path_fails_the_builder_naming_it() {
    let store = FakeStore::new();
    let path = store.add("with-fifo", |p| {
        fs::create_dir(p).unwrap();
        let fifo = std::ffi::CString::new(p.join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    });
    let out = store.tmp().join("cache");
    let closure = vec![entry_with(&path, &Sha256::digest(b"").to_string(), 100)];

    let run = run_builder(&store, &attrs_json(&out, closure, "zstd"), None);

    let pipe = path.join("pipe");
    assert_failed_cleanly(&run, &out, &[pipe.to_str().unwrap(), "is a fifo"]);
}

#[test]
fn a_socket_in_a_store_path_is_an_error_naming_it() {
    let store = FakeStore::new();
    let path = store.add("with-socket", |p| {
        fs::create_dir(p).unwrap();
        std::os::unix::net::UnixListener::bind(p.join("socket")).unwrap();
    });
    let out = store.tmp().join("cache");
    let closure = vec![entry_with(&path, &Sha256::digest(b"").to_string(), 100)];

    let e = write_cache(&store, &attrs_json(&out, closure, "zstd")).unwrap_err();

    let message = e.to_string();
    let socket = path.join("socket");
    assert!(message.contains(socket.to_str().unwrap()), "{message}");
    assert!(message.contains("is a socket"), "{message}");
    assert!(out.symlink_metadata().is_err());
}

#[test]
fn a_file_the_builder_may_not_read_fails_it_naming_the_file() {
    // Root reads anything, but Nix runs builders as unprivileged users
    // (nixbld*): so does this test, as nobody.
    const NOBODY: u32 = 65534;
    let store = FakeStore::new();
    let path = store.add("unreadable", |p| {
        fs::create_dir(p).unwrap();
        fs::write(p.join("secret"), b"not for builders").unwrap();
    });
    let closure = vec![entry(&path)];
    fs::set_permissions(path.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(store.tmp(), fs::Permissions::from_mode(0o755)).unwrap();
    let outputs = store.tmp().join("outputs");
    fs::create_dir(&outputs).unwrap();
    fs::set_permissions(&outputs, fs::Permissions::from_mode(0o777)).unwrap();
    let out = outputs.join("cache");

    let run = run_builder(&store, &attrs_json(&out, closure, "zstd"), Some(NOBODY));

    let secret = path.join("secret");
    assert_failed_cleanly(&run, &out, &[secret.to_str().unwrap(), "Permission denied"]);
}

// ---------------------------------------------------------------------------
// Large inputs in bounded memory.

/// Peak memory the builder may use, whatever the size of the paths.
const MAX_RSS_KIB: u64 = 200 * 1024;

/// `nix-store --dump PATH | sha256sum`, streamed: Nix's NAR hash and size.
fn nix_nar_hash_and_size(path: &Path) -> (Sha256, u64) {
    let mut cmd = common::nix_cmd("nix-store");
    cmd.arg("--dump").arg(path).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("running nix-store --dump");
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut child.stdout.take().unwrap(), &mut hasher).unwrap();
    assert!(child.wait().unwrap().success(), "{}", common::show(&cmd));
    let (_, hash, size) = hasher.finish();
    (hash, size)
}

/// Caches `path` with the builder, and checks that it succeeded in less
/// than [`MAX_RSS_KIB`] and that the narinfo agrees with Nix. Returns the
/// cache and its one narinfo.
fn cache_in_bounded_memory(
    store: &FakeStore,
    path: &Path,
    compression: &str,
) -> (PathBuf, std::collections::BTreeMap<String, String>) {
    let (nar_hash, nar_size) = nix_nar_hash_and_size(path);
    let out = store.tmp().join("cache");
    let closure = vec![entry_with(path, &nar_hash.to_string(), nar_size)];

    let run = run_builder(store, &attrs_json(&out, closure, compression), None);

    assert!(run.status.success(), "the builder failed:\n{}", run.stderr);
    eprintln!(
        "{}: NAR of {nar_size} bytes cached with {compression}, peak RSS {} KiB",
        path.display(),
        run.max_rss_kib
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB for a NAR of {nar_size} bytes",
        run.max_rss_kib
    );
    let info = common::narinfo_of(&out, path.to_str().unwrap());
    assert_eq!(info["NarHash"], nar_hash.to_string());
    assert_eq!(info["NarSize"], nar_size.to_string());
    (out, info)
}

#[test]
fn a_path_of_100000_files_is_cached_in_bounded_memory() {
    let store = FakeStore::in_tmpfs();
    let path = store.add("many-files", |p| {
        fs::create_dir(p).unwrap();
        for i in 0..100_000 {
            fs::write(p.join(format!("f{i:06}")), format!("{i}\n")).unwrap();
        }
    });

    let (out, info) = cache_in_bounded_memory(&store, &path, "none");

    // Uncompressed, the NAR file is the NAR itself.
    assert_eq!(info["FileHash"], info["NarHash"]);
    assert_every_narinfo_has_its_nar(&out);
}

#[test]
fn a_file_over_4_gib_is_cached_in_bounded_memory() {
    let store = FakeStore::new();
    let len: u64 = (4 << 30) + (100 << 20);
    let path = store.add("huge", |p| {
        fs::create_dir(p).unwrap();
        let file = File::create(p.join("sparse")).unwrap();
        // Data at the start, across the 4 GiB boundary and at the end, so
        // that an offset truncated to 32 bits changes the hash.
        file.write_all_at(b"start", 0).unwrap();
        file.write_all_at(b"across 4 GiB", (1 << 32) - 6).unwrap();
        file.write_all_at(b"end", len - 3).unwrap();
        fs::write(p.join("small"), b"small\n").unwrap();
    });

    let (out, info) = cache_in_bounded_memory(&store, &path, "zstd");

    assert_every_narinfo_has_its_nar(&out);
    // The compressed file holds that very NAR.
    let nar = File::open(out.join(&info["URL"])).unwrap();
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(
        &mut zstd::stream::read::Decoder::new(nar).unwrap(),
        &mut hasher,
    )
    .unwrap();
    let (_, hash, size) = hasher.finish();
    assert_eq!(hash.to_string(), info["NarHash"]);
    assert_eq!(size.to_string(), info["NarSize"]);
}

#[test]
fn paths_with_the_same_contents_share_one_nar_file_in_a_new_output() {
    // A NAR's file is named for its hash, not its path: two store paths
    // with the same contents (the NAR holds no name) have one file. In a new
    // output both workers may write it at once, each from memory: the file
    // must come out whole, and nothing else be left beside it.
    let store = FakeStore::new();
    let closure: Vec<Value> = ["twin-a", "twin-b", "twin-c", "twin-d"]
        .iter()
        .map(|name| {
            entry(&store.add(name, |p| {
                fs::create_dir(p).unwrap();
                fs::write(p.join("data"), noise("the same bytes", 50_000)).unwrap();
            }))
        })
        .collect();
    for compression in ["none", "zstd", "xz"] {
        let out = store.tmp().join(format!("cache-{compression}"));
        write_cache(&store, &attrs_json(&out, closure.clone(), compression)).unwrap();

        assert_every_narinfo_has_its_nar(&out);
        let urls: Vec<String> = common::narinfo_hash_parts(&out)
            .iter()
            .map(|part| common::narinfo(&out.join(format!("{part}.narinfo")))["URL"].clone())
            .collect();
        assert_eq!(urls.len(), 4, "{compression}");
        assert!(
            urls.iter().all(|u| *u == urls[0]),
            "{compression}: {urls:?}"
        );
        let nar_dir: Vec<_> = fs::read_dir(out.join("nar")).unwrap().collect();
        assert_eq!(nar_dir.len(), 1, "{compression}: {nar_dir:?}");
    }
}
