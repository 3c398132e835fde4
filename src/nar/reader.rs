//! Reading NARs: a streaming parser that checks the grammar, name order and padding.
