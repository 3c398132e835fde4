//! Integration tests: one binary, one module per topic.

mod build;
mod cache_dir;
mod cli;
mod common;
mod cycles;
mod dropin;
mod e2e;
mod errors;
mod exclude;
mod faults;
mod golden;
mod hostile;
mod http;
mod layers;
mod listing;
mod nar_reader;
mod nix_versions;
mod path_info;
mod peak_alloc;
mod pins;
mod props;
mod prune;
mod prune_bucket;
#[cfg(feature = "publish")]
mod prune_bucket_scale;
mod publish;
mod readme;
mod root_files;
mod sign_cache;
mod signing;
mod store_signatures;
mod upstream;
mod verify;
