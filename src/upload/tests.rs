//! Unit tests of the pure parts: names, the piece plan, resume decisions, the probe's bytes,
//! and the manifest's round trip and validation.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::manifest::*;
use super::plan::*;
use super::probe::{PROBE_BLOCK, probe_bytes};
use crate::integrity::verify;

#[test]
fn names() {
    assert_eq!(
        manifest_path(Path::new("/a/b.iso")),
        PathBuf::from("/a/b.iso.ftpseg-put")
    );
    assert_eq!(temp_name("up/x", Some(".part")), "up/x.part");
    assert_eq!(temp_name("up/x", None), "up/x");
    assert_eq!(remote_join("", "x"), "x");
    assert_eq!(remote_join("up", "x"), "up/x");
    assert_eq!(remote_join("/up/", "x"), "/up/x");
}

#[test]
fn single_resume_trusts_the_remote_size_up_to_the_file_size() {
    assert_eq!(single_resume(None, 10), SingleResume::Fresh);
    assert_eq!(single_resume(Some(0), 10), SingleResume::Fresh);
    assert_eq!(single_resume(Some(4), 10), SingleResume::From(4));
    assert_eq!(single_resume(Some(10), 10), SingleResume::From(10));
    assert_eq!(single_resume(Some(11), 10), SingleResume::TooLarge(11));
}

#[test]
fn chunk_overlap() {
    assert_eq!(chunks_overlapping(0, 0, 4), 0..0);
    assert_eq!(chunks_overlapping(0, 1, 4), 0..1);
    assert_eq!(chunks_overlapping(0, 4, 4), 0..1);
    assert_eq!(chunks_overlapping(3, 9, 4), 0..3);
}

#[test]
fn probe_blocks_differ() {
    let d = probe_bytes();
    let b = PROBE_BLOCK;
    assert_eq!(d.len(), 3 * b);
    assert!(d.iter().all(|&x| x != 0));
    assert_ne!(d[..b], d[b..2 * b]);
    assert_ne!(d[b..2 * b], d[2 * b..]);
}

fn manifest(size: u64, mode: UploadMode, piece: u64) -> UploadManifest {
    let cs = verify::CHUNK_SIZE;
    UploadManifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        url: "ftp://h/x".into(),
        remote_path: "x.ftpseg-part".into(),
        local_size: size,
        local_mtime_ns: 1,
        chunk_size: cs,
        chunks: vec!["00".repeat(32); size.div_ceil(cs) as usize],
        mode,
        pieces: if mode == UploadMode::Parallel {
            plan_pieces(size, piece)
        } else {
            vec![]
        },
    }
}

#[test]
fn manifest_round_trip_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.ftpseg-put");
    let mut m = manifest(10 << 20, UploadMode::Parallel, MIN_PIECE);
    m.pieces[0].acked = true;
    m.save(&p).unwrap();
    assert_eq!(UploadManifest::load(&p).unwrap(), Some(m.clone()));
    assert_eq!(m.acked_bytes(), MIN_PIECE);
    // A piece acknowledged without the first one is impossible.
    let mut bad = m.clone();
    bad.pieces[0].acked = false;
    bad.pieces[1].acked = true;
    assert!(bad.validate().is_err());
    let mut bad = m.clone();
    bad.version = 99;
    assert!(bad.validate().unwrap_err().contains("version 99"));
    let mut bad = m.clone();
    bad.pieces.pop();
    assert!(bad.validate().is_err());
    let mut bad = m;
    bad.chunks.pop();
    assert!(bad.validate().is_err());
    std::fs::write(&p, "{ not json").unwrap();
    let e = UploadManifest::load(&p).unwrap_err();
    assert_eq!(e.exit_code(), crate::exit::MANIFEST);
    assert!(
        UploadManifest::load(&dir.path().join("none"))
            .unwrap()
            .is_none()
    );
}

proptest! {
    #[test]
    fn pieces_tile_the_file(size in 1u64..(1 << 34), n in 1usize..64) {
        let piece = piece_size(size, n);
        prop_assert!((MIN_PIECE..=MAX_PIECE).contains(&piece));
        let pieces = plan_pieces(size, piece);
        prop_assert_eq!(pieces[0].start, 0);
        prop_assert_eq!(pieces.last().unwrap().end, size);
        for w in pieces.windows(2) {
            prop_assert_eq!(w[0].end, w[1].start);
        }
        prop_assert!(pieces.iter().all(|p| p.end > p.start && p.end - p.start <= piece));
    }

    #[test]
    fn single_resume_never_beyond_the_file(remote in proptest::option::of(0u64..1000), size in 0u64..1000) {
        match single_resume(remote, size) {
            SingleResume::From(n) => prop_assert!(n > 0 && n <= size),
            SingleResume::TooLarge(n) => prop_assert!(n > size),
            SingleResume::Fresh => prop_assert!(remote.unwrap_or(0) == 0),
        }
    }
}
