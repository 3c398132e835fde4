//! The program as a person at a terminal meets it (issue #21): help that
//! fits 80 columns and gives examples, flags that mean the same in every
//! command, arguments in any order, errors that name the real mistake,
//! Ctrl-C that leaves a clean cache, and wording that counts right.
//!
//! Each test runs the binary as a user would and checks the exit code and
//! the words printed.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::build::{build_into, mk_binary_cache};
use crate::common::*;

/// What a run printed, and how it ended.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn outcome(cmd: &mut Command) -> Outcome {
    let out = cmd.output().expect("running mk-binary-cache");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `mk-binary-cache ARGS` as a person runs it: outside any Nix build.
fn user(args: &[&str]) -> Command {
    let mut cmd = mk_binary_cache();
    cmd.args(args).env_remove("NIX_ATTRS_JSON_FILE");
    cmd
}

/// The help `args` print on a terminal of `columns` columns.
fn help_at(columns: usize, args: &[&str]) -> String {
    let out = outcome(user(args).env("COLUMNS", columns.to_string()));
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    out.stdout
}

const COMMANDS: [&str; 7] = [
    "builder", "build", "sign", "verify", "prune", "publish", "help",
];

/// Every way of asking for help: the program's, each command's, short and
/// long, and through `help`.
fn help_requests() -> Vec<Vec<&'static str>> {
    let mut requests = vec![vec!["-h"], vec!["--help"], vec!["help"]];
    for command in COMMANDS {
        requests.push(vec![command, "-h"]);
        requests.push(vec![command, "--help"]);
        requests.push(vec!["help", command]);
    }
    requests
}

// At 80 columns no line is longer, and the words are those of a wide
// terminal, in the same order: wrapping never cut one in two.
#[test]
fn help_fits_80_columns_without_breaking_words() {
    for args in help_requests() {
        let narrow = help_at(80, &args);
        for line in narrow.lines() {
            assert!(
                line.chars().count() <= 80,
                "{args:?}: a line of {} columns:\n{line}",
                line.chars().count()
            );
        }
        let wide = help_at(200, &args);
        let words =
            |text: &str| -> Vec<String> { text.split_whitespace().map(str::to_owned).collect() };
        assert_eq!(words(&narrow), words(&wide), "{args:?}");
    }
}

// The list of commands gives each one line: the details are in its --help.
#[test]
fn each_command_is_summed_up_in_one_line() {
    let help = help_at(80, &["-h"]);
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let names: Vec<&str> = listed
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, COMMANDS, "{help}");
}

#[test]
fn every_command_but_builder_and_help_shows_examples() {
    for command in ["build", "sign", "verify", "prune", "publish"] {
        for flag in ["-h", "--help"] {
            let help = help_at(80, &[command, flag]);
            let (_, examples) = help
                .split_once("\nExamples:\n")
                .unwrap_or_else(|| panic!("{command} {flag}:\n{help}"));
            let example = format!("  mk-binary-cache {command} ");
            assert!(
                examples.lines().any(|l| l.starts_with(&example)),
                "{command} {flag}:\n{help}"
            );
        }
    }
}

// -q is "nothing but errors" wherever it exists, and it exists wherever
// something is printed; -j wherever there is parallel work (prune deletes
// in an order, one file after another, and says so); the cache is <CACHE>.
#[test]
fn flags_mean_the_same_in_every_command() {
    for command in ["build", "sign", "verify", "prune", "publish"] {
        let help = help_at(200, &[command, "-h"]);
        assert!(
            help.contains("-q, --quiet  ") && help.contains("Print nothing but errors"),
            "{command}:\n{help}"
        );
        assert!(help.contains("<CACHE>"), "{command}:\n{help}");
        assert!(!help.contains("<DIR>\n"), "{command}:\n{help}");
        let jobs = help.contains("-j, --jobs <N>");
        assert_eq!(jobs, command != "prune", "{command}:\n{help}");
    }
    let prune = help_at(200, &["prune", "--help"]);
    assert!(prune.contains("so it has no --jobs"), "{prune}");
    assert!(prune.contains("-s, --summary"), "{prune}");
}

// The publisher is a program of its own, which may not be installed: its
// help comes from this program, and says how to get it.
#[test]
fn publish_help_works_without_the_publisher() {
    let dir = tempdir();
    let alone = dir.path().join("mk-binary-cache");
    fs::copy(env!("CARGO_BIN_EXE_mk-binary-cache"), &alone).unwrap();
    let mut cmd = Command::new(&alone);
    cmd.env("PATH", dir.path()).env("COLUMNS", "80");
    let out = outcome(cmd.args(["publish", "--help"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("Usage: mk-binary-cache publish [OPTIONS] <CACHE> <URL>"),
        "{}",
        out.stdout
    );
    let words = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            "The upload is done by the program mk-binary-cache-publish, installed beside this \
             one or on PATH: the Nix package mk-binary-cache-publish, or \
             `cargo build --release --features publish` in the source tree."
        ),
        "{}",
        out.stdout
    );
    // What running it without the publisher says: in publish.rs,
    // mk_binary_cache_publish_without_the_publisher_says_where_it_looked.
}

// Arguments of publish are checked here, with this program's name.
#[test]
fn publish_arguments_are_checked_as_mk_binary_cache_publish() {
    let out = outcome(&mut user(&["publish", "./cache"]));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("Usage: mk-binary-cache publish"),
        "{}",
        out.stderr
    );
}

#[test]
fn help_of_help_is_help() {
    let help = help_at(80, &["help", "--help"]);
    assert!(
        help.starts_with("Print this help, or the help of a command"),
        "{help}"
    );
}

// A person typing the name alone gets the help, as clap gives it for a
// missing command: on stderr, exit 2.
#[test]
fn no_arguments_outside_a_build_prints_the_help() {
    let out = outcome(&mut user(&[]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .starts_with("Write flat-file Nix binary caches\n\nUsage: mk-binary-cache [COMMAND]"),
        "{}",
        out.stderr
    );
}

// Inside a build (the attrs variable set), no arguments is the builder, as
// before: here it reads the attrs file it is given.
#[test]
fn no_arguments_inside_a_build_runs_the_builder() {
    let work = tempdir();
    let attrs = work.path().join(".attrs.json");
    fs::write(&attrs, "[]").unwrap();
    let mut cmd = mk_binary_cache();
    cmd.env("NIX_ATTRS_JSON_FILE", &attrs);
    let out = outcome(&mut cmd);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        "mk-binary-cache: error: build attributes must be an object, not []\n"
    );
}

// `--keep` took every word after it, the cache included.
#[test]
fn prune_keep_takes_one_path_and_leaves_the_cache_argument() {
    let cache = tempdir();
    let leaf = fixture_path("leaf");
    run(&mut build_into(cache.path(), &["-q", leaf]));
    let out = outcome(
        mk_binary_cache()
            .args(["prune", "-s", "--keep", leaf])
            .arg(cache.path()),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("pruned: "), "{}", out.stdout);
}

/// Runs `command -q` on a cache of the fixture's `leaf`, which must succeed
/// and print nothing.
fn assert_quiet(command: &str) {
    let cache = tempdir();
    run(&mut build_into(cache.path(), &["-q", fixture_path("leaf")]));
    let out = outcome(mk_binary_cache().args([command, "-q"]).arg(cache.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
}

#[test]
fn prune_quiet_prints_nothing() {
    assert_quiet("prune");
}

#[test]
fn a_root_that_does_not_exist_says_so() {
    let work = tempdir();
    let missing = work.path().join("result");
    let out = outcome(
        build_into(&work.path().join("cache"), &[&missing]).env_remove("NIX_ATTRS_JSON_FILE"),
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!(
            "mk-binary-cache: error: '{}' does not exist\n",
            missing.display()
        )
    );
}

/// A substituter that takes the connection and never answers, as a proxy
/// that hangs does: asking it anything would take as long as Nix's
/// time-outs.
fn silent_substituter() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

// Only the local store is asked: with a substituter that never answers in
// nix.conf, the answer still comes at once, in one line, with the way out.
#[test]
fn a_path_not_in_the_local_store_is_refused_without_asking_substituters() {
    let (_listener, url) = silent_substituter();
    let absent = "/nix/store/00000000000000000000000000000000-absent";
    let work = tempdir();
    let start = Instant::now();
    let out = outcome(
        build_into(&work.path().join("cache"), &[absent])
            .env("NIX_CONFIG", format!("substituters = {url}")),
    );
    // Nix waits 300 s for a stalled download; a busy machine takes a few.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!(
            "mk-binary-cache: error: '{absent}' is not in the local Nix store: build it, or fetch \
             it with `nix-store --realise PATH` or `nix copy --from URL PATH`, first\n"
        )
    );
    assert!(!work.path().join("cache").exists());
}

// As Nix failed for a user who could not write its database: colours on,
// then SIGABRT. The message says so in words, without escapes.
#[test]
fn a_nix_that_aborts_gives_a_clean_message() {
    let work = tempdir();
    let script = work.path().join("nix-store");
    fs::write(
        &script,
        "#!/bin/sh\nprintf '\\033[31;1merror:\\033[0m cannot open \\033[35;1m/nix/var/nix/db/db.sqlite\\033[0m\\n' >&2\nkill -ABRT $$\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        work.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out =
        outcome(build_into(&work.path().join("cache"), &[fixture_path("leaf")]).env("PATH", path));
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        "mk-binary-cache: error: `nix-store --check-validity` was killed by SIGABRT (signal 6): \
         error: cannot open /nix/var/nix/db/db.sqlite\n"
    );
}

#[test]
fn sign_with_a_public_key_says_a_secret_key_is_needed() {
    let work = tempdir();
    let key = generate_key(work.path(), "test-1");
    let cache = work.path().join("cache");
    run(&mut build_into(&cache, &["-q", fixture_path("leaf")]));
    let out = outcome(
        mk_binary_cache()
            .args(["sign", "--key-file"])
            .arg(&key.public)
            .arg(&cache),
    );
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!(
            "mk-binary-cache: error: secret key file '{}': \"test-1\" looks like a public key \
             (32 bytes): signing needs the secret key, the other file \
             `nix-store --generate-binary-cache-key` wrote\n",
            key.public.display()
        )
    );
}

// "no problems" must not be read as "well signed" when no key was given.
#[test]
fn verify_without_keys_says_signatures_were_not_checked() {
    let work = tempdir();
    let key = generate_key(work.path(), "test-1");
    let cache = work.path().join("cache");
    run(&mut build_into(&cache, &["-q", fixture_path("leaf")]));
    run(mk_binary_cache()
        .args(["sign", "-q", "--key-file"])
        .arg(&key.secret)
        .arg(&cache));
    let unchecked = run(mk_binary_cache().arg("verify").arg(&cache));
    assert!(
        unchecked.trim_end().ends_with(
            "no problems; 1 path signed, signatures not checked \
             (give --trusted-key or --trusted-key-file)"
        ),
        "{unchecked}"
    );
    let checked = run(mk_binary_cache()
        .args(["verify", "--trusted-key-file"])
        .arg(&key.public)
        .arg(&cache));
    assert!(
        checked
            .trim_end()
            .ends_with("no problems, 1 signed by a trusted key"),
        "{checked}"
    );
}

// A cache without problems: nothing, not even the summary.
#[test]
fn verify_quiet_prints_only_problems() {
    assert_quiet("verify");
}

/// A store path of one file of `size` random bytes, which no compressor
/// shrinks.
fn random_store_path(dir: &Path, name: &str, size: usize) -> String {
    let file = dir.join(name);
    let mut bytes = vec![0; size];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    fs::write(&file, &bytes).unwrap();
    run(nix_cmd("nix-store").arg("--add").arg(&file))
        .trim()
        .to_owned()
}

#[test]
fn one_path_is_counted_in_the_singular_and_a_run_with_nothing_to_do_says_only_that() {
    let work = tempdir();
    let path = random_store_path(work.path(), "one", 4096);
    let cache = work.path().join("cache");
    let first = mk_output(&mut build_into(&cache, &[&path]));
    let summary = first.lines().last().unwrap();
    assert!(summary.starts_with("cached 1 path in "), "{first}");
    // Random bytes do not shrink: about as many bytes out as in.
    let ratio: f64 = summary
        .split_once("(ratio ")
        .and_then(|(_, r)| r.split_once(','))
        .map(|(r, _)| r.parse().unwrap())
        .unwrap_or_else(|| panic!("no ratio in {summary}"));
    assert!((0.9..1.1).contains(&ratio), "{summary}");

    let again = mk_output(&mut build_into(&cache, &[&path]));
    assert_eq!(
        again,
        "the one path is already in the cache: nothing to do\n"
    );
}

fn mk_output(cmd: &mut Command) -> String {
    let out = outcome(cmd.env_remove("NIX_ATTRS_JSON_FILE"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stderr
}

// clap printed Rust's `0..=0` for a range; errors say the values in words.
#[test]
fn ranges_are_said_in_words() {
    let out = outcome(&mut user(&[
        "build",
        "--to",
        "./cache",
        "--compression",
        "none",
        "--compression-level",
        "3",
        "/nix/store/00000000000000000000000000000000-x",
    ]));
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        "mk-binary-cache: error: compression level 3 is out of range for none, which takes 0 only\n"
    );
    assert!(!out.stderr.contains("..="), "{}", out.stderr);
    let out = outcome(&mut user(&["build", "--to", "c", "--jobs", "0"]));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with(
            "error: invalid value '0' for '--jobs <N>': expected a whole number of at least 1"
        ),
        "{}",
        out.stderr
    );
    let out = outcome(&mut user(&["build", "--to", "c", "--priority=-1"]));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with(
            "error: invalid value '-1' for '--priority <N>': expected a whole number from 0 to "
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("..="), "{}", out.stderr);
}

/// The temporary files under `cache` (names with `.tmp.`), with their sizes.
fn temporary_files(cache: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    for sub in ["", "nar", "debuginfo"] {
        let Ok(entries) = fs::read_dir(cache.join(sub)) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().contains(".tmp.") {
                found.push((entry.path(), entry.metadata().unwrap().len()));
            }
        }
    }
    found
}

/// Starts `build --to cache` of a 12 MiB path with xz, one thread: about
/// ten seconds of CPU, more on a busy machine. Sends `signal` once the NAR's
/// temporary file has some of it, and returns how the run ended and what it
/// printed.
fn interrupted_build(signal: i32) -> (tempfile::TempDir, PathBuf, Outcome) {
    interrupted_build_reporting(signal, true)
}

/// [`interrupted_build`], with the reader of its stderr gone when
/// `stderr_read` is false.
fn interrupted_build_reporting(
    signal: i32,
    stderr_read: bool,
) -> (tempfile::TempDir, PathBuf, Outcome) {
    let work = tempdir();
    let path = random_store_path(work.path(), "large", 12 << 20);
    let cache = work.path().join("cache");
    let mut child = build_into(&cache, &["--compression", "xz", "-j", "1", &path])
        .env_remove("NIX_ATTRS_JSON_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !stderr_read {
        drop(child.stderr.take());
    }
    // Below xz's 24 MiB block the encoder streams: the file grows as it goes.
    let nar = cache.join("nar");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !temporary_files(&cache)
        .iter()
        .any(|(file, size)| file.starts_with(&nar) && *size > 0)
    {
        assert!(Instant::now() < deadline, "no temporary NAR appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    // An interrupted run that does not end is a failure, not a hung test.
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not end after the signal");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let outcome = Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (work, cache, outcome)
}

// Ctrl-C: one line that says the cache is fine and what to do, this run's
// temporary NAR gone, exit 130 as a shell expects, and a cache that
// `verify` accepts.
#[test]
fn ctrl_c_during_build_removes_the_temporary_files_and_says_the_cache_is_valid() {
    let (_work, cache, out) = interrupted_build(libc::SIGINT);
    assert_eq!(out.code, Some(130), "{}", out.stderr);
    assert_eq!(
        out.stderr.lines().last().unwrap(),
        format!(
            "mk-binary-cache: interrupted: '{}' is a valid cache; run the same command again to finish it",
            cache.display()
        ),
        "{}",
        out.stderr
    );
    assert_eq!(temporary_files(&cache), []);
    let verified = outcome(mk_binary_cache().arg("verify").arg(&cache));
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
}

#[test]
fn sigterm_during_build_ends_the_same_way_with_143() {
    let (_work, cache, out) = interrupted_build(libc::SIGTERM);
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert!(out.stderr.contains("interrupted: "), "{}", out.stderr);
    assert_eq!(temporary_files(&cache), []);
}

// A terminal closed, or a log reader gone: the interrupt's line cannot be
// written, and the run must end all the same, its temporary files gone.
#[test]
fn an_interrupt_ends_the_run_when_stderr_is_gone() {
    let (_work, cache, out) = interrupted_build_reporting(libc::SIGINT, false);
    assert_eq!(out.code, Some(130));
    assert_eq!(temporary_files(&cache), []);
}

/// The hash parts of `nix-store -qR root`: the closure Nix gives a path.
fn requisites(root: &str) -> Vec<String> {
    let closure = run(nix_cmd("nix-store").args(["-qR", root]));
    let mut parts: Vec<String> = closure.lines().map(|p| hash_part(p).to_owned()).collect();
    parts.sort();
    parts
}

/// Runs `build --to cache root` and checks what a `.drv` root means: the
/// derivation file and its closure, listed in `store-paths`, so that a prune
/// keeps all of it and notes nothing.
fn assert_drv_root_caches_its_closure(work: &Path, drv: &str) {
    let cache = work.join("cache");
    run(&mut build_into(&cache, &["-q", drv]));
    assert_eq!(narinfo_hash_parts(&cache), requisites(drv));
    let listed = fs::read_to_string(cache.join("store-paths")).unwrap();
    assert_eq!(listed, format!("{drv}\n"));
    let out = outcome(mk_binary_cache().args(["prune", "-s"]).arg(&cache));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "", "prune noted something");
    assert!(
        out.stdout.starts_with("pruned: removed 0 paths, 0 NARs"),
        "{}",
        out.stdout
    );
}

// Nix 2.8 reads a bare `.drv` as its outputs, later versions as the file:
// with the file meant on every version, a derivation never built can be
// cached (its outputs do not exist).
#[test]
fn an_unbuilt_drv_root_caches_the_derivation_and_its_closure() {
    let work = tempdir();
    let expression = work.path().join("never-built.nix");
    // A name of this test run's own, so that no output was ever built.
    let unique = work.path().file_name().unwrap().to_string_lossy();
    fs::write(
        &expression,
        format!(
            "let input = builtins.toFile \"input-{unique}\" \"an input\"; in\n\
             derivation {{ name = \"never-built\"; system = builtins.currentSystem;\n\
             builder = \"/bin/sh\"; args = [ \"-c\" \"cat ${{input}} > $out\" ]; }}\n"
        ),
    )
    .unwrap();
    let drv = run(nix_cmd("nix-instantiate").arg(&expression));
    let drv = drv.trim();
    assert_eq!(requisites(drv).len(), 2, "the .drv and its input");
    assert_drv_root_caches_its_closure(work.path(), drv);
}

// Built or not, the same: the outputs of a built `.drv` are not its closure.
#[test]
fn a_built_drv_root_caches_the_derivation_not_its_outputs() {
    let leaf = fixture_path("leaf");
    let drv = run(nix_cmd("nix-store").args(["-qd", leaf]));
    let drv = drv.trim();
    assert!(!requisites(drv).contains(&hash_part(leaf).to_owned()));
    let work = tempdir();
    assert_drv_root_caches_its_closure(work.path(), drv);
}
