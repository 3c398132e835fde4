//! Reading a closure, in each form Nix hands one over, into [`PathInfo`]s.
//!
//! - `exportReferencesGraph` with structured attrs: a JSON list of
//!   `{path, narHash, narSize, references, closureSize}` (`ca` for
//!   content-addressed paths);
//! - `nix path-info --json --recursive`: the same objects, as a list up to
//!   Nix 2.18 and as a map keyed by path since 2.19, with SRI hashes since 2.4
//!   and `null` for absent fields since 2.23;
//! - the legacy `exportReferencesGraph` text file: per path, the path, its
//!   deriver (maybe empty), the number of references, then the references.

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::format::hash::{ParseHashError, Sha256};
use crate::format::store_path::{PathInfo, StorePath, StorePathError};

#[derive(Debug, Error)]
pub enum ClosureError {
    #[error("closure is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("closure entry {index}: {source}")]
    Entry {
        index: usize,
        source: serde_json::Error,
    },
    #[error("closure entry '{path}': field {field}: {source}")]
    StorePath {
        path: String,
        field: &'static str,
        source: StorePathError,
    },
    #[error("closure entry '{path}': field narHash: {source}")]
    Hash {
        path: String,
        source: ParseHashError,
    },
    #[error("closure entry '{path}' lacks the field {field}")]
    Missing { path: String, field: &'static str },
    #[error("closure JSON must be a list or an object keyed by store path, not {0}")]
    Shape(&'static str),
    #[error("closure file line {line}: {what}")]
    Legacy { line: usize, what: String },
    #[error("closure lists '{0}' twice")]
    Duplicate(String),
}

/// One entry as Nix writes it; every field but `path` may be absent or null.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    path: Option<String>,
    nar_hash: Option<String>,
    nar_size: Option<u64>,
    references: Option<Vec<String>>,
    deriver: Option<String>,
    ca: Option<String>,
}

/// Reads the `exportReferencesGraph` list found in the structured attrs.
pub fn from_export_references_graph(
    value: &Value,
    store_dir: &str,
) -> Result<Vec<PathInfo>, ClosureError> {
    let Value::Array(items) = value else {
        return Err(ClosureError::Shape(json_kind(value)));
    };
    let entries = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            Entry::deserialize(item).map_err(|source| ClosureError::Entry { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    entries_to_infos(entries, store_dir)
}

/// Reads `nix path-info --json` output of any Nix version.
pub fn from_path_info_json(text: &str, store_dir: &str) -> Result<Vec<PathInfo>, ClosureError> {
    let value: Value = serde_json::from_str(text)?;
    match value {
        Value::Array(_) => from_export_references_graph(&value, store_dir),
        Value::Object(map) => {
            let entries = map
                .into_iter()
                .enumerate()
                .map(|(index, (path, mut item))| {
                    if let Value::Object(fields) = &mut item {
                        fields.insert("path".to_owned(), Value::String(path));
                    }
                    Entry::deserialize(item).map_err(|source| ClosureError::Entry { index, source })
                })
                .collect::<Result<Vec<_>, _>>()?;
            entries_to_infos(entries, store_dir)
        }
        other => Err(ClosureError::Shape(json_kind(&other))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn entries_to_infos(entries: Vec<Entry>, store_dir: &str) -> Result<Vec<PathInfo>, ClosureError> {
    let mut infos = entries
        .into_iter()
        .enumerate()
        .map(|(index, e)| entry_to_info(index, e, store_dir))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&mut infos)?;
    Ok(infos)
}

fn entry_to_info(index: usize, e: Entry, store_dir: &str) -> Result<PathInfo, ClosureError> {
    let raw_path = e.path.ok_or_else(|| ClosureError::Missing {
        path: format!("#{index}"),
        field: "path",
    })?;
    let store_path = |field, p: &str| {
        StorePath::parse(p, store_dir).map_err(|source| ClosureError::StorePath {
            path: raw_path.clone(),
            field,
            source,
        })
    };
    let path = store_path("path", &raw_path)?;
    let nar_hash = e.nar_hash.ok_or_else(|| ClosureError::Missing {
        path: raw_path.clone(),
        field: "narHash",
    })?;
    let nar_hash: Sha256 = nar_hash.parse().map_err(|source| ClosureError::Hash {
        path: raw_path.clone(),
        source,
    })?;
    let nar_size = e.nar_size.ok_or_else(|| ClosureError::Missing {
        path: raw_path.clone(),
        field: "narSize",
    })?;
    let references = e
        .references
        .unwrap_or_default()
        .iter()
        .map(|r| store_path("references", r))
        .collect::<Result<Vec<_>, _>>()?;
    let deriver = match e.deriver.as_deref() {
        None | Some("") => None,
        Some(d) => Some(store_path("deriver", d)?),
    };
    Ok(PathInfo {
        path,
        nar_hash: Some(nar_hash),
        nar_size: Some(nar_size),
        references,
        deriver,
        ca: e.ca.filter(|ca| !ca.is_empty()),
    })
}

/// Reads the legacy, non-structured `exportReferencesGraph` file.
pub fn from_legacy_graph(text: &str, store_dir: &str) -> Result<Vec<PathInfo>, ClosureError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut infos = Vec::new();
    let legacy = |line, what: String| ClosureError::Legacy { line, what };
    let parse =
        |line, p: &str| StorePath::parse(p, store_dir).map_err(|e| legacy(line, e.to_string()));
    while let Some((line, path)) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let path = parse(line, path)?;
        let (line, deriver) = lines
            .next()
            .ok_or_else(|| legacy(line, format!("'{path}' lacks its deriver line")))?;
        let deriver = match deriver {
            "" => None,
            d => Some(parse(line, d)?),
        };
        let (line, count) = lines
            .next()
            .ok_or_else(|| legacy(line, format!("'{path}' lacks its reference count")))?;
        let count: usize = count
            .parse()
            .map_err(|_| legacy(line, format!("reference count {count:?} is not a number")))?;
        let mut references = Vec::new();
        for _ in 0..count {
            let (line, r) = lines.next().ok_or_else(|| {
                legacy(line, format!("'{path}' has fewer than {count} references"))
            })?;
            references.push(parse(line, r)?);
        }
        infos.push(PathInfo {
            path,
            nar_hash: None,
            nar_size: None,
            references,
            deriver,
            ca: None,
        });
    }
    check_unique(&mut infos)?;
    Ok(infos)
}

/// Sorts by path, as Nix does, and refuses duplicates.
fn check_unique(infos: &mut [PathInfo]) -> Result<(), ClosureError> {
    infos.sort_by(|a, b| a.path.cmp(&b.path));
    match infos.windows(2).find(|w| w[0].path == w[1].path) {
        Some(w) => Err(ClosureError::Duplicate(w[0].path.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
    const B: &str = "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-libb";
    const HASH: &str = "sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq";

    fn graph() -> Value {
        // As Nix 2.8 writes it inside a build.
        json!([
            {"path": A, "narHash": HASH, "narSize": 504, "references": [B], "closureSize": 960},
            {"path": B, "narHash": HASH, "narSize": 456, "references": [], "closureSize": 456},
        ])
    }

    #[test]
    fn reads_the_structured_attrs_graph() {
        let infos = from_export_references_graph(&graph(), "/nix/store").unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].path.to_string(), A);
        assert_eq!(infos[0].references[0].to_string(), B);
        assert_eq!(infos[0].nar_size, Some(504));
        assert_eq!(infos[0].nar_hash.unwrap().to_string(), HASH);
    }

    #[test]
    fn reads_path_info_as_a_list_and_as_a_map_with_sri_hashes() {
        let sri = HASH.parse::<Sha256>().unwrap().to_sri();
        let list = json!([{"path": A, "narHash": sri, "narSize": 504, "references": [],
                           "deriver": null, "signatures": null}]);
        let map = json!({A: {"narHash": sri, "narSize": 504, "references": [], "ca": null}});
        for v in [list, map] {
            let infos = from_path_info_json(&v.to_string(), "/nix/store").unwrap();
            assert_eq!(infos[0].nar_hash.unwrap().to_string(), HASH);
        }
    }

    #[test]
    fn errors_name_the_path_and_the_field() {
        let bad = json!([{"path": A, "narHash": "md5:00", "narSize": 1, "references": []}]);
        let e = from_export_references_graph(&bad, "/nix/store")
            .unwrap_err()
            .to_string();
        assert!(e.contains(A) && e.contains("narHash"), "{e}");
        let outside = json!([{"path": "/tmp/x", "narHash": HASH, "narSize": 1, "references": []}]);
        let e = from_export_references_graph(&outside, "/nix/store")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/tmp/x") && e.contains("not inside the store"),
            "{e}"
        );
        let no_size = json!([{"path": A, "narHash": HASH, "references": []}]);
        let e = from_export_references_graph(&no_size, "/nix/store")
            .unwrap_err()
            .to_string();
        assert!(e.contains("narSize"), "{e}");
    }

    #[test]
    fn reads_the_legacy_graph_file() {
        let text = format!(
            "{A}\n\n1\n{B}\n{B}\n/nix/store/sbi569kby1xympi1rxrny9nv9vr9151n-appa.drv\n0\n"
        );
        let infos = from_legacy_graph(&text, "/nix/store").unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].references.len(), 1);
        assert!(infos[1].deriver.is_some());
        assert_eq!(infos[0].nar_hash, None);
    }

    #[test]
    fn legacy_errors_name_the_line() {
        let text = format!("{A}\n\nmany\n");
        let e = from_legacy_graph(&text, "/nix/store")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        let e = from_legacy_graph(&format!("{A}\n\n2\n{B}\n"), "/nix/store")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fewer than 2"), "{e}");
    }

    #[test]
    fn refuses_a_path_listed_twice() {
        let twice = json!([
            {"path": A, "narHash": HASH, "narSize": 1, "references": []},
            {"path": A, "narHash": HASH, "narSize": 1, "references": []},
        ]);
        assert!(matches!(
            from_export_references_graph(&twice, "/nix/store"),
            Err(ClosureError::Duplicate(_))
        ));
    }
}
