//! The `.narinfo` file: what a cache says about one store path.
//!
//! [`NarInfo`]'s `Display` writes the fields in the order `nix copy` does,
//! every line ending in `\n`, and `References:` even when empty. Parsing
//! accepts what Nix accepts: it cuts the text into fields as Nix does (the
//! key up to the first `:` of a line, the value from two bytes after it to
//! the end of the line), so a line without `:`, or a last line without its
//! `\n`, is an error; unknown keys are ignored; `StorePath`, `URL`,
//! `NarHash` and a non-zero `NarSize` are required; `CA` may appear only
//! once, `References` again only after an empty one. A `Sig:` that is not
//! a signature is kept as [`Sig::Malformed`], as Nix keeps it (and ignores
//! it when checking signatures).

use std::fmt;

use thiserror::Error;

use crate::format::hash::Sha256;
use crate::format::signing::{KeyError, Signature};
use crate::format::store_path::{StorePath, StorePathError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    // What the path is.
    pub store_path: StorePath,
    pub nar_hash: Sha256,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    // Where its NAR is, and how it is stored.
    pub url: String,
    /// As written in the file; a missing field means bzip2 to Nix.
    pub compression: String,
    pub file_hash: Option<Sha256>,
    pub file_size: Option<u64>,
    // Where it came from, and who vouches for it.
    pub deriver: Option<StorePath>,
    pub signatures: Vec<Sig>,
    pub ca: Option<String>,
}

/// The value of a `Sig:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sig {
    Valid(Signature),
    /// Text that does not read as `NAME:<base64 signature>`.
    Malformed {
        text: String,
        error: KeyError,
    },
}

impl Sig {
    pub fn read(text: &str) -> Sig {
        match text.parse() {
            Ok(sig) => Sig::Valid(sig),
            Err(error) => Sig::Malformed {
                text: text.to_owned(),
                error,
            },
        }
    }

    /// The name of the key that made it, as far as it can be told.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Sig::Valid(sig) => Some(&sig.key_name),
            Sig::Malformed { text, .. } => text.split_once(':').map(|(name, _)| name),
        }
    }
}

/// As the line's value: what was read is written back.
impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sig::Valid(sig) => sig.fmt(f),
            Sig::Malformed { text, .. } => f.write_str(text),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("narinfo is not made of lines 'Key: value', each ending in a newline")]
    Malformed,
    #[error("narinfo lacks the required field {0}")]
    Missing(&'static str),
    #[error("narinfo has the field {0} more than once")]
    Repeated(&'static str),
    #[error("narinfo field {field} has an invalid value {value:?}")]
    Invalid { field: &'static str, value: String },
    #[error("narinfo field {field}: {source}")]
    StorePath {
        field: &'static str,
        source: StorePathError,
    },
    #[error("narinfo field NarSize is zero")]
    ZeroNarSize,
}

/// A narinfo is a few hundred bytes: readers read no further than this, so
/// that a huge file posing as one is refused rather than read whole.
pub const MAX_SIZE: u64 = 1 << 20;

/// The name of the narinfo file of the store path with hash part
/// `hash_part` in a cache: `<hash part>.narinfo`.
pub fn file_name(hash_part: &str) -> String {
    format!("{hash_part}.narinfo")
}

/// The text a narinfo signature signs:
/// `1;<store path>;sha256:<nix32>;<nar size>;<references, sorted, joined by ",">`,
/// every path absolute. The references may come in any order.
pub fn fingerprint(
    store_path: &StorePath,
    nar_hash: &Sha256,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let mut refs: Vec<String> = references.iter().map(StorePath::to_absolute).collect();
    refs.sort_unstable();
    format!(
        "1;{};{nar_hash};{nar_size};{}",
        store_path.to_absolute(),
        refs.join(",")
    )
}

impl NarInfo {
    /// The text a signature of this narinfo signs; see [`fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Parses narinfo text; store paths must lie in `store_dir`.
    pub fn parse(text: &str, store_dir: &str) -> Result<Self, ParseError> {
        let mut fields = Fields::default();
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            let (key, value) = next_field(&mut rest)?;
            fields.read(&key, &value, store_dir)?;
        }
        fields.finish()
    }
}

/// Cuts the next field off `rest`, as Nix does: the key up to the first
/// `:`, the value from two bytes after it to the end of the line.
fn next_field(rest: &mut &[u8]) -> Result<(String, String), ParseError> {
    let colon = position(rest, b':').ok_or(ParseError::Malformed)?;
    let key = String::from_utf8_lossy(&rest[..colon]).into_owned();
    let after = rest.get(colon + 2..).ok_or(ParseError::Malformed)?;
    let eol = position(after, b'\n').ok_or(ParseError::Malformed)?;
    let value = String::from_utf8_lossy(&after[..eol]).into_owned();
    *rest = &after[eol + 1..];
    Ok((key, value))
}

/// The fields read so far.
#[derive(Default)]
struct Fields {
    store_path: Option<StorePath>,
    url: Option<String>,
    compression: Option<String>,
    file_hash: Option<Sha256>,
    file_size: Option<u64>,
    nar_hash: Option<Sha256>,
    nar_size: Option<u64>,
    references: Option<Vec<StorePath>>,
    deriver: Option<StorePath>,
    signatures: Vec<Sig>,
    ca: Option<String>,
}

impl Fields {
    /// Takes in one field; unknown keys are ignored.
    fn read(&mut self, key: &str, value: &str, store_dir: &str) -> Result<(), ParseError> {
        match key {
            "StorePath" => {
                let p = in_field("StorePath", StorePath::parse(value, store_dir))?;
                self.store_path = Some(p);
            }
            "URL" => self.url = Some(value.to_owned()),
            "Compression" => self.compression = Some(value.to_owned()),
            "FileHash" => self.file_hash = Some(parse_hash("FileHash", value)?),
            "FileSize" => self.file_size = Some(parse_size("FileSize", value)?),
            "NarHash" => self.nar_hash = Some(parse_hash("NarHash", value)?),
            "NarSize" => self.nar_size = Some(parse_size("NarSize", value)?),
            "References" => {
                if self.references.as_ref().is_some_and(|r| !r.is_empty()) {
                    return Err(ParseError::Repeated("References"));
                }
                let refs = value
                    .split(' ')
                    .filter(|r| !r.is_empty())
                    .map(|r| StorePath::from_base_name(r, store_dir))
                    .collect::<Result<Vec<_>, _>>();
                self.references = Some(in_field("References", refs)?);
            }
            "Deriver" if value != "unknown-deriver" => {
                let d = in_field("Deriver", StorePath::from_base_name(value, store_dir))?;
                self.deriver = Some(d);
            }
            "Sig" => self.signatures.push(Sig::read(value)),
            "CA" => {
                if self.ca.is_some() {
                    return Err(ParseError::Repeated("CA"));
                }
                self.ca = Some(value.to_owned());
            }
            _ => {}
        }
        Ok(())
    }

    /// The narinfo, if every required field was there.
    fn finish(self) -> Result<NarInfo, ParseError> {
        let nar_size = self.nar_size.ok_or(ParseError::Missing("NarSize"))?;
        if nar_size == 0 {
            return Err(ParseError::ZeroNarSize);
        }
        Ok(NarInfo {
            store_path: self.store_path.ok_or(ParseError::Missing("StorePath"))?,
            // Nix reads an empty URL as none, an empty Compression as bzip2.
            url: self
                .url
                .filter(|u| !u.is_empty())
                .ok_or(ParseError::Missing("URL"))?,
            compression: self
                .compression
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "bzip2".to_owned()),
            file_hash: self.file_hash,
            file_size: self.file_size,
            nar_hash: self.nar_hash.ok_or(ParseError::Missing("NarHash"))?,
            nar_size,
            references: self.references.unwrap_or_default(),
            deriver: self.deriver,
            signatures: self.signatures,
            ca: self.ca,
        })
    }
}

fn position(bytes: &[u8], byte: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == byte)
}

/// A store path field's error, naming the field.
fn in_field<T>(field: &'static str, parsed: Result<T, StorePathError>) -> Result<T, ParseError> {
    parsed.map_err(|source| ParseError::StorePath { field, source })
}

fn parse_hash(field: &'static str, value: &str) -> Result<Sha256, ParseError> {
    value.parse().map_err(|_| ParseError::Invalid {
        field,
        value: value.to_owned(),
    })
}

fn parse_size(field: &'static str, value: &str) -> Result<u64, ParseError> {
    value.parse().map_err(|_| ParseError::Invalid {
        field,
        value: value.to_owned(),
    })
}

impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path)?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {h}")?;
        }
        if let Some(s) = self.file_size {
            writeln!(f, "FileSize: {s}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash)?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        let mut refs: Vec<&str> = self.references.iter().map(StorePath::base_name).collect();
        refs.sort_unstable();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {}", d.base_name())?;
        }
        for sig in &self.signatures {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `nix copy --to file://…?compression=xz` (Nix 2.8).
    const FROM_NIX: &str = include_str!("../../tests/fixtures/nix-copy-xz.narinfo");
    // Written by Nix 2.8 `nix copy --to 'file://…?secret-key=secret.key'`.
    const SIGNED_WITH_REFS: &str =
        include_str!("../../tests/fixtures/keys/signed-with-references.narinfo");
    const SIGNED_NO_REFS: &str =
        include_str!("../../tests/fixtures/keys/signed-no-references.narinfo");
    const SECRET_KEY: &str = include_str!("../../tests/fixtures/keys/secret.key");

    #[test]
    fn signs_and_fingerprints_like_nix() {
        let key: crate::format::signing::SecretKey = SECRET_KEY.parse().unwrap();
        for text in [SIGNED_WITH_REFS, SIGNED_NO_REFS] {
            let info = NarInfo::parse(text, "/nix/store").unwrap();
            let fingerprint = info.fingerprint();
            let sig = key.sign(&fingerprint);
            assert_eq!(
                [Sig::Valid(sig.clone())],
                info.signatures[..],
                "signature differs from Nix's for {}",
                info.store_path
            );
            assert!(key.public().verify(&fingerprint, &sig));
        }
    }

    #[test]
    fn fingerprint_text() {
        let info = NarInfo::parse(SIGNED_WITH_REFS, "/nix/store").unwrap();
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/s03jymp28rnic3p9yd1n5qmm74yr44dp-sig-fixture-top;\
             sha256:0jgvsjb4bx7dw1j65bk3y7z5avjl5dhw1q8fh4pm7d0dhp90s9x7;256;\
             /nix/store/d1hh7p5gsplhy181dx3fhwp9rr3jhnzs-sig-fixture-dep-b,\
             /nix/store/hl5wy5yxkvh48h5kj5nmi44xq1ppy88i-sig-fixture-dep-a"
        );
        let info = NarInfo::parse(SIGNED_NO_REFS, "/nix/store").unwrap();
        assert!(
            info.fingerprint().ends_with(";128;"),
            "{}",
            info.fingerprint()
        );
    }

    #[test]
    fn fingerprint_sorts_references() {
        let mut info = NarInfo::parse(SIGNED_WITH_REFS, "/nix/store").unwrap();
        let before = info.fingerprint();
        let written = info.references.clone();
        info.references.reverse();
        assert_ne!(info.references, written);
        assert_eq!(info.fingerprint(), before);
    }

    #[test]
    fn reads_and_writes_nixs_text_unchanged() {
        let info = NarInfo::parse(FROM_NIX, "/nix/store").unwrap();
        assert_eq!(info.nar_size, 504);
        assert_eq!(info.references.len(), 1);
        assert_eq!(info.to_string(), FROM_NIX);
    }

    // `nix copy` of a signed, content-addressed path (Nix 2.8): `Sig:` lines
    // come before `CA:`.
    #[test]
    fn writes_signatures_and_ca_in_nix_copys_order() {
        let text = include_str!("../../tests/fixtures/path-info/nix-2.8-copy-sig-ca.narinfo");
        let info = NarInfo::parse(text, "/nix/store").unwrap();
        assert_eq!(info.signatures.len(), 1);
        assert!(info.ca.is_some());
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn writes_an_empty_references_line() {
        let mut info = NarInfo::parse(FROM_NIX, "/nix/store").unwrap();
        info.references.clear();
        info.deriver = None;
        assert!(info.to_string().ends_with("NarSize: 504\nReferences: \n"));
        let back = NarInfo::parse(&info.to_string(), "/nix/store").unwrap();
        assert!(back.references.is_empty());
    }

    #[test]
    fn missing_compression_means_bzip2() {
        let text = FROM_NIX.replace("Compression: xz\n", "");
        assert_eq!(
            NarInfo::parse(&text, "/nix/store").unwrap().compression,
            "bzip2"
        );
    }

    #[test]
    fn requires_store_path_url_nar_hash_and_nar_size() {
        for (field, prefix) in [
            ("StorePath", "StorePath:"),
            ("URL", "URL:"),
            ("NarHash", "NarHash:"),
            ("NarSize", "NarSize:"),
        ] {
            let text: String = FROM_NIX
                .lines()
                .filter(|l| !l.starts_with(prefix))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(
                NarInfo::parse(&text, "/nix/store"),
                Err(ParseError::Missing(field))
            );
        }
    }

    #[test]
    fn refuses_repeated_references_and_zero_nar_size() {
        let twice = format!("{FROM_NIX}References: \n");
        assert_eq!(
            NarInfo::parse(&twice, "/nix/store"),
            Err(ParseError::Repeated("References"))
        );
        let zero = FROM_NIX.replace("NarSize: 504", "NarSize: 0");
        assert_eq!(
            NarInfo::parse(&zero, "/nix/store"),
            Err(ParseError::ZeroNarSize)
        );
    }

    #[test]
    fn ignores_unknown_keys() {
        let text = format!("{FROM_NIX}System: x86_64-linux\n");
        assert!(NarInfo::parse(&text, "/nix/store").is_ok());
    }

    #[test]
    fn keeps_a_malformed_sig_as_such_and_writes_it_back() {
        // Nix keeps a Sig it cannot read, and ignores it when checking.
        let text = format!("{FROM_NIX}Sig: no-colon\n");
        let info = NarInfo::parse(&text, "/nix/store").unwrap();
        assert!(matches!(
            info.signatures.as_slice(),
            [Sig::Malformed { text, error: KeyError::MissingColon(_) }] if text == "no-colon"
        ));
        assert_eq!(info.signatures[0].key_name(), None);
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn refuses_a_store_path_in_another_store() {
        assert!(matches!(
            NarInfo::parse(FROM_NIX, "/gnu/store"),
            Err(ParseError::StorePath {
                field: "StorePath",
                ..
            })
        ));
    }

    // Checked with Nix 2.8: `nix store cat --store file://…` decompresses
    // the NAR of such a narinfo as bzip2.
    #[test]
    fn an_empty_compression_means_bzip2() {
        let text = FROM_NIX.replace("Compression: xz\n", "Compression: \n");
        assert_eq!(
            NarInfo::parse(&text, "/nix/store").unwrap().compression,
            "bzip2"
        );
    }

    // Checked with Nix 2.8: `nix path-info --store file://…` says "NAR info
    // file '….narinfo' is corrupt".
    #[test]
    fn refuses_an_empty_url() {
        let text = FROM_NIX.replace(
            "URL: nar/0wspvgvn8qfh2yv4h92wc3xp18s9yx1kszn3a3lc9ynikzr7bvci.nar.xz\n",
            "URL: \n",
        );
        assert_eq!(
            NarInfo::parse(&text, "/nix/store"),
            Err(ParseError::Missing("URL"))
        );
    }

    // Each checked with Nix 2.8 (`nix path-info --store file://…`), found by
    // tests/it/props.rs comparing the two on mutated narinfos.
    #[test]
    fn cuts_fields_as_nix_does() {
        let parse = |text: &str| NarInfo::parse(text, "/nix/store");
        // A line without a colon, no final newline.
        for bad in [
            format!("{FROM_NIX}garbage\n"),
            FROM_NIX.trim_end().to_owned(),
        ] {
            assert_eq!(parse(&bad), Err(ParseError::Malformed), "{bad:?}");
        }
        // A blank line becomes part of the next key, which is then unknown.
        assert_eq!(
            parse(&format!("\n{FROM_NIX}")),
            Err(ParseError::Missing("StorePath"))
        );
        // With CRLF, values end in "\r".
        assert!(matches!(
            parse(&FROM_NIX.replace('\n', "\r\n")),
            Err(ParseError::StorePath {
                field: "StorePath",
                ..
            })
        ));
        // The value starts two bytes after the colon, space or not.
        let info = parse(&FROM_NIX.replace("URL: nar/", "URL:nar/")).unwrap();
        assert_eq!(
            info.url,
            "ar/0wspvgvn8qfh2yv4h92wc3xp18s9yx1kszn3a3lc9ynikzr7bvci.nar.xz"
        );
    }

    #[test]
    fn references_may_follow_an_empty_references_line() {
        let text = FROM_NIX.replace("References: ", "References: \nReferences: ");
        let info = NarInfo::parse(&text, "/nix/store").unwrap();
        assert_eq!(info.references.len(), 1);
    }
}
