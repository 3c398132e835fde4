//! Integration tests: one binary, one module per topic.

mod build;
mod common;
mod e2e;
mod exclude;
mod faults;
mod hostile;
mod http;
mod listing;
mod nar_reader;
mod peak_alloc;
mod props;
mod prune;
mod sign_cache;
mod signing;
mod verify;
