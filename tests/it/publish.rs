//! `publish` against a real S3 protocol server, read back by real Nix.
//!
//! The server is moto's (`moto_server`, from the virtualenv
//! `scripts/install-deps test` makes in `target/moto`), started once per test
//! run on a free port of 127.0.0.1 and killed when the test process ends
//! (however it ends: it gets SIGKILL when its parent dies); each test uses
//! buckets of its own. Its log gives the order in which requests completed.
//! The tests set buckets up and read them back with their own client
//! (`tests/it/s3.py`, boto3), not the library `publish` uses.
//!
//! Debian's Nix 2.34 (the sid root of tests/it/nix_versions.rs) is built
//! without AWS support: it reads `s3://` anonymously, so the test buckets
//! allow anyone to read (a bucket policy), as a public cache's does.
//!
//! Virtual-hosted requests go to `BUCKET.s3.localtest` (moto takes the
//! first label of a Host header with a dot as the bucket). The name
//! resolves to 127.0.0.1 only for the commands given a hosts file of the
//! test's (`Hosts`: a mount namespace of their own in which it is
//! `/etc/hosts`); the machine's is never touched.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;

/// The virtualenv with moto's server and boto3.
fn venv() -> PathBuf {
    let venv = repo().join("target/moto");
    assert!(
        venv.join("bin/moto_server").is_file(),
        "the publish tests need moto's S3 server in {}: run scripts/install-deps test",
        venv.display()
    );
    venv
}

/// `mk-binary-cache-publish`, built with the `publish` feature.
pub(crate) fn publisher() -> Command {
    // Without the feature the program is not built (a copy left by an
    // earlier build with it could be stale).
    let bin = option_env!("CARGO_BIN_EXE_mk-binary-cache-publish")
        .filter(|_| cfg!(feature = "publish"))
        .unwrap_or_else(|| {
            panic!(
                "mk-binary-cache-publish was not built: the publish tests need \
                 `cargo test --features publish` (scripts/test passes --all-features)"
            )
        });
    let mut cmd = Command::new(bin);
    credentials(&mut cmd, "testing", "testing");
    cmd
}

/// Gives `cmd` these AWS keys and no other AWS setting of the machine.
pub(crate) fn credentials<'a>(cmd: &'a mut Command, id: &str, secret: &str) -> &'a mut Command {
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
}

/// A moto server of this test run.
pub(crate) struct Moto {
    port: u16,
    log: PathBuf,
    child: std::sync::Mutex<Child>,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// The server the tests share.
    pub(crate) fn shared() -> &'static Moto {
        static MOTO: OnceLock<Moto> = OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    /// Starts a server from a thread that lives as long as the process, so
    /// that the server's parent-death signal comes when the process ends.
    pub(crate) fn start() -> Moto {
        let venv = venv();
        let dir = tempdir();
        let log = dir.path().join("moto.log");
        let port = free_port();
        let (send, receive) = std::sync::mpsc::channel();
        let log_file = fs::File::create(&log).unwrap();
        std::thread::spawn(move || {
            let mut cmd = Command::new(venv.join("bin/moto_server"));
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file);
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            send.send(cmd.spawn()).unwrap();
            loop {
                std::thread::park();
            }
        });
        let child = receive
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
        let moto = Moto {
            port,
            log,
            child: std::sync::Mutex::new(child),
            _dir: dir,
        };
        moto.wait_until_listening();
        moto
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                panic!(
                    "moto_server exited with {status}:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening on 127.0.0.1:{}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3.py ENDPOINT ARGS…`; its standard output.
    pub(crate) fn s3(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(repo().join("tests/it/s3.py"))
            .arg(self.endpoint())
            .args(args);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "`{}` failed:\n{}",
            show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A new bucket anyone may read, with a name no earlier run used (Nix
    /// keeps what it read from `s3://NAME` in its disk cache, across runs).
    pub(crate) fn bucket(&self, name: &str) -> Bucket<'_> {
        static N: AtomicU32 = AtomicU32::new(0);
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "{name}-{run:x}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.s3(&["create", &name]);
        Bucket { moto: self, name }
    }

    /// The requests that completed, in order: (method, path and query).
    pub(crate) fn requests(&self) -> Vec<(String, String)> {
        let file = fs::File::open(&self.log).unwrap();
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                let plain: String = strip_ansi(&line);
                let quoted = plain.split('"').nth(1)?;
                let mut parts = quoted.split(' ');
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) struct Bucket<'a> {
    moto: &'a Moto,
    pub(crate) name: String,
}

impl Bucket<'_> {
    /// The URL Nix and `publish` take.
    pub(crate) fn url(&self) -> String {
        format!("s3://{}?endpoint={}", self.name, self.moto.endpoint())
    }

    /// The URL of the prefix `prefix` of the bucket.
    pub(crate) fn url_of_prefix(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}",
            self.name,
            self.moto.endpoint()
        )
    }

    /// The URL with virtual-hosted addressing: requests go to
    /// `BUCKET.s3.localtest`, a name only [`Hosts`] resolves.
    fn virtual_url(&self) -> String {
        format!(
            "s3://{}?endpoint=http://{VIRTUAL_DOMAIN}:{}&addressing-style=virtual",
            self.name, self.moto.port
        )
    }

    /// The requests so far that named this bucket in their path, as
    /// path-style requests for an object do.
    fn path_style_requests(&self) -> Vec<(String, String)> {
        let prefix = format!("/{}/", self.name);
        self.moto
            .requests()
            .into_iter()
            .filter(|(_, target)| target.starts_with(&prefix))
            .collect()
    }

    /// Every object: key -> storage class.
    fn storage_classes(&self) -> BTreeMap<String, String> {
        serde_json::from_slice(&self.moto.s3(&["classes", &self.name])).unwrap()
    }

    /// Every object: key -> (size, content type).
    pub(crate) fn objects(&self) -> BTreeMap<String, (u64, String)> {
        serde_json::from_slice(&self.moto.s3(&["list", &self.name])).unwrap()
    }

    pub(crate) fn put(&self, key: &str, file: &Path) {
        self.moto
            .s3(&["put", &self.name, key, file.to_str().unwrap()]);
    }

    /// The keys whose upload completed, in order: single PUTs, and the
    /// completions of multipart uploads. (The server logs a request once it
    /// has answered it; `publish` sends a narinfo only after the answers for
    /// what it depends on, so the log's order is the order of completion.)
    fn written(&self) -> Vec<String> {
        let prefix = format!("/{}/", self.name);
        self.moto
            .requests()
            .into_iter()
            .filter_map(|(method, target)| {
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let key = path.strip_prefix(&prefix)?.to_string();
                let complete = match &*method {
                    "PUT" => !query.contains("partNumber="),
                    "POST" => query.contains("uploadId="),
                    _ => false,
                };
                complete.then_some(key)
            })
            .collect()
    }

    /// A copy of every object, in a new temporary directory.
    pub(crate) fn download(&self) -> tempfile::TempDir {
        let copy = tempdir();
        self.moto
            .s3(&["download", &self.name, copy.path().to_str().unwrap()]);
        copy
    }

    /// Checks that the bucket holds exactly the files of `cache`, byte for
    /// byte.
    pub(crate) fn assert_holds(&self, cache: &Path) {
        let copy = tempdir();
        self.moto
            .s3(&["download", &self.name, copy.path().to_str().unwrap()]);
        let (theirs, ours) = (files_of(copy.path()), files_of(cache));
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "the bucket's keys"
        );
        for (name, contents) in ours {
            assert!(
                theirs[&name] == contents,
                "{name} differs in the bucket from {}",
                cache.display()
            );
        }
    }
}

/// The domain of the tests' virtual-hosted requests.
const VIRTUAL_DOMAIN: &str = "s3.localtest";

/// A hosts file in which `BUCKET.s3.localtest` is 127.0.0.1, for the
/// commands [`Hosts::apply`] is given.
struct Hosts {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl Hosts {
    fn naming(bucket: &Bucket) -> Hosts {
        let dir = tempdir();
        let file = dir.path().join("hosts");
        fs::write(
            &file,
            format!(
                "127.0.0.1 localhost\n127.0.0.1 {}.{VIRTUAL_DOMAIN}\n",
                bucket.name
            ),
        )
        .unwrap();
        Hosts { _dir: dir, file }
    }

    /// Runs `cmd` in a mount namespace of its own, in which this file is
    /// `/etc/hosts`.
    fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let source = CString::new(self.file.as_os_str().as_bytes()).unwrap();
        // SAFETY: unshare and mount are system calls, async-signal-safe; the
        // strings were made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |status: libc::c_int| match status {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // The bind below must not reach the machine's namespace.
                check(libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    source.as_ptr(),
                    c"/etc/hosts".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))
            });
        }
        cmd
    }

    /// The file, as a read-only bind onto `/etc/hosts` of a Debian root.
    fn bind(&self) -> (PathBuf, &'static Path) {
        (self.file.clone(), Path::new("/etc/hosts"))
    }
}

/// Every regular file under `root`: relative name -> contents.
fn files_of(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(root)
        .into_iter()
        .filter_map(|(path, node)| match node {
            Node::File { contents, .. } => Some((path.to_str().unwrap().to_string(), contents)),
            _ => None,
        })
        .collect()
}

/// The fixture cache (mkBinaryCache's output), as a writable copy.
fn fixture_cache() -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let copy = dir.path().join("cache");
    run(Command::new("cp")
        .args(["-r", "--no-preserve=mode"])
        .arg(build_cache(&[]))
        .arg(&copy));
    (dir, copy)
}

/// The fixture cache as a writable copy, with a build log of `mib` MiB
/// (larger than a part, it goes up as a multipart upload); and the log's
/// name in the cache.
fn fixture_cache_with_log(mib: usize) -> (tempfile::TempDir, PathBuf, String) {
    let (dir, cache) = fixture_cache();
    let drv = basename(fixture_path("busybox"));
    let name = format!("log/{drv}.drv");
    fs::create_dir_all(cache.join("log")).unwrap();
    let line = format!("building '{drv}'... a line of a long build log\n");
    fs::write(cache.join(&name), line.repeat((mib << 20) / line.len())).unwrap();
    (dir, cache, name)
}

fn publish(cache: &Path, bucket: &Bucket) -> String {
    run(publisher().arg(cache).arg(bucket.url()))
}

#[test]
fn nix_2_34_substitutes_every_path_from_the_published_bucket() {
    let moto = Moto::shared();
    let bucket = moto.bucket("nix");
    let cache = build_cache(&[]);
    // Through `mk-binary-cache publish`, which hands over to the publisher.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mk-binary-cache"));
    credentials(&mut cmd, "testing", "testing");
    run(cmd.arg("publish").arg(&cache).arg(bucket.url()));

    let nix = crate::nix_versions::nix_2_34::nix();
    let substituted = nix.substitute(&bucket.url(), &["--option", "require-sigs", "false"], &[]);
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
    // Anonymous reads: Nix's GETs of narinfos reached the server.
    let requests = moto.requests();
    let narinfo = format!(
        "/{}/{}.narinfo",
        bucket.name,
        hash_part(&fixture().closure[0])
    );
    assert!(
        requests.iter().any(|(m, t)| m == "GET" && *t == narinfo),
        "Nix did not read {narinfo} from the server: {:#?}",
        requests
            .iter()
            .filter(|(m, _)| m == "GET" || m == "HEAD")
            .collect::<Vec<_>>()
    );
}

#[test]
fn nix_2_34_substitutes_every_path_from_a_prefix_of_a_bucket() {
    let bucket = Moto::shared().bucket("prefix");
    let cache = build_cache(&[]);
    let url = bucket.url_of_prefix("team/x86_64");
    run(publisher().arg(&cache).arg(&url));
    assert!(
        bucket
            .objects()
            .keys()
            .all(|k| k.starts_with("team/x86_64/")),
        "{:?}",
        bucket.objects()
    );

    let nix = crate::nix_versions::nix_2_34::nix();
    let substituted = nix.substitute(&url, &["--option", "require-sigs", "false"], &[]);
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
}

#[test]
fn virtual_hosted_addressing_names_the_bucket_in_the_host_and_nix_2_34_substitutes() {
    // As Nix 2.34 addresses AWS by default: publish and Nix both send every
    // request to BUCKET.s3.localtest.
    let bucket = Moto::shared().bucket("virtual");
    let hosts = Hosts::naming(&bucket);
    let cache = build_cache(&[]);
    let url = bucket.virtual_url();
    run(hosts.apply(&mut publisher()).arg(&cache).arg(&url));

    let nix = crate::nix_versions::nix_2_34::nix();
    let substituted = nix.substitute_binding(
        &url,
        &["--option", "require-sigs", "false"],
        &[hosts.bind()],
    );
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
    // No request named the bucket in its path (the test's own reads below
    // do): the objects were written and read by host name alone.
    assert_eq!(bucket.path_style_requests(), []);
    bucket.assert_holds(&cache);
}

#[test]
fn path_style_addressing_when_asked_names_the_bucket_in_the_path() {
    let bucket = Moto::shared().bucket("path");
    let cache = build_cache(&[]);
    run(publisher()
        .arg(&cache)
        .arg(format!("{}&addressing-style=path", bucket.url())));
    // Every file went up as PUT /BUCKET/KEY.
    let mut written = bucket.written();
    written.sort();
    assert_eq!(written, files_of(&cache).into_keys().collect::<Vec<_>>());
    bucket.assert_holds(&cache);
}

#[test]
fn every_upload_carries_the_storage_class_multipart_ones_too() {
    let moto = Moto::shared();
    let bucket = moto.bucket("class");
    // A 12 MiB build log: a multipart upload in parts of 5 MiB.
    let (_dir, cache, _) = fixture_cache_with_log(12);
    let url = format!("{}&storage-class=STANDARD_IA", bucket.url());
    run(publisher().args(["--part-size", "5"]).arg(&cache).arg(&url));

    let part = format!("/{}/log/", bucket.name);
    assert!(
        moto.requests()
            .iter()
            .any(|(m, t)| m == "PUT" && t.starts_with(&part) && t.contains("partNumber=3")),
        "the log did not go up in parts"
    );
    // The server's own record of each object (STANDARD unless the upload
    // said otherwise).
    let classes = bucket.storage_classes();
    assert_eq!(
        classes.keys().collect::<Vec<_>>(),
        files_of(&cache).keys().collect::<Vec<_>>()
    );
    for (key, class) in &classes {
        assert_eq!(class, "STANDARD_IA", "the storage class of {key}");
    }
    // Nix 2.34 takes the same URL.
    let nix = crate::nix_versions::nix_2_34::nix();
    let substituted = nix.substitute(&url, &["--option", "require-sigs", "false"], &[]);
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
}

#[test]
fn the_environment_s_s3_endpoint_does_not_override_the_url_s() {
    // The client library would take AWS_ENDPOINT_URL_S3 over the endpoint it
    // is given; Nix reads no such variable, and one URL must mean one bucket
    // to both.
    let moto = Moto::shared();
    let bucket = moto.bucket("envendpoint");
    let decoy = moto.bucket("decoy");
    let cache = build_cache(&[]);
    run(publisher()
        .env(
            "AWS_ENDPOINT_URL_S3",
            format!("{}/{}", moto.endpoint(), decoy.name),
        )
        .arg(&cache)
        .arg(bucket.url()));
    bucket.assert_holds(&cache);
    assert_eq!(decoy.objects().len(), 0, "publish wrote to the decoy");
}

/// Runs `cmd`, which must succeed; returns the lines of its standard error
/// that are warnings.
fn warnings_of(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`{}` failed:\n{stderr}", show(cmd));
    stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_bare_endpoint_with_scheme_publishes_with_one_warning_saying_what_to_write() {
    let moto = Moto::shared();
    let bucket = moto.bucket("bare");
    let cache = build_cache(&[]);
    let url = format!(
        "s3://{}?endpoint=127.0.0.1:{}&scheme=http",
        bucket.name, moto.port
    );
    let warnings = warnings_of(publisher().arg(&cache).arg(&url));
    assert_eq!(
        warnings,
        [format!(
            "mk-binary-cache-publish: warning: endpoint=127.0.0.1:{0} has no scheme, a form \
             Nix 2.36 deprecates and Nix 2.33 to 2.35 misread: write \
             endpoint=http://127.0.0.1:{0} and drop scheme=",
            moto.port
        )]
    );
    bucket.assert_holds(&cache);
}

#[test]
fn scheme_with_an_endpoint_url_is_ignored_with_a_warning() {
    let bucket = Moto::shared().bucket("scheme");
    let cache = build_cache(&[]);
    // The endpoint's http wins, as in Nix: https would find no server.
    let warnings = warnings_of(
        publisher()
            .arg(&cache)
            .arg(format!("{}&scheme=https", bucket.url())),
    );
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("scheme=https is deprecated since Nix 2.36, and ignored"),
        "{warnings:#?}"
    );
    bucket.assert_holds(&cache);
}

#[test]
fn a_parameter_publish_does_not_take_is_refused_before_anything_is_written() {
    let bucket = Moto::shared().bucket("unknown");
    let cache = build_cache(&[]);
    for (parameter, message) in [
        ("compression=xz", "unknown parameter 'compression'"),
        (
            "adressing-style=path",
            "unknown parameter 'adressing-style'",
        ),
        (
            "addressing-style=dns",
            "addressing-style must be auto, path or virtual, not 'dns'",
        ),
    ] {
        let url = format!("{}&{parameter}", bucket.url());
        let err = run_failing(publisher().arg(&cache).arg(&url));
        assert!(err.contains(&format!("'{url}': {message}")), "{err}");
    }
    assert_eq!(bucket.objects().len(), 0, "publish wrote to the bucket");
}

#[test]
fn uploads_every_file_byte_for_byte_with_nix_s_content_types() {
    let bucket = Moto::shared().bucket("bytes");
    let cache = build_cache(&[]);
    publish(&cache, &bucket);
    bucket.assert_holds(&cache);
    for (key, (_, content_type)) in bucket.objects() {
        let expected = if key == "nix-cache-info" {
            "text/x-nix-cache-info"
        } else if key.ends_with(".narinfo") {
            "text/x-nix-narinfo"
        } else if key.starts_with("nar/") {
            "application/x-nix-nar"
        } else if key.ends_with(".ls") {
            "application/json"
        } else {
            assert_eq!(key, "store-paths", "a file the test does not expect");
            "text/plain; charset=utf-8"
        };
        assert_eq!(content_type, expected, "the content type of {key}");
    }
}

#[test]
fn narinfos_go_up_after_their_nar_and_the_narinfos_of_their_references() {
    let bucket = Moto::shared().bucket("order");
    let cache = build_cache(&[]);
    publish(&cache, &bucket);
    let written = bucket.written();
    let position = |key: &str| {
        written
            .iter()
            .position(|k| k == key)
            .unwrap_or_else(|| panic!("{key} was not written: {written:#?}"))
    };
    assert_eq!(position("nix-cache-info"), 0, "{written:#?}");
    assert_eq!(position("store-paths"), written.len() - 1, "{written:#?}");
    for path in &fixture().closure {
        let narinfo = narinfo_of(&cache, path);
        let own = position(&format!("{}.narinfo", hash_part(path)));
        assert!(
            position(&narinfo["URL"]) < own,
            "{path}: its NAR came later"
        );
        for reference in narinfo["References"].split_whitespace() {
            let theirs = position(&format!("{}.narinfo", hash_part(reference)));
            assert!(
                reference == basename(path) || theirs < own,
                "{path}: the narinfo of its reference {reference} came later: {written:#?}"
            );
        }
    }
}

#[test]
fn a_second_publish_uploads_nothing() {
    let bucket = Moto::shared().bucket("again");
    let cache = build_cache(&[]);
    let first = Instant::now();
    publish(&cache, &bucket);
    let first = first.elapsed();
    let before = bucket.written().len();
    let second = Instant::now();
    let out = publish(&cache, &bucket);
    let second = second.elapsed();
    eprintln!("publishing the fixture cache: {first:?}; again, nothing to do: {second:?}");
    assert!(out.contains("uploaded 0 files"), "{out}");
    assert_eq!(bucket.written().len(), before, "the second run wrote");
    bucket.assert_holds(&cache);
}

#[test]
fn a_killed_publish_is_completed_by_the_next() {
    let moto = Moto::shared();
    let bucket = moto.bucket("killed");
    // A large build log: a multipart upload of ten parts, sent first (the
    // files go in name order, one at a time with --jobs 1).
    let (_dir, cache, log) = fixture_cache_with_log(48);

    let mut child = publisher()
        .args(["--jobs", "1", "--part-size", "5"])
        .arg(&cache)
        .arg(bucket.url())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let part = format!("/{}/log/", bucket.name);
    while !moto
        .requests()
        .iter()
        .any(|(m, t)| m == "PUT" && t.starts_with(&part) && t.contains("partNumber=2"))
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the publish ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no part was uploaded");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Killed: whatever a reader finds is whole.
    let objects = bucket.objects();
    for key in objects.keys().filter(|k| k.ends_with(".narinfo")) {
        let narinfo = narinfo(&cache.join(key));
        assert!(
            objects.contains_key(&narinfo["URL"]),
            "{key} without its NAR"
        );
    }
    assert!(
        !objects.contains_key(&log),
        "a part-uploaded log is visible"
    );

    publish(&cache, &bucket);
    bucket.assert_holds(&cache);
}

#[test]
fn a_bucket_for_another_store_dir_is_refused() {
    let bucket = Moto::shared().bucket("storedir");
    let dir = tempdir();
    let info = dir.path().join("nix-cache-info");
    fs::write(&info, "StoreDir: /gnu/store\n").unwrap();
    bucket.put("nix-cache-info", &info);
    let cache = build_cache(&[]);
    let err = run_failing(publisher().arg(&cache).arg(bucket.url()));
    assert!(
        err.contains(&format!(
            "s3://{} is a cache for the store '/gnu/store', and {} is for '/nix/store'",
            bucket.name,
            cache.display()
        )),
        "{err}"
    );
    assert_eq!(bucket.objects().len(), 1, "publish wrote to the bucket");
}

#[test]
fn a_different_narinfo_is_refused_unless_forced() {
    let bucket = Moto::shared().bucket("differs");
    let (_dir, cache) = fixture_cache();
    let path = fixture_path("busybox");
    let name = format!("{}.narinfo", hash_part(path));
    // The same path, described differently (as another signing would).
    let ours = fs::read_to_string(cache.join(&name)).unwrap();
    let other = cache.parent().unwrap().join("other.narinfo");
    fs::write(&other, format!("{ours}Sig: other:AAAA\n")).unwrap();
    bucket.put(&name, &other);

    let err = run_failing(publisher().arg(&cache).arg(bucket.url()));
    assert!(
        err.contains(&format!(
            "already has 1 narinfo(s) that differ from the cache's, first {name}"
        )),
        "{err}"
    );
    assert_eq!(bucket.objects().len(), 1, "publish wrote to the bucket");

    run(publisher().arg("--force").arg(&cache).arg(bucket.url()));
    bucket.assert_holds(&cache);
}

#[test]
fn bad_credentials_are_a_clear_error_and_nothing_is_written() {
    // A server of its own, which checks signatures: the shared one accepts
    // any, as Nix's anonymous reads need.
    let moto = Moto::start();
    let bucket = moto.bucket("denied");
    moto.s3(&["auth", "on"]);
    let cache = build_cache(&[]);
    let mut cmd = publisher();
    credentials(&mut cmd, "AKIAWRONGWRONGWRONG0", "not-the-secret");
    let err = run_failing(cmd.arg(&cache).arg(bucket.url()));
    moto.s3(&["auth", "off"]);
    assert!(
        err.contains(&format!(
            "listing s3://{} (credentials from the environment (AWS_ACCESS_KEY_ID))",
            bucket.name
        )) && err.contains("403"),
        "{err}"
    );
    assert_eq!(bucket.objects().len(), 0, "publish wrote to the bucket");
}

#[test]
fn a_large_file_goes_up_in_parts_in_bounded_memory() {
    let moto = Moto::shared();
    let bucket = moto.bucket("large");
    // A 128 MiB build log, more than the memory allowed below.
    let (_dir, cache, key) = fixture_cache_with_log(128);

    let mut child = publisher()
        .arg(&cache)
        .arg(bucket.url())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak_kib, samples) = wait_with_peak_rss(&mut child);
    assert!(status.success(), "publish exited with {status}");
    assert!(samples > 0, "the publisher's memory was never sampled");
    eprintln!("publishing a 128 MiB file in parts: peak RSS {peak_kib} KiB");
    assert!(
        peak_kib < 80 << 10,
        "publishing a 128 MiB file took {peak_kib} KiB of memory"
    );
    let parts = moto
        .requests()
        .iter()
        .filter(|(m, t)| {
            m == "PUT"
                && t.starts_with(&format!("/{}/{key}?", bucket.name))
                && t.contains("partNumber=")
        })
        .count();
    assert_eq!(parts, 16, "parts of 8 MiB");
    bucket.assert_holds(&cache);
}

#[test]
fn mk_binary_cache_publish_without_the_publisher_says_where_it_looked() {
    // The builder alone, as mkBinaryCache's closure has it.
    let dir = tempdir();
    let bin = dir.path().join("mk-binary-cache");
    fs::copy(env!("CARGO_BIN_EXE_mk-binary-cache"), &bin).unwrap();
    let err = run_failing(Command::new(&bin).env("PATH", dir.path()).args([
        "publish",
        "cache",
        "s3://bucket",
    ]));
    assert_eq!(
        err.trim_end(),
        format!(
            "mk-binary-cache: error: publish needs the program mk-binary-cache-publish \
             (mk-binary-cache-publish is in neither {} nor PATH): install the Nix package \
             mk-binary-cache-publish, or `cargo build --release --features publish` in the \
             source tree",
            dir.path().display()
        )
    );
}

/// A proxy in front of moto that answers every `nth` request itself with
/// `503 Slow Down`, as a busy S3 does, and forwards the others. One request
/// per connection: it closes each after the answer.
/// One HTTP request from `client`: its head, then as many bytes as
/// Content-Length says; None if the client closed the connection first.
pub(crate) fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    client.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

pub(crate) struct FlakyProxy {
    pub(crate) port: u16,
    faults: std::sync::Arc<AtomicU32>,
}

impl FlakyProxy {
    fn start(upstream: u16, nth: u32) -> FlakyProxy {
        Self::start_delaying(upstream, nth, 0)
    }

    /// A proxy that fails every `nth` request and delays each by up to
    /// `max_delay_ms` (pseudo-random, from the request's number).
    pub(crate) fn start_delaying(upstream: u16, nth: u32, max_delay_ms: u64) -> FlakyProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = std::sync::Arc::new(AtomicU32::new(0));
        let seen = std::sync::Arc::new(AtomicU32::new(0));
        let counted = faults.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (seen, faults) = (seen.clone(), counted.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(client, upstream, nth, max_delay_ms, &seen, &faults);
                });
            }
        });
        FlakyProxy { port, faults }
    }

    fn serve(
        mut client: TcpStream,
        upstream: u16,
        nth: u32,
        max_delay_ms: u64,
        seen: &AtomicU32,
        faults: &AtomicU32,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let Some((request, body)) = read_request(&mut client)? else {
            return Ok(());
        };
        let number = seen.fetch_add(1, Ordering::SeqCst) + 1;
        if max_delay_ms > 0 {
            // A multiplicative hash of the number: spread, and the same each run.
            let spread = u64::from(number).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            std::thread::sleep(Duration::from_millis(spread % (max_delay_ms + 1)));
        }
        if number % nth == 0 {
            faults.fetch_add(1, Ordering::SeqCst);
            client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        let mut server = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
        server.write_all(&request)?;
        server.write_all(&body)?;
        // moto's server answers HTTP/1.0-style: it closes after the answer.
        std::io::copy(&mut server, &mut client)?;
        Ok(())
    }
}

#[test]
fn transient_errors_are_retried_with_backoff() {
    let moto = Moto::shared();
    let bucket = moto.bucket("flaky");
    let proxy = FlakyProxy::start(moto.port, 3);
    let cache = build_cache(&[]);
    let url = format!(
        "s3://{}?endpoint=http://127.0.0.1:{}",
        bucket.name, proxy.port
    );
    let out = run(publisher().arg(&cache).arg(&url));
    eprintln!("{out}");
    assert!(
        proxy.faults.load(Ordering::SeqCst) >= 5,
        "the proxy failed too few requests to prove anything"
    );
    bucket.assert_holds(&cache);
}
