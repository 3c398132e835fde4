//! Signing checked against live Nix, on a freshly generated key:
//! our fingerprints and signatures equal those `nix copy` writes, byte for
//! byte, and Nix with `require-sigs` accepts a narinfo we signed and rejects
//! one signed over the wrong fingerprint.
//!
//! These tests need Nix; without it they fail with a message saying so.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use crate::common::{NixKey, generate_key, hermetic_nix};
use mk_binary_cache::format::hash::Sha256;
use mk_binary_cache::format::narinfo::fingerprint;
use mk_binary_cache::format::signing::{PublicKey, SecretKey, Signature};
use mk_binary_cache::format::store_path::StorePath;

/// Runs a Nix tool; returns its standard output, panicking with a clear
/// message if Nix is missing or the command fails.
fn nix(tool: &str, args: &[&str]) -> String {
    let out = hermetic_nix(Command::new(tool).args(args))
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == ErrorKind::NotFound {
                panic!(
                    "`{tool}` not found: the signing tests need Nix (apt-get install -y nix-bin)"
                )
            }
            panic!("running `{tool}`: {e}")
        });
    assert!(
        out.status.success(),
        "`{tool} {}` failed with {}:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("Nix printed non-UTF-8")
}

/// `nix copy` with new-style commands enabled and no substituters.
fn nix_copy(args: &[&str]) -> String {
    let mut all = vec![
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--option",
        "substituters",
        "",
    ];
    all.extend_from_slice(args);
    nix("nix", &all)
}

/// Adds three text files to the store, the third referring to the first two,
/// with contents unique to this run; returns the path of the third.
fn fresh_paths(unique: &str) -> String {
    let expr = format!(
        r#"let
             a = builtins.toFile "live-sig-a" "a {unique}\n";
             b = builtins.toFile "live-sig-b" "b {unique}\n";
           in builtins.toFile "live-sig-top" "${{a}} ${{b}} {unique}\n""#
    );
    let out = nix(
        "nix-instantiate",
        &["--eval", "--read-write-mode", "--json", "-E", &expr],
    );
    serde_json::from_str(&out).unwrap()
}

/// A narinfo's fields; every key appears once.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad narinfo line {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn narinfos(cache: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out: Vec<_> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

/// The fingerprint of a narinfo, computed by us.
fn our_fingerprint(f: &BTreeMap<String, String>) -> String {
    let references: Vec<StorePath> = f["References"]
        .split_whitespace()
        .map(|b| StorePath::from_base_name(b, "/nix/store").unwrap())
        .collect();
    let nar_hash: Sha256 = f["NarHash"].parse().unwrap();
    fingerprint(
        &StorePath::parse(&f["StorePath"], "/nix/store").unwrap(),
        &nar_hash,
        f["NarSize"].parse().unwrap(),
        &references,
    )
}

#[test]
fn signatures_equal_nix_on_a_fresh_key() {
    let tmp = tempfile::tempdir().unwrap();
    let unique = tmp.path().file_name().unwrap().to_str().unwrap().to_owned();
    let NixKey {
        secret: secret_file,
        public_text,
        ..
    } = generate_key(tmp.path(), &format!("live-{unique}"));
    let secret_file = secret_file.display().to_string();
    let secret = SecretKey::from_file(&secret_file).unwrap();
    let public: PublicKey = public_text.parse().unwrap();
    assert_eq!(secret.public(), public);
    assert_eq!(public.to_string(), public_text);

    let top = fresh_paths(&unique);
    let cache = tmp.path().join("cache");
    let url = format!(
        "file://{}?compression=none&secret-key={secret_file}",
        cache.display()
    );
    nix_copy(&["--to", &url, &top]);

    let infos = narinfos(&cache);
    assert_eq!(infos.len(), 3, "expected the path and its two references");
    let mut saw_references = false;
    for (path, text) in infos {
        let f = fields(&text);
        saw_references |= f["References"].contains(' ');
        let fp = our_fingerprint(&f);
        let ours = secret.sign(&fp);
        assert_eq!(
            ours.to_string(),
            f["Sig"],
            "signature of {}",
            path.display()
        );
        let theirs: Signature = f["Sig"].parse().unwrap();
        assert!(public.verify(&fp, &theirs));
        assert!(!public.verify(&format!("{fp}x"), &theirs));
    }
    assert!(saw_references, "no narinfo with two references was checked");
}

#[test]
fn nix_accepts_our_signatures_and_rejects_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let unique = tmp.path().file_name().unwrap().to_str().unwrap().to_owned();
    let NixKey {
        secret: secret_file,
        public_text,
        ..
    } = generate_key(tmp.path(), &format!("ours-{unique}"));
    let secret_file = secret_file.display().to_string();
    let secret = SecretKey::from_file(&secret_file).unwrap();
    let top = fresh_paths(&format!("accept {unique}"));

    // An unsigned cache; then we sign its narinfos ourselves, `sign` choosing
    // the fingerprint. The CA lines go: Nix trusts a content-addressed path
    // without any signature, which would make this test prove nothing.
    let cache = tmp.path().join("cache");
    nix_copy(&[
        "--to",
        &format!("file://{}?compression=none", cache.display()),
        &top,
    ]);
    let resign = |sign: &dyn Fn(&BTreeMap<String, String>) -> Signature| {
        for (path, text) in narinfos(&cache) {
            let f = fields(&text);
            let mut kept: String = text
                .lines()
                .filter(|l| !l.starts_with("CA: ") && !l.starts_with("Sig: "))
                .map(|l| format!("{l}\n"))
                .collect();
            kept.push_str(&format!("Sig: {}\n", sign(&f)));
            fs::write(path, kept).unwrap();
        }
    };
    let copy_out = |store: &str| {
        let mut cmd = Command::new("nix");
        cmd.args(["--extra-experimental-features", "nix-command", "copy"])
            .args(["--option", "substituters", ""])
            .args(["--option", "require-sigs", "true"])
            .args(["--option", "trusted-public-keys", &public_text])
            .arg("--from")
            .arg(format!("file://{}", cache.display()))
            .arg("--to")
            .arg(tmp.path().join(store))
            .arg(&top);
        hermetic_nix(&mut cmd).output().expect("running nix copy")
    };

    // Signed over basenames, a known bug elsewhere: Nix must refuse.
    resign(&|f| {
        let refs: Vec<&str> = f["References"].split_whitespace().collect();
        let bad = format!(
            "1;{};{};{};{}",
            f["StorePath"],
            f["NarHash"],
            f["NarSize"],
            refs.join(",")
        );
        secret.sign(&bad)
    });
    let out = copy_out("store-rejected");
    assert!(
        !out.status.success(),
        "Nix accepted signatures over basenames"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lacks a valid signature"), "{stderr}");

    // Signed by us, properly: Nix must accept.
    resign(&|f| secret.sign(&our_fingerprint(f)));
    let out = copy_out("store-accepted");
    assert!(
        out.status.success(),
        "Nix rejected our signatures:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
