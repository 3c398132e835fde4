//! Integration tests: one binary, one module per topic.

mod common;
mod e2e;
mod nar_reader;
mod sign_cache;
mod signing;
mod verify;
