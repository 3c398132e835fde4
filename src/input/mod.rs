//! What to cache: the closure and settings, read from a Nix build's
//! structured attributes or from the local store and `nix path-info` JSON.

pub mod attrs;
pub mod closure;
pub mod exclude;
pub mod local_store;
pub mod request;
pub mod settings;
pub mod upstream;
