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
    /// Its `--io` name (the trace says which store a download uses).
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
    /// Bytes to write (an empty file has nothing to map).
    pub len: u64,
}

/// Why an explicit `--io mmap` cannot be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoMap {
    /// The file system could not preallocate: a full disk would be a SIGBUS.
    Sparse,
}

impl Io {
    /// The store for `case`. `Err` only for an explicit `--io mmap` the case rules out.
    /// `auto` is `pwrite`, plain or TLS, from the measurements in docs/architecture.md
    /// ("Stores"): with each piece hashed from the buffer it was received into, `pwrite` used
    /// the least CPU of the three (the map pays a zero-filled page-cache page and a write fault
    /// per page before a byte arrives; `splice` pays reading each piece back for the hash).
    pub fn store_for(self, case: Case) -> Result<Store, NoMap> {
        match self {
            // An empty file has no byte to map: nothing is written at all.
            Io::Mmap if case.len == 0 => Ok(Store::Pwrite),
            Io::Mmap if case.allocation == Allocation::Sparse => Err(NoMap::Sparse),
            Io::Mmap => Ok(Store::Mmap),
            Io::Splice => Ok(Store::Splice),
            Io::Pwrite | Io::Auto => Ok(Store::Pwrite),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(allocation: Allocation, len: u64) -> Case {
        Case { allocation, len }
    }

    #[test]
    fn a_sparse_or_empty_file_is_never_mapped() {
        let sparse = case(Allocation::Sparse, 1 << 30);
        assert_eq!(Io::Mmap.store_for(sparse), Err(NoMap::Sparse));
        assert_ne!(Io::Auto.store_for(sparse), Ok(Store::Mmap));
        let empty = case(Allocation::Reserved, 0);
        assert_eq!(Io::Mmap.store_for(empty), Ok(Store::Pwrite));
    }

    #[test]
    fn auto_is_the_measured_best() {
        for len in [0, 1 << 30] {
            for allocation in [Allocation::Reserved, Allocation::Sparse] {
                let c = case(allocation, len);
                assert_eq!(Io::Auto.store_for(c), Ok(Store::Pwrite));
            }
        }
    }

    #[test]
    fn an_explicit_choice_is_kept() {
        let c = case(Allocation::Reserved, 10);
        assert_eq!(Io::Mmap.store_for(c), Ok(Store::Mmap));
        assert_eq!(Io::Splice.store_for(c), Ok(Store::Splice));
        assert_eq!(Io::Pwrite.store_for(c), Ok(Store::Pwrite));
        let sparse = case(Allocation::Sparse, 10);
        assert_eq!(Io::Pwrite.store_for(sparse), Ok(Store::Pwrite));
    }
}
