use super::*;
use proptest::prelude::*;

fn parse(s: &str) -> FtpUrl {
    match FtpUrl::parse(s) {
        Ok(url) => url,
        Err(e) => panic!("{s:?} should parse, got: {e}"),
    }
}

fn parse_err(s: &str) -> UrlError {
    match FtpUrl::parse(s) {
        Ok(url) => panic!("{s:?} should be refused, got {url:?}"),
        Err(e) => e,
    }
}

fn domain(name: &str) -> Host {
    Host::Domain(name.to_owned())
}

// ---- parse: the basics ------------------------------------------------

#[test]
fn anonymous_relative_path() {
    let url = parse("ftp://example.org/pub/x.iso");
    assert_eq!(url.host, domain("example.org"));
    assert_eq!(url.port, 21);
    assert_eq!(url.user, None);
    assert_eq!(url.password, None);
    assert_eq!(url.path, "pub/x.iso");
}

#[test]
fn credentials_and_path_are_percent_decoded() {
    let url = parse("ftp://user:p%40ss%3Aw@host/dir%20a/f.iso");
    assert_eq!(url.user.as_deref(), Some("user"));
    assert_eq!(url.password.as_deref(), Some("p@ss:w"));
    assert_eq!(url.path, "dir a/f.iso");
}

#[test]
fn raw_at_sign_in_password_splits_at_the_last_at() {
    let url = parse("ftp://u:p@ss@host/f");
    assert_eq!(url.user.as_deref(), Some("u"));
    assert_eq!(url.password.as_deref(), Some("p@ss"));
    assert_eq!(url.host, domain("host"));
}

#[test]
fn ipv6_host_and_port() {
    let url = parse("ftp://[::1]:2121/x");
    assert_eq!(url.host, Host::Ipv6(Ipv6Addr::LOCALHOST));
    assert_eq!(url.port, 2121);
    assert_eq!(url.path, "x");
    assert_eq!(url.host_for_connect(), "::1");
}

#[test]
fn ipv4_host_with_binary_type_code() {
    let url = parse("ftp://127.0.0.1/a;type=i");
    assert_eq!(url.host, Host::Ipv4(Ipv4Addr::LOCALHOST));
    assert_eq!(url.path, "a");
    assert_eq!(url.host_for_connect(), "127.0.0.1");
}

#[test]
fn uppercase_scheme_and_host() {
    let url = parse("FTP://HOST/x");
    assert_eq!(url.host, domain("host"));
    assert_eq!(url.path, "x");
    assert_eq!(url.host_for_connect(), "host");
}

#[test]
fn explicit_port_21_is_the_default() {
    assert_eq!(parse("ftp://h:21/x").port, 21);
    assert_eq!(parse("ftp://h/x").port, 21);
}

#[test]
fn surrounding_whitespace_is_ignored() {
    assert_eq!(parse("  ftp://h/x\n").path, "x");
}

#[test]
fn idn_host_is_punycoded() {
    let url = parse("ftp://bücher.example/x");
    assert_eq!(url.host, domain("xn--bcher-kva.example"));
}

// ---- parse: user and password -----------------------------------------

#[test]
fn user_without_password() {
    let url = parse("ftp://bob@h/x");
    assert_eq!(url.user.as_deref(), Some("bob"));
    assert_eq!(url.password, None);
}

#[test]
fn empty_password_is_no_password() {
    let url = parse("ftp://bob:@h/x");
    assert_eq!(url.user.as_deref(), Some("bob"));
    assert_eq!(url.password, None);
}

#[test]
fn empty_user_is_anonymous() {
    let url = parse("ftp://@h/x");
    assert_eq!(url.user, None);
    assert_eq!(url.password, None);
}

#[test]
fn password_without_user_is_refused() {
    let err = parse_err("ftp://:hunter2@h/x");
    assert_eq!(err, UrlError::PasswordWithoutUser);
    assert!(!err.to_string().contains("hunter2"));
}

// ---- parse: the path ---------------------------------------------------

#[test]
fn leading_encoded_slash_makes_the_path_absolute() {
    assert_eq!(parse("ftp://h/%2Fpub/x.iso").path, "/pub/x.iso");
    assert_eq!(parse("ftp://h/%2fpub/x.iso").path, "/pub/x.iso");
}

#[test]
fn leading_empty_segment_also_makes_the_path_absolute() {
    assert_eq!(parse("ftp://h//pub/x.iso").path, "/pub/x.iso");
}

#[test]
fn encoded_slash_inside_a_later_segment_is_kept() {
    assert_eq!(parse("ftp://h/a/b%2Fc/d").path, "a/b/c/d");
}

#[test]
fn empty_segments_inside_the_path_are_kept() {
    assert_eq!(parse("ftp://h/a//b").path, "a//b");
}

#[test]
fn dot_segments_are_resolved_by_the_url_parser() {
    assert_eq!(parse("ftp://h/a/../b").path, "b");
    assert_eq!(parse("ftp://h/a/%2e%2E/b").path, "b");
}

#[test]
fn backslash_is_a_separator_in_ftp_urls() {
    assert_eq!(parse("ftp://h/a\\b").path, "a/b");
}

#[test]
fn non_ascii_path() {
    assert_eq!(parse("ftp://h/caf%C3%A9 x.iso").path, "café x.iso");
    assert_eq!(parse("ftp://h/café.iso").path, "café.iso");
}

#[test]
fn type_code_i_is_stripped_in_either_case() {
    assert_eq!(parse("ftp://h/d/a.iso;type=i").path, "d/a.iso");
    assert_eq!(parse("ftp://h/d/a.iso;type=I").path, "d/a.iso");
    assert_eq!(parse("ftp://h/d/a.iso;TYPE=i").path, "d/a.iso");
}

#[test]
fn type_code_a_and_d_are_refused() {
    for (url, code) in [
        ("ftp://h/a;type=a", 'a'),
        ("ftp://h/a;type=A", 'A'),
        ("ftp://h/a;type=d", 'd'),
        ("ftp://h/a;type=D", 'D'),
    ] {
        let err = parse_err(url);
        assert_eq!(err, UrlError::NotBinary { code });
        assert!(err.to_string().contains("binary mode only"), "{err}");
    }
}

#[test]
fn unknown_type_code_is_refused() {
    let err = parse_err("ftp://h/a;type=x");
    assert_eq!(err, UrlError::UnknownType { code: 'x' });
    assert!(err.to_string().contains("%3B"), "{err}");
}

#[test]
fn type_code_text_that_is_not_a_type_code_is_part_of_the_name() {
    assert_eq!(parse("ftp://h/a;type=").path, "a;type=");
    assert_eq!(parse("ftp://h/a;type=ii").path, "a;type=ii");
    assert_eq!(parse("ftp://h/a;type=i/b").path, "a;type=i/b");
    assert_eq!(parse("ftp://h/a%3Btype=a").path, "a;type=a");
}

#[test]
fn type_code_on_a_directory_leaves_no_path() {
    assert_eq!(
        parse_err("ftp://h/pub/;type=i"),
        UrlError::Directory {
            path: "pub/".to_owned()
        }
    );
    assert_eq!(parse_err("ftp://h/;type=i"), UrlError::EmptyPath);
}

#[test]
fn empty_path_is_refused() {
    assert_eq!(parse_err("ftp://h"), UrlError::EmptyPath);
    assert_eq!(parse_err("ftp://h/"), UrlError::EmptyPath);
    assert_eq!(parse_err("ftp://h/%2E%2E"), UrlError::EmptyPath);
}

#[test]
fn directory_path_is_refused() {
    for (url, path) in [
        ("ftp://h/pub/", "pub/"),
        ("ftp://h/%2F", "/"),
        ("ftp://h/%2Fpub/", "/pub/"),
        ("ftp://h/pub%2F", "pub/"),
    ] {
        let err = parse_err(url);
        assert_eq!(
            err,
            UrlError::Directory {
                path: path.to_owned()
            }
        );
        assert!(err.to_string().contains("give a file path"), "{err}");
    }
}

#[test]
fn query_and_fragment_are_refused() {
    assert_eq!(parse_err("ftp://h/x?y"), UrlError::Query);
    assert_eq!(parse_err("ftp://h/x?"), UrlError::Query);
    assert_eq!(parse_err("ftp://h/x#y"), UrlError::Fragment);
    assert_eq!(parse_err("ftp://h/x#"), UrlError::Fragment);
    assert!(UrlError::Query.to_string().contains("%3F"));
    assert!(UrlError::Fragment.to_string().contains("%23"));
    assert_eq!(parse("ftp://h/x%3Fy%23z").path, "x?y#z");
}

// ---- parse: command injection and encoding -----------------------------

#[test]
fn encoded_line_breaks_and_nul_are_refused() {
    for (url, part) in [
        ("ftp://h/a%0D%0ADELE%20b", "path"),
        ("ftp://h/a%0Ab", "path"),
        ("ftp://h/a%00b", "path"),
        ("ftp://bob%0D%0APASS%20x@h/f", "user name"),
        ("ftp://bob:se%0Acret@h/f", "password"),
        ("ftp://bob:se%00cret@h/f", "password"),
    ] {
        let err = parse_err(url);
        assert_eq!(err, UrlError::LineBreak { part }, "{url}");
        assert!(!err.to_string().contains("cret"), "{err}");
    }
}

#[test]
fn raw_control_characters_are_refused() {
    assert_eq!(
        parse_err("ftp://h/a\r\nDELE b"),
        UrlError::ControlCharacter { code: 0x0D }
    );
    assert_eq!(
        parse_err("ftp://h/a\tb"),
        UrlError::ControlCharacter { code: 0x09 }
    );
    assert_eq!(
        parse_err("ftp://h/a\u{7f}"),
        UrlError::ControlCharacter { code: 0x7F }
    );
}

#[test]
fn invalid_utf8_is_refused() {
    assert_eq!(
        parse_err("ftp://h/%FF.iso"),
        UrlError::NotUtf8 { part: "path" }
    );
    assert_eq!(
        parse_err("ftp://%C3@h/x"),
        UrlError::NotUtf8 { part: "user name" }
    );
    assert_eq!(
        parse_err("ftp://u:%FE@h/x"),
        UrlError::NotUtf8 { part: "password" }
    );
}

// ---- parse: scheme, host and port ---------------------------------------

#[test]
fn other_schemes_are_refused_by_name() {
    for (url, scheme) in [
        ("ftpx://h/x", "ftpx"),
        ("ftpse://h/x", "ftpse"),
        ("http://h/x", "http"),
        ("HTTPS://h/x", "HTTPS"),
        ("sftp://u:pw@h/x", "sftp"),
        ("file:///etc/passwd", "file"),
    ] {
        let err = parse_err(url);
        assert_eq!(
            err,
            UrlError::UnsupportedScheme {
                scheme: scheme.to_owned()
            }
        );
        let message = err.to_string();
        assert!(message.contains(scheme), "{message}");
        assert!(message.contains("ftp://"), "{message}");
    }
}

#[test]
fn missing_scheme_is_refused() {
    for url in [
        "example.org/pub/x",
        "/pub/x",
        "",
        "   ",
        "1ftp://h/x",
        "://h/x",
    ] {
        assert_eq!(parse_err(url), UrlError::MissingScheme, "{url:?}");
    }
}

#[test]
fn missing_host_is_refused() {
    assert_eq!(parse_err("ftp://"), UrlError::MissingHost);
    assert_eq!(parse_err("ftp://u:pw@/x"), UrlError::MissingHost);
}

#[test]
fn bad_ports_are_refused() {
    assert_eq!(parse_err("ftp://h:0/x"), UrlError::PortZero);
    assert_eq!(
        parse_err("ftp://h:65536/x"),
        UrlError::Invalid(::url::ParseError::InvalidPort)
    );
    assert_eq!(
        parse_err("ftp://h:abc/x"),
        UrlError::Invalid(::url::ParseError::InvalidPort)
    );
    assert_eq!(parse("ftp://h:65535/x").port, 65535);
}

#[test]
fn invalid_url_message_is_one_line() {
    let err = parse_err("ftp://[::1/x");
    let message = err.to_string();
    assert!(message.starts_with("invalid FTP URL: "), "{message}");
    assert!(!message.contains('\n'));
}

// ---- redacted, Display and Debug ----------------------------------------

#[test]
fn redacted_drops_the_password_and_keeps_the_user() {
    let url = parse("ftp://bob:secret@[::1]:2121/pub/a%20b.iso");
    assert_eq!(url.redacted(), "ftp://bob@[::1]:2121/pub/a%20b.iso");
    assert_eq!(url.to_string(), url.redacted());
}

#[test]
fn redacted_omits_port_21() {
    assert_eq!(
        parse("ftp://example.org:21/x.iso").redacted(),
        "ftp://example.org/x.iso"
    );
    assert_eq!(
        parse("ftp://127.0.0.1:2121/x").redacted(),
        "ftp://127.0.0.1:2121/x"
    );
}

#[test]
fn redacted_re_encodes_special_characters() {
    let url = parse("ftp://us%40er:pw@h/%2Fpub/a%3Bb%3Fc%23d%25e/f%2Fg");
    assert_eq!(url.path, "/pub/a;b?c#d%e/f/g");
    assert_eq!(
        url.redacted(),
        "ftp://us%40er@h/%2Fpub/a%3Bb%3Fc%23d%25e/f/g"
    );
}

#[test]
fn redacted_keeps_dot_pieces_inside_one_segment() {
    let url = parse("ftp://h/a/..%2F..%2Fetc%2Fpasswd");
    assert_eq!(url.path, "a/../../etc/passwd");
    assert_eq!(url.redacted(), "ftp://h/a%2F..%2F..%2Fetc%2Fpasswd");
    assert_eq!(parse(&url.redacted()), url);
}

#[test]
fn debug_and_display_hide_the_password() {
    let url = parse("ftp://bob:hunter2@h/x");
    let debug = format!("{url:?}");
    let pretty = format!("{url:#?}");
    let display = url.to_string();
    for shown in [&debug, &pretty, &display] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("bob"), "{shown}");
    }
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn debug_shows_absent_password_as_none() {
    let debug = format!("{:?}", parse("ftp://bob@h/x"));
    assert!(debug.contains("password: None"), "{debug}");
}

// ---- file_name -----------------------------------------------------------

fn name_of(s: &str) -> Result<String, UrlError> {
    parse(s).file_name()
}

#[test]
fn file_name_is_the_last_segment() {
    assert_eq!(name_of("ftp://h/pub/x.iso").unwrap(), "x.iso");
    assert_eq!(name_of("ftp://h/%2Fpub/a%20b.iso").unwrap(), "a b.iso");
    assert_eq!(name_of("ftp://h/x.iso;type=i").unwrap(), "x.iso");
    assert_eq!(name_of("ftp://h/-rf").unwrap(), "-rf");
    assert_eq!(name_of("ftp://h/...").unwrap(), "...");
}

#[test]
fn file_name_after_encoded_slashes() {
    assert_eq!(
        name_of("ftp://h/a/..%2F..%2Fetc%2Fpasswd").unwrap(),
        "passwd"
    );
    assert_eq!(name_of("ftp://h/%2Fetc%2Fshadow").unwrap(), "shadow");
}

#[test]
fn file_name_refuses_dot_names() {
    assert_eq!(
        name_of("ftp://h/a/b%2F.."),
        Err(UrlError::NoFileName {
            path: "a/b/..".to_owned()
        })
    );
    assert!(name_of("ftp://h/..%2F..").is_err());
    assert!(name_of("ftp://h/a%2F.").is_err());
    assert!(name_of("ftp://h/a%2F%20..%20").is_err());
    // `%2E%2E` alone is a dot segment, removed by the URL parser.
    assert_eq!(parse_err("ftp://h/%2E%2E"), UrlError::EmptyPath);
}

#[test]
fn file_name_replaces_control_characters() {
    assert_eq!(name_of("ftp://h/a%09b%1Bc%7F").unwrap(), "a_b_c_");
    assert_eq!(name_of("ftp://h/x%C2%85y").unwrap(), "x_y");
}

#[test]
fn file_name_trims_whitespace_but_keeps_inner_spaces() {
    assert_eq!(name_of("ftp://h/%20%20a%20b%20").unwrap(), "a b");
    let err = name_of("ftp://h/d/%20%20").unwrap_err();
    assert!(err.to_string().contains("-o/--output"), "{err}");
}

#[test]
fn file_name_refuses_names_too_long_for_the_file_system() {
    let long = "a".repeat(256);
    assert_eq!(
        name_of(&format!("ftp://h/{long}")),
        Err(UrlError::FileNameTooLong)
    );
    let fits = "a".repeat(255);
    assert_eq!(name_of(&format!("ftp://h/{fits}")).unwrap(), fits);
}

#[test]
fn file_name_of_hand_made_urls() {
    let mut url = parse("ftp://h/x");
    for bad in ["", "dir/", "/", ".", "..", "a/.", "a/..", " \u{3000}"] {
        url.path = bad.to_owned();
        assert!(url.file_name().is_err(), "{bad:?}");
    }
    url.path = "a\0b".to_owned();
    assert_eq!(url.file_name().unwrap(), "a_b");
}

// ---- FTPS schemes ---------------------------------------------------------

#[test]
fn plain_ftp_has_no_tls() {
    let url = parse("ftp://h/x");
    assert_eq!(url.tls, Tls::None);
    assert_eq!(url.redacted(), "ftp://h/x");
}

#[test]
fn ftpes_is_explicit_tls_on_port_21() {
    let url = parse("ftpes://h/x");
    assert_eq!(url.tls, Tls::Explicit);
    assert_eq!(url.port, 21);
    assert_eq!(url.redacted(), "ftpes://h/x");
    assert_eq!(parse("FTPES://h:21/x").redacted(), "ftpes://h/x");
    assert_eq!(parse("ftpes://h:990/x").redacted(), "ftpes://h:990/x");
}

#[test]
fn ftps_is_implicit_tls_on_port_990() {
    let url = parse("ftps://h/x");
    assert_eq!(url.tls, Tls::Implicit);
    assert_eq!(url.port, 990);
    assert_eq!(url.redacted(), "ftps://h/x");
    assert_eq!(parse("ftps://h:990/x").redacted(), "ftps://h/x");
    assert_eq!(parse("Ftps://h:2990/x").port, 2990);
}

#[test]
fn ftps_keeps_an_explicit_port_21() {
    // Parsed as ftp://, ":21" is the default and vanishes; it must not
    // turn into 990.
    let url = parse("ftps://h:21/x");
    assert_eq!(url.port, 21);
    assert_eq!(url.redacted(), "ftps://h:21/x");
    assert_eq!(parse("ftps://h:021/x").port, 21);
    assert_eq!(parse("ftps://bob:pw@[::1]:21/x").port, 21);
    assert_eq!(parse("ftps://h:/x").port, 990);
    assert_eq!(parse("ftps://h:80/x").port, 80);
}

#[test]
fn tls_schemes_parse_hosts_like_ftp() {
    for scheme in ["ftpes", "ftps"] {
        let url = parse(&format!("{scheme}://127.0.0.1/x"));
        assert_eq!(url.host, Host::Ipv4(Ipv4Addr::LOCALHOST), "{scheme}");
        let url = parse(&format!("{scheme}://[::1]:2121/x"));
        assert_eq!(url.host, Host::Ipv6(Ipv6Addr::LOCALHOST), "{scheme}");
        assert_eq!(url.port, 2121);
        assert_eq!(url.host_for_connect(), "::1");
        let url = parse(&format!("{scheme}://HOST.Example/x"));
        assert_eq!(url.host, domain("host.example"), "{scheme}");
        let url = parse(&format!("{scheme}://bücher.example/x"));
        assert_eq!(url.host, domain("xn--bcher-kva.example"), "{scheme}");
        // IPv4 in other notations, as the ftp:// grammar reads them.
        let url = parse(&format!("{scheme}://0x7f.1/x"));
        assert_eq!(url.host, Host::Ipv4(Ipv4Addr::LOCALHOST), "{scheme}");
    }
}

#[test]
fn tls_schemes_decode_like_ftp() {
    for scheme in ["ftpes", "ftps"] {
        let url = parse(&format!(
            "{scheme}://us%20er:p%40ss@h/%2Fdir%20a/b%3Bc;type=i"
        ));
        assert_eq!(url.user.as_deref(), Some("us er"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.path, "/dir a/b;c");
        assert_eq!(parse(&format!("{scheme}://h/a\\b")).path, "a/b");
        assert_eq!(parse(&format!("{scheme}://h/a/../b")).path, "b");
        assert_eq!(parse_err(&format!("{scheme}://h/x?y")), UrlError::Query);
        assert_eq!(parse_err(&format!("{scheme}://h:0/x")), UrlError::PortZero);
        assert_eq!(parse_err(&format!("{scheme}://")), UrlError::MissingHost);
        assert_eq!(parse_err(&format!("{scheme}://h/")), UrlError::EmptyPath);
        assert_eq!(
            parse_err(&format!("{scheme}://h/a%0Ab")),
            UrlError::LineBreak { part: "path" }
        );
    }
}

#[test]
fn tls_schemes_are_the_same_file_as_ftp_on_the_same_port() {
    let plain = parse("ftp://bob@h/x");
    assert!(plain.same_file(&parse("ftpes://bob@h/x")));
    assert!(plain.same_file(&parse("ftps://bob:pw@h:21/x")));
    assert!(!plain.same_file(&parse("ftps://bob@h/x")), "port 990");
    assert!(!plain.same_file(&parse("ftpes://h/x")), "other user");
    assert!(!plain.same_file(&parse("ftpes://bob@h/y")));
    assert!(!plain.same_file(&parse("ftpes://bob@g/x")));
}

#[test]
fn tls_url_debug_and_display_hide_the_password() {
    let url = parse("ftps://bob:hunter2@h/x");
    assert_eq!(url.to_string(), "ftps://bob@h/x");
    let debug = format!("{url:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("Implicit"), "{debug}");
}

// ---- property tests -------------------------------------------------------

/// Host names the URL parser keeps as they are.
fn arb_host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,5}){0,2}".prop_map(Host::Domain),
        any::<[u8; 4]>().prop_map(|b| Host::Ipv4(Ipv4Addr::from(b))),
        any::<u128>().prop_map(|n| Host::Ipv6(Ipv6Addr::from(n))),
    ]
}

/// Any text the parser can produce for a user name or path piece.
fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..=max).prop_map(|chars| {
        chars
            .into_iter()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect()
    })
}

/// Decoded paths `parse` can return: not empty, not ending in `/`, and
/// not a lone dot segment.
fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_text(24),
        proptest::collection::vec("[a-z./ ;?#%]{0,4}", 1..5).prop_map(|p| p.join("/")),
    ]
    .prop_filter("must name a file", |p| {
        !p.is_empty() && !p.ends_with('/') && p != "." && p != ".."
    })
}

prop_compose! {
    fn arb_url()(
        tls in prop_oneof![Just(Tls::None), Just(Tls::Explicit), Just(Tls::Implicit)],
        host in arb_host(),
        port in 1u16..=u16::MAX,
        user in proptest::option::of(arb_text(12).prop_filter("non-empty", |u| !u.is_empty())),
        path in arb_path(),
    ) -> FtpUrl {
        FtpUrl { tls, host, port, user, password: None, path }
    }
}

/// Starts every generated password. It appears nowhere else: not in the
/// URL built by `marked_url`, not in any error message, and not in a
/// printed URL unless the password leaks (escaped, it is `%C2%A7`).
const MARKER: char = '§';

/// A URL around `password` whose other parts cannot contain [`MARKER`].
fn marked_url(password: &str, path: &str) -> String {
    let password = utf8_percent_encode(password, NON_ALPHANUMERIC);
    format!("ftp://bob:{password}@example.org:2121/{path}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = FtpUrl::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_ftp_like_text(s in "(ftp|FTP|ftps|)(:|://)[ -~]{0,40}") {
        if let Ok(url) = FtpUrl::parse(&s) {
            let _ = url.file_name();
            let _ = url.redacted();
        }
    }

    #[test]
    fn parsed_urls_are_valid(s in "ftp://([a-z:%0-9]{0,6}@)?[a-z0-9.\\[\\]:]{1,12}/[ -~]{0,30}") {
        if let Ok(url) = FtpUrl::parse(&s) {
            prop_assert!(url.port != 0);
            prop_assert!(!url.path.is_empty());
            prop_assert!(!url.path.ends_with('/'));
            prop_assert!(url.user.is_some() || url.password.is_none());
            prop_assert!(url.user.as_deref() != Some(""));
            for part in [url.user.as_deref(), url.password.as_deref(), Some(url.path.as_str())]
                .into_iter()
                .flatten()
            {
                prop_assert!(!part.contains(['\r', '\n', '\0']));
            }
        }
    }

    #[test]
    fn redacted_round_trips(url in arb_url()) {
        let printed = url.redacted();
        let reparsed = FtpUrl::parse(&printed);
        prop_assert_eq!(reparsed, Ok(url), "printed as {}", printed);
    }

    #[test]
    fn redacted_round_trips_parsed_text(s in "ftp://(bob(:pw)?@)?h(:[0-9]{1,4})?/[ -~]{1,30}") {
        if let Ok(url) = FtpUrl::parse(&s) {
            let without_password = FtpUrl { password: None, ..url.clone() };
            prop_assert_eq!(FtpUrl::parse(&url.redacted()), Ok(without_password));
        }
    }

    #[test]
    fn tls_schemes_parse_like_ftp(
        rest in "//([a-z:%0-9]{0,6}@)?[a-zA-Z0-9.\\[\\]:]{1,12}/[ -~]{0,30}",
        scheme in prop_oneof![Just(Tls::Explicit), Just(Tls::Implicit)],
    ) {
        // Everything but the scheme (and a missing port's default) is
        // exactly what the ftp:// parser makes of the same text.
        let plain = FtpUrl::parse(&format!("ftp:{rest}"));
        let tls = FtpUrl::parse(&format!("{}:{rest}", scheme.scheme()));
        match (plain, tls) {
            (Ok(plain), Ok(tls)) => {
                prop_assert_eq!(tls.tls, scheme);
                let same_port = FtpUrl { port: plain.port, ..tls.clone() };
                prop_assert!(plain.same_file(&same_port));
                prop_assert_eq!(&plain.password, &tls.password);
                if tls.port != plain.port {
                    prop_assert_eq!(plain.port, 21);
                    prop_assert_eq!(tls.port, scheme.default_port());
                }
                let reparsed = FtpUrl::parse(&tls.redacted());
                prop_assert_eq!(reparsed, Ok(FtpUrl { password: None, ..tls }));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "ftp: {:?}, tls: {:?}", a, b),
        }
    }

    #[test]
    fn password_never_shows(
        secret in proptest::collection::vec(any::<char>(), 0..16),
        path in "[a-z0-9 ._-]{1,20}",
    ) {
        let password: String = std::iter::once(MARKER).chain(secret).collect();
        match FtpUrl::parse(&marked_url(&password, &path)) {
            Ok(url) => {
                prop_assert_eq!(url.password.as_deref(), Some(password.as_str()));
                let with_other = FtpUrl { password: Some("other".to_owned()), ..url.clone() };
                let without = FtpUrl { password: None, ..url.clone() };
                prop_assert_eq!(url.redacted(), with_other.redacted());
                prop_assert_eq!(url.redacted(), without.redacted());
                for shown in [url.redacted(), url.to_string(), format!("{url:?}"), format!("{url:#?}")] {
                    prop_assert!(!shown.contains(MARKER), "{}", shown);
                    prop_assert!(!shown.contains("%C2%A7"), "{}", shown);
                }
            }
            Err(e) => {
                prop_assert!(!e.to_string().contains(MARKER), "{}", e);
                prop_assert!(!format!("{e:?}").contains(MARKER), "{:?}", e);
            }
        }
    }

    #[test]
    fn errors_never_show_the_password(
        secret in "[ -~]{0,12}",
        path in "[g-z0-9%/;=?#.]{0,16}",
    ) {
        let password = format!("{MARKER}{secret}");
        if let Err(e) = FtpUrl::parse(&marked_url(&password, &path)) {
            prop_assert!(!e.to_string().contains(MARKER), "{}", e);
            prop_assert!(!format!("{e:?}").contains(MARKER), "{:?}", e);
        }
    }

    #[test]
    fn file_name_is_always_safe(path in any::<String>()) {
        let url = FtpUrl { tls: Tls::None, host: domain("h"), port: 21, user: None, password: None, path };
        if let Ok(name) = url.file_name() {
            prop_assert!(!name.is_empty());
            prop_assert!(name != "." && name != "..");
            prop_assert!(!name.contains('/'));
            prop_assert!(!name.chars().any(char::is_control));
            prop_assert_eq!(name.trim(), name.as_str());
            prop_assert!(name.len() <= MAX_FILE_NAME_BYTES);
        }
    }

    #[test]
    fn file_name_of_parsed_urls_is_safe(path in "[ -~]{0,30}") {
        if let Ok(url) = FtpUrl::parse(&format!("ftp://h/{path}"))
            && let Ok(name) = url.file_name()
        {
            prop_assert!(!name.is_empty());
            prop_assert!(name != "." && name != "..");
            prop_assert!(!name.contains('/'));
            prop_assert!(!name.chars().any(char::is_control));
        }
    }
}

#[test]
fn folder_urls_keep_their_slash() {
    let (u, folder) = FtpUrl::parse_file_or_folder("ftp://h/pub/").unwrap();
    assert!(folder);
    assert_eq!(u.path, "pub/");
    assert_eq!(folder_path(&u.path), "pub");
    let (u, folder) = FtpUrl::parse_file_or_folder("ftp://h/").unwrap();
    assert!(folder);
    assert_eq!(u.path, "");
    let (u, folder) = FtpUrl::parse_file_or_folder("ftp://h/pub/a.iso").unwrap();
    assert!(!folder);
    assert_eq!(u.path, "pub/a.iso");
    assert!(FtpUrl::parse_file_or_folder("http://h/").is_err());
}
