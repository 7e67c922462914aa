//! Checksums of downloaded files: the algorithms (SHA-256, SHA-512, SHA-1, MD5, BLAKE3), the
//! `--checksum ALGO=HEX` argument, checksum files in the `sha256sum` format (`SHA256SUMS`,
//! `MD5SUMS`, as Debian and Ubuntu publish beside their ISOs, and the BSD `SHA256 (name) = hex`
//! form), and hashing a local file.
//!
//! Parsing is pure; [`hash_file`] reads the file (from the page cache, right after the download:
//! see docs/bulk.md for why SHA-2 cannot be computed while ranges arrive out of order, and what
//! the extra pass costs). BLAKE3 needs no pass at all: the engine merges it from the chunk
//! hashes it takes during the download ([`super::verify::root_hash`]).

use std::io::Read;
use std::path::Path;

use md5::Digest;

/// A checksum algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    Sha256,
    Sha512,
    Sha1,
    Md5,
    Blake3,
}

impl Algo {
    pub const ALL: [Algo; 5] = [
        Algo::Sha256,
        Algo::Sha512,
        Algo::Sha1,
        Algo::Md5,
        Algo::Blake3,
    ];

    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
            Algo::Sha1 => "sha1",
            Algo::Md5 => "md5",
            Algo::Blake3 => "blake3",
        }
    }

    /// How much a match proves, to pick the strongest of several hashes (md5 least).
    pub fn strength(self) -> u8 {
        match self {
            Algo::Md5 => 0,
            Algo::Sha1 => 1,
            Algo::Sha256 => 2,
            Algo::Sha512 | Algo::Blake3 => 3,
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 | Algo::Blake3 => 64,
            Algo::Sha512 => 128,
            Algo::Sha1 => 40,
            Algo::Md5 => 32,
        }
    }

    /// `sha256`, `SHA-256`, `sha-256`, `SHA256` ... -> the algorithm.
    pub fn parse(s: &str) -> Option<Algo> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Algo::ALL.into_iter().find(|a| a.name() == norm)
    }

    /// The algorithm a checksum file's name implies (`SHA256SUMS`, `sha512sum.txt`, `MD5SUMS`,
    /// `x.iso.sha256`), if any.
    pub fn from_file_name(name: &str) -> Option<Algo> {
        let lower = name.to_ascii_lowercase();
        // Longest names first: "sha256" must not be read as "sha2...".
        [
            Algo::Sha512,
            Algo::Sha256,
            Algo::Sha1,
            Algo::Md5,
            Algo::Blake3,
        ]
        .into_iter()
        .find(|a| lower.contains(a.name()) || lower.contains(&a.name().replace("sha", "sha-")))
    }
}

/// An expected digest: `--checksum sha256=HEX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub algo: Algo,
    /// Lower-case hex.
    pub hex: String,
}

impl Expected {
    /// Parses `ALGO=HEX` (`sha256=...`, `SHA-256=...`), checking the digest's length.
    pub fn parse(s: &str) -> Result<Expected, String> {
        let (algo, hex) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not ALGO=HEX (e.g. sha256=9f86d0...)"))?;
        let algo = Algo::parse(algo).ok_or_else(|| {
            format!("unknown checksum algorithm '{algo}': use sha256, sha512, sha1, md5 or blake3")
        })?;
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a {} digest is {} hex digits; '{hex}' is not",
                algo.name(),
                algo.hex_len()
            ));
        }
        Ok(Expected { algo, hex })
    }
}

/// One line of a checksum file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumLine {
    /// Set by the BSD form (`SHA256 (name) = hex`); otherwise implied by the digest length
    /// or the file's name.
    pub algo: Option<Algo>,
    pub hex: String,
    /// The file name as written (a leading `*` binary marker or `./` removed).
    pub name: String,
}

/// Parses a checksum file: GNU `hex  name` / `hex *name` lines and BSD `ALGO (name) = hex`
/// lines; comments (`#`) and blank lines are skipped. Returns the lines it understood and the
/// 1-based numbers of those it did not.
pub fn parse_sums(text: &str) -> (Vec<SumLine>, Vec<usize>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match parse_gnu(line).or_else(|| parse_bsd(line)) {
            Some(l) => good.push(l),
            None => bad.push(i + 1),
        }
    }
    (good, bad)
}

fn clean_name(name: &str) -> String {
    name.strip_prefix("./").unwrap_or(name).to_owned()
}

fn parse_gnu(line: &str) -> Option<SumLine> {
    let (hex, rest) = line.split_once(' ')?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || ![32, 40, 64, 128].contains(&hex.len()) {
        return None;
    }
    // "hex  name" (text mode) or "hex *name" (binary mode).
    let name = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .unwrap_or(rest);
    if name.is_empty() {
        return None;
    }
    Some(SumLine {
        algo: None,
        hex: hex.to_ascii_lowercase(),
        name: clean_name(name),
    })
}

fn parse_bsd(line: &str) -> Option<SumLine> {
    let (algo, rest) = line.split_once(" (")?;
    let (name, hex) = rest.rsplit_once(") = ")?;
    let algo = Algo::parse(algo)?;
    let hex = hex.trim().to_ascii_lowercase();
    (hex.len() == algo.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| SumLine {
        algo: Some(algo),
        hex,
        name: clean_name(name),
    })
}

/// The expected digest of `file_name` in a parsed checksum file called `sums_name`: the line
/// whose name is `file_name` (or ends in `/file_name`). The algorithm comes from the BSD form,
/// else from the checksum file's name, else from the digest's length (64 hex digits are read
/// as SHA-256, not BLAKE3).
pub fn lookup(lines: &[SumLine], sums_name: &str, file_name: &str) -> Option<Expected> {
    let line = lines.iter().find(|l| l.name == file_name).or_else(|| {
        lines
            .iter()
            .find(|l| l.name.rsplit('/').next() == Some(file_name))
    })?;
    let algo = line
        .algo
        .or_else(|| Algo::from_file_name(sums_name).filter(|a| a.hex_len() == line.hex.len()))
        .or(match line.hex.len() {
            32 => Some(Algo::Md5),
            40 => Some(Algo::Sha1),
            64 => Some(Algo::Sha256),
            128 => Some(Algo::Sha512),
            _ => None,
        })?;
    Some(Expected {
        algo,
        hex: line.hex.clone(),
    })
}

/// Names a folder's checksum file usually has, best first (for `--checksum-file auto`).
pub fn is_sums_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let stem = lower.trim_end_matches(".txt");
    Algo::ALL.into_iter().any(|a| {
        let n = a.name();
        stem == format!("{n}sums") || stem == format!("{n}sum") || stem == "checksums"
    })
}

/// A running hash of one algorithm.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algo::Md5 => Hasher::Md5(md5::Md5::new()),
            Algo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest as lower-case hex.
    pub fn finish_hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Blake3(h) => h.finalize().as_bytes().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Hashes a local file with each of `algos` in one sequential pass (1 MiB reads), returning
/// the hex digests in the same order.
pub fn hash_file(path: &Path, algos: &[Algo]) -> std::io::Result<Vec<String>> {
    let mut hashers: Vec<Hasher> = algos.iter().map(|&a| Hasher::new(a)).collect();
    if hashers.is_empty() {
        return Ok(Vec::new());
    }
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
    }
    Ok(hashers.into_iter().map(Hasher::finish_hex).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const MD5_EMPTY: &str = "d41d8cd98f00b204e9800998ecf8427e";

    #[test]
    fn algorithm_names() {
        assert_eq!(Algo::parse("SHA-256"), Some(Algo::Sha256));
        assert_eq!(Algo::parse("sha512"), Some(Algo::Sha512));
        assert_eq!(Algo::parse("BLAKE3"), Some(Algo::Blake3));
        assert_eq!(Algo::parse("crc32"), None);
        assert_eq!(Algo::from_file_name("SHA256SUMS"), Some(Algo::Sha256));
        assert_eq!(Algo::from_file_name("SHA512SUMS"), Some(Algo::Sha512));
        assert_eq!(Algo::from_file_name("MD5SUMS"), Some(Algo::Md5));
        assert_eq!(Algo::from_file_name("x.iso.sha1"), Some(Algo::Sha1));
        assert_eq!(Algo::from_file_name("README"), None);
        assert!(is_sums_file_name("SHA256SUMS") && is_sums_file_name("md5sum.txt"));
        assert!(!is_sums_file_name("SHA256SUMS.sign") && !is_sums_file_name("x.iso"));
    }

    #[test]
    fn expected_digests() {
        let e = Expected::parse(&format!("SHA-256={}", SHA_EMPTY.to_uppercase())).unwrap();
        assert_eq!(
            e,
            Expected {
                algo: Algo::Sha256,
                hex: SHA_EMPTY.into()
            }
        );
        assert!(
            Expected::parse("sha256=abc")
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(Expected::parse("crc=00").unwrap_err().contains("unknown"));
        assert!(Expected::parse(SHA_EMPTY).unwrap_err().contains("ALGO=HEX"));
    }

    #[test]
    fn debian_and_bsd_sums_files() {
        let text = format!(
            "# comment\n{SHA_EMPTY}  debian-12.iso\n{SHA_EMPTY} *./b.iso\r\nnot a line\n\n\
             MD5 (c d.iso) = {MD5_EMPTY}\n"
        );
        let (lines, bad) = parse_sums(&text);
        assert_eq!(bad, vec![4]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].name, "b.iso");
        assert_eq!(lines[2].algo, Some(Algo::Md5));
        assert_eq!(lines[2].name, "c d.iso");
        let e = lookup(&lines, "SHA256SUMS", "debian-12.iso").unwrap();
        assert_eq!(e.algo, Algo::Sha256);
        assert_eq!(
            lookup(&lines, "SHA256SUMS", "c d.iso").unwrap().algo,
            Algo::Md5
        );
        assert_eq!(lookup(&lines, "SHA256SUMS", "missing.iso"), None);
        // A name with a folder matches by its last component.
        let (lines, _) = parse_sums(&format!("{MD5_EMPTY}  sub/x.iso\n"));
        assert_eq!(lookup(&lines, "MD5SUMS", "x.iso").unwrap().algo, Algo::Md5);
        // A BLAKE3 list is named so.
        let (lines, _) = parse_sums(&format!("{SHA_EMPTY}  y\n"));
        assert_eq!(
            lookup(&lines, "B3SUMS-blake3", "y").unwrap().algo,
            Algo::Blake3
        );
    }

    #[test]
    fn hashers_match_known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let got = hash_file(&p, &Algo::ALL).unwrap();
        assert_eq!(
            got[0],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(got[1].starts_with("ddaf35a193617aba"));
        assert_eq!(got[2], "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(got[3], "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(got[4], blake3::hash(b"abc").to_hex().as_str());
    }

    proptest! {
        #[test]
        fn gnu_lines_round_trip(hex in "[0-9a-f]{64}", name in "[^\r\n]{1,30}", binary in any::<bool>()) {
            prop_assume!(!name.starts_with('#') && !name.trim().is_empty() && !name.starts_with("./"));
            prop_assume!(!name.starts_with(' ') && !name.starts_with('*'));
            let line = format!("{hex} {}{name}\n", if binary { '*' } else { ' ' });
            let (lines, bad) = parse_sums(&line);
            prop_assert!(bad.is_empty());
            prop_assert_eq!(&lines[0].name, &name);
            let e = lookup(&lines, "SHA256SUMS", &name).unwrap();
            prop_assert_eq!(e.hex, hex);
        }

        #[test]
        fn bsd_lines_round_trip(
            algo in proptest::sample::select(Algo::ALL.to_vec()),
            spelling in 0..3u8,
            digits in proptest::collection::vec((0..16u8, any::<bool>()), 128),
            // Names rich in what could be taken for the line's own parentheses and " = ".
            name in proptest::collection::vec(
                prop_oneof![
                    Just(" (".to_owned()),
                    Just(") = ".to_owned()),
                    Just(")".to_owned()),
                    Just(" ".to_owned()),
                    "[^\r\n]{1,4}",
                ],
                1..6,
            )
            .prop_map(|pieces| pieces.concat()),
            end in prop_oneof![Just(""), Just(" "), Just("\r")],
        ) {
            prop_assume!(!name.starts_with("./"));
            let written = match spelling {
                0 => algo.name().to_ascii_uppercase(),
                1 => algo.name().to_owned(),
                // "SHA-256", "MD-5", "BLAKE-3": a dash before the digits.
                _ => {
                    let n = algo.name().to_ascii_uppercase();
                    let at = n.find(|c: char| c.is_ascii_digit()).unwrap_or(n.len());
                    format!("{}-{}", &n[..at], &n[at..])
                }
            };
            let hex: String = digits[..algo.hex_len()]
                .iter()
                .map(|&(d, upper)| {
                    let c = char::from_digit(u32::from(d), 16).unwrap();
                    if upper { c.to_ascii_uppercase() } else { c }
                })
                .collect();
            let line = format!("{written} ({name}) = {hex}{end}\n");
            let (lines, bad) = parse_sums(&line);
            prop_assert!(bad.is_empty(), "{:?}", line);
            let want = SumLine { algo: Some(algo), hex: hex.to_ascii_lowercase(), name: name.clone() };
            prop_assert_eq!(&lines, &vec![want], "{:?}", line);
            let e = lookup(&lines, "CHECKSUMS", &name).unwrap();
            prop_assert_eq!(e, Expected { algo, hex: hex.to_ascii_lowercase() });
            // One digit more or less is not a digest of that algorithm.
            for wrong in [&hex[1..], &format!("{hex}0")[..]] {
                let (lines, bad) = parse_sums(&format!("{written} ({name}) = {wrong}\n"));
                prop_assert!(lines.is_empty() && bad == vec![1], "{:?}", wrong);
            }
        }

        #[test]
        fn sums_parser_never_panics(text in "\\PC{0,200}") {
            let _ = parse_sums(&text);
        }

        #[test]
        fn expected_accepts_exactly_the_right_length(len in 0usize..140) {
            let hex = "a".repeat(len);
            prop_assert_eq!(Expected::parse(&format!("sha1={hex}")).is_ok(), len == 40);
        }
    }
}
