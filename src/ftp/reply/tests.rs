use super::*;
use proptest::prelude::*;

const VSFTPD_FEAT: &[u8] = b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n211 End\r\n";
const PROFTPD_FEAT: &[u8] = b"211-Features:\r\n CLNT\r\n CSID\r\n EPRT\r\n EPSV\r\n HOST\r\n LANG C.UTF-8*\r\n MDTM\r\n MFF modify;UNIX.group;UNIX.mode;\r\n MFMT\r\n MLST modify*;perm*;size*;type*;unique*;UNIX.group*;UNIX.groupname*;UNIX.mode*;UNIX.owner*;UNIX.ownername*;\r\n RANG STREAM\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n";
const PURE_FTPD_FEAT: &[u8] = b"211-Extensions supported:\r\n UTF8\r\n EPRT\r\n IDLE\r\n MDTM\r\n SIZE\r\n MFMT\r\n REST STREAM\r\n MLST type*;size*;sizd*;modify*;UNIX.mode*;UNIX.uid*;UNIX.gid*;unique*;\r\n MLSD\r\n PRET\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n TVFS\r\n ESTA\r\n PASV\r\n EPSV\r\n ESTP\r\n211 End.\r\n";
const PYFTPDLIB_FEAT: &[u8] = b"211-Features supported:\r\n EPRT\r\n EPSV\r\n MDTM\r\n MFMT\r\n MLST type*;perm*;size*;modify*;unique*;unix.mode;unix.uid;unix.gid;\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End FEAT.\r\n";
const LIBUNFTP_FEAT: &[u8] = b"211-Extensions supported:\r\n EPSV\r\n MDTM\r\n MLSD\r\n MLST\r\n REST STREAM\r\n SITE MD5\r\n SIZE\r\n UTF8\r\n211 END\r\n";

fn text_of(err: ReplyError) -> String {
    err.to_string()
}

// ---- reply_code ----------------------------------------------------------

#[test]
fn reply_code_reads_the_leading_code() {
    assert_eq!(reply_code(b"213 1234\r\n"), Some(213));
    assert_eq!(reply_code(b"211-Features:\r\n"), Some(211));
    assert_eq!(reply_code(b"550"), Some(550));
    assert_eq!(reply_code(b"100 x"), Some(100));
    assert_eq!(reply_code(b"599 x"), Some(599));
}

#[test]
fn reply_code_refuses_non_codes() {
    for raw in [
        &b""[..],
        b"21",
        b"2130 x",
        b"099 x",
        b"600 x",
        b"abc",
        b" 213 x",
        b"21x",
        b"\xff\xfe\xfd",
    ] {
        assert_eq!(reply_code(raw), None, "{raw:?}");
    }
}

// ---- reply_text ----------------------------------------------------------

#[test]
fn reply_text_single_line() {
    assert_eq!(
        reply_text(b"550 Could not get file size.\r\n"),
        "550 Could not get file size."
    );
}

#[test]
fn reply_text_joins_multi_line_replies() {
    assert_eq!(
        reply_text(VSFTPD_FEAT),
        "211-Features: / EPRT / EPSV / MDTM / PASV / REST STREAM / SIZE / TVFS / End"
    );
    assert_eq!(
        reply_text(b"150-Accepted data connection\r\n150 9764.7 kbytes to download\r\n"),
        "150-Accepted data connection / 9764.7 kbytes to download"
    );
}

#[test]
fn reply_text_keeps_prefixes_of_other_codes_on_later_lines() {
    assert_eq!(reply_text(b"230-Hi\r\n150 x\r\n230\r\n"), "230-Hi / 150 x");
}

#[test]
fn reply_text_removes_control_characters() {
    assert_eq!(
        reply_text(b"550 a\x00b\x1b[31mc\td\x7f\r\n"),
        "550 ab[31mc d"
    );
    assert_eq!(reply_text(b"550 \xc2\x85x"), "550 x");
}

#[test]
fn reply_text_replaces_invalid_utf8() {
    assert_eq!(reply_text(b"550 caf\xe9\r\n"), "550 caf\u{fffd}");
}

#[test]
fn reply_text_of_empty_or_blank_reply_is_empty() {
    assert_eq!(reply_text(b""), "");
    assert_eq!(reply_text(b"\r\n \r\n"), "");
}

#[test]
fn reply_text_is_cut_with_an_ellipsis() {
    let long = format!("550 {}", "x".repeat(1000));
    let text = reply_text(long.as_bytes());
    assert_eq!(text.chars().count(), MAX_REPLY_TEXT);
    assert!(text.ends_with('…'));
    assert!(text.starts_with("550 xxx"));
    let exact = format!("550 {}", "y".repeat(MAX_REPLY_TEXT - 4));
    assert_eq!(reply_text(exact.as_bytes()), exact);
}

// ---- parse_size ----------------------------------------------------------

#[test]
fn size_plain() {
    assert_eq!(parse_size(b"213 1073741824\r\n"), Ok(1_073_741_824));
    assert_eq!(parse_size(b"213 0\r\n"), Ok(0));
    assert_eq!(parse_size(b"213 1234"), Ok(1234));
    assert_eq!(parse_size(b"213 1234  \r\n"), Ok(1234));
    assert_eq!(parse_size(b"213 000042\r\n"), Ok(42));
}

#[test]
fn size_with_rubbish_before_the_number() {
    assert_eq!(parse_size(b"213 File size: 1234\r\n"), Ok(1234));
    assert_eq!(parse_size(b"213 size=+77\r\n"), Ok(77));
}

#[test]
fn size_limit_is_inclusive() {
    let at_limit = format!("213 {MAX_SIZE}\r\n");
    assert_eq!(parse_size(at_limit.as_bytes()), Ok(MAX_SIZE));
}

#[test]
fn size_negative() {
    let err = parse_size(b"213 -5\r\n").unwrap_err();
    assert_eq!(
        err,
        ReplyError::SizeNegative {
            text: "213 -5".to_owned()
        }
    );
    assert_eq!(
        text_of(err),
        "negative file size in the reply to SIZE: 213 -5"
    );
}

#[test]
fn size_overflow() {
    let err = parse_size(b"213 99999999999999999999999\r\n").unwrap_err();
    assert!(matches!(err, ReplyError::SizeOverflow { .. }), "{err:?}");
    assert!(text_of(err).contains("99999999999999999999999"));
}

#[test]
fn size_too_large() {
    let raw = format!("213 {}\r\n", MAX_SIZE + 1);
    let err = parse_size(raw.as_bytes()).unwrap_err();
    assert!(
        matches!(err, ReplyError::SizeTooLarge { size, .. } if size == MAX_SIZE + 1),
        "{err:?}"
    );
    assert_eq!(
        parse_size(b"213 18446744073709551615"),
        Err(ReplyError::SizeTooLarge {
            size: u64::MAX,
            text: "213 18446744073709551615".to_owned()
        })
    );
}

#[test]
fn size_missing() {
    for raw in [
        &b"213 \r\n"[..],
        b"213",
        b"213 unknown\r\n",
        b"213 12 bytes\r\n",
    ] {
        let err = parse_size(raw).unwrap_err();
        assert!(
            matches!(err, ReplyError::SizeMissing { .. }),
            "{raw:?}: {err:?}"
        );
    }
    assert_eq!(
        text_of(parse_size(b"213 ").unwrap_err()),
        "no file size in the reply to SIZE: 213"
    );
}

#[test]
fn size_refuses_other_replies() {
    let err = parse_size(b"550 Could not get file size.\r\n").unwrap_err();
    assert_eq!(
        err,
        ReplyError::UnexpectedReply {
            command: "SIZE",
            expected: 213,
            text: "550 Could not get file size.".to_owned()
        }
    );
    assert_eq!(
        text_of(err),
        "unexpected reply to SIZE (wanted 213): 550 Could not get file size."
    );
    assert_eq!(
        text_of(parse_size(b"").unwrap_err()),
        "unexpected reply to SIZE (wanted 213): (empty reply)"
    );
}

// ---- parse_mdtm ----------------------------------------------------------

fn mdtm(raw: &[u8]) -> Result<String, ReplyError> {
    parse_mdtm(raw).map(|Mdtm(time)| time)
}

#[test]
fn mdtm_plain() {
    assert_eq!(mdtm(b"213 20261121150102\r\n").unwrap(), "20261121150102");
    assert_eq!(mdtm(b"213 20261121150102"), Ok("20261121150102".to_owned()));
}

#[test]
fn mdtm_keeps_the_fraction() {
    assert_eq!(
        mdtm(b"213 20251012230103.073\r\n").unwrap(),
        "20251012230103.073"
    );
    assert_eq!(
        mdtm(b"213 20251012230103.5\r\n").unwrap(),
        "20251012230103.5"
    );
}

#[test]
fn mdtm_ignores_text_after_the_time() {
    assert_eq!(
        mdtm(b"213 20261121150102 UTC\r\n").unwrap(),
        "20261121150102"
    );
    assert_eq!(mdtm(b"213  20261121150102\r\n").unwrap(), "20261121150102");
}

#[test]
fn mdtm_y2k_bug_years() {
    // "19" + (2000 - 1900) + "0101000000": 2000-01-01 00:00:00.
    assert_eq!(mdtm(b"213 191000101000000\r\n").unwrap(), "20000101000000");
    assert_eq!(
        mdtm(b"213 191250630120000.25\r\n").unwrap(),
        "20250630120000.25"
    );
    // Exactly 14 digits is a normal time, even in 1910.
    assert_eq!(mdtm(b"213 19100101000000\r\n").unwrap(), "19100101000000");
    // 15 digits without the "191" mark is not a time.
    assert!(matches!(
        mdtm(b"213 200000101000000\r\n"),
        Err(ReplyError::MdtmMalformed { .. })
    ));
}

#[test]
fn mdtm_accepts_field_limits() {
    assert_eq!(mdtm(b"213 20241231235960").unwrap(), "20241231235960");
    assert_eq!(mdtm(b"213 00000101000000").unwrap(), "00000101000000");
}

#[test]
fn mdtm_refuses_out_of_range_fields() {
    for (raw, field, value) in [
        (&b"213 20241301000000"[..], "month", 13),
        (b"213 20240001000000", "month", 0),
        (b"213 20240100000000", "day", 0),
        (b"213 20240132000000", "day", 32),
        (b"213 20240101240000", "hour", 24),
        (b"213 20240101006000", "minute", 60),
        (b"213 20240101000061", "second", 61),
        (b"213 191001301000000", "month", 13),
    ] {
        let err = parse_mdtm(raw).unwrap_err();
        assert!(
            matches!(&err, ReplyError::MdtmOutOfRange { field: f, value: v, .. } if *f == field && *v == value),
            "{raw:?}: {err:?}"
        );
    }
    assert_eq!(
        text_of(parse_mdtm(b"213 20241301000000").unwrap_err()),
        "month 13 is out of range in the reply to MDTM: 213 20241301000000"
    );
}

#[test]
fn mdtm_refuses_malformed_times() {
    for raw in [
        &b"213 "[..],
        b"213",
        b"213 2026112115010",
        b"213 202611211501020",
        b"213 20261121150102.",
        b"213 20261121150102.x",
        b"213 20261121150102.1.2",
        b"213 2026-11-21 15:01:02",
        b"213 +2026112115010",
        b"213 -20261121150102",
        b"213 \xff",
    ] {
        let err = parse_mdtm(raw).unwrap_err();
        assert!(
            matches!(err, ReplyError::MdtmMalformed { .. }),
            "{raw:?}: {err:?}"
        );
    }
    assert_eq!(
        text_of(parse_mdtm(b"213 soon\r\n").unwrap_err()),
        "reply to MDTM is not a YYYYMMDDhhmmss[.fff] timestamp: 213 soon"
    );
}

#[test]
fn mdtm_refuses_other_replies() {
    let err = parse_mdtm(b"550 No such file.\r\n").unwrap_err();
    assert_eq!(
        text_of(err),
        "unexpected reply to MDTM (wanted 213): 550 No such file."
    );
}

// ---- parse_transfer_size -------------------------------------------------

#[test]
fn transfer_size_from_vsftpd_and_proftpd() {
    assert_eq!(
        parse_transfer_size(
            b"150 Opening BINARY mode data connection for big.bin (10000019 bytes).\r\n"
        ),
        Some(10_000_019)
    );
    assert_eq!(
        parse_transfer_size(
            b"150 Opening BINARY mode data connection for big.bin (9999019 bytes)\r\n"
        ),
        Some(9_999_019)
    );
    assert_eq!(
        parse_transfer_size(b"150 Opening BINARY mode data connection for f (2241 bytes)."),
        Some(2241)
    );
}

#[test]
fn transfer_size_takes_the_last_byte_count() {
    assert_eq!(
        parse_transfer_size(b"150 Opening data connection (0.0.0.0,0) (545 bytes)."),
        Some(545)
    );
    assert_eq!(
        parse_transfer_size(b"150 Opening for f (1 bytes).iso (545 bytes)."),
        Some(545)
    );
}

#[test]
fn transfer_size_is_case_insensitive_and_allows_spaces() {
    assert_eq!(parse_transfer_size(b"125 x (7 BYTES)"), Some(7));
    assert_eq!(parse_transfer_size(b"150 x ( 7  Bytes )"), Some(7));
}

#[test]
fn transfer_size_absent() {
    for raw in [
        &b"150-Accepted data connection\r\n150 9764.7 kbytes to download\r\n"[..],
        b"125 Data connection already open. Transfer starting.\r\n",
        b"150 Opening BINARY mode data connection for f.\r\n",
        b"150 x (2241bytes)",
        b"150 x (2241 bytes",
        b"150 x (2241 kbytes)",
        b"150 x (-1 bytes)",
        b"150 x (99999999999999999999999 bytes)",
        b"150 x (",
        b"226 Transfer complete (2241 bytes)",
        b"",
    ] {
        assert_eq!(parse_transfer_size(raw), None, "{raw:?}");
    }
    let above = format!("150 x ({} bytes)", MAX_SIZE + 1);
    assert_eq!(parse_transfer_size(above.as_bytes()), None);
}

// ---- parse_features ------------------------------------------------------

#[test]
fn features_vsftpd() {
    let f = parse_features(VSFTPD_FEAT);
    assert_eq!(
        f,
        Features {
            rest_stream: true,
            size: true,
            mdtm: true,
            epsv: true,
            pasv: true,
            raw: [
                "EPRT",
                "EPSV",
                "MDTM",
                "PASV",
                "REST STREAM",
                "SIZE",
                "TVFS"
            ]
            .map(String::from)
            .to_vec(),
            ..Features::default()
        }
    );
}

#[test]
fn features_proftpd() {
    let f = parse_features(PROFTPD_FEAT);
    assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.rang_stream && f.mlst && f.utf8);
    assert!(!f.pasv && !f.mlsd && !f.auth_tls);
    assert_eq!(f.hash, None);
    assert_eq!(f.raw.len(), 15);
    assert_eq!(f.raw[5], "LANG C.UTF-8*");
}

#[test]
fn features_pure_ftpd() {
    let f = parse_features(PURE_FTPD_FEAT);
    assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.pasv);
    assert!(f.mlsd && f.mlst && f.utf8 && f.auth_tls);
    assert!(!f.rang_stream);
    assert_eq!(f.raw.len(), 18);
}

#[test]
fn features_pyftpdlib() {
    let f = parse_features(PYFTPDLIB_FEAT);
    assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.mlst && f.utf8);
    assert!(!f.pasv && !f.mlsd && !f.rang_stream && !f.auth_tls);
    assert_eq!(f.raw.len(), 9);
}

#[test]
fn features_libunftp() {
    let f = parse_features(LIBUNFTP_FEAT);
    assert!(f.rest_stream && f.size && f.mdtm && f.epsv && f.mlsd && f.mlst && f.utf8);
    assert!(!f.pasv && !f.rang_stream && !f.auth_tls);
    assert_eq!(f.raw.len(), 8);
    assert!(f.raw.contains(&"SITE MD5".to_owned()));
}

#[test]
fn features_are_case_insensitive_and_need_no_leading_space() {
    let f = parse_features(
        b"211-Features\r\nsize\r\n  Rest stream\r\nrang Stream\r\nauth tls;ssl\r\n211 End\r\n",
    );
    assert!(f.size && f.rest_stream && f.rang_stream && f.auth_tls);
    assert_eq!(
        f.raw,
        ["size", "Rest stream", "rang Stream", "auth tls;ssl"]
    );
}

#[test]
fn features_bare_rest_counts_as_rest_stream() {
    assert!(parse_features(b"211-x\r\n REST\r\n211 End\r\n").rest_stream);
}

#[test]
fn features_other_rang_and_auth_arguments() {
    let f = parse_features(b"211-x\r\n RANG\r\n AUTH SSL\r\n AUTH TLS-C\r\n211 End\r\n");
    assert!(!f.rang_stream && !f.auth_tls);
}

#[test]
fn features_hash() {
    let f = parse_features(b"211-x\r\n HASH SHA-256*;SHA-1;MD5\r\n HASH other\r\n211 End\r\n");
    assert_eq!(f.hash.as_deref(), Some("SHA-256*;SHA-1;MD5"));
    let bare = parse_features(b"211-x\r\n HASH\r\n211 End\r\n");
    assert_eq!(bare.hash.as_deref(), Some(""));
}

#[test]
fn features_of_refused_or_empty_feat() {
    assert_eq!(
        parse_features(b"500 FEAT not understood.\r\n"),
        Features::default()
    );
    assert_eq!(
        parse_features(b"502-Nope\r\n SIZE\r\n502 End\r\n"),
        Features::default()
    );
    assert_eq!(parse_features(b"211 No features\r\n"), Features::default());
    assert_eq!(parse_features(b""), Features::default());
    assert_eq!(parse_features(b" SIZE\r\n"), Features::default());
}

#[test]
fn features_raw_is_capped() {
    let mut raw = b"211-Features:\r\n".to_vec();
    for i in 0..100 {
        raw.extend_from_slice(format!(" X{i} {}\r\n", "y".repeat(300)).as_bytes());
    }
    raw.extend_from_slice(b" SIZE\r\n211 End\r\n");
    let f = parse_features(&raw);
    assert_eq!(f.raw.len(), MAX_FEATURE_LINES);
    assert!(
        f.raw
            .iter()
            .all(|line| line.chars().count() == MAX_FEATURE_CHARS)
    );
    assert!(f.size, "lines past the cap are still read");
}

// ---- property tests ------------------------------------------------------

/// Any bytes, or a plausible reply: a code, a separator, then any bytes.
fn arb_reply() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        Just(b"213".to_vec()),
        Just(b"150".to_vec()),
        Just(b"211".to_vec())
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            code,
            prop_oneof![Just(b' '), Just(b'-')],
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(mut raw, sep, rest)| {
                raw.push(sep);
                raw.extend(rest);
                raw
            }),
    ]
}

/// Rubbish that may sit between "213 " and the size.
fn arb_size_prefix() -> impl Strategy<Value = String> {
    "([ -~]{0,20}[^0-9\\-\r\n])?"
}

prop_compose! {
    fn arb_time()(
        year in 0u32..=9999,
        month in 1u32..=12,
        day in 1u32..=31,
        hour in 0u32..=23,
        minute in 0u32..=59,
        second in 0u32..=60,
        fraction in proptest::option::of("[0-9]{1,9}"),
    ) -> (u32, String, Option<String>) {
        let rest = format!("{month:02}{day:02}{hour:02}{minute:02}{second:02}");
        (year, rest, fraction)
    }
}

const FEATURE_LINES: [&str; 11] = [
    "REST STREAM",
    "SIZE",
    "MDTM",
    "EPSV",
    "PASV",
    "RANG STREAM",
    "MLSD",
    "MLST type*;size*;modify*;",
    "UTF8",
    "AUTH TLS",
    "HASH SHA-256*;MD5",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic(raw in arb_reply()) {
        let _ = reply_code(&raw);
        let _ = reply_text(&raw);
        let _ = parse_size(&raw);
        let _ = parse_mdtm(&raw);
        let _ = parse_transfer_size(&raw);
        let _ = parse_features(&raw);
    }

    #[test]
    fn parsers_never_panic_on_near_misses(body in "[0-9 .()a-zA-Z:+\\-]{0,40}") {
        for code in ["213 ", "150 ", "211-", "213-"] {
            let raw = format!("{code}{body}\r\n");
            let _ = parse_size(raw.as_bytes());
            let _ = parse_mdtm(raw.as_bytes());
            let _ = parse_transfer_size(raw.as_bytes());
            let _ = parse_features(raw.as_bytes());
        }
    }

    #[test]
    fn reply_text_is_one_short_clean_line(raw in arb_reply()) {
        let text = reply_text(&raw);
        prop_assert!(text.chars().count() <= MAX_REPLY_TEXT);
        prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
        prop_assert_eq!(text.trim(), text.as_str());
    }

    #[test]
    fn reply_text_keeps_short_printable_lines(line in "[!-~][ -~]{0,200}[!-~]") {
        prop_assert_eq!(reply_text(format!("{line}\r\n").as_bytes()), line);
    }

    #[test]
    fn errors_are_one_line(raw in arb_reply()) {
        for err in [parse_size(&raw).err(), parse_mdtm(&raw).err()].into_iter().flatten() {
            let message = err.to_string();
            prop_assert!(!message.contains(['\r', '\n']), "{:?}", message);
            prop_assert!(message.chars().count() <= MAX_REPLY_TEXT + 120);
        }
    }

    #[test]
    fn reply_code_round_trips(code in 100u16..=599, sep in "[ \\-]?", rest in "[^0-9][ -~]{0,20}|") {
        let raw = format!("{code}{sep}{rest}");
        prop_assert_eq!(reply_code(raw.as_bytes()), Some(code));
    }

    #[test]
    fn size_round_trips(size in 0..=MAX_SIZE, prefix in arb_size_prefix()) {
        let raw = format!("213 {prefix}{size}\r\n");
        prop_assert_eq!(parse_size(raw.as_bytes()), Ok(size));
    }

    #[test]
    fn size_above_the_limit_is_refused(size in (MAX_SIZE + 1)..=u64::MAX) {
        let raw = format!("213 {size}\r\n");
        let is_too_large = matches!(
            parse_size(raw.as_bytes()),
            Err(ReplyError::SizeTooLarge { size: s, .. }) if s == size
        );
        prop_assert!(is_too_large);
    }

    #[test]
    fn size_with_minus_is_refused(size in any::<u64>(), prefix in arb_size_prefix()) {
        let raw = format!("213 {prefix}-{size}\r\n");
        let is_negative = matches!(parse_size(raw.as_bytes()), Err(ReplyError::SizeNegative { .. }));
        prop_assert!(is_negative);
    }

    #[test]
    fn size_ok_is_within_limit(raw in arb_reply()) {
        if let Ok(size) = parse_size(&raw) {
            prop_assert!(size <= MAX_SIZE);
        }
    }

    #[test]
    fn mdtm_round_trips((year, rest, fraction) in arb_time()) {
        let mut time = format!("{year:04}{rest}");
        if let Some(fraction) = &fraction {
            time.push('.');
            time.push_str(fraction);
        }
        let raw = format!("213 {time}\r\n");
        prop_assert_eq!(parse_mdtm(raw.as_bytes()), Ok(Mdtm(time)));
    }

    #[test]
    fn mdtm_y2k_form_maps_to_2000s((year, rest, fraction) in arb_time()) {
        let years_after_2000 = year % 100;
        let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
        let raw = format!("213 191{years_after_2000:02}{rest}{fraction}\r\n");
        let expected = format!("{:04}{rest}{fraction}", 2000 + years_after_2000);
        prop_assert_eq!(parse_mdtm(raw.as_bytes()), Ok(Mdtm(expected)));
    }

    #[test]
    fn mdtm_ok_is_canonical(raw in arb_reply()) {
        if let Ok(Mdtm(time)) = parse_mdtm(&raw) {
            let (whole, fraction) = match time.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (time.as_str(), None),
            };
            prop_assert_eq!(whole.len(), 14);
            prop_assert!(whole.bytes().all(|b| b.is_ascii_digit()));
            if let Some(fraction) = fraction {
                prop_assert!(!fraction.is_empty());
                prop_assert!(fraction.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn mdtm_bad_month_is_refused(month in prop_oneof![Just(0u32), 13u32..=99]) {
        let raw = format!("213 2024{month:02}01000000\r\n");
        let refused = matches!(
            parse_mdtm(raw.as_bytes()),
            Err(ReplyError::MdtmOutOfRange { field: "month", .. })
        );
        prop_assert!(refused);
    }

    #[test]
    fn transfer_size_round_trips(
        size in 0..=MAX_SIZE,
        code in prop_oneof![Just(150u16), Just(125u16)],
        name in "[a-zA-Z0-9 ._()\\-]{0,20}",
        bytes in "bytes|BYTES|Bytes",
    ) {
        let raw = format!("{code} Opening BINARY mode data connection for {name} ({size} {bytes}).\r\n");
        prop_assert_eq!(parse_transfer_size(raw.as_bytes()), Some(size));
    }

    #[test]
    fn features_round_trip(
        chosen in proptest::collection::vec(any::<bool>(), FEATURE_LINES.len()),
        lower in any::<bool>(),
        indent in "[ \t]{0,2}",
    ) {
        let mut raw = b"211-Features:\r\n".to_vec();
        let mut lines = Vec::new();
        for (line, wanted) in FEATURE_LINES.iter().zip(&chosen) {
            if *wanted {
                let line = if lower { line.to_lowercase() } else { (*line).to_owned() };
                raw.extend_from_slice(format!("{indent}{line}\r\n").as_bytes());
                lines.push(line);
            }
        }
        raw.extend_from_slice(b"211 End\r\n");
        let f = parse_features(&raw);
        let flags = [
            f.rest_stream, f.size, f.mdtm, f.epsv, f.pasv, f.rang_stream,
            f.mlsd, f.mlst, f.utf8, f.auth_tls, f.hash.is_some(),
        ];
        prop_assert_eq!(flags.to_vec(), chosen);
        prop_assert_eq!(f.raw, lines);
    }

    #[test]
    fn features_raw_is_bounded_and_clean(raw in arb_reply()) {
        let f = parse_features(&raw);
        prop_assert!(f.raw.len() <= MAX_FEATURE_LINES);
        for line in &f.raw {
            prop_assert!(!line.is_empty());
            prop_assert!(line.chars().count() <= MAX_FEATURE_CHARS);
            prop_assert!(!line.chars().any(char::is_control));
            prop_assert_eq!(line.trim(), line.as_str());
        }
        if let Some(hash) = &f.hash {
            prop_assert!(hash.chars().count() <= MAX_FEATURE_CHARS);
        }
    }
}
