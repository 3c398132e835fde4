//! Upstreams: leaving out of a cache what another cache already serves.
//!
//! Most of a closure is usually on a public cache already. An [`Upstreams`]
//! names such caches two ways:
//! - by key (`--upstream-key NAME`): a path whose signatures include one by
//!   NAME is left out, with no network access at all (the key's owner put
//!   it on its cache; its signature travelled with the path);
//! - by URL (`--upstream URL`): a path whose narinfo that cache serves is
//!   left out. `file://` caches are read here; `http://`, `https://` and
//!   `s3://` ones are asked over the network, which the offline builder
//!   leaves to `mk-binary-cache-publish` (the `remote` function a caller
//!   passes to [`Upstreams::decide`]).
//!
//! An answer is checked: a narinfo is a hit only if it parses and names the
//! same store path ([`is_narinfo_of`]); a page an upstream serves for every
//! URL is not. The cache written is then a delta: its `nix-cache-info` names
//! the upstreams ([`Upstreams::recorded`]), and its narinfos still name
//! every reference, so a reader whose substituters are the cache and its
//! upstreams gets every path.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use thiserror::Error;

use crate::cache::{CacheDir, CacheDirError};
use crate::format::cache_info::{self, CacheInfo};
use crate::format::narinfo::NarInfo;
use crate::format::store_path::{PathInfo, StorePath};
use crate::support::progress::human_bytes;
use crate::support::sibling;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("--upstream '{0}': expected a URL starting with file://, http://, https:// or s3://")]
    Scheme(String),
    #[error(
        "--upstream '{0}': credentials in the URL would be written into the cache's \
         nix-cache-info; for s3://, use profile= or the AWS environment"
    )]
    Credentials(String),
    #[error("--upstream-key '{0}': expected the name of a key, without spaces or ':'")]
    KeyName(String),
    #[error("upstream {url}: '{}' is not a binary cache: it has no nix-cache-info", .dir.display())]
    NotACache { url: String, dir: PathBuf },
    #[error("upstream {url}: cannot read '{}': {source}", .path.display())]
    Read {
        url: String,
        path: PathBuf,
        source: io::Error,
    },
    /// A `file://` upstream that is not a cache as `cache::CacheDir` reads
    /// one: a symlinked narinfo or subdirectory, a narinfo too large.
    #[error("upstream {url}: {source}")]
    Cache { url: String, source: CacheDirError },
    #[error("upstream {url}: its nix-cache-info: {message}")]
    CacheInfo { url: String, message: String },
    #[error("upstream {url} is a cache for the store '{theirs}', not '{ours}'")]
    StoreDir {
        url: String,
        theirs: String,
        ours: String,
    },
    /// No answer: a network failure, a timeout, a server error (retries
    /// included). An error unless unreachable upstreams count as empty.
    #[error("upstream {url} did not answer: {message}")]
    Unreachable { url: String, message: String },
    /// The upstream cannot be asked at all from here.
    #[error("upstream {url}: {message}")]
    Query { url: String, message: String },
}

/// One `--upstream URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// As given, which `nix-cache-info` and messages repeat.
    pub url: String,
    /// The directory of a `file://` cache; None for one over the network.
    pub dir: Option<PathBuf>,
}

impl UpstreamUrl {
    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        if !cache_info::is_upstream_word(url) {
            return Err(UpstreamError::Scheme(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("file://") {
            // Nix's store parameters (`?compression=…`) say nothing about
            // what the cache holds.
            let dir = rest.split('?').next().unwrap_or_default();
            if !dir.starts_with('/') {
                return Err(UpstreamError::Scheme(url.to_owned()));
            }
            return Ok(UpstreamUrl {
                url: url.to_owned(),
                dir: Some(PathBuf::from(dir)),
            });
        }
        let Some(rest) = ["http://", "https://", "s3://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .filter(|rest| !rest.is_empty())
        else {
            return Err(UpstreamError::Scheme(url.to_owned()));
        };
        // The URL goes into nix-cache-info, which is published.
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(UpstreamError::Credentials(url.to_owned()));
        }
        Ok(UpstreamUrl {
            url: url.to_owned(),
            dir: None,
        })
    }
}

/// The caches whose paths a cache leaves out.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Key names, as in `Sig: NAME:…`.
    pub keys: Vec<String>,
    pub urls: Vec<UpstreamUrl>,
    /// An upstream that does not answer serves nothing, instead of being an
    /// error.
    pub unreachable_is_empty: bool,
}

/// A path that may be left out: what [`Upstreams::decide`] looks at.
pub struct Candidate<'a> {
    pub path: &'a StorePath,
    /// Counted in the summary.
    pub nar_size: u64,
    /// The names of the keys that signed it.
    pub signers: Vec<&'a str>,
}

/// Why a path was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    SignedBy(String),
    ServedBy(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::SignedBy(key) => write!(f, "signed by {key}"),
            Reason::ServedBy(url) => write!(f, "served by {url}"),
        }
    }
}

/// What [`Upstreams::decide`] found.
#[derive(Debug, Default)]
pub struct Decision {
    /// For each candidate, in order: why it is left out, or None.
    pub reasons: Vec<Option<Reason>>,
    /// Upstreams that did not answer and were taken as empty, with why.
    pub unreachable: Vec<UpstreamError>,
    /// Paths and NAR bytes left out, by reason, in the upstreams' order.
    pub skipped: Vec<(Reason, usize, u64)>,
}

impl Decision {
    /// How many paths are left out.
    pub fn skipped_paths(&self) -> usize {
        self.skipped.iter().map(|(_, n, _)| n).sum()
    }

    pub fn is_left_out(&self, index: usize) -> bool {
        self.reasons[index].is_some()
    }

    /// `skipped 3 paths (1.2 MiB of NAR) that upstreams serve: 2 signed by
    /// k-1, 1 served by file:///c`; None when nothing was skipped.
    pub fn summary(&self) -> Option<String> {
        let paths = self.skipped_paths();
        if paths == 0 {
            return None;
        }
        let bytes: u64 = self.skipped.iter().map(|(_, _, b)| b).sum();
        let why: Vec<String> = self
            .skipped
            .iter()
            .map(|(reason, n, _)| format!("{n} {reason}"))
            .collect();
        Some(format!(
            "skipped {paths} path{} ({} of NAR) that upstreams serve: {}",
            if paths == 1 { "" } else { "s" },
            human_bytes(bytes),
            why.join(", ")
        ))
    }

    /// Leaves out the candidates `hits` marks and not left out yet.
    fn record(&mut self, candidates: &[Candidate], hits: &[bool], reason: Reason) {
        let (mut paths, mut bytes) = (0, 0);
        for (i, candidate) in candidates.iter().enumerate() {
            if hits[i] && self.reasons[i].is_none() {
                self.reasons[i] = Some(reason.clone());
                paths += 1;
                bytes += candidate.nar_size;
            }
        }
        if paths > 0 {
            self.skipped.push((reason, paths, bytes));
        }
    }
}

/// Asks an upstream over the network which of `paths` it serves: one answer
/// per path, in order.
pub type Remote<'r> = dyn Fn(&str, &[&StorePath]) -> Result<Vec<bool>, UpstreamError> + 'r;

impl Upstreams {
    /// Checks key names: a key name is a word without `:`.
    pub fn new(
        keys: Vec<String>,
        urls: &[String],
        unreachable_is_empty: bool,
    ) -> Result<Self, UpstreamError> {
        if let Some(bad) = keys
            .iter()
            .find(|k| !cache_info::is_upstream_word(k) || k.contains(':'))
        {
            return Err(UpstreamError::KeyName(bad.clone()));
        }
        let urls = urls
            .iter()
            .map(|u| UpstreamUrl::parse(u))
            .collect::<Result<_, _>>()?;
        Ok(Upstreams {
            keys,
            urls,
            unreachable_is_empty,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.urls.is_empty()
    }

    /// What `nix-cache-info` says of them.
    pub fn recorded(&self) -> cache_info::Upstreams {
        cache_info::Upstreams {
            urls: self.urls.iter().map(|u| u.url.clone()).collect(),
            keys: self.keys.clone(),
        }
    }

    /// Which of `candidates` an upstream serves: keys first (no network),
    /// then each URL in turn, asked only about the paths still left.
    pub fn decide(
        &self,
        candidates: &[Candidate],
        store_dir: &str,
        remote: &Remote,
    ) -> Result<Decision, UpstreamError> {
        let mut decision = Decision {
            reasons: vec![None; candidates.len()],
            ..Decision::default()
        };
        for key in &self.keys {
            let hits = candidates
                .iter()
                .map(|c| c.signers.contains(&key.as_str()))
                .collect::<Vec<_>>();
            decision.record(candidates, &hits, Reason::SignedBy(key.clone()));
        }
        for upstream in &self.urls {
            let left: Vec<usize> = (0..candidates.len())
                .filter(|&i| !decision.is_left_out(i))
                .collect();
            if left.is_empty() {
                break;
            }
            let paths: Vec<&StorePath> = left.iter().map(|&i| candidates[i].path).collect();
            let answers = match &upstream.dir {
                Some(dir) => file_serves(&upstream.url, dir, &paths, store_dir),
                None => remote(&upstream.url, &paths),
            };
            let answers = match answers {
                Ok(answers) => answers,
                Err(e @ UpstreamError::Unreachable { .. }) if self.unreachable_is_empty => {
                    decision.unreachable.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut hits = vec![false; candidates.len()];
            for (i, served) in left.into_iter().zip(answers) {
                hits[i] = served;
            }
            decision.record(candidates, &hits, Reason::ServedBy(upstream.url.clone()));
        }
        Ok(decision)
    }
}

/// `closure` without the paths `upstreams` serve, by the local store's
/// signatures and, for `http(s)://` and `s3://` upstreams, by asking
/// [`QUERY_PROGRAM`]; with what was left out and why.
pub fn leave_out(
    upstreams: &Upstreams,
    closure: Vec<PathInfo>,
    store_dir: &str,
) -> Result<(Vec<PathInfo>, Decision), UpstreamError> {
    if upstreams.is_empty() {
        return Ok((closure, Decision::default()));
    }
    let candidates: Vec<Candidate> = closure
        .iter()
        .map(|p| Candidate {
            path: &p.path,
            nar_size: p.nar_size.unwrap_or(0),
            signers: p.signatures.iter().map(|s| s.key_name.as_str()).collect(),
        })
        .collect();
    let remote = |url: &str, paths: &[&StorePath]| ask_query_program(url, paths, store_dir);
    let decision = upstreams.decide(&candidates, store_dir, &remote)?;
    let kept = closure
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !decision.is_left_out(*i))
        .map(|(_, p)| p)
        .collect();
    Ok((kept, decision))
}

/// The program that asks upstreams over the network, for the offline
/// builder: `mk-binary-cache-publish --query-upstream URL --store-dir DIR`
/// reads store paths on stdin, one a line, and prints those URL serves.
pub const QUERY_PROGRAM: &str = "mk-binary-cache-publish";
/// Its exit code when the upstream did not answer ([`UpstreamError::Unreachable`]).
pub const QUERY_UNREACHABLE: i32 = 3;

/// A [`Remote`] for the builder: asks [`QUERY_PROGRAM`].
pub fn ask_query_program(
    url: &str,
    paths: &[&StorePath],
    store_dir: &str,
) -> Result<Vec<bool>, UpstreamError> {
    let query_error = |message: String| UpstreamError::Query {
        url: url.to_owned(),
        message,
    };
    let mut child = sibling::spawn(QUERY_PROGRAM, |cmd| {
        cmd.args(["--query-upstream", url, "--store-dir", store_dir])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
    })
    .map_err(|e| {
        query_error(format!(
            "asking it over the network needs {QUERY_PROGRAM} (the publish feature) \
             installed beside mk-binary-cache or in PATH: {e}"
        ))
    })?;
    let list: String = paths.iter().map(|p| format!("{p}\n")).collect();
    // The program reads every path before it answers: no deadlock.
    let written = child
        .stdin
        .take()
        .expect("piped")
        .write_all(list.as_bytes());
    let output = child
        .wait_with_output()
        .map_err(|e| query_error(format!("waiting for {QUERY_PROGRAM}: {e}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Its message, without what ours says again.
    let message = stderr.trim();
    let message = message
        .strip_prefix(&format!("{QUERY_PROGRAM}: error: "))
        .unwrap_or(message);
    let message = message
        .strip_prefix(&format!("upstream {url} did not answer: "))
        .or_else(|| message.strip_prefix(&format!("upstream {url}: ")))
        .unwrap_or(message)
        .to_owned();
    match output.status.code() {
        Some(0) => {}
        Some(QUERY_UNREACHABLE) => {
            return Err(UpstreamError::Unreachable {
                url: url.to_owned(),
                message,
            });
        }
        _ => {
            return Err(query_error(format!(
                "{QUERY_PROGRAM} {}: {message}",
                output.status
            )));
        }
    }
    written.map_err(|e| query_error(format!("writing to {QUERY_PROGRAM}: {e}")))?;
    let served: HashSet<&str> = std::str::from_utf8(&output.stdout)
        .map_err(|e| query_error(format!("{QUERY_PROGRAM} answered: {e}")))?
        .lines()
        .collect();
    Ok(paths
        .iter()
        .map(|p| served.contains(p.to_string().as_str()))
        .collect())
}

/// Whether `bytes` is a narinfo of `path`: it parses, and names that path.
pub fn is_narinfo_of(bytes: &[u8], path: &StorePath, store_dir: &str) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| NarInfo::parse(text, store_dir).ok())
        .is_some_and(|info| info.store_path == *path)
}

/// Checks an upstream's `nix-cache-info`: it must be for `store_dir`.
pub fn check_cache_info(url: &str, text: &str, store_dir: &str) -> Result<(), UpstreamError> {
    let info: CacheInfo = text.parse().map_err(|e| UpstreamError::CacheInfo {
        url: url.to_owned(),
        message: format!("{e}"),
    })?;
    check_store_dir(url, &info, store_dir)
}

/// An upstream's `nix-cache-info` must not name another store directory.
fn check_store_dir(url: &str, info: &CacheInfo, store_dir: &str) -> Result<(), UpstreamError> {
    match &info.store_dir {
        Some(theirs) if theirs != store_dir => Err(UpstreamError::StoreDir {
            url: url.to_owned(),
            theirs: theirs.clone(),
            ours: store_dir.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Which of `paths` the flat-file cache in `dir` serves. The cache is
/// opened and its narinfos read as every cache is (`cache::CacheDir`):
/// bounded, and never through a symlink.
fn file_serves(
    url: &str,
    dir: &Path,
    paths: &[&StorePath],
    store_dir: &str,
) -> Result<Vec<bool>, UpstreamError> {
    let upstream_error = |e: CacheDirError| match e {
        CacheDirError::NotACache(dir) => UpstreamError::NotACache {
            url: url.to_owned(),
            dir,
        },
        CacheDirError::Read { path, source } => UpstreamError::Read {
            url: url.to_owned(),
            path,
            source,
        },
        CacheDirError::CacheInfo { source, .. } => UpstreamError::CacheInfo {
            url: url.to_owned(),
            message: format!("{source}"),
        },
        other => UpstreamError::Cache {
            url: url.to_owned(),
            source: other,
        },
    };
    let cache = CacheDir::open(dir).map_err(upstream_error)?;
    check_store_dir(url, cache.info(), store_dir)?;
    paths
        .iter()
        .map(|path| {
            let bytes = match cache.read_narinfo_bytes(path.hash_part()) {
                Ok(bytes) => bytes,
                Err(CacheDirError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(upstream_error(e)),
            };
            Ok(is_narinfo_of(&bytes, path, store_dir))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::format::narinfo;

    const STORE: &str = "/nix/store";
    const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
    const B: &str = "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb";

    fn path(text: &str) -> StorePath {
        StorePath::parse(text, STORE).unwrap()
    }

    fn narinfo_text(store_path: &str) -> String {
        format!(
            "StorePath: {store_path}\nURL: nar/x.nar\nCompression: none\n\
             NarHash: sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq\n\
             NarSize: 504\nReferences: \n"
        )
    }

    fn no_network(url: &str, _: &[&StorePath]) -> Result<Vec<bool>, UpstreamError> {
        panic!("{url} was asked over the network")
    }

    #[test]
    fn urls_are_file_http_https_or_s3() {
        let file = UpstreamUrl::parse("file:///srv/cache?compression=xz").unwrap();
        assert_eq!(file.dir.as_deref(), Some(Path::new("/srv/cache")));
        for remote in ["http://h", "https://cache.nixos.org", "s3://b?region=x"] {
            assert_eq!(UpstreamUrl::parse(remote).unwrap().dir, None, "{remote}");
        }
        for bad in [
            "/srv/cache",
            "file://relative",
            "ftp://h",
            "https://",
            "http://a b",
        ] {
            let e = UpstreamUrl::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn key_names_are_words_without_a_colon() {
        assert!(Upstreams::new(vec!["cache.nixos.org-1".into()], &[], false).is_ok());
        for bad in ["", "a b", "k:base64"] {
            let e = Upstreams::new(vec![bad.into()], &[], false).unwrap_err();
            assert!(matches!(e, UpstreamError::KeyName(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn a_path_signed_by_an_upstream_key_is_left_out_without_asking_anyone() {
        let (a, b) = (path(A), path(B));
        let upstreams = Upstreams::new(vec!["up-1".into()], &[], false).unwrap();
        let candidates = [
            Candidate {
                path: &a,
                nar_size: 10,
                signers: vec!["mine-1"],
            },
            Candidate {
                path: &b,
                nar_size: 2048,
                signers: vec!["mine-1", "up-1"],
            },
        ];
        let decision = upstreams.decide(&candidates, STORE, &no_network).unwrap();
        assert_eq!(
            decision.reasons,
            [None, Some(Reason::SignedBy("up-1".into()))]
        );
        assert_eq!(
            decision.summary().unwrap(),
            "skipped 1 path (2.0 KiB of NAR) that upstreams serve: 1 signed by up-1"
        );
    }

    #[test]
    fn a_file_upstream_serves_the_paths_it_has_a_narinfo_of_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let upstreams = Upstreams::new(vec![], std::slice::from_ref(&url), false).unwrap();
        let (a, b) = (path(A), path(B));
        let candidates = [&a, &b].map(|p| Candidate {
            path: p,
            nar_size: 1,
            signers: vec![],
        });
        let e = upstreams
            .decide(&candidates, STORE, &no_network)
            .unwrap_err();
        assert!(matches!(e, UpstreamError::NotACache { .. }), "{e}");

        fs::write(dir.path().join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
        fs::write(
            dir.path().join(narinfo::file_name(b.hash_part())),
            narinfo_text(B),
        )
        .unwrap();
        // A narinfo under A's name that is not A's is no hit.
        fs::write(
            dir.path().join(narinfo::file_name(a.hash_part())),
            narinfo_text(B),
        )
        .unwrap();
        let decision = upstreams.decide(&candidates, STORE, &no_network).unwrap();
        assert_eq!(decision.reasons, [None, Some(Reason::ServedBy(url))]);
    }

    #[test]
    fn an_upstream_for_another_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nix-cache-info"), "StoreDir: /gnu/store\n").unwrap();
        let url = format!("file://{}", dir.path().display());
        let upstreams = Upstreams::new(vec![], &[url], false).unwrap();
        let a = path(A);
        let candidates = [Candidate {
            path: &a,
            nar_size: 1,
            signers: vec![],
        }];
        let e = upstreams
            .decide(&candidates, STORE, &no_network)
            .unwrap_err();
        assert!(e.to_string().contains("'/gnu/store'"), "{e}");
    }

    #[test]
    fn an_unreachable_upstream_is_an_error_unless_it_counts_as_empty() {
        let a = path(A);
        let candidates = [Candidate {
            path: &a,
            nar_size: 1,
            signers: vec![],
        }];
        let down = |url: &str, _: &[&StorePath]| -> Result<Vec<bool>, UpstreamError> {
            Err(UpstreamError::Unreachable {
                url: url.to_owned(),
                message: "connection refused".into(),
            })
        };
        let urls = ["http://127.0.0.1:1".to_owned()];
        let strict = Upstreams::new(vec![], &urls, false).unwrap();
        let e = strict.decide(&candidates, STORE, &down).unwrap_err();
        assert!(e.to_string().contains("connection refused"), "{e}");
        let lenient = Upstreams::new(vec![], &urls, true).unwrap();
        let decision = lenient.decide(&candidates, STORE, &down).unwrap();
        assert_eq!(decision.reasons, [None]);
        assert_eq!(decision.unreachable.len(), 1);
        assert_eq!(decision.summary(), None);
    }

    #[test]
    fn only_a_narinfo_naming_the_path_is_a_hit() {
        let b = path(B);
        assert!(is_narinfo_of(narinfo_text(B).as_bytes(), &b, STORE));
        assert!(!is_narinfo_of(narinfo_text(A).as_bytes(), &b, STORE));
        assert!(!is_narinfo_of(b"<html>Not found</html>", &b, STORE));
    }
}
