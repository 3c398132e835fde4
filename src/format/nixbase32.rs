//! Nix's own base32 ("nix32"), used for hashes in store paths, narinfo files
//! and NAR file names.
//!
//! It is not RFC 4648 base32: the alphabet omits `e`, `o`, `t` and `u`, and
//! characters are emitted from the most significant 5-bit group of the
//! little-endian bit string down to the least. It is small enough that a crate
//! (there is `nix-base32`) would add more surface than it saves.

use thiserror::Error;

/// The 32 characters, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Each byte's value as a digit, or [`NOT_A_DIGIT`]: looked up once per
/// character, where searching the alphabet was a fifth of the time spent
/// reading a closure of 10,000 paths.
const DIGITS: [u8; 256] = {
    let mut digits = [NOT_A_DIGIT; 256];
    let mut value = 0;
    while value < ALPHABET.len() {
        digits[ALPHABET[value] as usize] = value as u8;
        value += 1;
    }
    digits
};
const NOT_A_DIGIT: u8 = 0xff;

/// The value of the character `c`, if it is one of the alphabet's.
pub fn digit(c: u8) -> Option<u8> {
    match DIGITS[usize::from(c)] {
        NOT_A_DIGIT => None,
        value => Some(value),
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid nix32 character {0:?}")]
    InvalidChar(char),
    #[error("nix32 string has {actual} characters, expected {expected}")]
    InvalidLength { expected: usize, actual: usize },
    #[error("nix32 string encodes bits beyond the hash length")]
    NonZeroPadding,
}

/// How many characters `len` bytes take: ceil(len * 8 / 5).
pub const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = bytes[i] >> j;
        let high = if j > 3 && i + 1 < bytes.len() {
            bytes[i + 1] << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[usize::from((low | high) & 0x1f)] as char);
    }
    out
}

/// Decodes `s` into exactly `len` bytes.
pub fn decode(s: &str, len: usize) -> Result<Vec<u8>, DecodeError> {
    if s.len() != encoded_len(len) {
        return Err(DecodeError::InvalidLength {
            expected: encoded_len(len),
            actual: s.chars().count(),
        });
    }
    let mut out = vec![0u8; len];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = u16::from(digit(c).ok_or(DecodeError::InvalidChar(c as char))?);
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let shifted = digit << j;
        out[i] |= shifted as u8;
        let carry = (shifted >> 8) as u8;
        if i + 1 < len {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err(DecodeError::NonZeroPadding);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `nix-hash --type sha256 --to-base32` of the sha256 of the empty string.
    const EMPTY_SHA256_HEX: &str =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA256_NIX32: &str = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn encodes_like_nix_hash_to_base32() {
        assert_eq!(encode(&hex(EMPTY_SHA256_HEX)), EMPTY_SHA256_NIX32);
    }

    #[test]
    fn decodes_what_it_encodes() {
        assert_eq!(
            decode(EMPTY_SHA256_NIX32, 32).unwrap(),
            hex(EMPTY_SHA256_HEX)
        );
        for len in [0, 1, 2, 3, 4, 5, 19, 20, 32, 64] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes), len).unwrap(), bytes, "len {len}");
        }
    }

    #[test]
    fn store_path_hash_is_32_chars() {
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
    }

    #[test]
    fn digit_is_the_position_in_the_alphabet_for_every_byte() {
        for c in 0..=u8::MAX {
            let position = ALPHABET.iter().position(|&a| a == c);
            assert_eq!(digit(c), position.map(|p| p as u8), "byte {c}");
        }
    }

    #[test]
    fn rejects_letters_outside_the_alphabet() {
        let bad = "e".repeat(52);
        assert_eq!(decode(&bad, 32), Err(DecodeError::InvalidChar('e')));
    }

    #[test]
    fn rejects_wrong_length() {
        assert!(matches!(
            decode("abc", 32),
            Err(DecodeError::InvalidLength { expected: 52, .. })
        ));
    }

    #[test]
    fn rejects_bits_beyond_the_hash() {
        // The leading character of a 52-char sha256 carries only one bit.
        let bad = format!("z{}", &EMPTY_SHA256_NIX32[1..]);
        assert_eq!(decode(&bad, 32), Err(DecodeError::NonZeroPadding));
    }
}
