//! Integration tests: one binary, one module per topic.

mod build;
mod common;
mod e2e;
mod http;
mod listing;
mod nar_reader;
mod sign_cache;
mod signing;
mod verify;
