//! The `nix-cache-info` file at the top of a binary cache.
//!
//! Nix reads it line by line: the key is what comes before the first `:`,
//! the value what follows, trimmed; lines without a colon and unknown keys
//! are ignored. `StoreDir` must equal the reader's store directory,
//! `WantMassQuery` is `1` or `0`, `Priority` an integer (lower is tried
//! first). Nix itself takes any `WantMassQuery` other than `1` as false and
//! fails on a `Priority` that is not a number; the parser here is
//! stricter and refuses both, since no writer produces them. A key given
//! twice is refused too: which one Nix would take is not worth relying on.
//! [`CacheInfo`]'s `Display` writes the file.
//!
//! Two keys are ours, and repeat: `Upstream: URL` and `UpstreamKey: NAME`
//! say that the cache is a delta made against other caches (`build --to
//! --upstream`, `--upstream-key`): the paths it leaves out, which its
//! narinfos may still name as references, are served by that URL, or signed
//! by that key. Nix ignores them (checked with 2.8 and 2.34:
//! tests/it/upstream.rs).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The name of the file, at the top of the cache.
pub const FILE_NAME: &str = "nix-cache-info";

/// The largest `Priority:` Nix can read: it parses the value as a C `int`.
pub const MAX_PRIORITY: u64 = i32::MAX as u64;

/// What `nix-cache-info` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheInfo {
    /// The store directory the cache's paths belong to, e.g. `/nix/store`.
    pub store_dir: Option<String>,
    pub want_mass_query: Option<bool>,
    pub priority: Option<i64>,
    /// What the cache leaves out: what these upstreams serve.
    pub upstreams: Upstreams,
}

/// The upstreams a delta cache was made against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstreams {
    /// `Upstream:` lines: caches, by URL, the paths left out are in.
    pub urls: Vec<String>,
    /// `UpstreamKey:` lines: keys whose signed paths were left out.
    pub keys: Vec<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CacheInfoError {
    #[error("{key} appears more than once")]
    Repeated { key: &'static str },
    #[error("WantMassQuery is {0:?}, expected 1 or 0")]
    WantMassQuery(String),
    #[error("Priority is {0:?}, expected an integer")]
    Priority(String),
    #[error("StoreDir is {0:?}, expected an absolute path")]
    StoreDir(String),
}

impl FromStr for CacheInfo {
    type Err = CacheInfoError;

    fn from_str(text: &str) -> Result<Self, CacheInfoError> {
        let mut info = CacheInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "StoreDir" => {
                    if !value.starts_with('/') {
                        return Err(CacheInfoError::StoreDir(value.to_owned()));
                    }
                    set_once(&mut info.store_dir, "StoreDir", value.to_owned())?;
                }
                "WantMassQuery" => {
                    let want = match value {
                        "1" => true,
                        "0" => false,
                        _ => return Err(CacheInfoError::WantMassQuery(value.to_owned())),
                    };
                    set_once(&mut info.want_mass_query, "WantMassQuery", want)?;
                }
                "Priority" => {
                    // Nix reads it with std::stoi: an int, or no cache at all.
                    let priority = value
                        .parse::<i32>()
                        .map(i64::from)
                        .map_err(|_| CacheInfoError::Priority(value.to_owned()))?;
                    set_once(&mut info.priority, "Priority", priority)?;
                }
                UPSTREAM => add_new(&mut info.upstreams.urls, value),
                UPSTREAM_KEY => add_new(&mut info.upstreams.keys, value),
                _ => {}
            }
        }
        Ok(info)
    }
}

/// The file's text: the lines that are set, in the order `nix copy` writes them.
impl fmt::Display for CacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.store_dir {
            writeln!(f, "StoreDir: {dir}")?;
        }
        if let Some(want) = self.want_mass_query {
            writeln!(f, "WantMassQuery: {}", u8::from(want))?;
        }
        if let Some(priority) = self.priority {
            writeln!(f, "Priority: {priority}")?;
        }
        for url in &self.upstreams.urls {
            writeln!(f, "{UPSTREAM}: {url}")?;
        }
        for key in &self.upstreams.keys {
            writeln!(f, "{UPSTREAM_KEY}: {key}")?;
        }
        Ok(())
    }
}

const UPSTREAM: &str = "Upstream";
const UPSTREAM_KEY: &str = "UpstreamKey";

impl Upstreams {
    /// Adds the upstreams of `other` this one lacks, after its own; whether
    /// any was added.
    pub fn add(&mut self, other: &Upstreams) -> bool {
        let before = self.urls.len() + self.keys.len();
        for url in &other.urls {
            add_new(&mut self.urls, url);
        }
        for key in &other.keys {
            add_new(&mut self.keys, key);
        }
        self.urls.len() + self.keys.len() > before
    }

    /// Whether there are none: the cache is not a delta of any.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.keys.is_empty()
    }
}

/// Upstreams as a reader is told of them: `URL, key NAME`.
impl fmt::Display for Upstreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.iter().map(|k| format!("key {k}"));
        let all: Vec<String> = self.urls.iter().cloned().chain(keys).collect();
        f.write_str(&all.join(", "))
    }
}

/// Whether `key` is that of an `Upstream:` or `UpstreamKey:` line.
pub fn is_upstream_key(key: &str) -> bool {
    key == UPSTREAM || key == UPSTREAM_KEY
}

/// An upstream is a word: one line of the file, no spaces in it.
pub fn is_upstream_word(text: &str) -> bool {
    !text.is_empty() && !text.contains(char::is_whitespace)
}

fn add_new(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}

fn set_once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), CacheInfoError> {
    match slot {
        Some(_) => Err(CacheInfoError::Repeated { key }),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_nix_copy_writes() {
        let info: CacheInfo = "StoreDir: /nix/store\n".parse().unwrap();
        assert_eq!(info.store_dir.as_deref(), Some("/nix/store"));
        assert_eq!(info.want_mass_query, None);
        assert_eq!(info.priority, None);
    }

    #[test]
    fn reads_want_mass_query_and_priority() {
        let info: CacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
            .parse()
            .unwrap();
        assert_eq!(info.want_mass_query, Some(true));
        assert_eq!(info.priority, Some(40));
        let info: CacheInfo = "WantMassQuery: 0".parse().unwrap();
        assert_eq!(info.want_mass_query, Some(false));
    }

    #[test]
    fn trims_values_and_ignores_unknown_keys_and_lines_without_a_colon() {
        let info: CacheInfo = "garbage\nFoo: bar\nStoreDir:/gnu/store  \n"
            .parse()
            .unwrap();
        assert_eq!(info.store_dir.as_deref(), Some("/gnu/store"));
    }

    #[test]
    fn writes_the_lines_that_are_set_and_reads_them_back() {
        let info = CacheInfo {
            store_dir: Some("/nix/store".into()),
            want_mass_query: Some(true),
            priority: Some(40),
            ..CacheInfo::default()
        };
        let text = info.to_string();
        assert_eq!(
            text,
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
        );
        assert_eq!(text.parse(), Ok(info));
        assert_eq!(CacheInfo::default().to_string(), "");
    }

    #[test]
    fn a_missing_store_dir_is_not_an_error() {
        assert_eq!("".parse(), Ok(CacheInfo::default()));
    }

    #[test]
    fn refuses_values_no_writer_produces() {
        assert_eq!(
            "WantMassQuery: yes".parse::<CacheInfo>(),
            Err(CacheInfoError::WantMassQuery("yes".into()))
        );
        assert_eq!(
            "Priority: high".parse::<CacheInfo>(),
            Err(CacheInfoError::Priority("high".into()))
        );
        assert_eq!(
            "StoreDir: nix/store".parse::<CacheInfo>(),
            Err(CacheInfoError::StoreDir("nix/store".into()))
        );
        assert_eq!(
            "StoreDir: /a\nStoreDir: /b\n".parse::<CacheInfo>(),
            Err(CacheInfoError::Repeated { key: "StoreDir" })
        );
    }

    #[test]
    fn upstream_lines_repeat_and_read_back_in_their_order() {
        let text = "StoreDir: /nix/store\nUpstream: https://b.example\nUpstream: file:///a\n\
                    UpstreamKey: cache.nixos.org-1\n";
        let info: CacheInfo = text.parse().unwrap();
        assert_eq!(info.upstreams.urls, ["https://b.example", "file:///a"]);
        assert_eq!(info.upstreams.keys, ["cache.nixos.org-1"]);
        assert!(!info.upstreams.is_empty());
        assert_eq!(info.to_string(), text);
        assert_eq!(
            info.upstreams.to_string(),
            "https://b.example, file:///a, key cache.nixos.org-1"
        );
        assert!(CacheInfo::default().upstreams.is_empty());
    }

    #[test]
    fn adding_upstreams_keeps_those_there_and_appends_the_new_ones() {
        let mut info: CacheInfo = "Upstream: file:///a\n".parse().unwrap();
        let other: CacheInfo = "Upstream: file:///b\nUpstream: file:///a\nUpstreamKey: k-1\n"
            .parse()
            .unwrap();
        assert!(info.upstreams.add(&other.upstreams));
        assert_eq!(info.upstreams.urls, ["file:///a", "file:///b"]);
        assert_eq!(info.upstreams.keys, ["k-1"]);
        assert!(
            !info.upstreams.add(&other.upstreams),
            "nothing new the second time"
        );
    }

    // Nix 2.8 fails to open a cache whose Priority is beyond an int
    // ("error: stoi"), checked with `nix path-info --store file://…`.
    #[test]
    fn refuses_a_priority_nix_cannot_read() {
        let info: CacheInfo = "Priority: 2147483647\n".parse().unwrap();
        assert_eq!(info.priority, Some(2147483647));
        assert_eq!(
            "Priority: 2147483648\n".parse::<CacheInfo>(),
            Err(CacheInfoError::Priority("2147483648".into()))
        );
    }
}
