use super::writer::MAX_SPLICE_WRITE;
use super::*;
use crate::storage::io::Store;

#[test]
fn pipe_bytes_land_at_their_offset_even_where_splice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fill = |pipe: &crate::ftp::pipe::Pipe, bytes: &[u8]| {
        assert_eq!(
            rustix::io::write(pipe.write_end(), bytes).unwrap(),
            bytes.len()
        );
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 4096];
    // A normal file: spliced.
    let pf = PartFile::create(&dir.path().join("a.part"), 400_000).unwrap();
    let w = pf.writer();
    let pipe = crate::ftp::pipe::Pipe::new().unwrap();
    fill(&pipe, &data[..60_000]);
    w.write_from_pipe(&pipe, 60_000, 1000, &mut buf, None)
        .unwrap();
    assert!(w.splices());
    let mut back = vec![0u8; 60_000];
    pf.read_exact_at(&mut back, 1000).unwrap();
    assert_eq!(back, data[..60_000]);
    // More than one splice's worth (MAX_SPLICE_WRITE) moves in several writes, in order,
    // and each piece is shown as written, read back at its offset.
    let n = (2 * MAX_SPLICE_WRITE + 7_000).min(pipe.capacity());
    fill(&pipe, &data[..n]);
    let mut big = vec![0u8; 256 << 10];
    let mut shown: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut show = |at: u64, b: &[u8]| shown.push((at, b.to_vec()));
    w.write_from_pipe(&pipe, n, 70_000, &mut big, Some(&mut show))
        .unwrap();
    let mut back = vec![0u8; n];
    pf.read_exact_at(&mut back, 70_000).unwrap();
    assert_eq!(back, data[..n]);
    assert!(shown.len() >= 2, "several pieces: {}", shown.len());
    let mut at = 70_000;
    for (from, bytes) in &shown {
        assert_eq!(*from, at);
        assert!(bytes.len() <= MAX_SPLICE_WRITE);
        at += bytes.len() as u64;
    }
    let joined: Vec<u8> = shown.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(joined, data[..n]);
    // A file opened for appending refuses splice (EINVAL): the rest goes through `buf`
    // (pwrite, which on Linux appends on such a file: all that matters here is that every
    // byte arrives in order), and the writer stops splicing.
    let path = dir.path().join("b");
    std::fs::write(&path, vec![0u8; 100_000]).unwrap();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let w = PartWriter::new(Target::File(Arc::new(file)), Store::Splice, None);
    fill(&pipe, &data[..50_000]);
    let mut shown = Vec::new();
    let mut show = |at: u64, b: &[u8]| shown.push((at, b.len()));
    w.write_from_pipe(&pipe, 50_000, 0, &mut buf, Some(&mut show))
        .unwrap();
    assert!(!w.splices());
    assert_eq!(shown.iter().map(|s| s.1).sum::<usize>(), 50_000);
    assert_eq!(shown[0].0, 0);
    let written = std::fs::read(&path).unwrap();
    assert_eq!(
        written.len(),
        150_000,
        "appended: pwrite on O_APPEND appends on Linux"
    );
    assert_eq!(&written[100_000..], &data[..50_000]);
    // The pipe was emptied exactly.
    let mut one = [0u8; 1];
    assert!(rustix::io::read(pipe.read_end(), &mut one).is_err());
}

#[test]
fn discard_drops_every_byte_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pf = PartFile::discard(1 << 30).unwrap();
    assert_eq!(pf.len(), 1 << 30);
    let w = pf.writer();
    w.write_at(b"dropped", 5).unwrap();
    w.write_back(0, 1 << 30);
    // Spliced bytes leave the pipe (into /dev/null) and the pipe is empty again.
    let pipe = crate::ftp::pipe::Pipe::new().unwrap();
    let data = vec![7u8; 50_000];
    assert_eq!(rustix::io::write(pipe.write_end(), &data).unwrap(), 50_000);
    let mut buf = vec![0u8; 4096];
    let mut shown = 0;
    let mut show = |_: u64, _: &[u8]| shown += 1;
    w.write_from_pipe(&pipe, 50_000, 123, &mut buf, Some(&mut show))
        .unwrap();
    assert_eq!(shown, 0, "nothing written, nothing to show");
    assert!(w.splices());
    let mut one = [0u8; 1];
    assert!(rustix::io::read(pipe.read_end(), &mut one).is_err());
    // Asking for more than the pipe holds is the same error as for a file.
    assert!(w.write_from_pipe(&pipe, 1, 0, &mut buf, None).is_err());
    pf.flush().unwrap();
    assert!(
        pf.read_exact_at(&mut one, 0).is_err(),
        "nothing to read back"
    );
    assert_eq!(pf.blake3().unwrap(), None);
    let out = dir.path().join("never");
    pf.commit(&out, false).unwrap();
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn create_reserves_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("f.part");
    let out = dir.path().join("f");
    let pf = PartFile::create(&part, 3 << 20).unwrap();
    assert_eq!(pf.allocation(), Allocation::Reserved);
    let meta = std::fs::metadata(&part).unwrap();
    assert_eq!(meta.len(), 3 << 20);
    assert!(meta.blocks() * 512 >= 3 << 20, "blocks really allocated");
    let w = pf.writer();
    w.write_at(b"abc", 0).unwrap();
    w.write_at(b"z", (3 << 20) - 1).unwrap();
    w.write_back(0, 3 << 20);
    pf.flush().unwrap();
    let hash = pf.blake3().unwrap().unwrap();
    pf.commit(&out, false).unwrap();
    let data = std::fs::read(&out).unwrap();
    assert_eq!(&data[..3], b"abc");
    assert_eq!(data[(3 << 20) - 1], b'z');
    assert_eq!(blake3::hash(&data), hash);
    assert!(!part.exists());
}

#[test]
fn zero_length_file() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("e.part");
    let pf = PartFile::create(&part, 0).unwrap();
    assert_eq!(pf.blake3().unwrap(), Some(blake3::hash(b"")));
    pf.commit(&dir.path().join("e"), false).unwrap();
    assert_eq!(std::fs::read(dir.path().join("e")).unwrap(), b"");
}

#[test]
fn resume_requires_same_length() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("r.part");
    std::fs::write(&part, b"12345").unwrap();
    let err = PartFile::open_existing(&part, 6).err().unwrap();
    assert!(err.to_string().contains("5 bytes long"), "{err}");
    let pf = PartFile::open_existing(&part, 5).unwrap();
    assert_eq!(pf.len(), 5);
}

#[test]
fn no_space_is_reported_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("huge.part");
    let err = PartFile::create(&part, 1 << 60).err().unwrap();
    assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("need 1024.00 PiB"), "{err}");
}

#[test]
fn commit_does_not_replace_a_file_that_appeared_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    std::fs::write(&out, b"someone else's").unwrap();
    let pf = PartFile::create(&dir.path().join("o.part"), 4).unwrap();
    let err = pf.commit(&out, false).err().unwrap();
    assert!(matches!(err, StorageError::Exists(_)), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"someone else's");
    assert!(dir.path().join("o.part").exists(), "the download is kept");
    let pf = PartFile::open_existing(&dir.path().join("o.part"), 4).unwrap();
    pf.commit(&out, true).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 4]);
}

#[test]
fn part_path_appends() {
    assert_eq!(
        part_path(Path::new("a/b.iso")),
        PathBuf::from("a/b.iso.part")
    );
}

/// Every store puts received bytes at their offsets and shows each piece, in order, as it is.
#[test]
fn every_store_lands_received_bytes_at_their_offsets() {
    use crate::storage::Io;
    let dir = tempfile::tempdir().unwrap();
    let len = 5_000_000u64;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    for io in [Io::Mmap, Io::Splice, Io::Pwrite] {
        let path = dir.path().join(format!("{io:?}.part"));
        let pf = PartFile::create(&path, len)
            .unwrap()
            .with_store(io)
            .unwrap();
        let want_store = match io {
            Io::Mmap => Store::Mmap,
            Io::Splice => Store::Splice,
            _ => Store::Pwrite,
        };
        assert_eq!(pf.store(), want_store);
        let w = pf.writer();
        // Two receivers, as two connections: one takes [0, 3 MB), the other the rest.
        for (from, to) in [(3_000_000u64, len), (0, 3_000_000)] {
            let mut rx = w.receiver(256 << 10);
            let mut at = from;
            let mut shown = Vec::new();
            while at < to {
                let want = (to - at).min(200_003) as usize;
                let piece = &data[at as usize..at as usize + want];
                let n = match rx.landing(at, want, true).unwrap() {
                    Landing::Pipe(p) => rustix::io::write(p.write_end(), piece).unwrap(),
                    Landing::Memory(m) => {
                        m.copy_from_slice(piece);
                        want
                    }
                };
                let mut show = |at: u64, b: &[u8]| shown.push((at, b.to_vec()));
                rx.land(at, n, Some(&mut show)).unwrap();
                at += n as u64;
            }
            let mut next = from;
            for (at, bytes) in &shown {
                assert_eq!(*at, next, "{io:?}: pieces in order");
                assert_eq!(&bytes[..], &data[*at as usize..*at as usize + bytes.len()]);
                next += bytes.len() as u64;
            }
            assert_eq!(next, to, "{io:?}: every byte shown");
        }
        pf.flush().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "{io:?}: the file's bytes"
        );
    }
}
