//! Signing the narinfos of an existing cache (`mk-binary-cache sign`).
//!
//! [`sign_in_place`] adds signatures to a writable cache. [`sign_copy`]
//! writes a signed copy of a cache that may be read-only, such as a
//! `mkBinaryCache` output in the store: narinfos are written anew, every
//! other file shares its bytes with the original where the filesystem allows
//! ([`share_or_copy`]: a hard link, else a reflink, else a copy).
//!
//! Each key adds a `Sig:` line over the narinfo's fingerprint
//! ([`NarInfo::fingerprint`]). Signatures already there are kept. Ed25519 is
//! deterministic, so a key that signed the narinfo before makes the same
//! signature again, and it is not added twice. Otherwise the narinfo's text
//! is kept byte for byte, and new `Sig:` lines go where Nix writes them
//! ([`add_signature_lines`]): signing an unsigned `nix copy` cache gives the
//! very narinfos `nix copy` writes when given the key.
//!
//! Narinfos are found and read through [`CacheDir`]: one that is a symlink,
//! or larger than a narinfo can be, stops the run with its path, as does a
//! `nar/` that is a symlink; nothing is changed then.
//!
//! Signing vouches for what the narinfos say without reading the NARs: run
//! `mk-binary-cache verify` first on a cache you did not build.
//!
//! Narinfos are replaced atomically: the signed text goes to a temporary
//! file in the same directory, which is renamed over the narinfo once
//! durable. Two runs signing the same cache at once may lose one run's
//! signatures; run them one after the other.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

use crate::cache::{CacheDir, CacheDirError};
use crate::format::narinfo::{self, NarInfo, Sig};
use crate::format::signing::{SecretKey, Signature};
use crate::format::store_path::{ReferenceCycle, StorePath};
use crate::input::local_store;
use crate::support::files::{self, TempNames, Transfer, share_or_copy};
use crate::support::graph::{Cycle, Graph};
use crate::support::schedule;

#[derive(Debug, Error)]
pub enum SignError {
    #[error("no secret key given")]
    NoKeys,
    #[error(transparent)]
    Cache(#[from] CacheDirError),
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot sign '{path}': {source}")]
    Narinfo {
        path: PathBuf,
        source: narinfo::ParseError,
    },
    #[error("cannot sign '{0}': it is not UTF-8 text")]
    NotText(PathBuf),
    #[error(
        "'{0}' is in the Nix store, whose paths must never change: write a signed copy with --out DIR"
    )]
    InStore(PathBuf),
    #[error("'{0}' already exists and is not an empty directory")]
    OutputExists(PathBuf),
    #[error("'{0}' is neither a file, a directory nor a symlink: a cache copy cannot hold it")]
    SpecialFile(PathBuf),
    #[error("{0}; nothing was signed (Nix never writes such narinfos)")]
    Cycle(ReferenceCycle),
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> SignError + '_ {
    move |source| SignError::Read {
        path: path.to_owned(),
        source,
    }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> SignError + '_ {
    move |source| SignError::Write {
        path: path.to_owned(),
        source,
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Narinfos in the cache.
    pub narinfos: usize,
    /// Signatures added, over all narinfos and keys.
    pub added: usize,
    /// Signatures that were there already.
    pub present: usize,
    /// For a copy: how the other files got there.
    pub hard_links: usize,
    pub reflinks: usize,
    pub copies: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} narinfos: {} signatures added, {} already there",
            self.narinfos, self.added, self.present
        )?;
        if self.hard_links + self.reflinks + self.copies > 0 {
            write!(
                f,
                "; other files {} hard-linked, {} reflinked, {} copied",
                self.hard_links, self.reflinks, self.copies
            )?;
        }
        Ok(())
    }
}

/// Adds the signatures of `keys` to the narinfos of the cache `cache`.
/// Every narinfo is signed in memory first, so a narinfo that cannot be
/// signed stops the run before any file is changed.
///
/// A cache inside a store directory is refused, be it the one the cache is
/// for or the local one (`NIX_STORE_DIR`, default `/nix/store`): a store
/// path must never change, and root could change it.
pub fn sign_in_place(cache: &Path, keys: &[SecretKey], jobs: usize) -> Result<Summary, SignError> {
    let source = Source::open(cache, keys)?;
    if source.root.starts_with(source.cache.store_dir())
        || source.root.starts_with(local_store::store_dir())
    {
        return Err(SignError::InStore(cache.to_owned()));
    }
    let signed = source.sign_all(keys, jobs)?;
    let summary = source.summary(&signed);

    let changed: Vec<&Signed> = signed.iter().filter(|s| s.added > 0).collect();
    let temp_names = TempNames::default();
    let mut temporaries = Vec::with_capacity(changed.len());
    let result = (|| {
        for s in &changed {
            let path = source.root.join(&s.name);
            let mode = fs::metadata(&path)
                .map_err(read_error(&path))?
                .permissions()
                .mode();
            let temp = temp_names.next(&path);
            write_new_file(&temp, s.text.as_bytes(), mode)?;
            temporaries.push((temp, path));
        }
        // One flush for all the temporary files, rather than one per file.
        files::sync_filesystem(&source.root).map_err(write_error(&source.root))?;
        for (temp, path) in temporaries.drain(..) {
            fs::rename(&temp, &path).map_err(write_error(&path))?;
        }
        files::sync_dir(&source.root).map_err(write_error(&source.root))
    })();
    for (temp, _) in temporaries {
        let _ = fs::remove_file(temp);
    }
    result?;
    Ok(summary)
}

/// Writes a signed copy of the cache `cache` to `out`, which must not exist
/// or be an empty directory. The copy is made under a temporary name beside
/// `out` and renamed to `out` once complete, so `out` never holds half a
/// cache; on failure nothing is left.
///
/// Everything in the cache is copied: `nix-cache-info`, the narinfos (signed),
/// the NARs, listings, `debuginfo/`, `store-paths`, empty directories and
/// symlinks. Directories are made writable, so that the copy can be signed
/// again in place.
pub fn sign_copy(
    cache: &Path,
    out: &Path,
    keys: &[SecretKey],
    jobs: usize,
) -> Result<Summary, SignError> {
    let source = Source::open(cache, keys)?;
    let usable = match fs::read_dir(out) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    if !usable {
        return Err(SignError::OutputExists(out.to_owned()));
    }
    let signed = source.sign_all(keys, jobs)?;
    let mut summary = source.summary(&signed);

    let temp = TempNames::default().next(out);
    fs::create_dir(&temp).map_err(write_error(&temp))?;
    let result = (|| {
        let narinfos: HashMap<OsString, &Signed> = signed
            .iter()
            .map(|s| (OsString::from(&s.name), s))
            .collect();
        copy_tree(
            &source.cache,
            Path::new(""),
            &temp,
            Some(&narinfos),
            &mut summary,
        )?;
        files::sync_filesystem(&temp).map_err(write_error(&temp))?;
        fs::rename(&temp, out).map_err(|e| match e.kind() {
            io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
                SignError::OutputExists(out.to_owned())
            }
            _ => write_error(out)(e),
        })?;
        let parent = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        files::sync_dir(parent).map_err(write_error(parent))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result?;
    Ok(summary)
}

/// A cache to sign: its directory, store directory and narinfos' hash parts.
struct Source {
    cache: CacheDir,
    root: PathBuf,
    narinfos: Vec<String>,
}

/// One narinfo, signed.
struct Signed {
    name: String,
    text: String,
    added: usize,
    present: usize,
    /// What it describes and refers to, for the reference order.
    store_path: StorePath,
    references: Vec<StorePath>,
}

impl Source {
    fn open(cache: &Path, keys: &[SecretKey]) -> Result<Self, SignError> {
        if keys.is_empty() {
            return Err(SignError::NoKeys);
        }
        let root = fs::canonicalize(cache).map_err(read_error(cache))?;
        let opened = CacheDir::open(&root).map_err(|e| match e {
            // Named as the user gave it, not canonicalised.
            CacheDirError::NotACache(_) => CacheDirError::NotACache(cache.to_owned()),
            other => other,
        })?;
        let narinfos = opened.narinfos()?;
        Ok(Source {
            cache: opened,
            root,
            narinfos,
        })
    }

    /// Signs every narinfo in memory, in parallel.
    fn sign_all(&self, keys: &[SecretKey], jobs: usize) -> Result<Vec<Signed>, SignError> {
        let signed = Mutex::new(Vec::with_capacity(self.narinfos.len()));
        schedule::run(
            &self.narinfos,
            |_| 1,
            u64::MAX,
            jobs,
            |hash_part, _threads| {
                let path = self.cache.narinfo_path(hash_part);
                let text = self
                    .cache
                    .read_narinfo_text(hash_part)
                    .map_err(|e| match e {
                        CacheDirError::NotText(path) => SignError::NotText(path),
                        other => other.into(),
                    })?;
                let info = NarInfo::parse(&text, self.cache.store_dir())
                    .map_err(|source| SignError::Narinfo { path, source })?;
                let (text, added, present) = sign_parsed(&text, &info, keys);
                signed.lock().unwrap().push(Signed {
                    name: narinfo::file_name(hash_part),
                    text,
                    added,
                    present,
                    store_path: info.store_path,
                    references: info.references,
                });
                Ok::<_, SignError>(())
            },
        )?;
        let mut signed = signed.into_inner().unwrap();
        // Workers finish in any order; a cycle is reported the same each run.
        signed.sort_by(|a, b| a.name.cmp(&b.name));
        check_reference_order(&signed)?;
        Ok(signed)
    }

    fn summary(&self, signed: &[Signed]) -> Summary {
        Summary {
            narinfos: signed.len(),
            added: signed.iter().map(|s| s.added).sum(),
            present: signed.iter().map(|s| s.present).sum(),
            ..Summary::default()
        }
    }
}

/// Signs the narinfo `text` with `keys`. Returns the new text, the number of
/// signatures added and the number that were there already.
pub fn sign_narinfo(
    text: &str,
    store_dir: &str,
    keys: &[SecretKey],
) -> Result<(String, usize, usize), narinfo::ParseError> {
    let info = NarInfo::parse(text, store_dir)?;
    Ok(sign_parsed(text, &info, keys))
}

/// [`sign_narinfo`] of `text`, which parsed as `info`.
fn sign_parsed(text: &str, info: &NarInfo, keys: &[SecretKey]) -> (String, usize, usize) {
    let fingerprint = info.fingerprint();
    let mut new = Vec::new();
    let mut present = 0;
    for key in keys {
        let sig = key.sign(&fingerprint);
        if info.signatures.contains(&Sig::Valid(sig.clone())) || new.contains(&sig) {
            present += 1;
        } else {
            new.push(sig);
        }
    }
    (add_signature_lines(text, &new), new.len(), present)
}

/// Cycle policy: refuse, before any file is written. A signature vouches
/// for a narinfo, and no reader can substitute a path on a cycle.
fn check_reference_order(signed: &[Signed]) -> Result<(), SignError> {
    let paths: Vec<&StorePath> = signed.iter().map(|s| &s.store_path).collect();
    match Graph::by_key(&paths, |i| &signed[i].references).levels() {
        Ok(_) => Ok(()),
        Err(Cycle(nodes)) => Err(SignError::Cycle(ReferenceCycle(
            nodes.into_iter().map(|i| paths[i].clone()).collect(),
        ))),
    }
}

/// `text` with a `Sig: <signature>` line for each of `signatures`, put where
/// Nix writes them: after the last `Sig:` line; without one, before `CA:`;
/// without that, at the end. Every line of the result ends in a newline.
pub fn add_signature_lines(text: &str, signatures: &[Signature]) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let at = match lines.iter().rposition(|l| l.starts_with("Sig: ")) {
        Some(last) => last + 1,
        None => lines
            .iter()
            .position(|l| l.starts_with("CA: "))
            .unwrap_or(lines.len()),
    };
    let new: Vec<String> = signatures.iter().map(|s| format!("Sig: {s}")).collect();
    lines.splice(at..at, new.iter().map(String::as_str));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Copies the directory `rel` of `cache` into the existing directory `to`.
/// At the top (`narinfos` given), the narinfos get their signed text instead.
fn copy_tree(
    cache: &CacheDir,
    rel: &Path,
    to: &Path,
    narinfos: Option<&HashMap<OsString, &Signed>>,
    summary: &mut Summary,
) -> Result<(), SignError> {
    for entry in cache.entries(rel)? {
        let (source, dest) = (&entry.path, to.join(&entry.name));
        if entry.is_dir {
            fs::create_dir(&dest).map_err(write_error(&dest))?;
            copy_tree(cache, &rel.join(&entry.name), &dest, None, summary)?;
        } else if entry.is_symlink {
            let target = fs::read_link(source).map_err(read_error(source))?;
            std::os::unix::fs::symlink(target, &dest).map_err(write_error(&dest))?;
        } else if !entry.is_file {
            return Err(SignError::SpecialFile(entry.path));
        } else if let Some(signed) = narinfos.and_then(|n| n.get(&entry.name)) {
            write_new_file(&dest, signed.text.as_bytes(), 0o644)?;
        } else {
            match share_or_copy(source, &dest).map_err(write_error(&dest))? {
                Transfer::HardLink => summary.hard_links += 1,
                Transfer::Reflink => summary.reflinks += 1,
                Transfer::Copy => summary.copies += 1,
            }
        }
    }
    Ok(())
}

/// Creates `path` (which must not exist) holding `bytes`, with `mode`.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_error(path))?;
    file.write_all(bytes).map_err(write_error(path))?;
    // Set explicitly: `mode` above is filtered by the umask.
    file.set_permissions(Permissions::from_mode(mode & 0o7777))
        .map_err(write_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = include_str!("../../tests/fixtures/keys/secret.key");
    // Written by Nix 2.8 `nix copy --to 'file://…?secret-key=secret.key'`.
    const SIGNED_BY_NIX: &str =
        include_str!("../../tests/fixtures/keys/signed-with-references.narinfo");

    fn key() -> SecretKey {
        SECRET.parse().unwrap()
    }

    fn other_key() -> SecretKey {
        // Any 32-byte seed with its public half makes a valid key.
        let seed = [7u8; 32];
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut bytes = seed.to_vec();
        bytes.extend_from_slice(signing.verifying_key().as_bytes());
        use base64::Engine;
        format!(
            "other-key:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
        .parse()
        .unwrap()
    }

    /// `text` without its `Sig:` lines.
    fn unsigned(text: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with("Sig: "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn signing_an_unsigned_narinfo_gives_the_text_nix_writes() {
        let (text, added, present) =
            sign_narinfo(&unsigned(SIGNED_BY_NIX), "/nix/store", &[key()]).unwrap();
        assert_eq!(text, SIGNED_BY_NIX);
        assert_eq!((added, present), (1, 0));
    }

    #[test]
    fn a_signature_by_the_same_key_is_not_added_twice() {
        let (text, added, present) = sign_narinfo(SIGNED_BY_NIX, "/nix/store", &[key()]).unwrap();
        assert_eq!(text, SIGNED_BY_NIX);
        assert_eq!((added, present), (0, 1));
        let (text, added, _) =
            sign_narinfo(&unsigned(SIGNED_BY_NIX), "/nix/store", &[key(), key()]).unwrap();
        assert_eq!(text, SIGNED_BY_NIX);
        assert_eq!(added, 1);
    }

    #[test]
    fn existing_signatures_are_kept_and_new_ones_follow_them() {
        let (text, added, present) =
            sign_narinfo(SIGNED_BY_NIX, "/nix/store", &[other_key(), key()]).unwrap();
        assert_eq!((added, present), (1, 1));
        let sigs: Vec<&str> = text.lines().filter(|l| l.starts_with("Sig: ")).collect();
        assert_eq!(sigs.len(), 2);
        assert!(sigs[0].starts_with("Sig: test-cache-1:"));
        assert!(sigs[1].starts_with("Sig: other-key:"));
        assert_eq!(unsigned(&text), unsigned(SIGNED_BY_NIX));
    }

    #[test]
    fn new_signatures_go_before_ca_and_unknown_lines_stay() {
        let text = "StorePath: /nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa\nURL: nar/x.nar\n\
                    Compression: none\nNarHash: sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq\n\
                    NarSize: 504\nReferences: \nSystem: x\nCA: fixed:r:sha256:abc";
        let sig = key().sign("any text");
        let out = add_signature_lines(text, std::slice::from_ref(&sig));
        assert!(
            out.ends_with(&format!("System: x\nSig: {sig}\nCA: fixed:r:sha256:abc\n")),
            "{out}"
        );
    }

    #[test]
    fn a_narinfo_that_does_not_parse_is_not_signed() {
        let broken = SIGNED_BY_NIX.replace("NarHash: ", "NarHash: md5:");
        assert!(sign_narinfo(&broken, "/nix/store", &[key()]).is_err());
    }
}
