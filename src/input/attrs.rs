//! The job Nix hands a builder: the structured-attrs JSON (or, without
//! structured attrs, environment variables and the legacy closure file),
//! turned into an output path, a closure and [`Options`].
//!
//! Derivation attributes read: `outputs.out`, `closure` (from
//! `exportReferencesGraph.closure`), `compression`, `compressionLevel`,
//! `priority`, `wantMassQuery`, `rootPaths`, `writeNarListing` and
//! `indexDebugInfo`.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::format::cache_info::{MAX_PRIORITY, Upstreams};
use crate::format::compression::{Compression, CompressionError};
use crate::format::store_path::{self, DEFAULT_STORE_DIR, PathInfo, StorePath, StorePathError};
use crate::input::closure::{self, ClosureError};
use crate::input::exclude::Exclusion;
use crate::ops::write::Options;

/// The name `exportReferencesGraph` gives the closure.
pub const CLOSURE_KEY: &str = "closure";

/// The key of the closure to leave out (`exportReferencesGraph.exclude`),
/// when `mkBinaryCache` is given `exclude`; see [`crate::exclude`].
pub const EXCLUDE_KEY: &str = "exclude";

#[derive(Debug, Error)]
pub enum AttrsError {
    #[error(
        "no build attributes: neither NIX_ATTRS_JSON_FILE nor '{0}' exists \
         (run as a Nix builder with __structuredAttrs = true, or use `mk-binary-cache build`)"
    )]
    NotFound(PathBuf),
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("'{path}' is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("build attributes lack the attribute {0}")]
    Missing(&'static str),
    #[error("attribute {field} must be {expected}, not {found}")]
    Type {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("attribute closure: {0}")]
    Closure(#[from] ClosureError),
    #[error("attribute compression: {0}")]
    Compression(#[from] CompressionError),
    #[error("attribute compressionLevel: {0}")]
    Level(CompressionError),
    #[error("attribute rootPaths: {0}")]
    RootPath(StorePathError),
}

/// Everything a builder run needs.
#[derive(Debug)]
pub struct Job {
    pub out: PathBuf,
    pub closure: Vec<PathInfo>,
    pub options: Options,
}

/// Reads the job from the build environment Nix sets up.
pub fn from_environment() -> Result<Job, AttrsError> {
    let store_dir = env::var("NIX_STORE").unwrap_or_else(|_| DEFAULT_STORE_DIR.to_owned());
    let jobs = jobs_from_cores(env::var("NIX_BUILD_CORES").ok().as_deref());
    let build_top = env::var_os("NIX_BUILD_TOP").map_or_else(|| PathBuf::from("."), PathBuf::from);
    // Nix up to at least 2.8 sets NIX_ATTRS_JSON_FILE to the build directory's
    // path outside the sandbox (/tmp/nix-build-…), which does not exist inside
    // it; the file is then found under NIX_BUILD_TOP (/build).
    let fallback = build_top.join(".attrs.json");
    let attrs_file = env::var_os("NIX_ATTRS_JSON_FILE")
        .map(PathBuf::from)
        .filter(|f| f.exists())
        .unwrap_or(fallback);
    if attrs_file.exists() {
        let text = read(&attrs_file)?;
        let attrs: Value = serde_json::from_str(&text).map_err(|source| AttrsError::Json {
            path: attrs_file.clone(),
            source,
        })?;
        return from_json(&attrs, &store_dir, jobs);
    }
    if let Ok(graph) = env::var("exportReferencesGraph") {
        return from_legacy_environment(&graph, &build_top, &store_dir, jobs);
    }
    Err(AttrsError::NotFound(attrs_file))
}

/// `NIX_BUILD_CORES`: 0 (Nix < 2.31) or unset means every core.
pub fn jobs_from_cores(cores: Option<&str>) -> usize {
    match cores.and_then(|c| c.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn read(path: &Path) -> Result<String, AttrsError> {
    fs::read_to_string(path).map_err(|source| AttrsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads the job from structured attrs.
pub fn from_json(attrs: &Value, store_dir: &str, jobs: usize) -> Result<Job, AttrsError> {
    let attrs = attrs.as_object().ok_or_else(|| AttrsError::Type {
        field: "(top level)",
        expected: "an object",
        found: attrs.to_string(),
    })?;
    let out = attrs
        .get("outputs")
        .and_then(|o| o.get("out"))
        .ok_or(AttrsError::Missing("outputs.out"))?
        .as_str()
        .ok_or_else(|| type_error("outputs.out", "a string", attrs.get("outputs")))?;
    let graph = attrs
        .get(CLOSURE_KEY)
        .ok_or(AttrsError::Missing("closure"))?;
    let mut closure = closure::from_export_references_graph(graph, store_dir)?;
    if let Some(excluded) = attrs.get(EXCLUDE_KEY) {
        closure = Exclusion::from_export_references_graph(excluded, store_dir)?.apply(closure);
    }
    let options = Options {
        compression: compression(str_attr(attrs, "compression")?)?,
        level: 0,
        jobs,
        store_dir: store_dir.to_owned(),
        priority: uint_attr(attrs, "priority")?
            .map(check_priority)
            .transpose()?,
        want_mass_query: bool_attr(attrs, "wantMassQuery")?,
        root_paths: root_paths(attrs.get("rootPaths"), store_dir)?,
        write_nar_listing: bool_attr(attrs, "writeNarListing")?.unwrap_or(false),
        index_debug_info: bool_attr(attrs, "indexDebugInfo")?.unwrap_or(false),
        upstreams: Upstreams::default(),
    };
    let level = int_attr(attrs, "compressionLevel")?;
    Ok(Job {
        out: PathBuf::from(out),
        closure,
        options: with_level(options, level)?,
    })
}

fn from_legacy_environment(
    graph: &str,
    build_top: &Path,
    store_dir: &str,
    jobs: usize,
) -> Result<Job, AttrsError> {
    let env_attr = |name: &'static str| env::var(name).ok().filter(|v| !v.is_empty());
    let out = env_attr("out").ok_or(AttrsError::Missing("out"))?;
    // `exportReferencesGraph = [ "closure" path … ]` arrives as "closure path …".
    let file_name = graph.split_whitespace().next().unwrap_or(CLOSURE_KEY);
    let closure = closure::from_legacy_graph(&read(&build_top.join(file_name))?, store_dir)?;
    let level = match env_attr("compressionLevel") {
        None => None,
        Some(l) => Some(l.parse().map_err(|_| AttrsError::Type {
            field: "compressionLevel",
            expected: "an integer",
            found: l,
        })?),
    };
    let priority = match env_attr("priority") {
        None => None,
        Some(p) => Some(check_priority(p.parse().map_err(|_| {
            AttrsError::Type {
                field: "priority",
                expected: "a non-negative integer",
                found: p,
            }
        })?)?),
    };
    // Nix passes booleans to the environment as "1" and "".
    let want_mass_query = env::var("wantMassQuery").ok().map(|v| v == "1");
    let flag = |name: &str| env::var(name).is_ok_and(|v| v == "1");
    let roots: Vec<Value> = env_attr("rootPaths")
        .map(|r| {
            r.split_whitespace()
                .map(|p| Value::String(p.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let options = Options {
        compression: env_attr("compression")
            .as_deref()
            .map_or(Ok(Compression::default()), str::parse)?,
        level: 0,
        jobs,
        store_dir: store_dir.to_owned(),
        priority,
        want_mass_query,
        root_paths: root_paths(Some(&Value::Array(roots)), store_dir)?,
        write_nar_listing: flag("writeNarListing"),
        index_debug_info: flag("indexDebugInfo"),
        upstreams: Upstreams::default(),
    };
    Ok(Job {
        out: PathBuf::from(out),
        closure,
        options: with_level(options, level)?,
    })
}

fn with_level(mut options: Options, level: Option<i64>) -> Result<Options, AttrsError> {
    let c = options.compression;
    options.level = match level {
        None => c.default_level(),
        Some(l) => c
            .check_level(i32::try_from(l).unwrap_or(i32::MAX))
            .map_err(AttrsError::Level)?,
    };
    Ok(options)
}

fn compression(name: Option<&str>) -> Result<Compression, AttrsError> {
    Ok(name.map_or(Ok(Compression::default()), str::parse)?)
}

fn type_error(field: &'static str, expected: &'static str, found: Option<&Value>) -> AttrsError {
    AttrsError::Type {
        field,
        expected,
        found: found.map_or_else(|| "nothing".to_owned(), Value::to_string),
    }
}

/// An attribute that may be absent or null.
fn attr<'a>(attrs: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    attrs.get(field).filter(|v| !v.is_null())
}

fn str_attr<'a>(
    attrs: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, AttrsError> {
    attr(attrs, field)
        .map(|v| {
            v.as_str()
                .ok_or_else(|| type_error(field, "a string", Some(v)))
        })
        .transpose()
}

fn int_attr(attrs: &Map<String, Value>, field: &'static str) -> Result<Option<i64>, AttrsError> {
    attr(attrs, field)
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| type_error(field, "an integer", Some(v)))
        })
        .transpose()
}

/// Nix reads `Priority:` as a C `int` and cannot open a cache whose
/// priority does not fit one.
fn check_priority(priority: u64) -> Result<u64, AttrsError> {
    if priority <= MAX_PRIORITY {
        Ok(priority)
    } else {
        Err(AttrsError::Type {
            field: "priority",
            expected: "an integer from 0 to 2147483647",
            found: priority.to_string(),
        })
    }
}

fn uint_attr(attrs: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, AttrsError> {
    attr(attrs, field)
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| type_error(field, "a non-negative integer", Some(v)))
        })
        .transpose()
}

fn bool_attr(attrs: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, AttrsError> {
    attr(attrs, field)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| type_error(field, "a boolean", Some(v)))
        })
        .transpose()
}

/// Root paths as store paths; a path inside a store path (`${hello}/bin`)
/// stands for the store path that holds it.
fn root_paths(value: Option<&Value>, store_dir: &str) -> Result<Vec<StorePath>, AttrsError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = value
        .as_array()
        .ok_or_else(|| type_error("rootPaths", "a list of store paths", Some(value)))?;
    let paths = items
        .iter()
        .map(|item| {
            let p = item
                .as_str()
                .ok_or_else(|| type_error("rootPaths", "a list of store paths", Some(item)))?;
            containing_store_path(p, store_dir).map_err(AttrsError::RootPath)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut roots = Vec::new();
    store_path::append_new(&mut roots, paths);
    Ok(roots)
}

/// The store path that holds `path`: `/nix/store/…-hello/bin/hello` gives
/// `/nix/store/…-hello`.
pub fn containing_store_path(path: &str, store_dir: &str) -> Result<StorePath, StorePathError> {
    let top = path
        .strip_prefix(store_dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').next())
        .map(|base| format!("{store_dir}/{base}"))
        .unwrap_or_else(|| path.to_owned());
    StorePath::parse(&top, store_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "/nix/store/dmdglxp7bh69ngn7i0g9ib7d2r7v3wmz-appa";
    const HASH: &str = "sha256:039zdycyhk9ddiyy1wgslp1drv7g4xyv5z7z92iacy6ncw832rvq";

    fn attrs() -> Value {
        json!({
            "outputs": {"out": "/nix/store/ipsh9v6k9mlsb5lw4amy6gjn9bpdww97-binary-cache"},
            "closure": [{"path": A, "narHash": HASH, "narSize": 504, "references": []}],
            "rootPaths": [format!("{A}/bin/app")],
            "compression": "xz",
            "compressionLevel": null,
            "priority": 30,
            "wantMassQuery": true,
            "writeNarListing": true,
            "indexDebugInfo": false,
        })
    }

    #[test]
    fn reads_settings_from_structured_attrs() {
        let job = from_json(&attrs(), "/nix/store", 2).unwrap();
        assert_eq!(job.closure.len(), 1);
        assert_eq!(job.options.compression, Compression::Xz);
        assert_eq!(job.options.level, 6);
        assert_eq!(job.options.priority, Some(30));
        assert_eq!(job.options.want_mass_query, Some(true));
        assert_eq!(job.options.root_paths[0].to_string(), A);
        assert!(job.options.write_nar_listing);
        assert!(!job.options.index_debug_info);
    }

    #[test]
    fn listings_and_debug_info_are_off_unless_asked_for() {
        let mut a = attrs();
        let fields = a.as_object_mut().unwrap();
        fields.remove("writeNarListing");
        fields.remove("indexDebugInfo");
        let job = from_json(&a, "/nix/store", 2).unwrap();
        assert!(!job.options.write_nar_listing);
        assert!(!job.options.index_debug_info);
    }

    #[test]
    fn defaults_to_zstd_level_3() {
        let mut a = attrs();
        a.as_object_mut().unwrap().remove("compression");
        let job = from_json(&a, "/nix/store", 2).unwrap();
        assert_eq!(
            (job.options.compression, job.options.level),
            (Compression::Zstd, 3)
        );
    }

    #[test]
    fn errors_name_the_attribute() {
        let cases = [
            ("outputs", json!({}), "outputs.out"),
            ("closure", Value::Null, "closure"),
            ("compression", json!("gzip"), "compression"),
            ("compressionLevel", json!(42), "compressionLevel"),
            ("compressionLevel", json!("high"), "compressionLevel"),
            ("priority", json!(-1), "priority"),
            ("priority", json!(2_147_483_648u64), "priority"),
            ("wantMassQuery", json!("yes"), "wantMassQuery"),
            ("writeNarListing", json!(1), "writeNarListing"),
            ("indexDebugInfo", json!("true"), "indexDebugInfo"),
            ("rootPaths", json!(["/tmp/x"]), "rootPaths"),
        ];
        for (field, value, named) in cases {
            let mut a = attrs();
            if value.is_null() {
                a.as_object_mut().unwrap().remove(field);
            } else {
                a[field] = value;
            }
            let e = from_json(&a, "/nix/store", 2).unwrap_err().to_string();
            assert!(e.contains(named), "{field}: {e}");
        }
    }

    #[test]
    fn the_exclude_graph_leaves_its_paths_out_but_not_the_roots() {
        let mut attrs = attrs();
        let excluded = json!([{"path": A, "narHash": HASH, "narSize": 504, "references": []}]);
        attrs["exclude"] = excluded;
        let job = from_json(&attrs, "/nix/store", 1).unwrap();
        assert!(job.closure.is_empty());
        assert_eq!(job.options.root_paths[0].to_string(), A);
        // An empty `exclude` (the default) leaves the closure whole.
        attrs["exclude"] = json!([]);
        assert_eq!(from_json(&attrs, "/nix/store", 1).unwrap().closure.len(), 1);
    }

    #[test]
    fn zero_or_missing_cores_means_every_core() {
        assert_eq!(jobs_from_cores(Some("3")), 3);
        assert!(jobs_from_cores(Some("0")) >= 1);
        assert!(jobs_from_cores(None) >= 1);
    }
}
