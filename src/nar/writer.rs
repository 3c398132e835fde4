//! A NAR writer whose types allow only well-formed archives.
