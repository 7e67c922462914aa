use std::fs::{self, File};
use std::io;

use proptest::prelude::*;
use tempfile::TempDir;

use super::error::restart_advice;
use super::file::sync_folder_of;
use super::*;

const URL: &str = "ftp://user@example.com/pub/a.iso";

fn ranges(cuts: &[(u64, u64, u64)]) -> Vec<RangeRecord> {
    cuts.iter()
        .map(|&(start, end, done)| RangeRecord { start, end, done })
        .collect()
}

fn sample() -> Manifest {
    Manifest::new(
        URL,
        Some(1000),
        Some("20240102030405".to_owned()),
        ranges(&[(0, 400, 100), (400, 800, 800), (800, 1000, 800)]),
    )
    .unwrap()
}

fn dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Manifest::path_for(&dir.path().join("out.iso"));
    (dir, path)
}

fn load_text(text: &[u8]) -> Result<Option<Manifest>, ManifestError> {
    let (_dir, path) = dir();
    fs::write(&path, text).unwrap();
    Manifest::load(&path)
}

fn sample_json() -> serde_json::Value {
    serde_json::to_value(sample()).unwrap()
}

fn load_value(v: &serde_json::Value) -> Result<Option<Manifest>, ManifestError> {
    load_text(serde_json::to_string_pretty(v).unwrap().as_bytes())
}

fn invalid_reason(m: &Manifest) -> String {
    match m.validate() {
        Err(ManifestError::Invalid { reason }) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn path_for_appends() {
    assert_eq!(
        Manifest::path_for(Path::new("a.iso")),
        PathBuf::from("a.iso.ftpseg")
    );
    assert_eq!(
        Manifest::path_for(Path::new("/x/y/archive.tar.gz")),
        PathBuf::from("/x/y/archive.tar.gz.ftpseg")
    );
    assert_eq!(
        Manifest::path_for(Path::new("noext")),
        PathBuf::from("noext.ftpseg")
    );
    assert_eq!(
        Manifest::tmp_path_for(Path::new("a.iso.ftpseg")),
        PathBuf::from("a.iso.ftpseg.tmp")
    );
}

#[test]
fn new_sets_fields() {
    let m = sample();
    assert_eq!(m.format, FORMAT);
    assert_eq!(m.version, VERSION);
    assert_eq!(m.streamed, None);
    assert!(m.created_unix > 1_600_000_000);
    assert_eq!(m.created_unix, m.updated_unix);
    assert_eq!(m.bytes_done(), 100 + 400);
    assert!(!m.is_complete());

    let s = Manifest::new(URL, None, None, vec![]).unwrap();
    assert_eq!(s.streamed, Some(0));
    assert_eq!(s.bytes_done(), 0);
    assert!(!s.is_complete());

    let z = Manifest::new(URL, Some(0), None, vec![]).unwrap();
    assert!(z.is_complete());
    assert_eq!(z.bytes_done(), 0);
}

#[test]
fn range_record_helpers() {
    let r = RangeRecord::new(10, 20);
    assert_eq!(r.done, 10);
    assert_eq!(r.remaining(), 10);
    assert!(!r.is_complete());
    let r = RangeRecord {
        start: 10,
        end: 20,
        done: 20,
    };
    assert!(r.is_complete());
    assert_eq!(r.remaining(), 0);
    assert_eq!(r.durable(), 10);
    // Invalid records never panic.
    let r = RangeRecord {
        start: 30,
        end: 20,
        done: 5,
    };
    assert_eq!(r.remaining(), 15);
    assert_eq!(r.durable(), 0);
}

#[test]
fn complete_manifest() {
    let m = Manifest::new(URL, Some(10), None, ranges(&[(0, 5, 5), (5, 10, 10)])).unwrap();
    assert!(m.is_complete());
    assert_eq!(m.bytes_done(), 10);
}

#[test]
fn refuses_password() {
    for url in [
        "ftp://user:secret@example.com/a.iso",
        "ftp://user:@example.com/a.iso",
        "ftp://:secret@example.com/",
        "FTP://user:secret@example.com",
        "ftp://user:p%40ss@host:21/a",
        "ftp://user:secret@host?x",
        "user:secret@example.com/a.iso",
        "//user:secret@example.com/a.iso",
    ] {
        let err = Manifest::new(url, Some(1), None, vec![RangeRecord::new(0, 1)]).unwrap_err();
        assert!(matches!(err, ManifestError::PasswordInUrl), "{url}");
        assert!(!err.to_string().contains("secret"));
        assert!(!format!("{err:?}").contains("secret"));
    }
    for url in [
        "ftp://user@example.com/a.iso",
        "ftp://example.com:2121/a.iso",
        "ftp://user@[::1]:21/a.iso",
        "ftp://example.com/dir/odd:name@x.iso",
        "ftp://example.com/a.iso?x=1:2@3",
        "ftp://example.com/a.iso#a:b@c",
    ] {
        assert!(
            Manifest::new(url, Some(1), None, vec![RangeRecord::new(0, 1)]).is_ok(),
            "{url}"
        );
    }
}

#[test]
fn password_never_saved() {
    let (_dir, path) = dir();
    let mut m = sample();
    m.url = "ftp://u:hunter2@host/a".to_owned();
    assert!(matches!(m.validate(), Err(ManifestError::PasswordInUrl)));
    let err = m.save(&path).unwrap_err();
    assert!(matches!(err, ManifestError::RefusedSave { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"));
    assert!(!path.exists());
    assert!(!Manifest::tmp_path_for(&path).exists());

    // A manifest file with a password is rejected on load too.
    let mut v = sample_json();
    v["url"] = "ftp://u:hunter2@host/a".into();
    let err = load_value(&v).unwrap_err();
    assert!(matches!(err, ManifestError::Corrupt { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn round_trip() {
    let (_dir, path) = dir();
    let mut m = sample();
    m.save(&path).unwrap();
    assert!(m.updated_unix >= m.created_unix);
    let loaded = Manifest::load(&path).unwrap().unwrap();
    assert_eq!(loaded, m);
    assert!(!Manifest::tmp_path_for(&path).exists());

    // Human readable: pretty printed, one field per line, ends in newline.
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\n"));
    assert!(text.ends_with("}\n"));
    assert!(text.contains("\"format\": \"ftpseg-manifest\""));
    assert!(text.contains("\"version\": 2"));

    let mut s = Manifest::new(URL, None, None, vec![]).unwrap();
    s.streamed = Some(12345);
    s.save(&path).unwrap();
    assert_eq!(Manifest::load(&path).unwrap().unwrap(), s);
}

#[test]
fn missing_file_is_none() {
    let (_dir, path) = dir();
    assert!(Manifest::load(&path).unwrap().is_none());
}

#[test]
fn save_replaces_atomically() {
    let (_dir, path) = dir();
    let mut m = sample();
    m.save(&path).unwrap();
    m.ranges[0].done = 400;
    m.ranges[2].done = 1000;
    m.save(&path).unwrap();
    let loaded = Manifest::load(&path).unwrap().unwrap();
    assert_eq!(loaded.ranges[0].done, 400);
    assert_eq!(loaded, m);
    assert!(!Manifest::tmp_path_for(&path).exists());

    // Many saves in a row: never a partial file in between.
    for done in 400..=420 {
        m.ranges[1].done = m.ranges[1].end;
        m.ranges[0].done = done.min(m.ranges[0].end);
        m.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
    }
}

#[test]
fn failed_save_keeps_old_manifest() {
    let (_dir, path) = dir();
    let mut old = sample();
    old.save(&path).unwrap();
    let before = fs::read(&path).unwrap();

    // The .tmp cannot be created: it is a folder.
    let tmp = Manifest::tmp_path_for(&path);
    fs::create_dir(&tmp).unwrap();
    let mut new = old.clone();
    new.ranges[0].done = 399;
    let updated = new.updated_unix;
    let err = new.save(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::Io {
                op: IoOp::Write,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("out.iso.ftpseg"), "{err}");
    assert_eq!(new.updated_unix, updated);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(Manifest::load(&path).unwrap().unwrap(), old);

    // An invalid manifest is refused before anything is written.
    fs::remove_dir(&tmp).unwrap();
    let mut bad = old.clone();
    bad.ranges[1].start = 401;
    let err = bad.save(&path).unwrap_err();
    assert!(matches!(err, ManifestError::RefusedSave { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(!tmp.exists());
}

#[test]
fn leftover_tmp_is_ignored_and_cleaned() {
    let (_dir, path) = dir();
    let mut m = sample();
    m.save(&path).unwrap();
    // A crash between writing the .tmp and renaming it.
    let tmp = Manifest::tmp_path_for(&path);
    fs::write(&tmp, b"{\"format\": \"ftpseg-man").unwrap();
    assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
    // The next save overwrites it.
    m.save(&path).unwrap();
    assert!(!tmp.exists());
    assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
    // Only a .tmp and no manifest: nothing to resume.
    fs::remove_file(&path).unwrap();
    fs::write(&tmp, b"garbage").unwrap();
    assert!(Manifest::load(&path).unwrap().is_none());
    Manifest::remove(&path).unwrap();
    assert!(!tmp.exists());
}

#[test]
fn remove_works_and_tolerates_missing() {
    let (_dir, path) = dir();
    Manifest::remove(&path).unwrap();
    let mut m = sample();
    m.save(&path).unwrap();
    fs::write(Manifest::tmp_path_for(&path), b"x").unwrap();
    Manifest::remove(&path).unwrap();
    assert!(!path.exists());
    assert!(!Manifest::tmp_path_for(&path).exists());
    assert!(Manifest::load(&path).unwrap().is_none());
    Manifest::remove(&path).unwrap();
}

#[test]
fn relative_path_save() {
    // A bare file name syncs the current folder; must not fail on "".
    let (_dir, path) = dir();
    assert!(sync_folder_of(Path::new("x.ftpseg")).is_ok());
    assert!(sync_folder_of(&path).is_ok());
}

#[test]
fn empty_file() {
    let err = load_text(b"").unwrap_err();
    assert!(matches!(err, ManifestError::Empty { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("out.iso.ftpseg"), "{msg}");
    assert!(msg.contains("out.iso.part"), "{msg}");
    assert!(msg.contains("--restart"), "{msg}");
    let err = load_text(b"  \n\t\n").unwrap_err();
    assert!(matches!(err, ManifestError::Empty { .. }), "{err}");
}

#[test]
fn truncated_file() {
    let text = serde_json::to_string_pretty(&sample()).unwrap();
    for cut in [1, 10, text.len() / 2, text.len() - 1] {
        let err = load_text(&text.as_bytes()[..cut]).unwrap_err();
        assert!(
            matches!(err, ManifestError::Truncated { .. }),
            "cut {cut}: {err}"
        );
        assert!(err.to_string().contains("truncated"));
    }
}

#[test]
fn invalid_json() {
    let err = load_text(b"{\n  \"format\": \"ftpseg-manifest\",\n  oops\n}").unwrap_err();
    match &err {
        ManifestError::Syntax { line, column, .. } => {
            assert_eq!(*line, 3);
            assert!(*column > 0);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("is not valid JSON (line 3, column"), "{msg}");
    assert!(!msg.contains(" at line "), "{msg}");
    assert!(msg.contains("--restart"), "{msg}");
    assert!(!msg.contains('\n'));

    // Trailing garbage, e.g. two manifests glued together.
    let mut text = serde_json::to_vec(&sample()).unwrap();
    text.extend_from_slice(b"}");
    let err = load_text(&text).unwrap_err();
    assert!(matches!(err, ManifestError::Syntax { .. }), "{err}");

    let err = load_text(b"\xff\xfe binary").unwrap_err();
    assert!(matches!(err, ManifestError::Syntax { .. }), "{err}");
}

#[test]
fn not_an_object() {
    for text in [&b"[1, 2]"[..], b"\"x\"", b"42", b"null", b"true"] {
        let err = load_text(text).unwrap_err();
        assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
    }
}

#[test]
fn duplicate_keys_rejected() {
    let text = serde_json::to_string(&sample())
        .unwrap()
        .replacen('{', "{\"size\": 5, ", 1);
    let err = load_text(text.as_bytes()).unwrap_err();
    assert!(matches!(err, ManifestError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("duplicate field"), "{err}");
    let text = serde_json::to_string(&sample())
        .unwrap()
        .replacen('{', "{\"format\": \"x\", ", 1);
    let err = load_text(text.as_bytes()).unwrap_err();
    assert!(matches!(err, ManifestError::Schema { .. }), "{err}");
}

#[test]
fn wrong_format() {
    let mut v = sample_json();
    v["format"] = "something-else".into();
    let err = load_value(&v).unwrap_err();
    assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
    assert!(err.to_string().contains("\"something-else\""), "{err}");

    v.as_object_mut().unwrap().remove("format");
    let err = load_value(&v).unwrap_err();
    assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    v["format"] = 7.into();
    let err = load_value(&v).unwrap_err();
    assert!(matches!(err, ManifestError::WrongFormat { .. }), "{err}");
}

#[test]
fn forget_splits_ranges_and_keeps_other_done_bytes() {
    let mut m = Manifest::new(
        "ftp://h/f",
        Some(10_000),
        None,
        vec![
            RangeRecord {
                start: 0,
                end: 6000,
                done: 6000,
            },
            RangeRecord {
                start: 6000,
                end: 10_000,
                done: 9000,
            },
        ],
    )
    .unwrap();
    m.enable_chunks(1024);
    m.chunks[1] = Some("ab".repeat(32));
    m.chunks[2] = Some("cd".repeat(32));
    let before = m.bytes_done();
    m.forget(2048, 3072);
    m.validate().unwrap();
    assert_eq!(m.bytes_done(), before - 1024);
    assert_eq!(m.chunks[2], None, "the forgotten chunk's hash is dropped");
    assert!(m.chunks[1].is_some(), "its neighbour keeps its hash");
    // Forgetting across a range boundary, and past `done`.
    m.forget(5000, 9500);
    m.validate().unwrap();
    assert!(m.is_durable(0, 2048) && m.is_durable(3072, 5000));
    assert!(!m.is_durable(5000, 5001) && !m.is_durable(8999, 9000));
}

#[test]
fn version_1_is_read_and_upgraded() {
    let mut v = sample_json();
    v["version"] = 1.into();
    let m = load_value(&v).unwrap().unwrap();
    assert_eq!(m.version, VERSION);
    assert_eq!(m.chunk_size, 0);
    assert!(m.chunks.is_empty());
}

#[test]
fn chunk_hashes_must_be_well_formed_and_durable() {
    let mut m = Manifest::new(
        "ftp://h/f",
        Some(3000),
        None,
        vec![RangeRecord {
            start: 0,
            end: 3000,
            done: 2048,
        }],
    )
    .unwrap();
    m.enable_chunks(1024);
    assert_eq!(m.chunks.len(), 3);
    let h = "ab".repeat(32);
    m.chunks[1] = Some(h.clone());
    m.validate().unwrap();
    m.chunks[2] = Some(h.clone());
    assert!(m.validate().is_err(), "chunk 2 is not durable");
    m.chunks[2] = None;
    m.chunks[0] = Some("xyz".into());
    assert!(m.validate().is_err(), "malformed hash");
    m.chunks[0] = None;
    m.chunks.pop();
    assert!(m.validate().is_err(), "wrong entry count");
    m.enable_chunks(1000);
    assert!(m.validate().is_err(), "not a power of two");
}

#[test]
fn wrong_version() {
    let mut v = sample_json();
    v["version"] = 3.into();
    // A newer format may have other fields: still "other version".
    v.as_object_mut().unwrap().remove("ranges");
    let err = load_value(&v).unwrap_err();
    match &err {
        ManifestError::UnsupportedVersion { found, .. } => assert_eq!(found, "3"),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("version 3"), "{msg}");
    assert!(msg.contains("out.iso.part"), "{msg}");

    for bad in [
        serde_json::Value::from(0),
        "1".into(),
        1.5.into(),
        (-1).into(),
    ] {
        let mut v = sample_json();
        v["version"] = bad;
        let err = load_value(&v).unwrap_err();
        assert!(
            matches!(err, ManifestError::UnsupportedVersion { .. }),
            "{err}"
        );
    }
    let mut v = sample_json();
    v.as_object_mut().unwrap().remove("version");
    let err = load_value(&v).unwrap_err();
    assert!(
        matches!(err, ManifestError::UnsupportedVersion { .. }),
        "{err}"
    );
}

#[test]
fn malformed_fields() {
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("size", "1000".into()),
        ("size", (-1).into()),
        ("created_unix", serde_json::Value::Null),
        ("ranges", serde_json::json!([{"start": 0, "end": 1000}])),
        ("ranges", serde_json::json!({"start": 0})),
        ("url", 5.into()),
    ];
    for (field, value) in cases {
        let mut v = sample_json();
        v[field] = value;
        let err = load_value(&v).unwrap_err();
        assert!(
            matches!(err, ManifestError::Schema { .. }),
            "{field}: {err}"
        );
    }
    // Numbers above u64::MAX are rejected, not wrapped.
    let text = serde_json::to_string_pretty(&sample())
        .unwrap()
        .replace("\"size\": 1000", "\"size\": 18446744073709551616");
    let err = load_text(text.as_bytes()).unwrap_err();
    assert!(matches!(err, ManifestError::Schema { .. }), "{err}");
    // A missing field.
    let mut v = sample_json();
    v.as_object_mut().unwrap().remove("updated_unix");
    let err = load_value(&v).unwrap_err();
    assert!(err.to_string().contains("updated_unix"), "{err}");
}

#[test]
fn unknown_fields_ignored_and_optional_fields() {
    let mut v = sample_json();
    v["future_field"] = serde_json::json!({"a": [1, 2, 3]});
    v["ranges"][0]["blake3"] = "abc".into();
    assert_eq!(load_value(&v).unwrap().unwrap().ranges, sample().ranges);

    // `mdtm` and `streamed` may be absent (read as null).
    let mut v = sample_json();
    v.as_object_mut().unwrap().remove("mdtm");
    v.as_object_mut().unwrap().remove("streamed");
    let m = load_value(&v).unwrap().unwrap();
    assert_eq!(m.mdtm, None);
    assert_eq!(m.streamed, None);
}

#[test]
fn too_large_is_rejected() {
    let (_dir, path) = dir();
    let file = File::create(&path).unwrap();
    file.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
    let err = Manifest::load(&path).unwrap_err();
    assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("too large"));
}

#[test]
fn folder_instead_of_file() {
    let (_dir, path) = dir();
    fs::create_dir(&path).unwrap();
    let err = Manifest::load(&path).unwrap_err();
    assert!(
        matches!(err, ManifestError::Io { op: IoOp::Read, .. }),
        "{err}"
    );
}

#[test]
fn gaps_and_overlaps() {
    let mut m = sample();
    m.ranges[1].start = 401;
    m.ranges[1].done = 800;
    assert!(invalid_reason(&m).contains("gap"));

    let mut m = sample();
    m.ranges[1].start = 399;
    assert!(invalid_reason(&m).contains("overlaps"));

    let mut m = sample();
    m.ranges[0].start = 1;
    m.ranges[0].done = 100;
    assert!(invalid_reason(&m).contains("not 0"));

    let mut m = sample();
    m.ranges[2].end = 999;
    assert!(invalid_reason(&m).contains("not at the size"));

    let mut m = sample();
    m.ranges[2].end = 1001;
    assert!(invalid_reason(&m).contains("past the size"));

    let mut m = sample();
    m.ranges[2].end = 700;
    assert!(invalid_reason(&m).contains("ends before it starts"));

    let mut m = sample();
    m.ranges.swap(0, 1);
    assert!(m.validate().is_err());

    let mut m = sample();
    m.ranges.pop();
    assert!(invalid_reason(&m).contains("not at the size"));

    // Zero-length ranges are refused.
    let r = Manifest::new(URL, Some(10), None, ranges(&[(0, 0, 0), (0, 10, 0)]));
    assert!(matches!(r, Err(ManifestError::Invalid { .. })));
    // size 0 means no ranges.
    assert!(Manifest::new(URL, Some(0), None, ranges(&[(0, 0, 0)])).is_err());
    assert!(Manifest::new(URL, Some(10), None, vec![]).is_err());

    // The same problems are caught on load.
    let mut v = sample_json();
    v["ranges"][1]["start"] = 401.into();
    let err = load_value(&v).unwrap_err();
    assert!(matches!(err, ManifestError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("gap"), "{err}");
}

#[test]
fn done_out_of_range() {
    let mut m = sample();
    m.ranges[1].done = 399;
    assert!(invalid_reason(&m).contains("outside"));
    let mut m = sample();
    m.ranges[1].done = 801;
    assert!(invalid_reason(&m).contains("outside"));
    let mut m = sample();
    m.ranges[2].done = u64::MAX;
    assert!(invalid_reason(&m).contains("outside"));
}

#[test]
fn size_none_rules() {
    let r = Manifest::new(URL, None, None, vec![RangeRecord::new(0, 10)]);
    assert!(matches!(r, Err(ManifestError::Invalid { .. })));

    let mut m = Manifest::new(URL, None, None, vec![]).unwrap();
    m.streamed = None;
    assert!(invalid_reason(&m).contains("streamed is missing"));

    let mut m = sample();
    m.streamed = Some(5);
    assert!(invalid_reason(&m).contains("streamed is set"));
}

#[test]
fn other_invariants() {
    let mut m = sample();
    m.format = "x".to_owned();
    assert!(invalid_reason(&m).contains("format"));
    let mut m = sample();
    m.version = 1;
    assert!(invalid_reason(&m).contains("version"));
    assert!(matches!(
        Manifest::new("", Some(0), None, vec![]),
        Err(ManifestError::Invalid { .. })
    ));
}

#[test]
fn huge_offsets_do_not_overflow() {
    let max = u64::MAX;
    let m = Manifest::new(
        URL,
        Some(max),
        None,
        ranges(&[(0, max / 2, max / 2), (max / 2, max, max)]),
    )
    .unwrap();
    assert!(m.is_complete());
    assert_eq!(m.bytes_done(), max);
    let (_dir, path) = dir();
    let mut m = m;
    m.save(&path).unwrap();
    assert_eq!(Manifest::load(&path).unwrap().unwrap(), m);
}

#[test]
fn check_same_remote_cases() {
    let m = sample();
    let mdtm = Some("20240102030405");
    assert_eq!(m.check_same_remote(URL, Some(1000), mdtm), Ok(()));
    // None on either side: cannot compare, accepted.
    assert_eq!(m.check_same_remote(URL, Some(1000), None), Ok(()));
    let mut no_mdtm = m.clone();
    no_mdtm.mdtm = None;
    assert_eq!(no_mdtm.check_same_remote(URL, Some(1000), mdtm), Ok(()));
    assert_eq!(no_mdtm.check_same_remote(URL, Some(1000), None), Ok(()));

    let err = m.check_same_remote(URL, Some(2000), mdtm).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the remote file changed since the last run (size was 1000, now 2000)"
    );
    let err = m.check_same_remote(URL, None, mdtm).unwrap_err();
    assert_eq!(
        err,
        Mismatch::Size {
            old: Some(1000),
            new: None
        }
    );
    assert!(err.to_string().contains("size was 1000, now unknown"));

    let err = m
        .check_same_remote(URL, Some(1000), Some("20250101000000"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the remote file changed since the last run (modification time was 20240102030405, now 20250101000000)"
    );

    let other = "ftp://user@example.com/pub/b.iso";
    let err = m.check_same_remote(other, Some(1000), mdtm).unwrap_err();
    assert!(matches!(err, Mismatch::Url { .. }));
    assert!(err.to_string().contains("b.iso"));
    // URL is checked first, then size, then mdtm.
    let err = m.check_same_remote(other, Some(1), Some("x")).unwrap_err();
    assert!(matches!(err, Mismatch::Url { .. }));
    let err = m.check_same_remote(URL, Some(1), Some("x")).unwrap_err();
    assert!(matches!(err, Mismatch::Size { .. }));

    let s = Manifest::new(URL, None, None, vec![]).unwrap();
    assert_eq!(s.check_same_remote(URL, None, None), Ok(()));
    let err = s.check_same_remote(URL, Some(5), None).unwrap_err();
    assert!(err.to_string().contains("size was unknown, now 5"));
}

#[test]
fn messages_are_one_line_and_name_the_path() {
    let path = PathBuf::from("/data/out.iso.ftpseg");
    let errors = vec![
        ManifestError::Io {
            path: path.clone(),
            op: IoOp::Read,
            source: io::Error::other("boom"),
        },
        ManifestError::Io {
            path: path.clone(),
            op: IoOp::Rename,
            source: io::Error::other("boom"),
        },
        ManifestError::TooLarge {
            path: path.clone(),
            size: 1 << 30,
        },
        ManifestError::Empty { path: path.clone() },
        ManifestError::Truncated {
            path: path.clone(),
            line: 3,
            column: 7,
        },
        Manifest::parse(&path, b"{\n\n  x").unwrap_err(),
        Manifest::parse(&path, b"{\"format\": \"a\nb\"}").unwrap_err(),
        ManifestError::UnsupportedVersion {
            path: path.clone(),
            found: "2".to_owned(),
        },
        ManifestError::Corrupt {
            path: path.clone(),
            reason: "gap".to_owned(),
        },
        ManifestError::RefusedSave {
            path: path.clone(),
            reason: "gap".to_owned(),
        },
    ];
    for err in errors {
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("/data/out.iso.ftpseg"), "{msg}");
    }
    let msg = ManifestError::Syntax {
        path: path.clone(),
        line: 3,
        column: 7,
        message: "expected value".to_owned(),
    }
    .to_string();
    assert_eq!(
        msg,
        "manifest /data/out.iso.ftpseg is not valid JSON (line 3, column 7: expected value): the partial download /data/out.iso.part was kept; run again with --restart to start over"
    );
    // A manifest path without the usual suffix still gives a sensible hint.
    assert!(restart_advice(Path::new("weird")).contains("<output>.part"));
}

// ---- property tests ----

/// No regression files are written next to the sources.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arb_len() -> impl Strategy<Value = u64> {
    prop_oneof![1..=16u64, 1..=u64::MAX / 64]
}

/// A valid range list, with its size.
fn arb_ranges() -> impl Strategy<Value = (u64, Vec<RangeRecord>)> {
    prop::collection::vec((arb_len(), any::<u64>()), 0..12).prop_map(|parts| {
        let mut start = 0u64;
        let mut out = Vec::with_capacity(parts.len());
        for (len, pick) in parts {
            let end = start + len;
            let done = start + pick % (len + 1);
            out.push(RangeRecord { start, end, done });
            start = end;
        }
        (start, out)
    })
}

fn arb_url() -> impl Strategy<Value = String> {
    "ftp://([a-z]{1,8}@)?[a-z0-9.-]{1,12}(:[0-9]{1,5})?/[ -~]{0,24}"
}

fn arb_mdtm() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[0-9]{14}(\\.[0-9]{1,3})?|\\PC{0,12}")
}

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    (
        arb_url(),
        arb_mdtm(),
        arb_ranges(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(url, mdtm, (size, ranges), streamed, n, created)| {
            let mut m = if streamed {
                let mut m = Manifest::new(&url, None, mdtm, vec![]).unwrap();
                m.streamed = Some(n);
                m
            } else {
                Manifest::new(&url, Some(size), mdtm, ranges).unwrap()
            };
            m.created_unix = created;
            m
        })
}

#[derive(Clone, Debug)]
enum Field {
    Start,
    End,
    Done,
}

#[derive(Clone, Debug)]
enum Change {
    Set(u64),
    Add(u64),
    Sub(u64),
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<u64>().prop_map(Change::Set),
        (0..3u64).prop_map(Change::Add),
        (0..3u64).prop_map(Change::Sub),
        Just(Change::Set(0)),
        Just(Change::Set(u64::MAX)),
    ]
}

fn apply(v: u64, c: &Change) -> u64 {
    match *c {
        Change::Set(n) => n,
        Change::Add(n) => v.wrapping_add(n),
        Change::Sub(n) => v.wrapping_sub(n),
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn prop_save_load_round_trip(m in arb_manifest()) {
        let (_dir, path) = dir();
        let mut m = m;
        m.save(&path).unwrap();
        let loaded = Manifest::load(&path).unwrap().unwrap();
        prop_assert_eq!(&loaded, &m);
        prop_assert!(!Manifest::tmp_path_for(&path).exists());
        // Saving what was loaded gives the same thing again.
        let mut again = loaded.clone();
        again.save(&path).unwrap();
        let reloaded = Manifest::load(&path).unwrap().unwrap();
        prop_assert_eq!(&reloaded, &again);
        prop_assert_eq!(reloaded.ranges, m.ranges);
    }

    #[test]
    fn prop_load_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        let _ = load_text(&bytes);
    }

    #[test]
    fn prop_load_mangled_json_never_panics(
        m in arb_manifest(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let text = serde_json::to_vec_pretty(&m).unwrap();
        // Truncated anywhere before the closing brace: always an error.
        let cut = cut.index(text.len());
        prop_assert!(load_text(&text[..cut]).is_err());
        // One byte replaced: loads or fails, never panics; if it loads,
        // it is valid.
        let mut mangled = text.clone();
        mangled[flip.index(text.len())] = byte;
        if let Ok(Some(loaded)) = load_text(&mangled) {
            prop_assert!(loaded.validate().is_ok());
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn prop_arbitrary_text_parse_never_panics(s in "\\PC{0,200}") {
        let _ = Manifest::parse(Path::new("x.ftpseg"), s.as_bytes());
    }

    #[test]
    fn prop_mutated_ranges_valid_or_rejected(
        (size, ranges) in arb_ranges(),
        index in any::<prop::sample::Index>(),
        field in prop_oneof![Just(Field::Start), Just(Field::End), Just(Field::Done)],
        change in arb_change(),
        mutate_size in any::<bool>(),
    ) {
        let mut m = Manifest::new(URL, Some(size), None, ranges).unwrap();
        if mutate_size || m.ranges.is_empty() {
            m.size = Some(apply(size, &change));
        } else {
            let i = index.index(m.ranges.len());
            let r = &mut m.ranges[i];
            match field {
                Field::Start => r.start = apply(r.start, &change),
                Field::End => r.end = apply(r.end, &change),
                Field::Done => r.done = apply(r.done, &change),
            }
        }
        // Never panics, whatever the outcome.
        let done = m.bytes_done();
        let _ = m.is_complete();
        for r in &m.ranges {
            let _ = (r.remaining(), r.is_complete(), r.durable());
        }
        match m.validate() {
            Ok(()) => {
                // Still valid: the invariants really hold.
                let size = m.size.unwrap();
                prop_assert!(done <= size);
                let mut at = 0;
                for r in &m.ranges {
                    prop_assert_eq!(r.start, at);
                    prop_assert!(r.start < r.end);
                    prop_assert!(r.start <= r.done && r.done <= r.end);
                    at = r.end;
                }
                prop_assert_eq!(at, size);
                let remaining: u64 = m.ranges.iter().map(RangeRecord::remaining).sum();
                prop_assert_eq!(done + remaining, size);
            }
            Err(e) => {
                prop_assert!(matches!(e, ManifestError::Invalid { .. }), "{}", e);
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn prop_check_same_remote_reflexive(m in arb_manifest()) {
        prop_assert_eq!(
            m.check_same_remote(&m.url, m.size, m.mdtm.as_deref()),
            Ok(())
        );
    }
}
