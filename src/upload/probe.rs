//! What the server can do for a parallel upload: a probe on a scratch file proving that
//! `REST n` + `STOR` writes in place, also past the end, without truncating.

use crate::ftp::upload::Store;
use crate::ftp::{Session, SessionError};

/// Appended to the remote name for the parallel-upload probe's scratch file.
pub const PROBE_SUFFIX: &str = ".ftpseg-probe";
/// Size of each of the probe's three blocks.
pub(super) const PROBE_BLOCK: usize = 4096;

/// The probe's bytes: three blocks that differ from each other and from zeros.
pub fn probe_bytes() -> Vec<u8> {
    (0..3 * PROBE_BLOCK)
        .map(|i| ((i * 7 + i / PROBE_BLOCK * 101 + 13) % 251) as u8 + 1)
        .collect()
}

/// Why parallel upload cannot be used; `session_lost` when the probe session must be replaced.
#[derive(Debug)]
pub(super) struct ProbeFailure {
    pub(super) why: String,
    pub(super) session_lost: bool,
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Proves, on a scratch file, that the server writes `REST n` + `STOR` in place: block 0 with
/// a plain STOR, block 2 past the end (a hole), then block 1 in the middle. The file must then
/// be exactly the three blocks, read back with RETR. The scratch file is deleted.
pub(super) async fn probe_parallel(s: &mut Session, final_path: &str) -> Result<(), ProbeFailure> {
    if !s.supports_rest() {
        return Err(ProbeFailure {
            why: "no REST".into(),
            session_lost: false,
        });
    }
    let scratch = format!("{final_path}{PROBE_SUFFIX}");
    let data = probe_bytes();
    let r = probe_steps(s, &scratch, &data).await;
    let cleanup = s.delete(&scratch).await;
    match r {
        Ok(()) => Ok(()),
        Err(ProbeStep::Refused(why)) => Err(ProbeFailure {
            why,
            session_lost: cleanup
                .as_ref()
                .is_err_and(|e| !matches!(e, SessionError::Reply { .. })),
        }),
        Err(ProbeStep::Lost(e)) => Err(ProbeFailure {
            why: format!("the probe failed: {e}"),
            session_lost: true,
        }),
    }
}

enum ProbeStep {
    /// The server answered, but not as parallel upload needs.
    Refused(String),
    /// The session failed.
    Lost(SessionError),
}

async fn probe_steps(s: &mut Session, scratch: &str, data: &[u8]) -> Result<(), ProbeStep> {
    let b = PROBE_BLOCK;
    let step = |e: SessionError, what: &str| match e {
        SessionError::Reply { text, .. } => ProbeStep::Refused(format!("{what}: {text}")),
        other => ProbeStep::Lost(other),
    };
    for (from, what) in [
        (0, "STOR"),
        (2 * b, "REST past the end + STOR"),
        (b, "REST + STOR in the middle"),
    ] {
        let mut stream = s
            .open_upload(Store::Stor, scratch, from as u64)
            .await
            .map_err(|e| step(e, what))?;
        s.write_data(&mut stream, &data[from..from + b])
            .await
            .map_err(ProbeStep::Lost)?;
        s.end_upload(stream, what)
            .await
            .map_err(|e| step(e, what))?;
    }
    let size = s.size(scratch).await.map_err(|e| step(e, "SIZE"))?;
    if let Some(n) = size
        && n != data.len() as u64
    {
        return Err(ProbeStep::Refused(format!(
            "REST + STOR truncated or misplaced the data ({n} bytes instead of {})",
            data.len()
        )));
    }
    let mut t = s.retr(scratch, 0).await.map_err(|e| step(e, "RETR"))?;
    let mut back = vec![0u8; data.len() + 1];
    let mut got = 0;
    loop {
        let n = s
            .read_data(&mut t.stream, &mut back[got..])
            .await
            .map_err(ProbeStep::Lost)?;
        if n == 0 {
            break;
        }
        got += n;
        if got == back.len() {
            break;
        }
    }
    let to_eof = got < back.len();
    s.end_transfer(t.stream, to_eof)
        .await
        .map_err(|e| step(e, "RETR"))?;
    if back[..got] != *data {
        return Err(ProbeStep::Refused(format!(
            "REST + STOR truncated or misplaced the data (read back {got} bytes that differ)"
        )));
    }
    Ok(())
}
