//! Integration tests: one binary, one module per topic.

mod build;
mod cli;
mod common;
mod cycles;
mod dropin;
mod e2e;
mod errors;
mod exclude;
mod faults;
mod hostile;
mod http;
mod layers;
mod listing;
mod nar_reader;
mod nix_versions;
mod path_info;
mod peak_alloc;
mod props;
mod prune;
mod publish;
mod readme;
mod sign_cache;
mod signing;
mod store_signatures;
mod upstream;
mod verify;
