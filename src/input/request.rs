//! What `mk-binary-cache build` is asked to write, resolved: the closure of
//! its paths (from the local store or a closure file), less what is
//! excluded, and the options of the write ([`Settings`]).

use std::path::PathBuf;

use thiserror::Error;

use crate::format::store_path::PathInfo;
use crate::input::exclude::{ExcludeError, Exclusion};
use crate::input::local_store::{self, BuildError};
use crate::input::settings::{self, Context, Settings, SettingsError};
use crate::ops::write::Options;

/// The command line of `build`, parsed.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// Store paths, paths inside them, or symlinks to them: the roots.
    pub paths: Vec<PathBuf>,
    /// A closure file to read instead of asking the local Nix.
    pub closure_json: Option<PathBuf>,
    /// Paths whose closure is left out.
    pub exclude: Vec<PathBuf>,
    /// Caches whose paths are left out.
    pub exclude_cache: Vec<PathBuf>,
    pub settings: Settings,
    /// Worker threads; none: every core.
    pub jobs: Option<usize>,
}

#[derive(Debug, Error)]
pub enum RequestError {
    #[error(transparent)]
    Input(#[from] BuildError),
    #[error(transparent)]
    Exclude(#[from] ExcludeError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// What to write.
#[derive(Debug)]
pub struct BuildJob {
    /// The paths to write (those excluded aside).
    pub closure: Vec<PathInfo>,
    /// How many paths of the closure were excluded.
    pub excluded: usize,
    pub options: Options,
}

/// Reads the closure and resolves the settings of `request`.
pub fn resolve(request: BuildRequest) -> Result<BuildJob, RequestError> {
    let store_dir = local_store::store_dir();
    // The settings first: a mistyped flag is said before Nix is asked anything.
    let mut options = request.settings.resolve(Context {
        store_dir: store_dir.clone(),
        jobs: settings::jobs(request.jobs),
        root_paths: Vec::new(),
    })?;
    let input = match &request.closure_json {
        Some(file) => local_store::from_closure_file(file, &request.paths, &store_dir)?,
        None => local_store::from_local_store(&request.paths, &store_dir)?,
    };
    let mut exclusion = Exclusion::default();
    exclusion.add_local_closure(&request.exclude, &store_dir)?;
    for dir in &request.exclude_cache {
        exclusion.add_cache(dir)?;
    }
    let whole = input.closure.len();
    let closure = exclusion.apply(input.closure);
    options.root_paths = input.roots;
    Ok(BuildJob {
        excluded: whole - closure.len(),
        closure,
        options,
    })
}
