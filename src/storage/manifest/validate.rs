//! The manifest's invariants: what [`Manifest::validate`] checks before a manifest is
//! trusted or saved (ranges that tile the file, `done` within its range, chunk hashes that
//! fit, no password in the URL).

use std::fmt;

use super::{CHUNK_HASH_HEX, FORMAT, Manifest, ManifestError, VERSION};

impl Manifest {
    /// Check every invariant:
    ///
    /// * `format == FORMAT`, `version == VERSION`;
    /// * `url` is not empty and has no password;
    /// * with `size == Some(n)`: `streamed` is `None`; the ranges are
    ///   non-empty (`start < end`), the first starts at 0, each starts where
    ///   the previous one ends (no gap, no overlap), the last ends at `n`
    ///   (no ranges at all when `n == 0`), and `start <= done <= end`;
    /// * with `size == None`: no ranges and `streamed` is `Some`.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.problem().map_err(|problem| match problem {
            Problem::Password => ManifestError::PasswordInUrl,
            Problem::Invalid(reason) => ManifestError::Invalid { reason },
        })
    }

    /// The first broken invariant, if any.
    pub(super) fn problem(&self) -> Result<(), Problem> {
        let invalid = |reason: String| Err(Problem::Invalid(reason));
        if self.format != FORMAT {
            return invalid(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.version != VERSION {
            return invalid(format!("version is {}, expected {VERSION}", self.version));
        }
        if self.url.is_empty() {
            return invalid("the url is empty".to_owned());
        }
        if url_has_password(&self.url) {
            return Err(Problem::Password);
        }
        let Some(size) = self.size else {
            if !self.ranges.is_empty() {
                return invalid(format!(
                    "the size is unknown but there are {} ranges",
                    self.ranges.len()
                ));
            }
            if self.streamed.is_none() {
                return invalid("the size is unknown but streamed is missing".to_owned());
            }
            return Ok(());
        };
        if let Some(streamed) = self.streamed {
            return invalid(format!(
                "the size is known ({size}) but streamed is set ({streamed})"
            ));
        }
        let mut expected_start = 0u64;
        for (i, r) in self.ranges.iter().enumerate() {
            if r.end < r.start {
                return invalid(format!(
                    "range {i} ends before it starts (start {}, end {})",
                    r.start, r.end
                ));
            }
            if r.end == r.start {
                return invalid(format!("range {i} is empty (start = end = {})", r.start));
            }
            if r.start != expected_start {
                return invalid(if i == 0 {
                    format!("the first range starts at {}, not 0", r.start)
                } else if r.start > expected_start {
                    format!(
                        "gap between range {} (ends at {expected_start}) and range {i} (starts at {})",
                        i - 1,
                        r.start
                    )
                } else {
                    format!(
                        "range {i} (starts at {}) overlaps range {} (ends at {expected_start})",
                        r.start,
                        i - 1
                    )
                });
            }
            if r.done < r.start || r.done > r.end {
                return invalid(format!(
                    "range {i} has done {} outside [{}, {}]",
                    r.done, r.start, r.end
                ));
            }
            if r.end > size {
                return invalid(format!("range {i} ends at {}, past the size {size}", r.end));
            }
            expected_start = r.end;
        }
        if expected_start != size {
            return invalid(if self.ranges.is_empty() {
                format!("the size is {size} but there are no ranges")
            } else {
                format!("the ranges end at {expected_start}, not at the size {size}")
            });
        }
        self.chunk_problem(size)
    }

    /// Chunk invariants: a power-of-two chunk size, one entry per chunk, well-formed hashes,
    /// and a hash only for a chunk whose every byte is durable.
    fn chunk_problem(&self, size: u64) -> Result<(), Problem> {
        let invalid = |reason: String| Err(Problem::Invalid(reason));
        if self.chunk_size == 0 {
            if !self.chunks.is_empty() {
                return invalid("chunk hashes are present but chunk_size is 0".to_owned());
            }
            return Ok(());
        }
        if !self.chunk_size.is_power_of_two() || self.chunk_size < 1024 {
            return invalid(format!(
                "chunk_size {} is not a power of two of at least 1024",
                self.chunk_size
            ));
        }
        let expected = size.div_ceil(self.chunk_size);
        if self.chunks.len() as u64 != expected {
            return invalid(format!(
                "there are {} chunk entries, expected {expected}",
                self.chunks.len()
            ));
        }
        for (k, h) in self.chunks.iter().enumerate() {
            let Some(h) = h else { continue };
            if h.len() != CHUNK_HASH_HEX || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(format!("chunk {k} has a malformed hash"));
            }
            let from = k as u64 * self.chunk_size;
            let to = (from + self.chunk_size).min(size);
            if !self.is_durable(from, to) {
                return invalid(format!(
                    "chunk {k} has a hash but its bytes [{from}, {to}) are not all done"
                ));
            }
        }
        Ok(())
    }
}

/// A broken invariant found by `Manifest::problem`.
pub(super) enum Problem {
    Password,
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Password => f.write_str("its url contains a password"),
            Problem::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// Does the URL carry a password (`scheme://user:pass@host/...`)?
///
/// A deliberately simple, conservative parse: the authority is what follows
/// `://` (or the whole string without a scheme) up to the first `/`, `?` or
/// `#`; its userinfo is what precedes the last `@`; a `:` in the userinfo
/// separates a password (a `:` in a user name would be percent-encoded).
pub(super) fn url_has_password(url: &str) -> bool {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => url.trim_start_matches('/'),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority
        .rfind('@')
        .is_some_and(|at| authority[..at].contains(':'))
}
