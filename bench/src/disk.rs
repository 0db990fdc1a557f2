//! The disk's own durable-write latency, measured beside the scenarios.
//!
//! Every acknowledged create waits for a WAL fsync, and the baseline touches no disk, so
//! the ratios and the idle latency move with the disk as well as with the CPU. This
//! probe times what those fsyncs cost on the same file system as the servers' data dirs,
//! so each run's figures can be read against the disk's state at the time.

use std::io::Write;
use std::time::Instant;

use crate::stats::{summarize, Summary};

/// Appends `n` blocks of 4 KiB to a new file in the temp dir (where the servers' data
/// dirs go), each followed by `fdatasync`, the way a WAL commit reaches the disk, and
/// summarizes how long each append + sync took.
pub fn fsync_probe(n: usize) -> std::io::Result<Summary> {
    let path = std::env::temp_dir().join(format!("hookline-bench-fsync-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        let block = [0x5au8; 4096];
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(summarize(&times))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// One line for the terminal and results.md.
pub fn describe(when: &str, s: &Summary) -> String {
    format!(
        "disk {when}: 4 KiB append + fdatasync p50 {:.2} ms, p99 {:.2} ms (n = {})",
        s.p50_ms, s.p99_ms, s.n
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probe_times_every_sync() {
        let s = super::fsync_probe(5).unwrap();
        assert_eq!(s.n, 5);
        assert!(s.min_ms > 0.0 && s.min_ms <= s.p50_ms && s.p50_ms <= s.max_ms);
    }
}
