//! Throughput against the number of connections, CPU per GiB and peak memory of the real binary.
//!
//! Run with `cargo bench --bench throughput` (see docs/benchmarks.md). The in-process test
//! server runs in this process (release build); each download is the real `ftpseg` binary,
//! measured by `/usr/bin/time` (wall time, user + system CPU, peak RSS), and checked byte-exact
//! (BLAKE3) against the served file. Results: a markdown table on stdout and JSON in
//! `target/bench/throughput.json`.
//!
//! Scenarios:
//! * `capped`: every connection capped at `FTPSEG_BENCH_CAP` (default 16 MiB/s), a
//!   `FTPSEG_BENCH_CAPPED_SIZE` file (default 256 MiB), N = 1, 2, 4, 8, 16. Ideal: N x cap.
//! * `loopback`: no cap, a `FTPSEG_BENCH_SIZE` file (default 1 GiB), N = 1, 8.
//!
//! `FTPSEG_BENCH_REPS` (default 1) repeats each run; the table shows medians.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ftpseg::testserver::{Faults, ServerConfig, TestServer, write_pattern_file};

const MIB: u64 = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| ftpseg::internals::parse_size(&v).ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
struct Run {
    scenario: &'static str,
    connections: usize,
    size: u64,
    cap: Option<u64>,
    wall: f64,
    cpu: f64,
    max_rss_kib: u64,
}

impl Run {
    fn mib_s(&self) -> f64 {
        self.size as f64 / MIB as f64 / self.wall
    }
    fn of_ideal(&self) -> Option<f64> {
        self.cap
            .map(|c| self.size as f64 / self.wall / (c as f64 * self.connections as f64))
    }
    fn cpu_per_gib(&self) -> f64 {
        self.cpu / (self.size as f64 / (1u64 << 30) as f64)
    }
}

fn main() {
    // `cargo test --benches` runs benches with no `--bench` flag: keep that quick and skip.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput bench: run with `cargo bench --bench throughput`");
        return;
    }
    let reps = env_u64("FTPSEG_BENCH_REPS", 1).max(1) as usize;
    let cap = env_u64("FTPSEG_BENCH_CAP", 16 * MIB);
    let capped_size = env_u64("FTPSEG_BENCH_CAPPED_SIZE", 256 * MIB);
    let big = env_u64("FTPSEG_BENCH_SIZE", 1 << 30);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    let local = dir.path().join("local");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::create_dir_all(&local).unwrap();

    let mut runs = Vec::new();
    write_pattern_file(&served.join("capped.bin"), capped_size, 1).unwrap();
    write_pattern_file(&served.join("big.bin"), big, 2).unwrap();
    let capped_hash = hash(&served.join("capped.bin"));
    let big_hash = hash(&served.join("big.bin"));

    let capped = rt
        .block_on(TestServer::start(ServerConfig::new(&served).with_faults(
            Faults {
                rate_per_transfer: Some(cap),
                ..Faults::default()
            },
        )))
        .unwrap();
    for n in [1, 2, 4, 8, 16] {
        for _ in 0..reps {
            runs.push(measure(
                "capped",
                n,
                capped_size,
                Some(cap),
                &capped.url("capped.bin"),
                &local,
                capped_hash,
            ));
        }
    }
    rt.block_on(capped.shutdown());

    let open = rt
        .block_on(TestServer::start(ServerConfig::new(&served)))
        .unwrap();
    for n in [1, 8] {
        for _ in 0..reps {
            runs.push(measure(
                "loopback",
                n,
                big,
                None,
                &open.url("big.bin"),
                &local,
                big_hash,
            ));
        }
    }
    rt.block_on(open.shutdown());

    let medians = medians(&runs);
    println!(
        "\n| scenario | N | size | cap/conn | MiB/s | of N x cap | CPU s/GiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &medians {
        println!(
            "| {} | {} | {} MiB | {} | {:.1} | {} | {:.2} | {:.1} |",
            r.scenario,
            r.connections,
            r.size / MIB,
            r.cap.map_or("-".into(), |c| format!("{} MiB/s", c / MIB)),
            r.mib_s(),
            r.of_ideal()
                .map_or("-".into(), |f| format!("{:.1} %", f * 100.0)),
            r.cpu_per_gib(),
            r.max_rss_kib as f64 / 1024.0
        );
    }
    let json = serde_json::json!({
        "bench": "throughput",
        "reps": reps,
        "runs": runs.iter().map(to_json).collect::<Vec<_>>(),
        "medians": medians.iter().map(to_json).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("throughput.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("\nJSON: {}", path.display());
}

fn to_json(r: &Run) -> serde_json::Value {
    serde_json::json!({
        "scenario": r.scenario,
        "connections": r.connections,
        "size_bytes": r.size,
        "cap_bytes_per_s": r.cap,
        "wall_s": r.wall,
        "cpu_s": r.cpu,
        "max_rss_kib": r.max_rss_kib,
        "mib_per_s": r.mib_s(),
        "fraction_of_ideal": r.of_ideal(),
        "cpu_s_per_gib": r.cpu_per_gib(),
    })
}

fn hash(path: &Path) -> blake3::Hash {
    ftpseg::internals::verify::hash_file(path).unwrap()
}

fn measure(
    scenario: &'static str,
    n: usize,
    size: u64,
    cap: Option<u64>,
    url: &str,
    local: &Path,
    expected: blake3::Hash,
) -> Run {
    let out = local.join(format!("{scenario}-{n}.bin"));
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(local.join("time.txt"))
        .arg(env!("CARGO_BIN_EXE_ftpseg"))
        .args(["-q", "--force", "-n", &n.to_string(), "-o"])
        .arg(&out)
        .arg(url)
        .status()
        .expect("run /usr/bin/time (Debian package `time`)");
    assert!(status.success(), "ftpseg failed in {scenario} N={n}");
    assert_eq!(hash(&out), expected, "{scenario} N={n}: bytes differ");
    std::fs::remove_file(&out).unwrap();
    let t = std::fs::read_to_string(local.join("time.txt")).unwrap();
    let f: Vec<&str> = t.split_whitespace().collect();
    let run = Run {
        scenario,
        connections: n,
        size,
        cap,
        wall: f[0].parse().unwrap(),
        cpu: f[1].parse::<f64>().unwrap() + f[2].parse::<f64>().unwrap(),
        max_rss_kib: f[3].parse().unwrap(),
    };
    eprintln!(
        "{scenario} N={n}: {:.2} s, {:.1} MiB/s, CPU {:.2} s, RSS {} KiB",
        run.wall,
        run.mib_s(),
        run.cpu,
        run.max_rss_kib
    );
    std::thread::sleep(Duration::from_millis(200));
    run
}

fn medians(runs: &[Run]) -> Vec<Run> {
    let mut keys: Vec<(&str, usize)> = runs.iter().map(|r| (r.scenario, r.connections)).collect();
    keys.dedup();
    keys.into_iter()
        .map(|(s, n)| {
            let mut group: Vec<Run> = runs
                .iter()
                .filter(|r| r.scenario == s && r.connections == n)
                .cloned()
                .collect();
            group.sort_by(|a, b| a.wall.total_cmp(&b.wall));
            group[group.len() / 2].clone()
        })
        .collect()
}
