//! Unit tests of the batch's pure parts: input lines, folder URLs, MDTM times, the skip
//! decision, the exit code.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::inputs::{InputLine, parse_input};
use super::report::batch_exit_code;
use super::run::{Local, local_state, mdtm_to_time};
use crate::error::exit;

#[test]
fn input_files() {
    let text = "# isos\n\nftp://h/a.iso\n  ftp://h/b.iso   my b.iso \nnot a url\n";
    let lines = parse_input(text);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        InputLine {
            line: 3,
            url: "ftp://h/a.iso".into(),
            output: None,
            mirrors: Vec::new(),
        }
    );
    assert_eq!(lines[1].output.as_deref(), Some("my b.iso"));
    assert_eq!(lines[2].line, 5);
}

#[test]
fn mdtm_times() {
    let t = mdtm_to_time("20240102030405").unwrap();
    assert_eq!(
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
        1_704_164_645
    );
    assert_eq!(mdtm_to_time("19700101000000"), Some(SystemTime::UNIX_EPOCH));
    assert!(mdtm_to_time("20241301000000").is_none());
    assert!(mdtm_to_time("2024").is_none());
    assert!(mdtm_to_time("2024010203040x").is_none());
}

#[test]
fn skip_decisions() {
    let t = mdtm_to_time("20240102030405").unwrap();
    assert_eq!(local_state(None, Some(1), Some(t)), Local::Fetch);
    assert_eq!(local_state(Some((5, t)), Some(5), Some(t)), Local::Complete);
    assert_eq!(
        local_state(Some((5, t + Duration::from_secs(1))), Some(5), Some(t)),
        Local::Different
    );
    assert_eq!(
        local_state(Some((4, t)), Some(5), Some(t)),
        Local::Different
    );
    assert_eq!(
        local_state(Some((5, t)), Some(5), None),
        Local::SameSizeNoTime
    );
    assert_eq!(local_state(Some((5, t)), None, None), Local::Different);
}

#[test]
fn exit_codes_of_batches() {
    assert_eq!(batch_exit_code(&[]), 0);
    assert_eq!(batch_exit_code(&[6, 4]), 6);
    assert_eq!(batch_exit_code(&[6, exit::CHECKSUM]), exit::CHECKSUM);
    assert_eq!(batch_exit_code(&[exit::CHECKSUM, 130]), 130);
}

proptest! {
    #[test]
    fn input_lines_keep_url_and_name(url in "ftp://[a-z]{1,8}/[a-z0-9%._-]{1,20}", name in "[a-z0-9._-][a-z0-9 ._-]{0,15}") {
        let name = name.trim().to_owned();
        let text = format!("{url}\t{name}\n# {url}\n");
        let lines = parse_input(&text);
        prop_assert_eq!(lines.len(), 1);
        prop_assert_eq!(&lines[0].url, &url);
        prop_assert_eq!(lines[0].output.as_deref(), (!name.is_empty()).then_some(name.as_str()));
    }

    #[test]
    fn mdtm_is_monotonic(a in 0u64..4_000_000_000, b in 0u64..4_000_000_000) {
        // Format two times and compare: later text, later time.
        let fmt = |s: u64| {
            let days = (s / 86400) as i64;
            // civil from days (inverse of the formula under test).
            let z = days + 719468;
            let era = z.div_euclid(146097);
            let doe = z - era * 146097;
            let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
            let y = yoe + era * 400;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = if m <= 2 { y + 1 } else { y };
            let r = s % 86400;
            format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}", r / 3600, r / 60 % 60, r % 60)
        };
        let ta = mdtm_to_time(&fmt(a)).unwrap();
        let tb = mdtm_to_time(&fmt(b)).unwrap();
        prop_assert_eq!(ta.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), a);
        prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
    }
}

#[test]
fn tab_separated_urls_are_one_file_s_mirrors() {
    let lines = parse_input(
        "ftp://a/x.iso\tftp://b/pub/x.iso\t ftp://c/x.iso\n\
         ftp://a/y.iso\tftp://b/y.iso\tmy y.iso\n\
         ftp://a/z.iso out z.iso\n",
    );
    assert_eq!(lines[0].url, "ftp://a/x.iso");
    assert_eq!(lines[0].mirrors, ["ftp://b/pub/x.iso", "ftp://c/x.iso"]);
    assert_eq!(lines[0].output, None);
    assert_eq!(lines[1].mirrors, ["ftp://b/y.iso"]);
    assert_eq!(lines[1].output.as_deref(), Some("my y.iso"));
    assert!(lines[2].mirrors.is_empty());
    assert_eq!(lines[2].output.as_deref(), Some("out z.iso"));
}
