//! How a download's bytes go from the data connection into the `.part` (`--io`): the user's
//! choice ([`Io`]), the store it becomes for one download ([`Store`]), and the rule `auto`
//! follows ([`Io::store_for`]). Pure: no I/O here.

use super::Allocation;

/// `--io`: how bytes get into the `.part`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    /// The measured best for the case (docs/architecture.md, "Stores").
    #[default]
    Auto,
    /// Receive straight into a shared memory map of the preallocated `.part`, hash in place.
    Mmap,
    /// socket -> pipe -> page cache with `splice` (plain data connections; TLS reads into a
    /// buffer and uses `pwrite`).
    Splice,
    /// Receive into a buffer, `pwrite` it into the file.
    Pwrite,
}

/// The store one download uses: what its [`Io`] became once the file was prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Mmap,
    Splice,
    Pwrite,
}

impl Store {
    /// Its `--io` name, for messages and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Store::Mmap => "mmap",
            Store::Splice => "splice",
            Store::Pwrite => "pwrite",
        }
    }
}

/// What the rule for [`Io::Auto`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// How the `.part`'s blocks were reserved (a sparse file is never mapped).
    pub allocation: Allocation,
    /// Whether the data connections use TLS (bytes are decrypted in user space).
    pub tls: bool,
    /// Bytes to write (an empty file has nothing to map).
    pub len: u64,
}

/// Why an explicit `--io mmap` cannot be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoMap {
    /// The file system could not preallocate: a full disk would be a SIGBUS.
    Sparse,
    /// The file is empty.
    Empty,
}

impl Io {
    /// The store for `case`. `Err` only for an explicit `--io mmap` the case rules out;
    /// `auto` then picks another. The rule comes from measurements (docs/architecture.md,
    /// "Stores"): TLS data is decrypted in user space, so receiving into the map saves the copy
    /// and the hash's read-back; plain data moves socket -> page cache in one copy either way,
    /// and `splice` measured at least as cheap.
    pub fn store_for(self, case: Case) -> Result<Store, NoMap> {
        let mappable = match (case.allocation, case.len) {
            (_, 0) => Err(NoMap::Empty),
            (Allocation::Sparse, _) => Err(NoMap::Sparse),
            (Allocation::Reserved, _) => Ok(()),
        };
        match self {
            Io::Mmap => mappable.map(|()| Store::Mmap),
            Io::Splice => Ok(Store::Splice),
            Io::Pwrite => Ok(Store::Pwrite),
            Io::Auto if case.tls && mappable.is_ok() => Ok(Store::Mmap),
            Io::Auto => Ok(Store::Splice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(allocation: Allocation, tls: bool, len: u64) -> Case {
        Case {
            allocation,
            tls,
            len,
        }
    }

    #[test]
    fn a_sparse_or_empty_file_is_never_mapped() {
        let sparse = case(Allocation::Sparse, true, 1 << 30);
        assert_eq!(Io::Mmap.store_for(sparse), Err(NoMap::Sparse));
        assert_ne!(Io::Auto.store_for(sparse), Ok(Store::Mmap));
        let empty = case(Allocation::Reserved, true, 0);
        assert_eq!(Io::Mmap.store_for(empty), Err(NoMap::Empty));
        assert_ne!(Io::Auto.store_for(empty), Ok(Store::Mmap));
    }

    #[test]
    fn an_explicit_choice_is_kept() {
        for tls in [false, true] {
            let c = case(Allocation::Reserved, tls, 10);
            assert_eq!(Io::Mmap.store_for(c), Ok(Store::Mmap));
            assert_eq!(Io::Splice.store_for(c), Ok(Store::Splice));
            assert_eq!(Io::Pwrite.store_for(c), Ok(Store::Pwrite));
            let sparse = case(Allocation::Sparse, tls, 10);
            assert_eq!(Io::Pwrite.store_for(sparse), Ok(Store::Pwrite));
        }
    }
}
