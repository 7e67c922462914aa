//! Directory listings and names, pure: parsers for `MLSD` lines (RFC 3659 facts), `LIST` lines
//! (Unix `ls -l` and DOS/IIS styles), `NLST` lines; glob matching of a last path component;
//! and the mapping of remote names to safe local paths (no `..`, no absolute paths, no
//! separators or control characters inside a name).
//!
//! Measured on the servers of the interop suite (docs/bulk.md): proftpd, pure-ftpd and
//! pyftpdlib answer `MLSD` (proftpd without listing it in FEAT), vsftpd does not (`500`), so
//! `LIST` is the fallback. pure-ftpd lists `.` and `..` in `NLST`; proftpd and pure-ftpd list
//! `type=cdir`/`type=pdir` entries in `MLSD`. Everything here is line by line: a line that
//! cannot be parsed is skipped by the caller (and counted), never guessed at.

use std::path::{Path, PathBuf};

/// What a listed name is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link (never followed: it could lead out of the tree or into a loop).
    Link,
    /// Anything else (devices, sockets, `OS.*` types we do not know).
    Other,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// Size in bytes, when the listing says.
    pub size: Option<u64>,
    /// Modification time `YYYYMMDDHHMMSS` (UTC), from MLSD's `modify` fact only (LIST dates are
    /// local, imprecise and year-less).
    pub modify: Option<String>,
    /// MLSD's `unique` fact (to notice a directory seen twice through a loop).
    pub unique: Option<String>,
}

/// Parses one `MLSD` line: `fact=value;fact=value; name`. `None` for the `cdir`/`pdir`
/// entries (`.` and `..`) and for lines without the `; name` part.
pub fn parse_mlsd_line(line: &str) -> Option<Entry> {
    let line = line.trim_end_matches(['\r', '\n']);
    // The facts end at the first "; " (RFC 3659: a single space separates facts from the name,
    // which may contain anything, spaces and semicolons too).
    let split = line.find(' ')?;
    let (facts, name) = (&line[..split], &line[split + 1..]);
    if name.is_empty() || !facts.ends_with(';') && !facts.is_empty() {
        return None;
    }
    let mut kind = None;
    let mut size = None;
    let mut modify = None;
    let mut unique = None;
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let (key, value) = fact.split_once('=')?;
        match key.to_ascii_lowercase().as_str() {
            "type" => {
                let v = value.to_ascii_lowercase();
                kind = Some(match v.as_str() {
                    "file" => Kind::File,
                    "dir" => Kind::Dir,
                    "cdir" | "pdir" => return None,
                    v if v.starts_with("os.unix=slink") || v.starts_with("os.unix=symlink") => {
                        Kind::Link
                    }
                    _ => Kind::Other,
                });
            }
            "size" => size = value.parse().ok(),
            "modify" => {
                let digits: String = value.chars().take(14).collect();
                if digits.len() == 14 && digits.bytes().all(|b| b.is_ascii_digit()) {
                    modify = Some(digits);
                }
            }
            "unique" => unique = Some(value.to_owned()),
            _ => {}
        }
    }
    if name == "." || name == ".." {
        return None;
    }
    Some(Entry {
        name: name.to_owned(),
        kind: kind.unwrap_or(Kind::Other),
        size,
        modify,
        unique,
    })
}

/// Byte spans of the whitespace-separated words of `line`.
fn words(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c == ' ' || c == '\t', start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn is_month(w: &str) -> bool {
    MONTHS.contains(&w.to_ascii_lowercase().as_str())
}

/// Parses one `LIST` line, Unix (`-rw-r--r-- 1 owner group 1000 Jan  2  2024 name`, with or
/// without the group) or DOS (`01-02-24  03:04AM  <DIR>  name`, `01-02-2024 03:04PM 1000 name`).
/// `None` for `total N`, `.`, `..` and anything unrecognised. Names keep inner spaces; a link's
/// ` -> target` is cut off.
pub fn parse_list_line(line: &str) -> Option<Entry> {
    let line = line.trim_end_matches(['\r', '\n']);
    let entry = parse_unix_line(line).or_else(|| parse_dos_line(line))?;
    (entry.name != "." && entry.name != "..").then_some(entry)
}

fn parse_unix_line(line: &str) -> Option<Entry> {
    let w = words(line);
    let perms = &line[w.first()?.0..w.first()?.1];
    let kind = match perms.chars().next()? {
        '-' => Kind::File,
        'd' => Kind::Dir,
        'l' => Kind::Link,
        'b' | 'c' | 'p' | 's' => Kind::Other,
        _ => return None,
    };
    if perms.len() < 10 {
        return None;
    }
    // The date is "Mon DD HH:MM" or "Mon DD YYYY"; the size is the word before it.
    let m = (2..w.len().saturating_sub(3)).find(|&i| {
        let word = |k: usize| &line[w[k].0..w[k].1];
        is_month(word(i))
            && word(i + 1)
                .parse::<u8>()
                .is_ok_and(|d| (1..=31).contains(&d))
            && {
                let t = word(i + 2);
                (t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()))
                    || (t.len() == 5 && t.as_bytes()[2] == b':')
            }
            && word(i - 1).bytes().all(|b| b.is_ascii_digit())
    })?;
    let size = line[w[m - 1].0..w[m - 1].1].parse().ok();
    // The name starts one space after the time or year (it may itself start with spaces on
    // exotic servers: those are kept).
    let after = w[m + 2].1 + 1;
    let mut name = line.get(after..)?.to_owned();
    if name.is_empty() {
        return None;
    }
    if kind == Kind::Link
        && let Some(i) = name.find(" -> ")
    {
        name.truncate(i);
    }
    Some(Entry {
        name,
        kind,
        size,
        modify: None,
        unique: None,
    })
}

fn parse_dos_line(line: &str) -> Option<Entry> {
    let w = words(line);
    if w.len() < 4 {
        return None;
    }
    let word = |k: usize| &line[w[k].0..w[k].1];
    let date = word(0);
    let date_ok = (date.len() == 8 || date.len() == 10)
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 2 || i == 5 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let time = word(1).to_ascii_uppercase();
    let time_ok = time.len() == 7 && (time.ends_with("AM") || time.ends_with("PM"))
        || time.len() == 5 && time.as_bytes()[2] == b':';
    if !date_ok || !time_ok {
        return None;
    }
    let (kind, size) = if word(2).eq_ignore_ascii_case("<DIR>") {
        (Kind::Dir, None)
    } else {
        (Kind::File, Some(word(2).parse().ok()?))
    };
    let name = line[w[3].0..].to_owned();
    Some(Entry {
        name,
        kind,
        size,
        modify: None,
        unique: None,
    })
}

/// Parses one `NLST` line into a plain name: `sub dir/x.bin` -> `x.bin` (servers differ on
/// whether they prefix the folder); `None` for `.`, `..` and empty lines.
pub fn parse_nlst_line(line: &str) -> Option<String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let name = line.rsplit('/').next().unwrap_or(line);
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_owned())
}

/// Whether `s` has glob characters (`*`, `?`, `[`).
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style matching of one name: `*` any run, `?` one character, `[abc]`, `[a-z]`,
/// `[!x]` one of (or none of) a set. A `[` without its `]` matches itself. Names starting with
/// `.` are matched only by patterns starting with `.` (as in a shell).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last `*` (linear space, bounded time).
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p[pi..], n[ni]) {
                Some((true, len)) => Some(pi + len),
                Some((false, _)) => None,
                None => (n[ni] == '[').then_some(pi + 1),
            },
            Some(&c) => (c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class at the start of `p` (`[...]`): `Some((matched, length of the
/// class))`, or `None` when there is no closing `]`.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Why a remote name cannot become a local file name.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("an empty name")
    } else if name == "." || name == ".." {
        Some("a name that means a folder itself or its parent")
    } else if name.contains('/') || name.contains('\\') {
        Some("a name with a path separator in it")
    } else if name.chars().any(|c| c.is_control()) {
        Some("a name with control characters in it")
    } else {
        None
    }
}

/// The local path for a remote file `rel` (its components below the folder being fetched),
/// under `base`: every component must pass [`unsafe_name`], so the result always stays
/// inside `base`. The error names the offending component.
pub fn local_path(base: &Path, rel: &[String]) -> Result<PathBuf, String> {
    if rel.is_empty() {
        return Err("no file name".into());
    }
    let mut out = base.to_path_buf();
    for c in rel {
        if let Some(why) = unsafe_name(c) {
            return Err(format!("refusing {why}: {c:?}"));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            kind: Kind::File,
            size: Some(size),
            modify: None,
            unique: None,
        }
    }

    #[test]
    fn mlsd_lines_of_the_real_servers() {
        // proftpd 1.3.8
        let e = parse_mlsd_line("modify=20240102030405;perm=adfr;size=1000003;type=file;unique=FE00U9C8DDF;UNIX.group=0;UNIX.mode=0644; prime.bin").unwrap();
        assert_eq!(e.name, "prime.bin");
        assert_eq!(e.kind, Kind::File);
        assert_eq!(e.size, Some(1000003));
        assert_eq!(e.modify.as_deref(), Some("20240102030405"));
        assert_eq!(e.unique.as_deref(), Some("FE00U9C8DDF"));
        // pure-ftpd: a folder with spaces, sizd not size
        let e = parse_mlsd_line(
            "type=dir;sizd=4096;modify=20261121161514;UNIX.mode=0755;unique=fe00g9c8e1c; sub dir",
        )
        .unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind, e.size),
            ("sub dir", Kind::Dir, None)
        );
        assert_eq!(parse_mlsd_line("type=cdir;sizd=4096; ."), None);
        assert_eq!(parse_mlsd_line("type=pdir;modify=20261121181535; .."), None);
        // pyftpdlib, lower-case facts; fractions of seconds
        let e = parse_mlsd_line("modify=20240102030405.123;perm=r;size=0;type=file; empty.bin")
            .unwrap();
        assert_eq!(e.size, Some(0));
        assert_eq!(e.modify.as_deref(), Some("20240102030405"));
        // Names with semicolons, leading spaces and non-ASCII are kept exactly.
        assert_eq!(
            parse_mlsd_line("type=file;size=3;  a;b ü.iso")
                .unwrap()
                .name,
            " a;b ü.iso"
        );
        let e = parse_mlsd_line("type=OS.unix=slink:/etc;size=4; etc").unwrap();
        assert_eq!(e.kind, Kind::Link);
        assert_eq!(parse_mlsd_line("garbage"), None);
        assert_eq!(parse_mlsd_line(""), None);
    }

    #[test]
    fn list_lines_of_the_real_servers() {
        // vsftpd (numeric owners, "Jan 02  2024")
        assert_eq!(
            parse_list_line("-rw-r--r--    1 0        0         1000003 Jan 02  2024 prime.bin"),
            Some(file("prime.bin", 1000003))
        );
        let e = parse_list_line("drwxr-xr-x    2 0        0            4096 Nov 21 16:15 sub dir")
            .unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("sub dir", Kind::Dir));
        // proftpd / pyftpdlib
        assert_eq!(
            parse_list_line("-rw-r--r--   1 root     root            0 Jan  2  2024 empty.bin"),
            Some(file("empty.bin", 0))
        );
        // No group column; a name that looks like a date; a link.
        assert_eq!(
            parse_list_line("-rw-r--r-- 1 ftp 12 Mar  3 12:00 Jan 1 2024 x"),
            Some(file("Jan 1 2024 x", 12))
        );
        let e = parse_list_line("lrwxrwxrwx 1 0 0 7 Jan 02  2024 up -> ../etc").unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("up", Kind::Link));
        assert_eq!(parse_list_line("total 12"), None);
        assert_eq!(
            parse_list_line("drwxr-xr-x 4 0 0 4096 Nov 21 18:15 .."),
            None
        );
        // DOS / IIS
        assert_eq!(
            parse_list_line("01-02-24  03:04AM             1000003 prime.bin"),
            Some(file("prime.bin", 1000003))
        );
        let e = parse_list_line("01-02-2024  03:04PM       <DIR>          sub dir").unwrap();
        assert_eq!((e.name.as_str(), e.kind), ("sub dir", Kind::Dir));
        assert_eq!(
            parse_list_line("12-31-99 11:59 12 a b.iso").unwrap().name,
            "a b.iso"
        );
        assert_eq!(parse_list_line("hello world"), None);
    }

    #[test]
    fn nlst_lines() {
        assert_eq!(parse_nlst_line("big.bin").as_deref(), Some("big.bin"));
        assert_eq!(
            parse_nlst_line("sub dir/name with spaces.bin\r").as_deref(),
            Some("name with spaces.bin")
        );
        assert_eq!(parse_nlst_line("sub dir/."), None);
        assert_eq!(parse_nlst_line(".."), None);
        assert_eq!(parse_nlst_line(""), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.iso", "debian-12.iso"));
        assert!(!glob_match("*.iso", "debian-12.iso.sig"));
        assert!(glob_match("debian-1?.*", "debian-12.iso"));
        assert!(glob_match("[a-c]x[!0-9]", "bxz"));
        assert!(!glob_match("[a-c]x[!0-9]", "bx1"));
        assert!(glob_match("*", "name with spaces.bin"));
        assert!(!glob_match("*", ".hidden"));
        assert!(glob_match(".*", ".hidden"));
        assert!(glob_match("a[b", "a[b"));
        assert!(glob_match("**a*b*", "xxaxxbxx"));
        assert!(!glob_match("a*b", "ab_"));
        assert!(glob_match("[]]", "]"));
        assert!(has_glob("*.iso") && has_glob("a?") && !has_glob("plain.iso"));
    }

    #[test]
    fn local_paths_stay_inside() {
        let base = Path::new("/dl");
        assert_eq!(
            local_path(base, &["sub dir".into(), "ü.bin".into()]).unwrap(),
            PathBuf::from("/dl/sub dir/ü.bin")
        );
        for bad in ["..", ".", "", "a/b", "a\\b", "x\ny"] {
            assert!(local_path(base, &[bad.into()]).is_err(), "{bad:?}");
        }
        assert!(local_path(base, &[]).is_err());
    }

    proptest! {
        #[test]
        fn mlsd_round_trips_any_name(name in "[^\r\n]{1,40}", size in any::<u64>()) {
            prop_assume!(name != "." && name != "..");
            let line = format!("type=file;size={size};modify=20240102030405; {name}");
            let e = parse_mlsd_line(&line).unwrap();
            prop_assert_eq!(e.name, name);
            prop_assert_eq!(e.size, Some(size));
        }

        #[test]
        fn unix_list_round_trips_names(name in "[a-zA-Z0-9._-][a-zA-Z0-9 ._-]{0,30}", size in any::<u64>()) {
            prop_assume!(name != "." && name != "..");
            let line = format!("-rw-r--r--   1 root  root  {size} Jan  2  2024 {name}");
            prop_assert_eq!(parse_list_line(&line), Some(file(&name, size)));
        }

        #[test]
        fn dos_list_round_trips(
            (month, day, year) in (1u8..=12, 1u8..=31, prop_oneof![0u16..100, 1980u16..2100]),
            (hour, minute, clock) in (0u8..24, 0u8..60, 0u8..3),
            size in proptest::option::of(any::<u64>()),
            dir_word in prop_oneof![Just("<DIR>"), Just("<dir>"), Just("<Dir>")],
            name in ("[^ \t\r\n]", proptest::collection::vec(
                prop_oneof![Just(" ".to_owned()), Just("\t".to_owned()), "[^\r\n]{1,4}"],
                0..6,
            ))
                .prop_map(|(first, rest)| first + &rest.concat()),
            gaps in proptest::collection::vec("[ \t]{1,12}", 3),
            end in prop_oneof![Just(""), Just("\r"), Just("\r\n")],
        ) {
            prop_assume!(name != "." && name != "..");
            let date = if year < 100 {
                format!("{month:02}-{day:02}-{year:02}")
            } else {
                format!("{month:02}-{day:02}-{year}")
            };
            // 12-hour clock with AM/PM (either case), or 24-hour.
            let time = match clock {
                0 => format!("{:02}:{minute:02}AM", hour % 12 + 1),
                1 => format!("{:02}:{minute:02}pm", hour % 12 + 1),
                _ => format!("{hour:02}:{minute:02}"),
            };
            let what = size.map_or(dir_word.to_owned(), |n| n.to_string());
            let line = format!("{date}{}{time}{}{what}{}{name}{end}", gaps[0], gaps[1], gaps[2]);
            let want = Entry {
                name: name.clone(),
                kind: if size.is_some() { Kind::File } else { Kind::Dir },
                size,
                modify: None,
                unique: None,
            };
            prop_assert_eq!(parse_list_line(&line), Some(want), "{:?}", line);
        }

        #[test]
        fn nlst_gives_the_last_component(
            folders in proptest::collection::vec("[^/\r\n]{1,10}", 0..3),
            name in "[^/\r\n]{1,20}",
            end in prop_oneof![Just(""), Just("\r"), Just("\r\n")],
        ) {
            let mut line: String = folders.iter().map(|f| format!("{f}/")).collect();
            line.push_str(&name);
            line.push_str(end);
            let want = (name != "." && name != "..").then(|| name.clone());
            prop_assert_eq!(parse_nlst_line(&line), want, "{:?}", line);
        }

        #[test]
        fn parsers_never_panic(line in "\\PC{0,80}") {
            let _ = parse_mlsd_line(&line);
            let _ = parse_list_line(&line);
            let _ = parse_nlst_line(&line);
        }

        #[test]
        fn star_matches_everything_visible(name in "[^./][^/]{0,20}") {
            prop_assert!(glob_match("*", &name));
            prop_assert!(glob_match(&name.replace(['*', '?', '['], "?"), &name));
        }

        #[test]
        fn literal_pattern_matches_only_itself(a in "[a-z.]{1,10}", b in "[a-z.]{1,10}") {
            prop_assume!(!a.starts_with('.'));
            prop_assert_eq!(glob_match(&a, &b), a == b);
        }

        #[test]
        fn safe_paths_never_escape(parts in proptest::collection::vec("\\PC{0,12}", 1..4)) {
            let base = Path::new("/base");
            if let Ok(p) = local_path(base, &parts) {
                prop_assert!(p.starts_with(base));
                prop_assert_eq!(p.components().count(), 2 + parts.len());
            }
        }
    }
}
