//! What a batch is given: the command line's URLs and the `-i` file's lines, the
//! `--checksum-file`, and how a URL on the command line (a file, or a folder ending in `/`) is
//! parsed.

use std::path::Path;
use std::time::Instant;

use super::{Settings, Sums, SumsFile};
use crate::error::Error;
use crate::integrity::{checksum, metalink};

/// One line of an input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputLine {
    /// 1-based line number.
    pub line: usize,
    pub url: String,
    /// Output name (relative to `-d`), if the line gives one.
    pub output: Option<String>,
    /// More servers of the same file: the line's other URLs, tab-separated (as aria2 reads
    /// them).
    pub mirrors: Vec<String>,
}

/// Parses an input file: one URL a line, an optional output name after whitespace, `#`
/// comments and blank lines skipped. A line with tabs holds one file's URLs (its mirrors)
/// separated by tabs, and optionally its output name as the last field. Lines are never
/// rejected here: the URL is checked later, so a bad line fails alone.
pub fn parse_input(text: &str) -> Vec<InputLine> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('\t') {
            let fields: Vec<&str> = line
                .split('\t')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect();
            let (urls, names): (Vec<&str>, Vec<&str>) =
                fields.iter().partition(|f| f.contains("://"));
            let mut urls = urls.into_iter().map(str::to_owned);
            out.push(InputLine {
                line: i + 1,
                url: urls.next().unwrap_or_else(|| fields[0].to_owned()),
                mirrors: urls.collect(),
                output: names.last().map(|n| n.to_string()),
            });
            continue;
        }
        let (url, rest) = match line.split_once(char::is_whitespace) {
            Some((u, r)) => (u, r.trim()),
            None => (line, ""),
        };
        out.push(InputLine {
            line: i + 1,
            url: url.to_owned(),
            output: (!rest.is_empty()).then(|| rest.to_owned()),
            mirrors: Vec::new(),
        });
    }
    out
}

/// One input of the batch: a URL (a file, a glob or a folder) and where it came from.
#[derive(Clone, Debug)]
pub struct Input {
    /// For messages: the URL as typed, or `FILE:LINE` of the input file.
    pub label: String,
    pub url: String,
    /// The output name the input file's line gives (relative to `-d`).
    pub output: Option<String>,
    /// The file's other servers (tab-separated on its `-i` line).
    pub mirrors: Vec<String>,
    /// A Metalink's piece hashes of the file.
    pub pieces: Option<metalink::Pieces>,
    /// A Metalink's size of the file.
    pub size: Option<u64>,
}

/// Everything a batch reads before it starts: its inputs and the `--checksum-file`.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub(super) list: Vec<Input>,
    /// `--checksum-file FILE`: its name and lines.
    pub(super) sums: Option<SumsFile>,
    /// When the batch began (its reading of the inputs included): the summary's time.
    pub(super) started: Instant,
}

impl Inputs {
    /// Reads the inputs: the command line's URLs, then the input file's lines (`-` is standard
    /// input); and the `--checksum-file` if it names a local file. Usage errors: no URL at
    /// all, `-o` with several files, a checksum file without a checksum line.
    pub fn read(settings: &Settings) -> Result<Inputs, Error> {
        let started = Instant::now();
        let mut list: Vec<Input> = settings
            .urls
            .iter()
            .map(|u| Input {
                label: u.clone(),
                url: u.clone(),
                output: None,
                mirrors: Vec::new(),
                pieces: None,
                size: None,
            })
            .collect();
        if let Some(path) = &settings.input_file {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::io("cannot read", "standard input", e))?
            } else {
                std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?
            };
            list.extend(parse_input(&text).into_iter().map(|l| Input {
                label: format!("{path}:{}", l.line),
                url: l.url,
                output: l.output,
                mirrors: l.mirrors,
                pieces: None,
                size: None,
            }));
        }
        let mut metalink_sums = None;
        if let Some(path) = &settings.metalink {
            let (files, sums) = read_metalink(path, settings.quiet)?;
            list.extend(files);
            metalink_sums = Some(sums);
        }
        if list.is_empty() {
            return Err(Error::Usage(
                "no URL to download (give URLs, or -i FILE)".into(),
            ));
        }
        if settings.output.is_some() && (list.len() > 1 || settings.recursive) {
            return Err(Error::Usage(
                "-o names one file; with several files use -d DIR".into(),
            ));
        }
        let sums = match (&settings.sums, metalink_sums) {
            (Sums::File(_), Some(_)) => {
                return Err(Error::Usage(
                    "a Metalink carries its own checksums: drop --checksum-file".into(),
                ));
            }
            (_, Some(sums)) => Some(sums),
            (Sums::None | Sums::Auto, None) => None,
            (Sums::File(path), None) => Some(read_sums(path, settings.quiet)?),
        };
        Ok(Inputs {
            list,
            sums,
            started,
        })
    }
}

/// A local checksum file: its name and lines (unreadable lines are skipped, with a note).
fn read_sums(path: &str, quiet: bool) -> Result<SumsFile, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    let (lines, bad) = checksum::parse_sums(&text);
    if lines.is_empty() {
        return Err(Error::Usage(format!(
            "{path} has no checksum line (expected `HEX  NAME` or `SHA256 (NAME) = HEX`)"
        )));
    }
    if !bad.is_empty() && !quiet {
        eprintln!("ftpseg: {path}: ignoring unreadable line(s) {bad:?}");
    }
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((name, lines))
}

/// A Metalink file's files as inputs (each with its mirrors, saved under its name) and its
/// file hashes as checksum lines (the strongest hash of each file).
fn read_metalink(path: &Path, quiet: bool) -> Result<(Vec<Input>, SumsFile), Error> {
    let bad = |message: String| Error::Metalink {
        file: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    let meta = metalink::parse(&text).map_err(|e| bad(e.to_string()))?;
    let mut inputs = Vec::new();
    let mut lines = Vec::new();
    for f in meta.files {
        if let Some(note) = f.skipped_note().filter(|_| !quiet) {
            eprintln!("ftpseg: {note}");
        }
        let mut urls = f.urls.into_iter().map(|u| u.url);
        let first = urls
            .next()
            .expect("the parser keeps files with an FTP URL only");
        if let Some(e) = f.hashes.iter().max_by_key(|e| e.algo.strength()) {
            lines.push(checksum::SumLine {
                algo: Some(e.algo),
                hex: e.hex.clone(),
                name: f.name.clone(),
            });
        }
        inputs.push(Input {
            label: format!("{} ({})", f.name, path.display()),
            url: first,
            output: Some(f.name),
            mirrors: urls.collect(),
            pieces: f.pieces,
            size: f.size,
        });
    }
    Ok((inputs, (path.display().to_string(), lines)))
}
