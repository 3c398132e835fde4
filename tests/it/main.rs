//! Integration tests: one binary, one module per topic.

mod build;
mod common;
mod e2e;
mod faults;
mod hostile;
mod http;
mod listing;
mod nar_reader;
mod nix_versions;
mod peak_alloc;
mod props;
mod sign_cache;
mod signing;
mod verify;
