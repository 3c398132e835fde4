//! The job Nix hands a builder: the structured-attrs JSON (or, without
//! structured attributes, environment variables and the legacy closure
//! file), turned into an output path, a closure and [`Options`].
//!
//! Derivation attributes read: `outputs.out`, `closure` (from
//! `exportReferencesGraph.closure`), `exclude` (from
//! `exportReferencesGraph.exclude`), `rootPaths`, and the [`Settings`] of the
//! write; every other attribute is ignored. A value of the wrong type is an
//! error naming the attribute.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use thiserror::Error;

use crate::format::store_path::{
    self, DEFAULT_STORE_DIR, PathInfo, StorePath, StorePathError, containing_store_path,
};
use crate::input::closure::{self, ClosureError};
use crate::input::exclude::Exclusion;
use crate::input::settings::{self, Context, Settings, SettingsError};
use crate::ops::write::Options;

/// The name `exportReferencesGraph` gives the closure.
pub const CLOSURE_KEY: &str = "closure";

/// The key of the closure to leave out (`exportReferencesGraph.exclude`),
/// when `mkBinaryCache` is given `exclude`; see [`crate::input::exclude`].
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
    #[error("build attributes must be an object, not {0}")]
    NotAnObject(String),
    /// A value of the wrong type; the message names the attribute.
    #[error("{0}")]
    Type(serde_json::Error),
    #[error("attribute closure: {0}")]
    Closure(#[from] ClosureError),
    #[error("attribute {}: {source}", .source.attribute())]
    Settings {
        #[from]
        source: SettingsError,
    },
    #[error("attribute rootPaths: {0}")]
    RootPath(StorePathError),
}

/// The structured attributes read here besides the [`Settings`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attrs {
    outputs: Option<Outputs>,
    /// `exportReferencesGraph.closure`: the closure to cache.
    closure: Option<Value>,
    /// `exportReferencesGraph.exclude`: the closure to leave out.
    exclude: Option<Value>,
    /// What `store-paths` lists: store paths, or paths inside them.
    root_paths: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Outputs {
    out: Option<String>,
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
    // What Nix tells a builder; `NIX_STORE_DIR` is for Nix itself.
    let store_dir = env::var("NIX_STORE").unwrap_or_else(|_| DEFAULT_STORE_DIR.to_owned());
    // Unset, or 0 (Nix before 2.31 by default), is every core.
    let cores = env::var("NIX_BUILD_CORES").ok();
    let jobs = settings::jobs(cores.and_then(|c| c.trim().parse().ok().filter(|&n| n > 0)));
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
        return from_json(attrs, &store_dir, jobs);
    }
    if let Ok(graph) = env::var("exportReferencesGraph") {
        return from_legacy_environment(&graph, &build_top, &store_dir, jobs);
    }
    Err(AttrsError::NotFound(attrs_file))
}

fn read(path: &Path) -> Result<String, AttrsError> {
    fs::read_to_string(path).map_err(|source| AttrsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads the job from structured attrs.
pub fn from_json(attrs: Value, store_dir: &str, jobs: usize) -> Result<Job, AttrsError> {
    let Value::Object(map) = attrs else {
        return Err(AttrsError::NotAnObject(attrs.to_string()));
    };
    let settings: Settings = named(map.iter().map(|(k, v)| (k.clone(), v)))?;
    let attrs: Attrs = named(map.into_iter())?;
    let out = attrs
        .outputs
        .and_then(|o| o.out)
        .ok_or(AttrsError::Missing("outputs.out"))?;
    let graph = attrs.closure.ok_or(AttrsError::Missing(CLOSURE_KEY))?;
    let mut closure = closure::from_export_references_graph(&graph, store_dir)?;
    if let Some(excluded) = attrs.exclude {
        closure = Exclusion::from_export_references_graph(&excluded, store_dir)?.apply(closure);
    }
    let root_paths = root_paths(attrs.root_paths.unwrap_or_default(), store_dir)?;
    Ok(Job {
        out: PathBuf::from(out),
        closure,
        options: settings.resolve(Context {
            store_dir: store_dir.to_owned(),
            jobs,
            root_paths,
        })?,
    })
}

/// Reads the job from the environment of a build without structured
/// attributes, where Nix passes each attribute as a variable: a list as its
/// items separated by spaces, true as `1`, and false and null alike as an
/// empty string, which is taken as the default.
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
    // Variables that are not UTF-8 are no attribute this program reads.
    let variables = env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, Variable(v.into_string().ok()?))));
    let settings: Settings = named(variables)?;
    let roots = env_attr("rootPaths")
        .map(|r| r.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Job {
        out: PathBuf::from(out),
        closure,
        options: settings.resolve(Context {
            store_dir: store_dir.to_owned(),
            jobs,
            root_paths: root_paths(roots, store_dir)?,
        })?,
    })
}

/// Root paths as store paths; a path inside a store path (`${hello}/bin`)
/// stands for the store path that holds it.
fn root_paths(paths: Vec<String>, store_dir: &str) -> Result<Vec<StorePath>, AttrsError> {
    let paths = paths
        .iter()
        .map(|p| containing_store_path(p, store_dir).map_err(AttrsError::RootPath))
        .collect::<Result<Vec<_>, _>>()?;
    let mut roots = Vec::new();
    store_path::append_new(&mut roots, paths);
    Ok(roots)
}

/// `T` from attributes and their values, with the attribute at fault named
/// in an error (serde_json names the type it expected, not where).
fn named<'de, T, I, V>(attributes: I) -> Result<T, AttrsError>
where
    T: DeserializeOwned,
    I: Iterator<Item = (String, V)>,
    V: Deserializer<'de, Error = serde_json::Error>,
{
    T::deserialize(Named {
        attributes,
        value: None,
    })
    .map_err(AttrsError::Type)
}

/// Attributes as a map whose values' errors name their attribute.
struct Named<I, V> {
    attributes: I,
    /// The value of the attribute just read.
    value: Option<(String, V)>,
}

impl<'de, I, D> Deserializer<'de> for Named<I, D>
where
    I: Iterator<Item = (String, D)>,
    D: Deserializer<'de, Error = serde_json::Error>,
{
    type Error = serde_json::Error;

    fn deserialize_any<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, I, V> MapAccess<'de> for Named<I, V>
where
    I: Iterator<Item = (String, V)>,
    V: Deserializer<'de, Error = serde_json::Error>,
{
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((name, value)) = self.attributes.next() else {
            return Ok(None);
        };
        let key = seed.deserialize(StrDeserializer::<serde_json::Error>::new(&name))?;
        self.value = Some((name, value));
        Ok(Some(key))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let (name, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value read before its attribute"))?;
        seed.deserialize(value)
            .map_err(|e| de::Error::custom(format_args!("attribute {name}: {e}")))
    }
}

/// An environment variable read as the attribute Nix made it from: `1` is
/// true, an empty string false (or, where a value is optional, none).
struct Variable(String);

impl Variable {
    fn invalid(&self, expected: &str) -> serde_json::Error {
        de::Error::custom(format_args!("{:?} is not {expected}", self.0))
    }
}

impl<'de> Deserializer<'de> for Variable {
    type Error = serde_json::Error;

    fn deserialize_any<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, Self::Error> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, Self::Error> {
        if self.0.is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_bool<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, Self::Error> {
        match self.0.as_str() {
            "1" => visitor.visit_bool(true),
            "" => visitor.visit_bool(false),
            _ => Err(self.invalid("a boolean (1 or empty)")),
        }
    }

    fn deserialize_i64<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, Self::Error> {
        let n = self.0.parse().map_err(|_| self.invalid("an integer"))?;
        visitor.visit_i64(n)
    }

    fn deserialize_u64<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, Self::Error> {
        let n = self
            .0
            .parse()
            .map_err(|_| self.invalid("a non-negative integer"))?;
        visitor.visit_u64(n)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compression::Compression;
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
        let job = from_json(attrs(), "/nix/store", 2).unwrap();
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
        let job = from_json(a, "/nix/store", 2).unwrap();
        assert!(!job.options.write_nar_listing);
        assert!(!job.options.index_debug_info);
    }

    #[test]
    fn defaults_to_zstd_level_3() {
        let mut a = attrs();
        a.as_object_mut().unwrap().remove("compression");
        let job = from_json(a, "/nix/store", 2).unwrap();
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
            let e = from_json(a, "/nix/store", 2).unwrap_err().to_string();
            assert!(e.contains(named), "{field}: {e}");
        }
    }

    #[test]
    fn the_exclude_graph_leaves_its_paths_out_but_not_the_roots() {
        let mut attrs = attrs();
        let excluded = json!([{"path": A, "narHash": HASH, "narSize": 504, "references": []}]);
        attrs["exclude"] = excluded;
        let job = from_json(attrs.clone(), "/nix/store", 1).unwrap();
        assert!(job.closure.is_empty());
        assert_eq!(job.options.root_paths[0].to_string(), A);
        // An empty `exclude` (the default) leaves the closure whole.
        attrs["exclude"] = json!([]);
        assert_eq!(from_json(attrs, "/nix/store", 1).unwrap().closure.len(), 1);
    }

    #[test]
    fn unknown_attributes_are_ignored() {
        let mut a = attrs();
        a["someOtherAttribute"] = json!({"nested": [1, 2]});
        assert!(from_json(a, "/nix/store", 2).is_ok());
    }

    #[test]
    fn a_wrong_type_is_an_error_naming_the_attribute_and_the_type_expected() {
        let mut a = attrs();
        a["wantMassQuery"] = json!("yes");
        let e = from_json(a, "/nix/store", 2).unwrap_err().to_string();
        assert!(e.starts_with("attribute wantMassQuery: "), "{e}");
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn environment_variables_read_as_the_attributes_nix_made_them_from() {
        let vars = [
            ("compression", "xz"),
            ("compressionLevel", "9"),
            ("priority", "30"),
            ("writeNarListing", "1"),
            ("indexDebugInfo", ""),
            ("wantMassQuery", ""),
            ("PATH", "/path-not-set"),
        ];
        let settings: Settings = named(
            vars.iter()
                .map(|(k, v)| (k.to_string(), Variable(v.to_string()))),
        )
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                compression: Some(Compression::Xz),
                compression_level: Some(9),
                priority: Some(30),
                want_mass_query: None,
                write_nar_listing: Some(true),
                index_debug_info: None,
            }
        );
        let bad = [("priority", "high")];
        let e = named::<Settings, _, _>(
            bad.iter()
                .map(|(k, v)| (k.to_string(), Variable(v.to_string()))),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("attribute priority: "), "{e}");
    }
}
