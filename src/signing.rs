//! Ed25519 signing keys and narinfo signatures in the formats Nix uses.
