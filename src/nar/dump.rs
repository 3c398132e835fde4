//! Serialising a filesystem tree as a NAR.
