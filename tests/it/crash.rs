//! Crash consistency sweep: the real binary is killed with SIGKILL at many pseudo-random
//! moments of one download (checkpoints every 50 ms, so many kills land during a checkpoint
//! write) and run again each time. After every kill, everything the manifest claims must be
//! true: each range's done bytes equal the source, each recorded chunk hash matches the
//! source. The download must end byte-exact.
//!
//! The sweep runs once per store (`--io mmap`, `splice`, `pwrite`: `crash::...::mmap`). The
//! seed is printed; `FTPSEG_SWEEP_SEED=N` replays a sweep.

use std::time::Duration;

use crate::common::*;
use ftpseg::internals::manifest::Manifest;
use ftpseg::testserver::Faults;
use rand::{Rng, SeedableRng};

const KILLS: usize = 24;

async fn sigkill_sweep_ends_byte_exact_every_time(store: &'static str) {
    let seed = std::env::var("FTPSEG_SWEEP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash sweep with --io {store}, seed {seed} (replay with FTPSEG_SWEEP_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let fx = Fixture::new(|c| {
        c.with_faults(Faults {
            rate_per_transfer: Some(MIB),
            ..Faults::default()
        })
    })
    .await;
    let source = fx.serve("c.bin", 24 * MIB + 12_345, 61);
    let out = fx.out("c.bin");
    let mpath = Manifest::path_for(&out);
    let part = ftpseg::part_path(&out);
    let args = [
        "-q",
        "--io",
        store,
        "-n",
        "4",
        "--checkpoint-interval",
        "0.05",
        "-o",
        out.to_str().unwrap(),
        &fx.url("c.bin"),
    ];
    let mut kills = 0;
    let mut completions = 0;
    // Kills after which the manifest claimed bytes: the claims checked were real ones.
    let mut with_progress = 0;
    while kills < KILLS {
        let mut child = ftpseg().args(args).current_dir(&fx.local).spawn().unwrap();
        let delay = Duration::from_millis(rng.random_range(60..450));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                kills += 1;
            }
            status = child.wait() => {
                assert!(status.unwrap().success(), "run {kills} failed (--io {store}, seed {seed})");
            }
        }
        if out.exists() {
            // This run finished before its kill: check it, then start the sweep over.
            assert_eq!(
                std::fs::read(&out).unwrap(),
                source,
                "--io {store}, seed {seed}"
            );
            assert!(
                !mpath.exists() && !part.exists(),
                "--io {store}, seed {seed}"
            );
            std::fs::remove_file(&out).unwrap();
            completions += 1;
            continue;
        }
        match Manifest::load(&mpath) {
            Ok(Some(m)) => {
                if part.exists() {
                    let bytes = std::fs::read(&part).unwrap();
                    if let Err(e) = claims_hold(&m, &bytes, &source) {
                        panic!("after kill {kills} (--io {store}, seed {seed}): {e}");
                    }
                    if m.bytes_done() > 0 {
                        with_progress += 1;
                    }
                } else {
                    assert_eq!(
                        m.bytes_done(),
                        0,
                        "progress without a .part (--io {store}, seed {seed})"
                    );
                }
            }
            Ok(None) => assert!(
                !part.exists(),
                "a .part exists without a manifest after kill {kills} (--io {store}, seed {seed})"
            ),
            Err(e) => {
                panic!("manifest unreadable after kill {kills} (--io {store}, seed {seed}): {e}")
            }
        }
    }
    let o = run(&args, &fx.local).await;
    assert_ok_and_equal(&o, &out, &source);
    eprintln!(
        "--io {store}: {kills} kills ({with_progress} with progress), {completions} early completions"
    );
    // Kills before the first checkpoint check nothing: most must find progress to check.
    assert!(
        with_progress >= KILLS / 2,
        "only {with_progress} of {kills} kills found progress in the manifest (--io {store}, seed {seed})"
    );
}
per_store!(sigkill_sweep_ends_byte_exact_every_time);
