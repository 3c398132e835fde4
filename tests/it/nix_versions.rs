//! The end-to-end behaviour on the Nix versions people run: Debian's `nix-bin`
//! of bookworm (Nix 2.8), trixie (2.26) and sid (2.34), each in a Debian root
//! of its own (`scripts/debian-root`, kept in `target/roots/<suite>`), with
//! its own `/nix/store` and the sandbox on.
//!
//! With each version: `mkBinaryCache` builds the cache of the fixture closure
//! (tests/fixtures/closure.nix); that Nix substitutes every path of the
//! closure into an empty store from the cache, from a read-only copy of it,
//! and from a copy whose `nix-cache-info` names upstreams (the lines `build
//! --upstream` adds); it accepts the signed cache with the public key and
//! refuses it with another; `mk-binary-cache build --to` gets the closure
//! from that Nix's `nix path-info` and `verify` accepts the result; `nix
//! store verify` finds no problem in any of these caches.
//!
//! The repository is bind-mounted at its own path inside each root, so the
//! fixtures, the static `mk-binary-cache` (`tool_dir`) and busybox
//! (`busybox_dir`) have the same paths inside as outside, and every Nix
//! command gets the project's settings (`NIX_CONF_DIR=<repo>/scripts/nix`).
//! Making a root (debootstrap and apt, about a minute, needs Debian's
//! archive) happens once; later runs reuse it.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;

/// Options of every Nix command here that may build: the sandbox on, and no
/// silent fallback to building without it when it cannot be set up (Nix 2.26
/// and 2.34 need a user namespace for it; a chroot would not allow one).
const SANDBOX: &[&str] = &[
    "--option",
    "sandbox",
    "true",
    "--option",
    "sandbox-fallback",
    "false",
];

/// `scripts/debian-root`.
fn debian_root() -> PathBuf {
    repo().join("scripts/debian-root")
}

/// A Debian root holding one Nix version, with the state the tests share.
pub(crate) struct NixInRoot {
    /// The root on the host: `target/roots/<suite>`.
    dir: PathBuf,
    /// What `nix --version` printed in it.
    version: String,
    /// The fixture cache built by this Nix, as a path inside the root.
    cache: OnceLock<Result<String, String>>,
    /// A signed copy of it, with the key pair that signed it.
    signed: OnceLock<Result<Signed, String>>,
    /// A cache written by `mk-binary-cache build --to` from this store.
    built: OnceLock<Result<PathBuf, String>>,
}

struct Signed {
    /// The signed copy, inside the root.
    cache: PathBuf,
    /// `name:base64` of the key that signed it.
    public_key: String,
    /// `name:base64` of a key that did not.
    wrong_key: String,
}

impl NixInRoot {
    /// Makes (or reuses) the root of `suite` and checks that its Nix is
    /// `version` (`2.26.`: a prefix of what `nix --version` prints).
    fn once(
        cell: &'static OnceLock<Result<Self, String>>,
        suite: &str,
        version: &str,
    ) -> &'static Self {
        let result = cell.get_or_init(|| Self::make(suite, version));
        match result {
            Ok(nix) => nix,
            Err(e) => panic!("the Debian {suite} root with Nix {version}x is not usable:\n{e}"),
        }
    }

    fn make(suite: &str, version: &str) -> Result<Self, String> {
        // Built on the host before any test runs inside the root.
        tool_dir();
        busybox_dir();
        let dir = repo().join("target/roots").join(suite);
        try_run(
            Command::new(debian_root())
                .arg("create")
                .arg(suite)
                .arg(&dir)
                .arg("nix-bin"),
        )?;
        let mut nix = NixInRoot {
            dir,
            version: String::new(),
            cache: OnceLock::new(),
            signed: OnceLock::new(),
            built: OnceLock::new(),
        };
        nix.version = try_run(nix.cmd("nix", &[]).arg("--version"))?
            .trim()
            .to_string();
        let expected = format!("nix (Nix) {version}");
        if !nix.version.starts_with(&expected) {
            return Err(format!(
                "Debian {suite}'s nix-bin is now {:?}, not {expected}x: \
                 update tests/it/nix_versions.rs and doc/testing.md's list of tested versions",
                nix.version
            ));
        }
        // What earlier runs left: the root's store, so that this run's Nix
        // builds the fixture and the cache itself rather than find them
        // built (Nix makes a new store when there is none), and in /tmp the
        // shared directory and the temporary ones of a killed run (mkbc-*).
        let tmp = nix.host(Path::new("/tmp"));
        let mut stale = vec![nix.host(Path::new("/nix"))];
        for entry in fs::read_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))? {
            let path = entry.map_err(|e| format!("{}: {e}", tmp.display()))?.path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("mkbc-")
            {
                stale.push(path);
            }
        }
        for dir in stale {
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(|e| format!("rm -r {}: {e}", dir.display()))?;
            }
        }
        // A new store, made by one Nix command before the tests run many at
        // once: two commands that both find no store race to make its state
        // directory ("creating symlink … gcroots/profiles: File exists").
        try_run(nix.cmd("nix-store", &[]).arg("--init"))?;
        let shared = nix.host(&nix.shared());
        fs::create_dir_all(&shared).map_err(|e| format!("mkdir {}: {e}", shared.display()))?;
        Ok(nix)
    }

    /// `program` run inside the root with the project's Nix settings; the
    /// directories `read_only` (paths inside the root) are bind-mounted
    /// read-only onto themselves.
    fn cmd(&self, program: impl AsRef<OsStr>, read_only: &[&Path]) -> Command {
        let binds: Vec<_> = read_only.iter().map(|dir| (self.host(dir), *dir)).collect();
        self.cmd_binding(program, &binds)
    }

    /// `program` run inside the root with the project's Nix settings, and
    /// each (host file or directory, path inside) of `read_only` bind-mounted
    /// read-only for it alone.
    fn cmd_binding(&self, program: impl AsRef<OsStr>, read_only: &[(PathBuf, &Path)]) -> Command {
        let mut cmd = Command::new(debian_root());
        cmd.arg("run").arg(&self.dir).arg("--bind").arg(repo());
        for (host, inside) in read_only {
            let mut spec = host.clone().into_os_string();
            spec.push(":");
            spec.push(inside);
            cmd.arg("--ro-bind").arg(spec);
        }
        cmd.args(["--", "env"])
            .arg(format!("NIX_CONF_DIR={}", nix_conf_dir().display()))
            .arg("NIX_USER_CONF_FILES=")
            .arg(program);
        cmd
    }

    /// `nix` with the `nix-command` feature on, inside the root.
    fn nix(&self, sub: &[&str]) -> Command {
        let mut cmd = self.cmd("nix", &[]);
        cmd.args(["--extra-experimental-features", "nix-command"]);
        cmd.args(sub);
        cmd
    }

    /// The host path of `inside`, a path inside the root.
    fn host(&self, inside: &Path) -> PathBuf {
        in_store(&self.dir, inside.to_str().expect("a UTF-8 path"))
    }

    /// Where the tests of one run keep what they share, inside the root.
    fn shared(&self) -> PathBuf {
        PathBuf::from("/tmp/mkbc-nix-versions")
    }

    /// A fresh directory for one test: (its guard on the host, its path
    /// inside the root).
    fn tempdir(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("mkbc-")
            .tempdir_in(self.host(Path::new("/tmp")))
            .expect("a temporary directory in the root");
        let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
        (dir, inside)
    }

    /// The fixture cache, built by `mkBinaryCache` with this Nix in the
    /// root's store (tests/fixtures/cache.nix, as the host's tests build it).
    fn cache(&self) -> &str {
        let result = self.cache.get_or_init(|| {
            let out = try_run(
                self.cmd("nix-build", &[])
                    .arg(fixture_file("cache.nix"))
                    .arg("--no-out-link")
                    .args(SANDBOX)
                    .args(input_args()),
            )?;
            match out.lines().collect::<Vec<_>>()[..] {
                [path] => Ok(path.to_string()),
                _ => Err(format!("expected one output path, got {out:?}")),
            }
        });
        match result {
            Ok(path) => path,
            Err(e) => panic!("{}: building the fixture cache failed:\n{e}", self.version),
        }
    }

    /// The fixture cache signed by `mk-binary-cache sign --out`, with a key
    /// from this Nix's `nix-store --generate-binary-cache-key`.
    fn signed(&self) -> &Signed {
        let result = self.signed.get_or_init(|| {
            let keys = self.shared().join("keys");
            fs::create_dir_all(self.host(&keys)).map_err(|e| e.to_string())?;
            let public_key = self.generate_key(&keys, "good")?;
            let wrong_key = self.generate_key(&keys, "wrong")?;
            let cache = self.shared().join("signed-cache");
            try_run(
                self.cmd(tool_dir().join("bin/mk-binary-cache"), &[])
                    .arg("sign")
                    .arg("--key-file")
                    .arg(keys.join("good.sec"))
                    .arg("--out")
                    .arg(&cache)
                    .arg(self.cache()),
            )?;
            Ok(Signed {
                cache,
                public_key,
                wrong_key,
            })
        });
        match result {
            Ok(signed) => signed,
            Err(e) => panic!("{}: signing the fixture cache failed:\n{e}", self.version),
        }
    }

    /// `nix-store --generate-binary-cache-key NAME` into `dir` (inside the
    /// root); returns the public key.
    fn generate_key(&self, dir: &Path, name: &str) -> Result<String, String> {
        let public = dir.join(format!("{name}.pub"));
        try_run(
            self.cmd("nix-store", &[])
                .args(["--generate-binary-cache-key", name])
                .arg(dir.join(format!("{name}.sec")))
                .arg(&public),
        )?;
        let text = fs::read_to_string(self.host(&public)).map_err(|e| e.to_string())?;
        Ok(text.trim().to_string())
    }

    /// The fixture's closure in the root's store, cached by
    /// `mk-binary-cache build --to`, which asks this Nix's `nix path-info`.
    fn built(&self) -> &Path {
        let result = self.built.get_or_init(|| {
            // The fixture's roots are in the store once the cache is built.
            self.cache();
            let cache = self.shared().join("built-cache");
            try_run(
                self.cmd(tool_dir().join("bin/mk-binary-cache"), &[])
                    .arg("build")
                    .arg("--to")
                    .arg(&cache)
                    .args(&fixture().roots),
            )?;
            Ok(cache)
        });
        match result {
            Ok(path) => path,
            Err(e) => panic!("{}: mk-binary-cache build --to failed:\n{e}", self.version),
        }
    }

    /// Realises every path of the fixture closure into a new empty store
    /// from the substituter `url`, never building (`--max-jobs 0`), with
    /// `options`. Every path is named, so even the content-addressed ones
    /// (which `nix-build` would make by evaluating) must come from the cache.
    pub(crate) fn substitute(
        &self,
        url: &str,
        options: &[&str],
        read_only: &[&Path],
    ) -> Substituted {
        let binds: Vec<_> = read_only.iter().map(|dir| (self.host(dir), *dir)).collect();
        self.substitute_binding(url, options, &binds)
    }

    /// [`Self::substitute`], with the host's files or directories
    /// `read_only` (host path, path inside) bind-mounted read-only into the
    /// root for it (an `/etc/hosts` that names the server, say).
    pub(crate) fn substitute_binding(
        &self,
        url: &str,
        options: &[&str],
        read_only: &[(PathBuf, &Path)],
    ) -> Substituted {
        self.realise_from(url, options, read_only, &fixture().closure)
    }

    /// Realises `paths` into a new empty store from the substituter `url`,
    /// never building, with `options`.
    pub(crate) fn realise_from(
        &self,
        url: &str,
        options: &[&str],
        read_only: &[(PathBuf, &Path)],
        paths: &[String],
    ) -> Substituted {
        let (guard, store) = self.tempdir();
        let mut cmd = self.cmd_binding("nix-store", read_only);
        cmd.arg("--store")
            .arg(&store)
            .arg("--realise")
            .args(paths)
            .args(["--max-jobs", "0"])
            .args(["--option", "substituters", url])
            .args(options);
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("could not run `{}`: {e}", show(&cmd)));
        Substituted {
            command: show(&cmd),
            output,
            _dir: guard,
            store,
        }
    }

    /// Checks that `store` (a chroot store inside the root) holds every path
    /// of the fixture closure with the contents it has on the host, and that
    /// this Nix's `nix-store --verify --check-contents` finds no problem.
    pub(crate) fn assert_store_holds_the_closure(&self, store: &Path) {
        let mut verify = self.cmd("nix-store", &[]);
        verify
            .arg("--store")
            .arg(store)
            .args(["--verify", "--check-contents"]);
        let out = verify.output().unwrap();
        assert!(
            out.status.success(),
            "{}: `{}` found problems:\n{}",
            self.version,
            show(&verify),
            String::from_utf8_lossy(&out.stderr)
        );
        for path in &fixture().closure {
            let copy = in_store(&self.host(store), path);
            assert!(
                copy.exists(),
                "{}: {path} is not in the store {}",
                self.version,
                store.display()
            );
            assert_eq!(
                nar_hash(&copy),
                nar_hash(Path::new(path)),
                "{}: NAR hash of {path} in the store {}",
                self.version,
                store.display()
            );
        }
    }

    /// Runs `nix store verify --store file://<cache> --all` with `options`
    /// and checks that it found no problem and checked every fixture path.
    fn assert_nix_store_verify_passes(&self, cache: &Path, options: &[&str]) {
        let mut cmd = self.nix(&["store", "verify", "--all", "--store"]);
        cmd.arg(format!("file://{}", cache.display())).args(options);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: `{}` found problems:\n{stderr}",
            self.version,
            show(&cmd)
        );
        // `--all` of a binary cache lists its narinfos: an empty list would
        // check nothing and pass.
        for path in &fixture().closure {
            assert!(
                stderr.contains(&format!("checking '{path}'")),
                "{}: `{}` did not check {path}:\n{stderr}",
                self.version,
                show(&cmd)
            );
        }
    }
}

/// The outcome of [`NixInRoot::substitute`].
pub(crate) struct Substituted {
    pub(crate) command: String,
    pub(crate) output: std::process::Output,
    /// Removes the store when dropped.
    _dir: tempfile::TempDir,
    /// The store, inside the root.
    pub(crate) store: PathBuf,
}

impl Substituted {
    pub(crate) fn assert_success(&self, nix: &NixInRoot) {
        assert!(
            self.output.status.success(),
            "{}: `{}` exited with {}:\n{}",
            nix.version,
            self.command,
            self.output.status,
            String::from_utf8_lossy(&self.output.stderr)
        );
    }
}

fn url(cache: &Path) -> String {
    format!("file://{}", cache.display())
}

fn mk_binary_cache_builds_the_fixture_cache(nix: &NixInRoot) {
    // The cache holds exactly what the host's Nix 2.8 makes of the same
    // derivation: the closure Nix hands the builder, in whatever form this
    // version writes it, gives the same narinfos and NARs byte for byte.
    let ours = nix.host(Path::new(nix.cache()));
    let host = build_cache(&[]);
    assert_eq!(
        nix.cache(),
        host.to_str().unwrap(),
        "{}: the cache's store path",
        nix.version
    );
    assert_eq!(
        tree(&ours),
        tree(&host),
        "{}: the cache differs from the host's",
        nix.version
    );
}

fn substitutes_every_path_into_an_empty_store(nix: &NixInRoot) {
    let cache = PathBuf::from(nix.cache());
    let substituted = nix.substitute(&url(&cache), &["--option", "require-sigs", "false"], &[]);
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
}

/// A writable copy of the fixture cache in a temporary directory of the
/// root, as a path inside it; the directory goes with the guard.
fn copy_of_the_cache(nix: &NixInRoot) -> (tempfile::TempDir, PathBuf) {
    let (guard, dir) = nix.tempdir();
    let copy = dir.join("cache");
    run(Command::new("cp")
        .args(["-r", "--no-preserve=mode"])
        .arg(nix.host(Path::new(nix.cache())))
        .arg(nix.host(&copy)));
    (guard, copy)
}

fn substitutes_every_path_from_a_read_only_copy(nix: &NixInRoot) {
    // A copy outside the store, mounted read-only: Nix opening a cache
    // creates the directories it lacks (log/, realisations/…), which would
    // fail here; the cache must hold them all.
    let (_guard, copy) = copy_of_the_cache(nix);
    let substituted = nix.substitute(
        &url(&copy),
        &["--option", "require-sigs", "false"],
        &[copy.as_path()],
    );
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
}

fn substitutes_from_a_cache_that_names_its_upstreams(nix: &NixInRoot) {
    // `build --upstream` adds lines of its own to nix-cache-info: this Nix
    // must read past them as it reads the rest.
    let (_guard, copy) = copy_of_the_cache(nix);
    let info = nix.host(&copy.join("nix-cache-info"));
    let mut text = fs::read_to_string(&info).unwrap();
    text.push_str("Upstream: https://cache.example.org\nUpstreamKey: cache.example.org-1\n");
    fs::write(&info, text).unwrap();
    let substituted = nix.substitute(&url(&copy), &["--option", "require-sigs", "false"], &[]);
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
}

/// Substitutes from the signed cache with `require-sigs` on, trusting only
/// `key`.
fn substitute_signed(nix: &NixInRoot, key: &str) -> Substituted {
    let signed = nix.signed();
    nix.substitute(
        &url(&signed.cache),
        &[
            "--option",
            "require-sigs",
            "true",
            "--option",
            "trusted-public-keys",
            key,
        ],
        &[],
    )
}

fn accepts_the_signed_cache_with_its_public_key(nix: &NixInRoot) {
    let substituted = substitute_signed(nix, &nix.signed().public_key);
    substituted.assert_success(nix);
    nix.assert_store_holds_the_closure(&substituted.store);
}

fn refuses_the_signed_cache_with_a_wrong_key(nix: &NixInRoot) {
    let substituted = substitute_signed(nix, &nix.signed().wrong_key);
    let stderr = String::from_utf8_lossy(&substituted.output.stderr);
    assert!(
        !substituted.output.status.success(),
        "{}: `{}` succeeded with a key that did not sign the cache",
        nix.version,
        substituted.command
    );
    assert!(
        stderr.contains("not signed by any of the keys in 'trusted-public-keys'"),
        "{}: `{}` failed for another reason than the signatures:\n{stderr}",
        nix.version,
        substituted.command
    );
    // Nix takes a content-addressed path (its narinfo has `CA:`) without a
    // signature, since its name proves its contents; every other path must
    // have been refused.
    let content_addressed: BTreeSet<&str> = fixture()
        .closure
        .iter()
        .filter(|p| narinfo_of(&nix.host(&nix.signed().cache), p).contains_key("CA"))
        .map(String::as_str)
        .collect();
    let present: BTreeSet<&str> = fixture()
        .closure
        .iter()
        .filter(|p| in_store(&nix.host(&substituted.store), p).exists())
        .map(String::as_str)
        .collect();
    assert!(content_addressed.len() < fixture().closure.len());
    assert_eq!(
        present, content_addressed,
        "{}: the paths Nix took without a trusted signature",
        nix.version
    );
}

fn build_to_caches_the_closure_nix_path_info_gives(nix: &NixInRoot) {
    let cache = nix.host(nix.built());
    let expected: Vec<String> = fixture()
        .closure
        .iter()
        .map(|p| hash_part(p).to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        narinfo_hash_parts(&cache),
        expected,
        "{}: narinfos",
        nix.version
    );
    // Same paths, same NARs as the cache the derivation built, whose closure
    // came from Nix's structured attributes instead of `nix path-info`.
    let derivation_cache = nix.host(Path::new(nix.cache()));
    for path in &fixture().closure {
        let (a, b) = (
            narinfo_of(&cache, path),
            narinfo_of(&derivation_cache, path),
        );
        for field in [
            "StorePath",
            "NarHash",
            "NarSize",
            "References",
            "FileHash",
            "CA",
        ] {
            assert_eq!(
                a.get(field),
                b.get(field),
                "{}: {field} of {path}",
                nix.version
            );
        }
    }
}

// A `.drv` root is the derivation file and its closure on every version
// (2.8 reads a bare `.drv` as its outputs unless told `--derivation`):
// here one never built, whose outputs do not exist.
fn build_to_caches_a_drv_root_as_the_derivation_and_its_closure(nix: &NixInRoot) {
    let (guard, dir) = nix.tempdir();
    let expression = dir.join("never-built.nix");
    let unique = guard.path().file_name().unwrap().to_string_lossy();
    fs::write(
        nix.host(&expression),
        format!(
            "let input = builtins.toFile \"input-{unique}\" \"an input\"; in\n\
             derivation {{ name = \"never-built\"; system = builtins.currentSystem;\n\
             builder = \"/bin/sh\"; args = [ \"-c\" \"cat ${{input}} > $out\" ]; }}\n"
        ),
    )
    .unwrap();
    let drv = run(nix.cmd("nix-instantiate", &[]).arg(&expression));
    let drv = drv.trim();
    let cache = dir.join("cache");
    run(nix
        .cmd(tool_dir().join("bin/mk-binary-cache"), &[])
        .args(["build", "-q", "--to"])
        .arg(&cache)
        .arg(drv));
    let closure = run(nix.cmd("nix-store", &[]).args(["-qR", drv]));
    let mut expected: Vec<String> = closure.lines().map(|p| hash_part(p).to_owned()).collect();
    expected.sort();
    assert_eq!(expected.len(), 2, "{}: the .drv and its input", nix.version);
    assert_eq!(
        narinfo_hash_parts(&nix.host(&cache)),
        expected,
        "{}: narinfos",
        nix.version
    );
}

fn verify_accepts_the_cache_build_to_wrote(nix: &NixInRoot) {
    let out = run(nix
        .cmd(tool_dir().join("bin/mk-binary-cache"), &[])
        .arg("verify")
        .arg(nix.built()));
    let checked = format!("checked {} paths", fixture().closure.len());
    assert!(out.contains(&checked), "{}: {out}", nix.version);
}

fn nix_store_verify_finds_no_problem_in_the_cache(nix: &NixInRoot) {
    // Unsigned: the contents are checked, not the trust.
    nix.assert_nix_store_verify_passes(Path::new(nix.cache()), &["--no-trust"]);
}

fn nix_store_verify_trusts_the_signed_cache(nix: &NixInRoot) {
    let signed = nix.signed();
    nix.assert_nix_store_verify_passes(
        &signed.cache,
        &["--option", "trusted-public-keys", &signed.public_key],
    );
}

fn nix_store_verify_finds_no_problem_in_the_cache_build_to_wrote(nix: &NixInRoot) {
    nix.assert_nix_store_verify_passes(nix.built(), &["--no-trust"]);
}

/// The tests of one Nix version, in a module named after it.
macro_rules! nix_version {
    ($module:ident, $suite:literal, $version:literal) => {
        pub(crate) mod $module {
            use super::NixInRoot;
            use std::sync::OnceLock;

            pub(crate) fn nix() -> &'static NixInRoot {
                static NIX: OnceLock<Result<NixInRoot, String>> = OnceLock::new();
                NixInRoot::once(&NIX, $suite, $version)
            }

            nix_version!(@tests
                mk_binary_cache_builds_the_fixture_cache,
                substitutes_every_path_into_an_empty_store,
                substitutes_every_path_from_a_read_only_copy,
                substitutes_from_a_cache_that_names_its_upstreams,
                accepts_the_signed_cache_with_its_public_key,
                refuses_the_signed_cache_with_a_wrong_key,
                build_to_caches_the_closure_nix_path_info_gives,
                build_to_caches_a_drv_root_as_the_derivation_and_its_closure,
                verify_accepts_the_cache_build_to_wrote,
                nix_store_verify_finds_no_problem_in_the_cache,
                nix_store_verify_trusts_the_signed_cache,
                nix_store_verify_finds_no_problem_in_the_cache_build_to_wrote,
            );
        }
    };
    (@tests $($test:ident,)*) => {
        $(
            #[test]
            fn $test() {
                super::$test(nix());
            }
        )*
    };
}

nix_version!(nix_2_8, "bookworm", "2.8.");
nix_version!(nix_2_26, "trixie", "2.26.");
nix_version!(nix_2_34, "sid", "2.34.");
