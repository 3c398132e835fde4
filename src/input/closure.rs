//! Reading a closure, in each form Nix hands one over, into [`PathInfo`]s.
//!
//! - `exportReferencesGraph` with structured attrs: a JSON list of
//!   `{path, narHash, narSize, references, closureSize}` (`ca` for
//!   content-addressed paths);
//! - `nix path-info --json --recursive`, whose shape depends on the Nix
//!   version and on `--json-format` (see [`from_path_info_json`]);
//! - the legacy `exportReferencesGraph` text file: per path, the path, its
//!   deriver (maybe empty), the number of references, then the references.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::format::hash::{ParseHashError, Sha256};
use crate::format::nixbase32;
use crate::format::signing::Signature;
use crate::format::store_path::{PathInfo, ReferenceCycle, StorePath, StorePathError};
use crate::support::graph::{Cycle, Graph};

#[derive(Debug, Error)]
pub enum ClosureError {
    #[error("closure is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `entry` is `#<index>` in a list, `'<key>'` in an object.
    #[error("closure entry {entry}: {source}")]
    Entry {
        entry: String,
        source: serde_json::Error,
    },
    #[error("closure entry {entry} is {kind}, not an object")]
    NotAnObject { entry: String, kind: &'static str },
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
    #[error("closure entry '{path}': field {field}: {what}")]
    Invalid {
        path: String,
        field: &'static str,
        what: String,
    },
    #[error("closure entry '{path}' lacks the field {field}")]
    Missing { path: String, field: &'static str },
    #[error("closure JSON must be a list or an object keyed by store path, not {0}")]
    Shape(&'static str),
    #[error("closure JSON has format version {0}; this program reads versions 2 and 3")]
    Version(String),
    #[error("closure JSON is for the store '{found}', not '{expected}'")]
    StoreDir { found: String, expected: String },
    #[error("closure file line {line}: {what}")]
    Legacy { line: usize, what: String },
    #[error("closure lists '{0}' twice")]
    Duplicate(String),
    #[error(transparent)]
    Cycle(#[from] ReferenceCycle),
}

/// How an entry names other store paths.
#[derive(Clone, Copy)]
enum Naming {
    /// `/nix/store/<hash>-<name>`: exportReferencesGraph, and path-info up
    /// to format 1.
    Absolute,
    /// `<hash>-<name>`: path-info formats 2 and 3.
    BaseName,
}

/// One entry as Nix writes it; every field but `path` may be absent or null.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    path: Option<String>,
    /// A string (`sha256:<nix32>` or SRI), or a structured hash.
    nar_hash: Option<Value>,
    nar_size: Option<u64>,
    references: Option<Vec<String>>,
    deriver: Option<String>,
    /// A string such as `fixed:r:sha256:<nix32>` up to format 1, an object
    /// `{method, hash}` from format 2.
    ca: Option<Value>,
    /// Strings `<key name>:<base64>` up to format 2, objects `{keyName, sig}`
    /// from format 3.
    signatures: Option<Vec<Value>>,
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
        .map(|(index, item)| entry(format!("#{index}"), item))
        .collect::<Result<Vec<_>, _>>()?;
    entries_to_infos(entries, Naming::Absolute, store_dir)
}

/// Reads `nix path-info --json` output of any Nix version:
///
/// - up to Nix 2.18, a list of entries with a `path` field;
/// - from 2.19, an object keyed by store path (`null` for absent fields from
///   2.23); this is also `--json-format 1` (2.33 and later);
/// - `--json-format 2` (2.33 and later): `{"version": 2, "storeDir": …,
///   "info": {…}}`, keyed by base name, with base-name references and
///   deriver and `ca` as an object `{method, hash}`;
/// - `--json-format 3` (2.35 and later): format 2 with `"version": 3` and
///   each signature an object `{keyName, sig}`.
pub fn from_path_info_json(text: &str, store_dir: &str) -> Result<Vec<PathInfo>, ClosureError> {
    let value: Value = serde_json::from_str(text)?;
    match value {
        Value::Array(_) => from_export_references_graph(&value, store_dir),
        Value::Object(map) if map.contains_key("info") && map.contains_key("version") => {
            from_versioned(map, store_dir)
        }
        Value::Object(map) => keyed_entries(map, Naming::Absolute, store_dir),
        other => Err(ClosureError::Shape(json_kind(&other))),
    }
}

/// Formats 2 and 3: the entries are under `info`, keyed by base name.
fn from_versioned(
    mut map: Map<String, Value>,
    store_dir: &str,
) -> Result<Vec<PathInfo>, ClosureError> {
    let version = &map["version"];
    if !matches!(version.as_u64(), Some(2 | 3)) {
        return Err(ClosureError::Version(version.to_string()));
    }
    match map.get("storeDir") {
        Some(Value::String(found)) if found != store_dir => {
            return Err(ClosureError::StoreDir {
                found: found.clone(),
                expected: store_dir.to_owned(),
            });
        }
        _ => {}
    }
    let info = match map.remove("info") {
        Some(Value::Object(info)) => info,
        Some(other) => return Err(ClosureError::Shape(json_kind(&other))),
        None => unreachable!("checked by the caller"),
    };
    let by_path = info
        .into_iter()
        .map(|(base_name, item)| (format!("{store_dir}/{base_name}"), item))
        .collect();
    keyed_entries(by_path, Naming::BaseName, store_dir)
}

/// Entries of an object keyed by store path: the key becomes `path`.
fn keyed_entries(
    map: Map<String, Value>,
    naming: Naming,
    store_dir: &str,
) -> Result<Vec<PathInfo>, ClosureError> {
    let entries = map
        .into_iter()
        .map(|(path, mut item)| {
            let name = format!("'{path}'");
            if let Value::Object(fields) = &mut item {
                fields.insert("path".to_owned(), Value::String(path));
            }
            entry(name, &item)
        })
        .collect::<Result<Vec<_>, _>>()?;
    entries_to_infos(entries, naming, store_dir)
}

/// Reads one entry; `name` says which in errors.
fn entry(name: String, item: &Value) -> Result<Entry, ClosureError> {
    if !item.is_object() {
        return Err(ClosureError::NotAnObject {
            entry: name,
            kind: json_kind(item),
        });
    }
    Entry::deserialize(item).map_err(|source| ClosureError::Entry {
        entry: name,
        source,
    })
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

fn entries_to_infos(
    entries: Vec<Entry>,
    naming: Naming,
    store_dir: &str,
) -> Result<Vec<PathInfo>, ClosureError> {
    let mut infos = entries
        .into_iter()
        .enumerate()
        .map(|(index, e)| entry_to_info(index, e, naming, store_dir))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&mut infos)?;
    check_acyclic(&infos)?;
    Ok(infos)
}

fn entry_to_info(
    index: usize,
    e: Entry,
    naming: Naming,
    store_dir: &str,
) -> Result<PathInfo, ClosureError> {
    let raw_path = e.path.ok_or_else(|| ClosureError::Missing {
        path: format!("#{index}"),
        field: "path",
    })?;
    let store_path = |field, p: &str| {
        match naming {
            Naming::Absolute => StorePath::parse(p, store_dir),
            Naming::BaseName => StorePath::from_base_name(p, store_dir),
        }
        .map_err(|source| ClosureError::StorePath {
            path: raw_path.clone(),
            field,
            source,
        })
    };
    let invalid = |field, what: String| ClosureError::Invalid {
        path: raw_path.clone(),
        field,
        what,
    };
    let path =
        StorePath::parse(&raw_path, store_dir).map_err(|source| ClosureError::StorePath {
            path: raw_path.clone(),
            field: "path",
            source,
        })?;
    let nar_hash = match e.nar_hash {
        None | Some(Value::Null) => {
            return Err(ClosureError::Missing {
                path: raw_path.clone(),
                field: "narHash",
            });
        }
        Some(Value::String(text)) => text.parse().map_err(|source| ClosureError::Hash {
            path: raw_path.clone(),
            source,
        })?,
        Some(structured) => match json_hash(&structured).map_err(|w| invalid("narHash", w))? {
            ("sha256", bytes) => Sha256(bytes.try_into().expect("length checked")),
            (algo, _) => {
                return Err(invalid("narHash", format!("a {algo} hash, not sha256")));
            }
        },
    };
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
    let ca = match e.ca {
        None | Some(Value::Null) => None,
        Some(Value::String(ca)) if ca.is_empty() => None,
        Some(Value::String(ca)) => Some(ca),
        Some(structured) => Some(content_address(&structured).map_err(|w| invalid("ca", w))?),
    };
    let signatures = e
        .signatures
        .unwrap_or_default()
        .iter()
        .map(signature)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|w| invalid("signatures", w))?;
    Ok(PathInfo {
        path,
        nar_hash: Some(nar_hash),
        nar_size: Some(nar_size),
        references,
        deriver,
        ca,
        signatures,
    })
}

/// The digest lengths of the algorithms Nix knows.
fn digest_len(algorithm: &str) -> Option<usize> {
    match algorithm {
        "md5" => Some(16),
        "sha1" => Some(20),
        "sha256" | "blake3" => Some(32),
        "sha512" => Some(64),
        _ => None,
    }
}

/// A hash in the JSON of path-info formats 2 and 3: an SRI string
/// (`sha256-<base64>`, what Nix 2.34 prints) or, as Nix's JSON schema also
/// describes it, an object `{algorithm, format, hash}` with the format
/// `base64`, `nix32`, `base16` or `sri`. Gives the algorithm and the digest.
fn json_hash(value: &Value) -> Result<(&str, Vec<u8>), String> {
    let (algorithm, format, text) = match value {
        Value::String(s) => {
            let (algorithm, rest) = s
                .split_once('-')
                .ok_or_else(|| format!("{s:?} is not an SRI hash <algorithm>-<base64>"))?;
            (algorithm, "base64", rest)
        }
        Value::Object(fields) => {
            let field = |name: &str| {
                fields
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("the hash object lacks the string {name}"))
            };
            let (algorithm, format, hash) = (field("algorithm")?, field("format")?, field("hash")?);
            match format {
                "sri" => {
                    let rest = hash
                        .strip_prefix(algorithm)
                        .and_then(|r| r.strip_prefix('-'))
                        .ok_or_else(|| format!("{hash:?} is not an SRI {algorithm} hash"))?;
                    (algorithm, "base64", rest)
                }
                _ => (algorithm, format, hash),
            }
        }
        other => return Err(format!("expected a hash, not {}", json_kind(other))),
    };
    let len =
        digest_len(algorithm).ok_or_else(|| format!("unknown hash algorithm {algorithm:?}"))?;
    let bytes = match format {
        "base64" => STANDARD.decode(text).ok(),
        "nix32" | "base32" => nixbase32::decode(text, len).ok(),
        "base16" => (text.len() == 2 * len && text.is_ascii())
            .then(|| {
                (0..len)
                    .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten(),
        _ => return Err(format!("unknown hash format {format:?}")),
    };
    match bytes {
        Some(bytes) if bytes.len() == len => Ok((algorithm, bytes)),
        _ => Err(format!("{text:?} is not a {format} {algorithm} hash")),
    }
}

/// A structured content address `{method, hash}` in the text form that
/// narinfo `CA:` lines (and path-info format 1) use:
/// `text:<algo>:<nix32>`, `fixed:r:…` (NAR), `fixed:…` (flat file) or
/// `fixed:git:…`.
fn content_address(value: &Value) -> Result<String, String> {
    let Value::Object(fields) = value else {
        return Err(format!(
            "expected a content address, not {}",
            json_kind(value)
        ));
    };
    let method = fields
        .get("method")
        .and_then(Value::as_str)
        .ok_or("the content address lacks the string method")?;
    let prefix = match method {
        "text" => "text:",
        "nar" => "fixed:r:",
        "flat" => "fixed:",
        "git" => "fixed:git:",
        other => return Err(format!("unknown content-address method {other:?}")),
    };
    let hash = fields
        .get("hash")
        .ok_or("the content address lacks its hash")?;
    let (algorithm, digest) = json_hash(hash)?;
    Ok(format!(
        "{prefix}{algorithm}:{}",
        nixbase32::encode(&digest)
    ))
}

/// A signature as a narinfo `Sig:` line holds it, `<key name>:<base64>`,
/// from a string of that form or an object `{keyName, sig}` (format 3).
fn signature(value: &Value) -> Result<Signature, String> {
    let (key_name, sig) = match value {
        Value::String(s) => s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not <key name>:<signature>"))?,
        Value::Object(fields) => {
            let field = |name: &str| {
                fields
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("a signature object lacks the string {name}"))
            };
            (field("keyName")?, field("sig")?)
        }
        other => return Err(format!("expected a signature, not {}", json_kind(other))),
    };
    if key_name.is_empty() || sig.is_empty() {
        return Err(format!(
            "{key_name:?}:{sig:?} is not <key name>:<signature>"
        ));
    }
    format!("{key_name}:{sig}")
        .parse()
        .map_err(|e| format!("{key_name}:{sig}: {e}"))
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
            signatures: Vec::new(),
        });
    }
    check_unique(&mut infos)?;
    check_acyclic(&infos)?;
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

/// Refuses a closure whose references form a cycle: no order of its
/// narinfos would put each after those of its references, and a writer that
/// waits for them would write none.
fn check_acyclic(infos: &[PathInfo]) -> Result<(), ClosureError> {
    let paths: Vec<&StorePath> = infos.iter().map(|p| &p.path).collect();
    let graph = Graph::by_key(&paths, |i| &infos[i].references);
    match graph.levels() {
        Ok(_) => Ok(()),
        Err(Cycle(nodes)) => {
            Err(ReferenceCycle(nodes.into_iter().map(|i| infos[i].path.clone()).collect()).into())
        }
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

    /// `nix path-info --json --recursive` of tests/fixtures/path-info/closure.nix.
    fn path_info_fixture(name: &str) -> Vec<PathInfo> {
        let file = format!(
            "{}/tests/fixtures/path-info/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&file).unwrap();
        from_path_info_json(&text, "/nix/store").unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn named<'a>(infos: &'a [PathInfo], suffix: &str) -> &'a PathInfo {
        infos
            .iter()
            .find(|i| i.path.base_name().ends_with(suffix))
            .unwrap_or_else(|| panic!("no path named *{suffix}"))
    }

    // The list of Nix up to 2.18, as Nix 2.8 printed it.
    #[test]
    fn reads_the_list_of_nix_2_8_with_deriver_signatures_and_ca() {
        let infos = path_info_fixture("nix-2.8.json");
        assert_eq!(infos.len(), 3);
        let app = named(&infos, "-app");
        assert_eq!(
            app.deriver.as_ref().unwrap().to_string(),
            "/nix/store/kg4g3aya475id4wakn7rs3qcjg8k438q-path-info-app.drv"
        );
        assert_eq!(app.references.len(), 3);
        assert!(app.references.contains(&app.path), "self-reference");
        assert_eq!(
            app.signatures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "path-info-fixture-1:1q2O1Jn2Rl4gKvZ/FKDfPruqN8tu1288e31NvWv91WEny4ZbsKrCBTtd7bcwLC5s+8LrzWhkjeVmZq2VZhfBAA=="
            ]
        );
        assert_eq!(app.ca, None);
        let note = named(&infos, "-note.txt");
        assert_eq!(
            note.ca.as_deref(),
            Some("text:sha256:0vqfiq2087g61byyjq6r7jih2ws2sa2a9j3x100ss6nwjvpbgrfs")
        );
        assert!(note.signatures.is_empty() && note.deriver.is_none());
        assert!(
            named(&infos, "-busybox")
                .ca
                .as_deref()
                .unwrap()
                .starts_with("fixed:r:sha256:")
        );
    }

    // Nix 2.34 without --json-format prints format 1 (and a deprecation
    // warning): the map keyed by store path, `null` for absent fields.
    #[test]
    fn reads_the_map_of_nix_2_34_with_and_without_json_format_1() {
        let default = path_info_fixture("nix-2.34-default.json");
        assert_eq!(default, path_info_fixture("nix-2.34-format-1.json"));
        assert_eq!(default.len(), 3);
        let app = named(&default, "-app");
        assert_eq!(app.signatures.len(), 1);
        assert_eq!(
            app.deriver.as_ref().unwrap().base_name(),
            "kzawj9qfrhp2xixpvnifykcizxs2hljm-path-info-app.drv"
        );
        assert_eq!(app.ca, None);
    }

    // Format 2 names paths by base name and gives `ca` as an object; read,
    // it must say exactly what format 1 says of the same paths, `ca` in the
    // text form Nix itself renders (`text:…`, `fixed:r:…`).
    #[test]
    fn format_2_of_nix_2_34_reads_as_its_format_1() {
        assert_eq!(
            path_info_fixture("nix-2.34-format-2.json"),
            path_info_fixture("nix-2.34-format-1.json")
        );
    }

    // Nix 2.35's format 3 (signatures as objects) is made from the format's
    // documentation, not printed by a real Nix: 2.35 is not in Debian. See
    // tests/fixtures/path-info/README.md.
    #[test]
    fn format_3_reads_as_format_2() {
        assert_eq!(
            path_info_fixture("format-3-documented.json"),
            path_info_fixture("nix-2.34-format-2.json")
        );
    }

    // Nix's JSON schema for formats 2 and 3 describes a hash as an object
    // `{algorithm, format, hash}`; Nix 2.34 prints SRI strings. Both read.
    #[test]
    fn structured_hashes_read_as_their_sri_strings() {
        let sri = HASH.parse::<Sha256>().unwrap().to_sri();
        let base64 = sri.strip_prefix("sha256-").unwrap();
        let nix32 = HASH.strip_prefix("sha256:").unwrap();
        let hex = HASH.parse::<Sha256>().unwrap().to_hex();
        let entry = |nar_hash: Value, ca_hash: Value| {
            json!({"version": 2, "storeDir": "/nix/store", "info": {
                A.strip_prefix("/nix/store/").unwrap(): {
                    "narHash": nar_hash, "narSize": 504, "references": [],
                    "ca": {"method": "nar", "hash": ca_hash}, "signatures": []}}})
            .to_string()
        };
        let expected = from_path_info_json(&entry(json!(sri), json!(sri)), "/nix/store").unwrap();
        assert_eq!(
            expected[0].ca.as_deref(),
            Some(format!("fixed:r:{HASH}").as_str())
        );
        for (format, text) in [
            ("base64", base64),
            ("nix32", nix32),
            ("base16", &hex),
            ("sri", &sri),
        ] {
            let structured = json!({"algorithm": "sha256", "format": format, "hash": text});
            let infos = from_path_info_json(&entry(structured.clone(), structured), "/nix/store")
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(infos, expected, "{format}");
        }
    }

    #[test]
    fn content_addresses_render_as_nix_writes_them_in_narinfo() {
        let sha1 = json!({"algorithm": "sha1", "format": "base16",
                          "hash": "0123456789abcdef0123456789abcdef01234567"});
        let sha1_nix32 = nixbase32::encode(&[
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef, 0x01, 0x23, 0x45, 0x67,
        ]);
        for (method, prefix) in [
            ("text", "text:"),
            ("nar", "fixed:r:"),
            ("flat", "fixed:"),
            ("git", "fixed:git:"),
        ] {
            let ca = content_address(&json!({"method": method, "hash": sha1})).unwrap();
            assert_eq!(ca, format!("{prefix}sha1:{sha1_nix32}"));
        }
        let e = content_address(&json!({"method": "magic", "hash": sha1})).unwrap_err();
        assert_eq!(e, "unknown content-address method \"magic\"");
    }

    #[test]
    fn format_errors_name_what_is_wrong() {
        let wrapped = |version: Value, store_dir: &str, entry: Value| {
            json!({"version": version, "storeDir": store_dir,
                   "info": {A.strip_prefix("/nix/store/").unwrap(): entry}})
            .to_string()
        };
        let sri = HASH.parse::<Sha256>().unwrap().to_sri();
        let good = json!({"narHash": sri, "narSize": 1, "references": [], "signatures": []});
        let e = from_path_info_json(&wrapped(json!(4), "/nix/store", good.clone()), "/nix/store")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "closure JSON has format version 4; this program reads versions 2 and 3"
        );
        let e = from_path_info_json(&wrapped(json!(2), "/gnu/store", good.clone()), "/nix/store")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "closure JSON is for the store '/gnu/store', not '/nix/store'"
        );
        let mut unsigned = good.clone();
        unsigned["signatures"] = json!([{"keyName": "k"}]);
        let e = from_path_info_json(&wrapped(json!(3), "/nix/store", unsigned), "/nix/store")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "closure entry '{A}': field signatures: a signature object lacks the string sig"
            )
        );
        // Format 2 names references by base name: a full path is an error.
        let mut absolute = good;
        absolute["references"] = json!([B]);
        let e = from_path_info_json(&wrapped(json!(2), "/nix/store", absolute), "/nix/store")
            .unwrap_err();
        assert!(
            matches!(
                &e,
                ClosureError::StorePath {
                    field: "references",
                    ..
                }
            ),
            "{e}"
        );
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

    #[test]
    fn refuses_a_closure_whose_references_form_a_cycle_naming_its_paths() {
        // Nix never makes one, but a hand-edited file can: each names the other.
        let cycle = json!([
            {"path": A, "narHash": HASH, "narSize": 1, "references": [B]},
            {"path": B, "narHash": HASH, "narSize": 1, "references": [A]},
        ]);
        let e = from_export_references_graph(&cycle, "/nix/store").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the references of these paths form a cycle: {A} -> {B} -> {A}")
        );
        let e = from_path_info_json(&cycle.to_string(), "/nix/store").unwrap_err();
        assert!(matches!(e, ClosureError::Cycle(_)), "{e}");
        let legacy = format!("{A}\n\n1\n{B}\n{B}\n\n1\n{A}\n");
        let e = from_legacy_graph(&legacy, "/nix/store").unwrap_err();
        assert!(matches!(e, ClosureError::Cycle(_)), "{e}");
    }

    #[test]
    fn a_path_that_refers_to_itself_is_no_cycle() {
        let own = json!([{"path": A, "narHash": HASH, "narSize": 1, "references": [A]}]);
        assert_eq!(
            from_export_references_graph(&own, "/nix/store")
                .unwrap()
                .len(),
            1
        );
    }
}
