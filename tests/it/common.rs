//! Helpers shared by the end-to-end tests: running Nix, building the static
//! builder and the fixture closure once per test run, and reading caches.
//!
//! Everything expensive sits behind a `OnceLock` holding a `Result`, so a
//! failure is reported by every test that needs it instead of being retried.
//! Tests that need Nix panic with a clear message when it is missing: a suite
//! that silently passes without Nix would prove nothing.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Options every Nix command that builds gets: the sandbox on (the only proof
/// that the builder is self-contained) and no network substituter.
pub const BUILD_OPTIONS: &[&str] = &[
    "--option",
    "sandbox",
    "true",
    "--option",
    "substituters",
    "",
];

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the test fixtures.
pub fn fixture_file(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Where the tests keep files that outlive one test: the inputs handed to Nix.
fn scratch() -> PathBuf {
    repo().join("target/e2e")
}

/// Renders a command for error messages.
pub use mk_binary_cache::support::shell::show;

fn output(cmd: &mut Command) -> Result<Output, String> {
    cmd.output()
        .map_err(|e| format!("could not run `{}`: {e}", show(cmd)))
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        show(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed; returns its standard output.
pub fn try_run(cmd: &mut Command) -> Result<String, String> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(describe(cmd, &out));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("`{}` printed non-UTF-8: {e}", show(cmd)))
}

/// Runs a command that must succeed; returns its standard output.
pub fn run(cmd: &mut Command) -> String {
    try_run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command that must fail; returns its standard error.
pub fn run_failing(cmd: &mut Command) -> String {
    let out = output(cmd).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        describe(cmd, &out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics unless Nix and busybox-static are installed.
pub fn require_nix() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        for tool in [
            "nix-build",
            "nix-store",
            "nix-hash",
            "nix-instantiate",
            "nix",
        ] {
            try_run(Command::new(tool).arg("--version")).map_err(|e| {
                format!(
                    "the end-to-end tests need Nix, and `{tool}` does not run ({e}).\n\
                     Install it (as scripts/test does): apt-get install -y nix-bin busybox-static"
                )
            })?;
        }
        if !Path::new("/bin/busybox").is_file() {
            return Err("the end-to-end tests need /bin/busybox: \
                        apt-get install -y busybox-static"
                .to_string());
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}

/// The directory of the project's own `nix.conf` (scripts/nix/nix.conf).
pub fn nix_conf_dir() -> PathBuf {
    repo().join("scripts/nix")
}

/// Gives `cmd` the project's Nix settings and nothing else: its own
/// `nix.conf` instead of `/etc/nix/nix.conf`, no user config files, no
/// `NIX_CONFIG` and no `NIX_PATH`. A machine with another `/etc/nix/nix.conf`,
/// or none, gives the same results. No `NIX_REMOTE` either: as root, Nix then
/// uses the store directly, even beside a `nix-daemon` (which has settings
/// of its own).
pub fn hermetic_nix(cmd: &mut Command) -> &mut Command {
    cmd.env("NIX_CONF_DIR", nix_conf_dir())
        .env("NIX_USER_CONF_FILES", "")
        .env_remove("NIX_CONFIG")
        .env_remove("NIX_PATH")
        .env_remove("NIX_REMOTE")
}

/// A `Command` for a Nix tool, with the project's Nix settings.
pub fn nix_cmd(tool: &str) -> Command {
    require_nix();
    let mut cmd = Command::new(tool);
    hermetic_nix(&mut cmd);
    cmd
}

/// A signing key pair made by Nix itself.
pub struct NixKey {
    pub secret: PathBuf,
    pub public: PathBuf,
    /// `name:base64`, as Nix's `trusted-public-keys` takes it.
    pub public_text: String,
}

/// `nix-store --generate-binary-cache-key NAME` into `dir`.
pub fn generate_key(dir: &Path, name: &str) -> NixKey {
    let secret = dir.join(format!("{name}.sec"));
    let public = dir.join(format!("{name}.pub"));
    run(nix_cmd("nix-store")
        .args(["--generate-binary-cache-key", name])
        .arg(&secret)
        .arg(&public));
    let public_text = fs::read_to_string(&public).unwrap().trim().to_owned();
    NixKey {
        secret,
        public,
        public_text,
    }
}

/// `nix` with the `nix-command` feature on.
pub fn nix_new(sub: &[&str]) -> Command {
    let mut cmd = nix_cmd("nix");
    cmd.args(["--extra-experimental-features", "nix-command"]);
    cmd.args(sub);
    cmd
}

/// `nix copy --no-check-sigs --from file://<cache> --to <store> <paths…>`,
/// which must succeed: Nix itself reads `paths` out of the cache.
pub fn copy_out_of_cache<S: AsRef<OsStr>>(
    cache: &Path,
    store: &Path,
    paths: impl IntoIterator<Item = S>,
) {
    run(nix_new(&["copy", "--no-check-sigs"])
        .arg("--from")
        .arg(format!("file://{}", cache.display()))
        .arg("--to")
        .arg(store)
        .args(paths));
}

fn copy_executable(from: &Path, to_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let bin = to_dir.join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("mkdir {}: {e}", bin.display()))?;
    let to = bin.join(name);
    // Replace rather than overwrite: the old file may be busy.
    let tmp = bin.join(format!(".{name}.tmp"));
    fs::copy(from, &tmp).map_err(|e| format!("cp {} {}: {e}", from.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &to).map_err(|e| format!("mv {}: {e}", to.display()))?;
    Ok(to)
}

/// A directory holding `bin/busybox`, the builder of the fixture closure.
pub fn busybox_dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    require_nix();
    match DIR.get_or_init(|| {
        let dir = scratch().join("busybox");
        copy_executable(Path::new("/bin/busybox"), &dir, "busybox")?;
        Ok(dir)
    }) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// A directory holding `bin/mk-binary-cache`, a static build of this crate
/// that can run in the build sandbox.
///
/// `MKBC_STATIC_BIN` names a prebuilt one; otherwise it is built here once,
/// into `target/static` so that it never waits on the test build's lock.
pub fn tool_dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(|| {
        let binary = match std::env::var_os("MKBC_STATIC_BIN") {
            Some(path) => PathBuf::from(path),
            None => build_static()?,
        };
        let dir = scratch().join("tool");
        copy_executable(&binary, &dir, "mk-binary-cache")?;
        Ok(dir)
    }) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

fn build_static() -> Result<PathBuf, String> {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target_dir = repo().join("target/static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    try_run(
        Command::new(cargo)
            .current_dir(repo())
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--release", "--locked", "--bin", "mk-binary-cache"])
            .args(["--target", &target])
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    Ok(target_dir.join(target).join("release/mk-binary-cache"))
}

/// A Nix expression for the absolute path `path`, whatever characters it has.
pub fn nix_path(path: &Path) -> String {
    let mut quoted = String::new();
    for c in path.to_str().expect("a UTF-8 path").chars() {
        if matches!(c, '"' | '\\' | '$') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("/. + \"{quoted}\"")
}

/// `--arg busyboxDir … --arg toolDir …`, as the fixture expressions take.
pub fn input_args() -> Vec<String> {
    [
        "--arg",
        "busyboxDir",
        &nix_path(busybox_dir()),
        "--arg",
        "toolDir",
        &nix_path(tool_dir()),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Builds `file` in the machine's store with the sandbox on; returns the
/// output paths it printed.
pub fn nix_build<S: AsRef<OsStr>>(file: &Path, args: &[S]) -> Vec<String> {
    try_nix_build(file, args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_nix_build<S: AsRef<OsStr>>(file: &Path, args: &[S]) -> Result<Vec<String>, String> {
    let out = try_run(
        nix_cmd("nix-build")
            .arg(file)
            .arg("--no-out-link")
            .args(BUILD_OPTIONS)
            .args(args),
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The fixture closure (tests/fixtures/closure.nix), built once.
pub struct Fixture {
    /// The roots the caches are made of, in the order they are given.
    pub roots: Vec<String>,
    /// Every path of their closure, sorted.
    pub closure: Vec<String>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    require_nix();
    match FIXTURE.get_or_init(|| {
        let bb = nix_path(busybox_dir());
        let roots = try_nix_build(
            &fixture_file("closure.nix"),
            &["-A", "roots", "--arg", "busyboxDir", &bb],
        )?;
        let closure = try_run(nix_cmd("nix-store").arg("-qR").args(&roots))?;
        let mut closure: Vec<String> = closure.lines().map(str::to_string).collect();
        closure.sort();
        Ok(Fixture { roots, closure })
    }) {
        Ok(f) => f,
        Err(e) => panic!("building the fixture closure failed: {e}"),
    }
}

/// The fixture path whose name ends in `-<name>`.
pub fn fixture_path(name: &str) -> &'static str {
    let suffix = format!("-{name}");
    fixture()
        .closure
        .iter()
        .find(|p| p.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no {name} in the fixture closure"))
}

/// Builds a cache of the fixture (tests/fixtures/cache.nix) with extra
/// `nix-build` arguments; returns its output path.
pub fn build_cache(extra: &[&str]) -> PathBuf {
    fixture();
    let mut args = input_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = nix_build(&fixture_file("cache.nix"), &args);
    assert_eq!(out.len(), 1, "expected one output, got {out:?}");
    PathBuf::from(&out[0])
}

/// The part of a store path's basename before the first `-`.
pub fn hash_part(store_path: &str) -> &str {
    let base = basename(store_path);
    &base[..base.find('-').expect("store path without '-'")]
}

pub fn basename(store_path: &str) -> &str {
    store_path.rsplit('/').next().unwrap()
}

/// `sha256:<nix32>` of the NAR serialisation of `path` (any file system path).
pub fn nar_hash(path: &Path) -> String {
    let out = run(nix_cmd("nix-hash")
        .args(["--type", "sha256", "--base32"])
        .arg(path));
    format!("sha256:{}", out.trim())
}

/// `sha256:<nix32>` of the bytes of the file `path`.
pub fn file_hash(path: &Path) -> String {
    let out = run(nix_cmd("nix-hash")
        .args(["--type", "sha256", "--base32", "--flat"])
        .arg(path));
    format!("sha256:{}", out.trim())
}

/// `nix-store --dump`: the reference NAR of a store path.
pub fn dump(store_path: &str) -> Vec<u8> {
    let mut cmd = nix_cmd("nix-store");
    cmd.args(["--dump", store_path]);
    let out = cmd.output().expect("nix-store --dump");
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    out.stdout
}

/// A narinfo's fields in order, checked for the shape Nix writes: every line
/// `Key: value` and ending in a newline.
pub fn narinfo_fields(text: &str) -> Vec<(String, String)> {
    assert!(
        text.ends_with('\n'),
        "narinfo lacks its final newline: {text:?}"
    );
    text.lines()
        .map(|line| {
            let (k, v) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("narinfo line without ': ': {line:?} in {text:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A narinfo as a map; panics on a repeated key.
pub fn narinfo(path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut map = BTreeMap::new();
    for (k, v) in narinfo_fields(&text) {
        if map.insert(k.clone(), v).is_some() {
            panic!("{}: key {k} appears twice", path.display());
        }
    }
    map
}

/// The narinfo of `store_path` in `cache`.
pub fn narinfo_of(cache: &Path, store_path: &str) -> BTreeMap<String, String> {
    narinfo(&cache.join(format!("{}.narinfo", hash_part(store_path))))
}

/// The store paths a cache describes, from its narinfo file names, sorted.
pub fn narinfo_hash_parts(cache: &Path) -> Vec<String> {
    let mut parts: Vec<String> = fs::read_dir(cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".narinfo").map(str::to_string))
        .collect();
    parts.sort();
    parts
}

/// One node of a directory tree, for comparing trees byte for byte.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { executable: bool, contents: Vec<u8> },
    Symlink(PathBuf),
}

/// Every node under `root`, keyed by its path relative to `root`.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let path = root.join(rel);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let node = if meta.file_type().is_symlink() {
            Node::Symlink(fs::read_link(&path).unwrap())
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                walk(root, &rel.join(entry.unwrap().file_name()), out);
            }
            Node::Dir
        } else {
            Node::File {
                executable: meta.permissions().mode() & 0o100 != 0,
                contents: fs::read(&path).unwrap(),
            }
        };
        out.insert(rel.to_path_buf(), node);
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Decompresses a NAR file named by a narinfo's `Compression:`.
pub fn decompress(compression: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    match compression {
        "none" => bytes.to_vec(),
        "zstd" => zstd::stream::decode_all(bytes).expect("zstd decoding"),
        "xz" => {
            let mut out = Vec::new();
            liblzma::read::XzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("xz decoding");
            out
        }
        other => panic!("unexpected compression {other:?}"),
    }
}

/// A fresh, empty directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mkbc-e2e-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// The real directory of store path `store_path` in the chroot store `root`.
pub fn in_store(root: &Path, store_path: &str) -> PathBuf {
    root.join(store_path.trim_start_matches('/'))
}

/// Waits for `child`; returns its status, the peak of its own resident
/// memory in KiB (`VmHWM` of the image it exec'd, sampled every 10 ms), and
/// how many samples were taken. (wait4's ru_maxrss would not do: it also
/// counts the memory of the test process, which the child shared until its
/// exec, and which other tests running at the same time inflate.)
pub fn wait_with_peak_rss(child: &mut std::process::Child) -> (std::process::ExitStatus, u64, u32) {
    let (mut peak_kib, mut samples) = (0u64, 0u32);
    loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak_kib = peak_kib.max(kib);
            samples += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak_kib, samples);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The peak resident memory so far, in KiB, of the running process `pid`
/// (`VmHWM`); None once it has ended.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// A port nobody listens on now (the kernel's choice, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}
