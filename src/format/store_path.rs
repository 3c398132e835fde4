//! Store paths and what a cache needs to know about each one.

use std::fmt;

use thiserror::Error;

use crate::format::hash::Sha256;
use crate::format::nixbase32;
use crate::format::signing::Signature;

/// Nix's default store directory: where a store lives unless configured
/// otherwise, and what a cache whose `nix-cache-info` names none is for.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{path}' is not inside the store directory '{store_dir}'")]
    OutsideStore { path: String, store_dir: String },
    #[error("'{0}' is not a store path: expected <store dir>/<32-char nix32 hash>-<name>")]
    Malformed(String),
    #[error("store path '{0}' has an invalid name")]
    InvalidName(String),
}

/// A store path, kept as its store directory and basename `<hash>-<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    store_dir: String,
    base_name: String,
}

/// The length of a store path's hash part, which names its narinfo.
pub const HASH_LEN: usize = 32;

/// Whether `s` is a store path's hash part: 32 nix32 characters.
pub fn is_hash_part(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| nixbase32::digit(b).is_some())
}

impl StorePath {
    /// Parses an absolute store path that must lie directly in `store_dir`.
    pub fn parse(path: &str, store_dir: &str) -> Result<Self, StorePathError> {
        let base_name = path
            .strip_prefix(store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::OutsideStore {
                path: path.to_owned(),
                store_dir: store_dir.to_owned(),
            })?;
        Self::from_base_name(base_name, store_dir).map_err(|e| match e {
            StorePathError::Malformed(_) => StorePathError::Malformed(path.to_owned()),
            StorePathError::InvalidName(_) => StorePathError::InvalidName(path.to_owned()),
            e => e,
        })
    }

    /// Parses a basename `<hash>-<name>`, as narinfo `References:` lists them.
    pub fn from_base_name(base_name: &str, store_dir: &str) -> Result<Self, StorePathError> {
        let malformed = || StorePathError::Malformed(base_name.to_owned());
        let (hash, name) = base_name.split_at_checked(HASH_LEN).ok_or_else(malformed)?;
        let name = name.strip_prefix('-').ok_or_else(malformed)?;
        if !is_hash_part(hash) {
            return Err(malformed());
        }
        let valid_char = |b: u8| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_' | b'?' | b'=')
        };
        if name.is_empty()
            || name.len() > 211
            || name.starts_with('.')
            || !name.bytes().all(valid_char)
        {
            return Err(StorePathError::InvalidName(base_name.to_owned()));
        }
        Ok(StorePath {
            store_dir: store_dir.to_owned(),
            base_name: base_name.to_owned(),
        })
    }

    /// The 32 characters that name the narinfo: `<hash part>.narinfo`.
    pub fn hash_part(&self) -> &str {
        &self.base_name[..HASH_LEN]
    }

    pub fn name(&self) -> &str {
        &self.base_name[HASH_LEN + 1..]
    }

    pub fn base_name(&self) -> &str {
        &self.base_name
    }

    pub fn store_dir(&self) -> &str {
        &self.store_dir
    }

    pub fn to_absolute(&self) -> String {
        format!("{}/{}", self.store_dir, self.base_name)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.store_dir, self.base_name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the closure tells us about one store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// Known from Nix, and checked against what we compute; absent in the
    /// legacy closure file, which carries no hashes.
    pub nar_hash: Option<Sha256>,
    pub nar_size: Option<u64>,
    /// References, the path itself included when it refers to itself.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// Content address, for content-addressed paths (`fixed:r:sha256:…`).
    pub ca: Option<String>,
    /// Signatures the store holds for the path, which the narinfo carries
    /// over as `Sig:` lines, as `nix copy` does.
    pub signatures: Vec<Signature>,
}

/// Appends to `paths` those of `more` it does not hold yet, in their order:
/// a list of roots keeps the order it was given in, without repeats.
pub fn append_new(paths: &mut Vec<StorePath>, more: impl IntoIterator<Item = StorePath>) {
    for path in more {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
}

/// The store path that holds `path`: `/nix/store/…-hello/bin/hello` gives
/// `/nix/store/…-hello`, and a store path gives itself.
pub fn containing_store_path(path: &str, store_dir: &str) -> Result<StorePath, StorePathError> {
    let top = path
        .strip_prefix(store_dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').next())
        .map(|base| format!("{store_dir}/{base}"))
        .unwrap_or_else(|| path.to_owned());
    StorePath::parse(&top, store_dir)
}

/// Store paths whose references go round: each refers to the next, the
/// last to the first. Nix never makes one (a path's references exist before
/// it does, but for itself); only a hand-made closure or narinfo can.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", describe_cycle(.0))]
pub struct ReferenceCycle(pub Vec<StorePath>);

fn describe_cycle(paths: &[StorePath]) -> String {
    let mut text = String::from("the references of these paths form a cycle: ");
    for path in paths.iter().chain(paths.first()) {
        if !text.ends_with(": ") {
            text.push_str(" -> ");
        }
        text.push_str(&path.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reference_cycle_names_its_paths_in_order_and_comes_back_to_the_first() {
        let p = |name: &str| StorePath::parse(&format!("{P}-{name}"), "/nix/store").unwrap();
        let cycle = ReferenceCycle(vec![p("a"), p("b")]);
        assert_eq!(
            cycle.to_string(),
            format!("the references of these paths form a cycle: {P}-a -> {P}-b -> {P}-a")
        );
    }

    #[test]
    fn the_containing_store_path_of_a_path_inside_one_is_that_store_path() {
        for inside in [P.to_owned(), format!("{P}/bin/app"), format!("{P}/")] {
            assert_eq!(
                containing_store_path(&inside, "/nix/store")
                    .unwrap()
                    .to_string(),
                P
            );
        }
        assert!(containing_store_path("/tmp/x", "/nix/store").is_err());
        assert!(containing_store_path("/nix/store", "/nix/store").is_err());
    }

    use super::*;

    const P: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";

    #[test]
    fn splits_hash_part_and_name() {
        let p = StorePath::parse(P, "/nix/store").unwrap();
        assert_eq!(p.hash_part(), "dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz");
        assert_eq!(p.name(), "appa");
        assert_eq!(p.to_string(), P);
    }

    #[test]
    fn a_hash_part_is_32_nix32_characters() {
        assert!(is_hash_part("dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz"));
        // 'e', 'o', 't' and 'u' are not in Nix's alphabet; nor are capitals.
        for bad in [
            "dmdglxp7bh69ngn7i0g9ib7d2r7v3wme",
            "Dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz",
        ] {
            assert!(!is_hash_part(bad), "{bad}");
            assert!(StorePath::from_base_name(&format!("{bad}-x"), "/nix/store").is_err());
        }
        assert!(!is_hash_part("dmdglxp7bh69ngn7i0g9ib7d2r7v3wm"));
    }

    #[test]
    fn append_new_keeps_the_first_of_each_path_in_order() {
        let p = |name: &str| StorePath::parse(&format!("{P}-{name}"), "/nix/store").unwrap();
        let mut paths = vec![p("b"), p("a")];
        append_new(&mut paths, [p("c"), p("a"), p("c"), p("d")]);
        assert_eq!(paths, [p("b"), p("a"), p("c"), p("d")]);
    }

    #[test]
    fn refuses_paths_outside_the_store() {
        for bad in [
            "/tmp/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa",
            "/nix/storex/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-a",
        ] {
            assert!(matches!(
                StorePath::parse(bad, "/nix/store"),
                Err(StorePathError::OutsideStore { .. })
            ));
        }
    }

    #[test]
    fn refuses_subpaths_bad_hashes_and_names() {
        for bad in [
            "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa/bin",
            "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz",
            "/nix/store/emdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa",
            "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-.hidden",
            "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-",
            "/nix/store/../etc/passwd",
        ] {
            assert!(StorePath::parse(bad, "/nix/store").is_err(), "{bad}");
        }
    }
}
