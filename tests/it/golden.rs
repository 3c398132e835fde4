//! Our compressed NARs against the files a real Nix 2.35.2 wrote for the
//! same NARs (`nix copy --to file://…`, measured once: see the table in
//! `tests/golden/README.md`). Nix never checks FileHash, so only these tests
//! can catch a change of bytes.
//!
//! The inputs are three files added to the store: `g40`, 40 MiB made by
//! `tests/golden/input.py` (three zstd frames), `tiny` and `empty`. Each
//! NAR is checked against the NarHash Nix gave it first, so a difference
//! below is the compressor's.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::OnceLock;

use mk_binary_cache::format::compression::{Compression, FrameDecoder, Workspace};
use mk_binary_cache::format::hash::Sha256;
use mk_binary_cache::format::nar::writer;

use crate::common::repo;

struct Golden {
    name: &'static str,
    nar_hash: &'static str,
    /// SHA-256 (hex) and size of the file Nix wrote with `compression=zstd`,
    /// with `&compression-level=19`, and with `compression=xz` and
    /// `&parallel-compression=true`.
    zstd: (&'static str, u64),
    zstd_19: (&'static str, u64),
    xz_parallel: (&'static str, u64),
}

const G40: Golden = Golden {
    name: "g40",
    nar_hash: "sha256:100wk9fcxxxhy19j1vrz4216y3236dfqamy46bjyhvck8rd9sqcb",
    zstd: (
        "aae5e9dfaad4129e357f3109daed7846084818d727be1c39562d506b5af428e1",
        25697431,
    ),
    zstd_19: (
        "969efc191b8ca66488a5db81b38841754b3dc6e3d704877301fd44ce8cb57f9d",
        23737062,
    ),
    xz_parallel: (
        "5f9da9db5e3f2700a1b788467da82b512ff75ed23c0ed67153da1d8a71d5ba1a",
        23850860,
    ),
};

const TINY: Golden = Golden {
    name: "tiny",
    nar_hash: "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
    zstd: (
        "7878963dde268c239b09254dcc1ce070eb7d2f3fd19471b8a75af549bc86c90c",
        94,
    ),
    zstd_19: (
        "44ca94a5e20031f8408c1a8ddc6d1ef68b92f1dee05db236ca0604305f180d33",
        79,
    ),
    xz_parallel: (
        "45396961ad27ed7861555ddcc2fdafbd6ae0df5f0a7d689897951ae99d186ef3",
        136,
    ),
};

const EMPTY: Golden = Golden {
    name: "empty",
    nar_hash: "sha256:0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p",
    zstd: (
        "526c682792394fb49b8e0a93f0e0ea9499f2f9445a14c902f00a56150c85294b",
        92,
    ),
    zstd_19: (
        "0f6ad73fadd72471b59f420310041554bae085e07fdb3b76d988cc09f3a023be",
        73,
    ),
    xz_parallel: (
        "b0c9b056dc4dc9fde591634474928265c6f62374572337b3611de9975d003a0f",
        128,
    ),
};

/// The NAR of a store path that is one regular file holding `contents`.
fn nar_of(contents: &[u8]) -> Vec<u8> {
    let mut nar = Vec::new();
    writer::open(&mut nar)
        .unwrap()
        .regular(false, contents.len() as u64, &mut &contents[..])
        .unwrap();
    nar
}

/// The NAR of a golden input, checked against the NarHash Nix gave it.
fn nar(golden: &Golden) -> &'static [u8] {
    static NARS: [OnceLock<Vec<u8>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, contents) = match golden.name {
        "g40" => (&NARS[0], g40_contents as fn() -> Vec<u8>),
        "tiny" => (&NARS[1], (|| b"hello\n".to_vec()) as fn() -> Vec<u8>),
        "empty" => (&NARS[2], Vec::new as fn() -> Vec<u8>),
        other => panic!("no golden input {other}"),
    };
    slot.get_or_init(|| {
        let nar = nar_of(&contents());
        assert_eq!(
            format!("sha256:{}", Sha256::digest(&nar).to_nix32()),
            golden.nar_hash,
            "the NAR of {} is not the one Nix hashed",
            golden.name
        );
        nar
    })
}

/// `g40`'s contents, made as they were for Nix.
fn g40_contents() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g40");
    let script = repo().join("tests/golden/input.py");
    let status = Command::new("python3")
        .arg(&script)
        .args(["58", "41943040"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
    std::fs::read(out).unwrap()
}

fn compress(c: Compression, level: i32, nar: &[u8], threads: u32) -> Vec<u8> {
    let mut workspace = Workspace::default();
    let mut encoder = c
        .encoder(Vec::new(), level, nar.len() as u64, threads, &mut workspace)
        .unwrap();
    // In pieces, as the NAR comes from a dump.
    for piece in nar.chunks(100_000) {
        encoder.write_all(piece).unwrap();
    }
    encoder.finish().unwrap()
}

fn assert_golden(file: &[u8], (sha256, size): (&str, u64), what: &str) {
    assert_eq!(
        (Sha256::digest(file).to_hex(), file.len() as u64),
        (sha256.to_owned(), size),
        "{what}"
    );
}

#[test]
fn zstd_at_the_default_level_is_what_nix_2_35_writes_on_any_number_of_threads() {
    for golden in [G40, TINY, EMPTY] {
        for threads in [1, 2] {
            let file = compress(Compression::Zstd, 3, nar(&golden), threads);
            let what = format!("{} on {threads} threads", golden.name);
            assert_golden(&file, golden.zstd, &what);
        }
    }
}

#[test]
fn zstd_at_level_19_is_what_nix_2_35_writes() {
    for golden in [G40, TINY, EMPTY] {
        let file = compress(Compression::Zstd, 19, nar(&golden), 2);
        assert_golden(&file, golden.zstd_19, golden.name);
    }
}

#[test]
fn xz_is_what_nix_copy_with_parallel_compression_writes_for_small_paths_too() {
    for golden in [G40, TINY, EMPTY] {
        let file = compress(Compression::Xz, 6, nar(&golden), 2);
        assert_golden(&file, golden.xz_parallel, golden.name);
    }
}

#[test]
fn our_zstd_frames_decode_in_parallel_to_the_nar() {
    let nar = nar(&G40);
    let file = compress(Compression::Zstd, 3, nar, 2);
    let mut decoded = Vec::new();
    FrameDecoder::new(&file[..], 2)
        .read_to_end(&mut decoded)
        .unwrap();
    assert!(decoded == nar, "the decoded NAR differs");
}
