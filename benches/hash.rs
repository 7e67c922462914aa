//! The cost of one BLAKE3 pass over a file (`verify::hash_file`), as the end of a download
//! pays it for files without chunk hashes. `cargo bench --bench hash [-- --bench FILE]`:
//! without FILE, a 1 GiB file of random-looking bytes is made in a temporary folder. Prints the
//! seconds per GiB of three passes (the file is in the page cache after the first).

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("hash bench: run with `cargo bench --bench hash`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = match std::env::args().skip_while(|a| a != "--bench").nth(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let p = dir.path().join("1g.bin");
            ftpseg::testserver::write_pattern_file(&p, 1 << 30, 7).unwrap();
            p
        }
    };
    let gib = std::fs::metadata(&path).unwrap().len() as f64 / (1u64 << 30) as f64;
    for pass in 1..=3 {
        let t = std::time::Instant::now();
        let h = ftpseg::internals::verify::hash_file(&path).unwrap();
        println!(
            "pass {pass}: {:.3} s per GiB (BLAKE3 {})",
            t.elapsed().as_secs_f64() / gib,
            &h.to_hex()[..16]
        );
    }
}
