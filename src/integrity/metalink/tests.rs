//! Tests of the Metalink parser: one unit test per rule, and property tests that write random
//! valid Metalinks out as XML and read them back, feed it arbitrary and mutated text, and
//! check the piece-count rule.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SHA256_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const MD5_A: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// A Metalink 4 document around `body`.
fn doc(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metalink xmlns=\"{NAMESPACE}\">\n{body}\n</metalink>\n"
    )
}

/// A `<file>` with one FTP URL and `inner`.
fn file(name: &str, inner: &str) -> String {
    format!("<file name=\"{name}\">{inner}<url>ftp://m.example.org/pub/{name}</url></file>")
}

fn err(text: &str) -> MetalinkError {
    parse(text).expect_err("should be refused")
}

fn one(text: &str) -> MetaFile {
    let mut m = parse(text).expect("should parse");
    assert_eq!(m.files.len(), 1);
    m.files.remove(0)
}

#[test]
fn parses_the_rfc_example_shape() {
    let text = doc(&format!(
        r#"<published>2009-05-15T12:23:23Z</published>
  <file name="example.ext">
    <size>14471447</size>
    <identity>Example</identity>
    <description>A description of the example file for download.</description>
    <hash type="sha-256">{}</hash>
    <hash type="sha-384">0123</hash>
    <pieces length="262144" type="sha-256">{}</pieces>
    <url location="de" priority="2">ftp://ftp.example.com/example.ext</url>
    <url location="fr" priority="1">http://example.com/example.ext</url>
    <url priority="1">ftps://user:pw@ftp.example.net/example.ext</url>
    <metaurl mediatype="torrent" priority="2">http://example.com/example.ext.torrent</metaurl>
  </file>"#,
        SHA256_A.to_uppercase(),
        format!("<hash>{SHA256_A}</hash>").repeat(56)
    ));
    let f = one(&text);
    assert_eq!(f.name, "example.ext");
    assert_eq!(f.size, Some(14_471_447));
    assert_eq!(
        f.hashes,
        vec![Expected {
            algo: Algo::Sha256,
            hex: SHA256_A.into()
        }]
    );
    let pieces = f.pieces.as_ref().unwrap();
    assert_eq!(
        (pieces.length, pieces.algo, pieces.hashes.len()),
        (262_144, Algo::Sha256, 56)
    );
    let urls: Vec<_> = f.urls.iter().map(|u| u.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "ftps://user:pw@ftp.example.net/example.ext",
            "ftp://ftp.example.com/example.ext"
        ]
    );
    assert_eq!(f.urls[1].location.as_deref(), Some("de"));
    assert_eq!(f.urls[0].location, None);
    assert_eq!(f.skipped_count(), 2);
    assert_eq!(
        f.skipped_note().unwrap(),
        "example.ext: the Metalink has 2 URLs ftpseg does not fetch (1 http, 1 torrent)"
    );
}

#[test]
fn not_xml_names_line_and_column() {
    let e =
        err("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n<file name=\"a\">\n</metalink>");
    let MetalinkError::Xml { line, column, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!((*line, *column), (3, 1));
    assert!(e.to_string().starts_with("not valid XML: "), "{e}");
    assert!(e.to_string().contains("3:1"), "{e}");
    assert!(matches!(err(""), MetalinkError::Xml { .. }));
    assert!(matches!(
        err("ftp://host/x.iso\n"),
        MetalinkError::Xml { .. }
    ));
}

#[test]
fn a_dtd_is_refused() {
    let text =
        "<!DOCTYPE m [<!ENTITY a \"aaaa\">]><metalink xmlns=\"urn:ietf:params:xml:ns:metalink\"/>";
    assert_eq!(err(text), MetalinkError::Dtd);
}

#[test]
fn a_byte_order_mark_is_allowed() {
    let f = one(&format!("\u{feff}{}", doc(&file("a.iso", ""))));
    assert_eq!(f.name, "a.iso");
}

#[test]
fn wrong_root_or_namespace() {
    let e = err("<html><body/></html>");
    assert_eq!(
        e.to_string(),
        "not a Metalink 4 file: the root element is <html> without a namespace, not <metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">"
    );
    let e = err("<metalink xmlns=\"urn:example\"/>");
    assert!(
        e.to_string()
            .contains("<metalink> in namespace \"urn:example\""),
        "{e}"
    );
    assert!(matches!(
        err("<metalink/>"),
        MetalinkError::NotMetalink { .. }
    ));
}

#[test]
fn metalink3_is_refused_with_a_hint() {
    let v3 = r#"<metalink version="3.0" xmlns="http://www.metalinker.org/"><files/></metalink>"#;
    assert_eq!(err(v3), MetalinkError::Metalink3);
    assert!(
        err(v3)
            .to_string()
            .starts_with("Metalink 3 is not supported: ")
    );
    assert_eq!(
        err(r#"<metalink version="3.0"/>"#),
        MetalinkError::Metalink3
    );
}

#[test]
fn no_files() {
    assert_eq!(
        err(&doc("<published>x</published>")),
        MetalinkError::NoFiles
    );
    // A <file> of another namespace is an extension, not a file.
    assert_eq!(
        err(&doc(r#"<x:file xmlns:x="urn:other" name="a"/>"#)),
        MetalinkError::NoFiles
    );
}

#[test]
fn a_file_needs_a_name() {
    let text = doc(&format!(
        "{}<file><url>ftp://h/x</url></file>",
        file("a", "")
    ));
    assert_eq!(err(&text), MetalinkError::NoName { index: 2 });
}

#[test]
fn unsafe_names_are_refused() {
    for name in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "a\\b",
        "..",
        ".",
        "./a",
        "a//b",
        "a/",
        "a&#10;b",
    ] {
        let e = err(&doc(&file(name, "")));
        assert!(
            matches!(e, MetalinkError::UnsafeName { .. }),
            "{name}: {e:?}"
        );
        assert!(
            e.to_string().contains("Metalink names become local paths"),
            "{e}"
        );
    }
    let long = "x".repeat(256);
    assert!(matches!(
        err(&doc(&file(&long, ""))),
        MetalinkError::UnsafeName { .. }
    ));
    for name in ["debian/x.iso", "a..b", "..a", "x.", "a b", &"x".repeat(255)] {
        assert_eq!(one(&doc(&file(name, ""))).name, name);
    }
}

#[test]
fn duplicate_names_are_refused() {
    let text = doc(&format!(
        "{}{}{}",
        file("a", ""),
        file("b", ""),
        file("a", "")
    ));
    let e = err(&text);
    assert_eq!(e, MetalinkError::DuplicateName { name: "a".into() });
    assert_eq!(
        e.to_string(),
        "the file a is listed twice; each <file> needs its own name"
    );
}

#[test]
fn size_must_be_a_number() {
    for bad in [
        "",
        "-1",
        "+5",
        "1e9",
        "12 34",
        "0x10",
        "18446744073709551616",
    ] {
        let e = err(&doc(&file("a", &format!("<size>{bad}</size>"))));
        assert!(matches!(e, MetalinkError::BadSize { .. }), "{bad}: {e:?}");
    }
    assert_eq!(
        one(&doc(&file("a", "<size> 18446744073709551615 </size>"))).size,
        Some(u64::MAX)
    );
    let e = err(&doc(&file("a", "<size>1</size><size>1</size>")));
    assert_eq!(e.to_string(), "a: <size> is given twice; give it once");
}

#[test]
fn hash_types_and_lengths() {
    let inner = format!(
        "<hash type=\"SHA-256\">{}</hash><hash type=\"md5\">{MD5_A}</hash><hash type=\"sha-384\">zz</hash><hash>{MD5_A}</hash>",
        SHA256_A.to_uppercase()
    );
    let f = one(&doc(&file("a", &inner)));
    let algos: Vec<_> = f.hashes.iter().map(|h| h.algo).collect();
    assert_eq!(algos, [Algo::Sha256, Algo::Md5]);
    assert_eq!(f.hashes[0].hex, SHA256_A);

    let e = err(&doc(&file(
        "a",
        &format!("<hash type=\"sha-256\">{}</hash>", &SHA256_A[1..]),
    )));
    assert_eq!(
        e.to_string(),
        "a: the sha-256 file hash is not 64 hex digits (63 characters)"
    );
    let bad = format!("{}g", &SHA256_A[1..]);
    let e = err(&doc(&file(
        "a",
        &format!("<hash type=\"sha-256\">{bad}</hash>"),
    )));
    assert!(e.to_string().ends_with("(a non-hex character)"), "{e}");
}

#[test]
fn conflicting_file_hashes() {
    let other = SHA256_A.replace('9', "8");
    let same =
        format!("<hash type=\"sha-256\">{SHA256_A}</hash><hash type=\"sha256\">{SHA256_A}</hash>");
    assert_eq!(one(&doc(&file("a", &same))).hashes.len(), 1);
    let two =
        format!("<hash type=\"sha-256\">{SHA256_A}</hash><hash type=\"sha-256\">{other}</hash>");
    assert_eq!(
        err(&doc(&file("a", &two))).to_string(),
        "a: two different sha-256 file hashes; fix the Metalink"
    );
}

fn pieces(length: &str, ty: &str, count: usize, hex: &str) -> String {
    format!(
        "<pieces length=\"{length}\" type=\"{ty}\">{}</pieces>",
        format!("<hash>{hex}</hash>").repeat(count)
    )
}

#[test]
fn piece_count_must_cover_the_size() {
    let ok = format!("<size>10</size>{}", pieces("4", "md5", 3, MD5_A));
    assert_eq!(one(&doc(&file("a", &ok))).pieces.unwrap().hashes.len(), 3);
    let bad = format!("<size>10</size>{}", pieces("4", "md5", 2, MD5_A));
    assert_eq!(
        err(&doc(&file("a", &bad))).to_string(),
        "a: 2 piece hashes, but 10 bytes in pieces of 4 need 3; fix the Metalink or drop its <pieces>"
    );
    let empty = format!("<size>0</size>{}", pieces("4", "md5", 0, MD5_A));
    assert_eq!(
        one(&doc(&file("a", &empty))).pieces.unwrap().hashes,
        Vec::<String>::new()
    );
    let unsized_ok = pieces("4", "md5", 5, MD5_A);
    assert_eq!(
        one(&doc(&file("a", &unsized_ok)))
            .pieces
            .unwrap()
            .hashes
            .len(),
        5
    );
    let unsized_empty = pieces("4", "md5", 0, MD5_A);
    assert_eq!(
        err(&doc(&file("a", &unsized_empty))),
        MetalinkError::NoPieceHashes { name: "a".into() }
    );
}

#[test]
fn piece_length_must_be_above_zero() {
    for length in ["0", "", "x", "-4"] {
        let inner = format!("<size>10</size>{}", pieces(length, "md5", 3, MD5_A));
        let e = err(&doc(&file("a", &inner)));
        assert!(
            matches!(e, MetalinkError::BadPieceLength { .. }),
            "{length}: {e:?}"
        );
    }
    let missing = format!("<pieces type=\"md5\"><hash>{MD5_A}</hash></pieces>");
    assert_eq!(
        err(&doc(&file("a", &missing))).to_string(),
        "a: the piece length \"\" is not a number of bytes above 0"
    );
}

#[test]
fn piece_hashes_are_checked() {
    let inner =
        format!("<pieces length=\"4\" type=\"md5\"><hash>{MD5_A}</hash><hash>abc</hash></pieces>");
    assert_eq!(
        err(&doc(&file("a", &inner))).to_string(),
        "a: the md5 hash of piece 1 is not 32 hex digits (3 characters)"
    );
}

#[test]
fn the_strongest_known_piece_type_wins() {
    let inner = format!(
        "<size>8</size>{}{}{}",
        pieces("4", "md5", 2, MD5_A),
        pieces("4", "sha-256", 2, SHA256_A),
        pieces("4", "tiger", 1, "x")
    );
    assert_eq!(
        one(&doc(&file("a", &inner))).pieces.unwrap().algo,
        Algo::Sha256
    );
    let unknown = pieces("0", "tiger", 1, "x");
    assert_eq!(one(&doc(&file("a", &unknown))).pieces, None);
    let twice = format!(
        "{}{}",
        pieces("4", "md5", 1, MD5_A),
        pieces("8", "MD5", 1, MD5_A)
    );
    assert_eq!(
        err(&doc(&file("a", &twice))).to_string(),
        "a: <pieces type=\"md5\"> is given twice; give it once"
    );
}

#[test]
fn too_many_pieces_are_refused_before_reading_them() {
    let inner = format!(
        "<size>{}</size>{}",
        MAX_PIECES as u64 + 1,
        pieces("1", "md5", 1, MD5_A)
    );
    let e = err(&doc(&file("a", &inner)));
    assert_eq!(
        e,
        MetalinkError::TooManyPieces {
            name: "a".into(),
            limit: MAX_PIECES
        }
    );
    // The count limit on unsized files, with a small limit.
    let text = doc(&pieces("4", "md5", 4, MD5_A));
    let d = Document::parse(&text).unwrap();
    let p = d.descendants().find(|n| is_ml(*n, "pieces")).unwrap();
    let e = read_pieces("a", p, Algo::Md5, None, 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a: more than 3 piece hashes; refused (a larger piece length needs fewer)"
    );
    assert!(read_pieces("a", p, Algo::Md5, None, 4).is_ok());
}

#[test]
fn urls_sorted_by_priority_stably() {
    let inner = r#"<url>ftp://h/none1</url><url priority="5">ftp://h/p5a</url><url priority="1">ftp://h/p1</url>
        <url priority="5">ftp://h/p5b</url><url>ftp://h/none2</url><url priority=" 3 ">ftpes://h/p3</url>"#;
    let f = one(&doc(&format!("<file name=\"a\">{inner}</file>")));
    let paths: Vec<_> = f
        .urls
        .iter()
        .map(|u| u.url.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(paths, ["p1", "p3", "p5a", "p5b", "none1", "none2"]);
    assert_eq!(f.urls[1].priority, Some(3));
}

#[test]
fn bad_priority() {
    for p in ["x", "-1", "4294967296", ""] {
        let inner = format!("<file name=\"a\"><url priority=\"{p}\">ftp://h/a</url></file>");
        assert!(
            matches!(err(&doc(&inner)), MetalinkError::BadPriority { .. }),
            "{p}"
        );
    }
}

#[test]
fn a_file_needs_an_ftp_url() {
    let inner = r#"<file name="x.iso"><url>https://a/x.iso</url><url>HTTPS://b/x.iso</url><url>http://c/x.iso</url></file>"#;
    let e = err(&doc(inner));
    assert_eq!(
        e.to_string(),
        "no ftp:// URL for x.iso: ftpseg fetches FTP only (the Metalink has 2 https, 1 http)"
    );
    assert_eq!(
        err(&doc(r#"<file name="x.iso"><size>3</size></file>"#)).to_string(),
        "no ftp:// URL for x.iso: ftpseg fetches FTP only (the Metalink has no <url> for it)"
    );
    let odd = r#"<file name="x"><url>/relative</url><url>rsync://h/x</url></file>"#;
    let MetalinkError::NoFtpUrl { skipped, .. } = err(&doc(odd)) else {
        panic!()
    };
    assert_eq!(
        skipped,
        BTreeMap::from([("other".into(), 1), ("rsync".into(), 1)])
    );
}

#[test]
fn a_bad_ftp_url_is_refused_without_its_password() {
    let inner = r#"<file name="x"><url>ftp://h/x</url><url>ftp://user:s3cret@h/x?q</url></file>"#;
    let e = err(&doc(inner));
    assert!(matches!(e, MetalinkError::BadUrl { index: 2, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("x: URL number 2 is not a usable FTP URL: URL has a query"),
        "{e}"
    );
    assert!(!e.to_string().contains("s3cret"));
}

#[test]
fn extensions_and_comments_are_ignored() {
    let inner = format!(
        r#"<file name="a" xmlns:x="urn:ext"><x:size>zz</x:size><size>1<!-- c -->2</size><x:url>http://h/a</x:url>
        <hash type="md5"><![CDATA[{MD5_A}]]></hash><url>ftp://h/a</url></file>"#
    );
    let f = one(&doc(&inner));
    assert_eq!(
        (f.size, f.hashes.len(), f.skipped_count()),
        (Some(12), 1, 0)
    );
    assert_eq!(f.skipped_note(), None);
}

#[test]
fn a_prefixed_namespace_is_the_same_document() {
    let text = format!(
        "<m:metalink xmlns:m=\"{NAMESPACE}\"><m:file name=\"a\"><m:url>ftp://h/a</m:url></m:file></m:metalink>"
    );
    assert_eq!(one(&text).urls.len(), 1);
}

#[test]
fn hash_type_names() {
    for algo in [Algo::Sha256, Algo::Sha512, Algo::Sha1, Algo::Md5] {
        assert_eq!(algo_of_type(hash_type(algo)), Some(algo));
        assert_eq!(algo_of_type(&hash_type(algo).to_uppercase()), Some(algo));
    }
    for other in ["sha-384", "md2", "blake3", "", "sha-2"] {
        assert_eq!(algo_of_type(other), None, "{other}");
    }
}

// ----- Property tests -----

/// Escapes text for an XML attribute or element.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Writes `m` as Metalink 4 XML, with `extra[i]` non-FTP URLs before file i's FTP ones.
fn write(m: &Metalink, upper: bool) -> String {
    let mut out = String::new();
    for f in &m.files {
        out += &format!("<file name=\"{}\">\n", esc(&f.name));
        if let Some(size) = f.size {
            out += &format!("  <size>{size}</size>\n");
        }
        for h in &f.hashes {
            let hex = if upper {
                h.hex.to_uppercase()
            } else {
                h.hex.clone()
            };
            out += &format!("  <hash type=\"{}\">{hex}</hash>\n", hash_type(h.algo));
        }
        if let Some(p) = &f.pieces {
            out += &format!(
                "  <pieces length=\"{}\" type=\"{}\">",
                p.length,
                hash_type(p.algo)
            );
            for h in &p.hashes {
                out += &format!("<hash>{h}</hash>");
            }
            out += "</pieces>\n";
        }
        for (scheme, n) in &f.skipped {
            for i in 0..*n {
                out += &format!("  <url priority=\"1\">{scheme}://web{i}.example.org/x</url>\n");
            }
        }
        for u in &f.urls {
            out += "  <url";
            if let Some(loc) = &u.location {
                out += &format!(" location=\"{loc}\"");
            }
            if let Some(p) = u.priority {
                out += &format!(" priority=\"{p}\"");
            }
            out += &format!(">{}</url>\n", esc(&u.url));
        }
        out += "</file>\n";
    }
    doc(&out)
}

fn name_strategy() -> impl Strategy<Value = String> {
    let part = "[A-Za-z0-9_&<>'\" .~-]{1,12}".prop_filter("not . or ..", |p| p != "." && p != "..");
    prop::collection::vec(part, 1..3).prop_map(|parts| parts.join("/"))
}

fn url_strategy() -> impl Strategy<Value = MetaUrl> {
    (
        prop::sample::select(vec!["ftp", "ftpes", "ftps", "FTP"]),
        "[a-z0-9]{1,8}",
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,9}",
        prop::option::of(1u32..1_000_000),
        prop::option::of("[a-z]{2}"),
    )
        .prop_map(|(scheme, host, path, priority, location)| MetaUrl {
            url: format!("{scheme}://user:pass@{host}.example.org/pub/{path}"),
            priority,
            location,
        })
}

fn hashes_strategy() -> impl Strategy<Value = Vec<Expected>> {
    let algos = vec![Algo::Sha256, Algo::Sha512, Algo::Sha1, Algo::Md5];
    (
        prop::sample::subsequence(algos, 0..=4),
        prop::collection::vec("[0-9a-f]{128}", 4),
    )
        .prop_map(|(algos, hexes)| {
            algos
                .into_iter()
                .zip(hexes)
                .map(|(algo, hex)| Expected {
                    algo,
                    hex: hex[..algo.hex_len()].to_owned(),
                })
                .collect()
        })
}

/// A size and pieces consistent with each other (or no pieces and any size).
fn size_and_pieces() -> impl Strategy<Value = (Option<u64>, Option<Pieces>)> {
    let algo = prop::sample::select(vec![Algo::Sha256, Algo::Sha512, Algo::Sha1, Algo::Md5]);
    let with_pieces = (
        algo,
        1u64..1 << 22,
        0u64..12,
        any::<bool>(),
        any::<u64>(),
        "[0-9a-f]{128}",
    )
        .prop_map(|(algo, length, count, sized, r, hex)| {
            let count = if sized { count } else { count.max(1) };
            let size = match count {
                0 => 0,
                c => (c - 1) * length + 1 + r % length,
            };
            let hashes = (0..count)
                .map(|_| hex[..algo.hex_len()].to_owned())
                .collect();
            (
                sized.then_some(size),
                Some(Pieces {
                    length,
                    algo,
                    hashes,
                }),
            )
        });
    prop_oneof![
        prop::option::of(any::<u64>()).prop_map(|s| (s, None)),
        with_pieces
    ]
}

fn file_strategy() -> impl Strategy<Value = MetaFile> {
    (
        name_strategy(),
        size_and_pieces(),
        hashes_strategy(),
        prop::collection::vec(url_strategy(), 1..5),
        prop::collection::btree_map(
            prop::sample::select(vec!["http", "https", "rsync"]),
            1usize..3,
            0..3,
        ),
    )
        .prop_map(|(name, (size, pieces), hashes, mut urls, skipped)| {
            urls.sort_by_key(|u| (u.priority.is_none(), u.priority));
            MetaFile {
                name,
                size,
                hashes,
                pieces,
                urls,
                skipped: skipped
                    .into_iter()
                    .map(|(s, n)| (s.to_owned(), n))
                    .collect(),
            }
        })
}

fn metalink_strategy() -> impl Strategy<Value = Metalink> {
    prop::collection::vec(file_strategy(), 1..4).prop_map(|mut files| {
        // Unique names: a prefix per file.
        for (i, f) in files.iter_mut().enumerate() {
            f.name = format!("f{i}{}", f.name);
        }
        Metalink { files }
    })
}

/// What every accepted Metalink promises its caller.
fn check_invariants(m: &Metalink) {
    assert!(!m.files.is_empty());
    let mut names = std::collections::HashSet::new();
    for f in &m.files {
        assert!(unsafe_name(&f.name).is_none(), "{:?}", f.name);
        assert!(names.insert(&f.name));
        assert!(!f.urls.is_empty());
        for u in &f.urls {
            assert!(FtpUrl::parse(&u.url).is_ok());
        }
        assert!(
            f.urls
                .windows(2)
                .all(|w| (w[0].priority.is_none(), w[0].priority)
                    <= (w[1].priority.is_none(), w[1].priority))
        );
        for h in &f.hashes {
            assert_eq!(h.hex.len(), h.algo.hex_len());
        }
        if let (Some(p), Some(size)) = (&f.pieces, f.size) {
            assert_eq!(p.hashes.len() as u64, size.div_ceil(p.length));
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Truncate(usize),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(vec![
        "<",
        ">",
        "/",
        "\"",
        "&",
        "<file name=\"..\">",
        "</file>",
        "<size>",
        "<!--",
        "]]>",
        "&#0;",
        "\u{0}",
        "é",
    ]);
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (
            any::<usize>(),
            prop_oneof![token.prop_map(str::to_owned), "\\PC{0,4}"]
        )
            .prop_map(|(at, s)| Mutation::Insert(at, s)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let len = chars.len().max(1);
        match m {
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            Mutation::Insert(at, s) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Mutation::Truncate(at) => chars.truncate(at % len),
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn written_metalinks_read_back_the_same(m in metalink_strategy(), upper in any::<bool>()) {
        let text = write(&m, upper);
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        // The writer puts the scheme as generated ("FTP://"); the parser keeps the text.
        prop_assert_eq!(&parsed, &m);
        check_invariants(&parsed);
    }

    #[test]
    fn mutated_documents_never_panic(m in metalink_strategy(), muts in prop::collection::vec(mutation_strategy(), 1..4)) {
        let text = mutate(&write(&m, false), &muts);
        if let Ok(parsed) = parse(&text) {
            check_invariants(&parsed);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(parsed) = parse(&text) {
            check_invariants(&parsed);
        }
    }

    #[test]
    fn xml_like_token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(vec![
        "<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">", "</metalink>", "<file name=\"a\">",
        "<file name=\"b/c\">", "<file>", "</file>", "<size>", "</size>", "10", "<pieces length=\"4\" type=\"md5\">",
        "</pieces>", "<hash>", "<hash type=\"md5\">", "</hash>", "d41d8cd98f00b204e9800998ecf8427e",
        "<url priority=\"2\">", "<url>", "</url>", "ftp://h/a", "https://h/a", " ", "&amp;", "<!-- x -->",
    ]), 0..40)) {
        let text = tokens.concat();
        if let Ok(parsed) = parse(&text) {
            check_invariants(&parsed);
        }
    }

    #[test]
    fn piece_count_rule(length in 1u64..1 << 30, expected in 0u64..40, r in any::<u64>(), delta in -2i64..=2) {
        let size = if expected == 0 { 0 } else { (expected - 1) * length + 1 + r % length };
        prop_assume!(expected as i64 + delta >= 0);
        let count = (expected as i64 + delta) as usize;
        let inner = format!("<size>{size}</size>{}", pieces(&length.to_string(), "md5", count, MD5_A));
        let result = parse(&doc(&file("a", &inner)));
        if delta == 0 {
            prop_assert_eq!(result.unwrap().files[0].pieces.as_ref().unwrap().hashes.len(), count);
        } else {
            let is_count_error = matches!(result, Err(MetalinkError::PieceCount { .. }));
            prop_assert!(is_count_error, "{:?}", result);
        }
    }
}
