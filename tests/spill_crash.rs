//! Crash safety of the spill log: a child process (this test binary, re-run as `crash_child`)
//! appends through the log with `FsyncPolicy::EveryBatch` and prints every position the log
//! acknowledged as durable; the parent kills it with SIGKILL at a random moment, reopens the log and
//! checks that every durable record is replayed, in order, exactly once, uncorrupted; then it
//! acknowledges a random prefix and starts the next round.
//!
//! Rounds: 3 by default (a few seconds); `WEIR_SPILL_SOAK_ROUNDS=200` for a soak.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_spill::{FsyncPolicy, SpillConfig, SpillLog};

const CHILD_ENV: &str = "WEIR_SPILL_CRASH_CHILD";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Record {
    seq: u64,
    data: Vec<u8>,
}

fn record(seq: u64) -> Record {
    let len = (seq.wrapping_mul(2_654_435_761) % 200) as usize + 1;
    Record {
        seq,
        data: (0..len).map(|i| (seq as usize + i) as u8).collect(),
    }
}

fn config() -> SpillConfig {
    // Small segments: rollover (file create + directory fsync) happens often enough to be killed in.
    SpillConfig::new()
        .segment_bytes(16 << 10)
        .budget_bytes(1 << 30)
        .batch_records(50)
        .fsync(FsyncPolicy::EveryBatch)
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The child: appends forever, printing `durable N` after every batch. Does nothing unless
/// started by `crash_rounds` (the environment variable names the directory).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = SpillLog::<Record>::open(&dir, config()).expect("child opens the log");
    let mut rng = Rng(u64::from(std::process::id()) | 1);
    loop {
        for _ in 0..rng.below(120) + 1 {
            let seq = log.next_seq();
            assert_eq!(log.append(&record(seq)).expect("append"), seq);
        }
        let written = log.flush().expect("flush");
        println!("durable {}", written.durable);
    }
}

#[test]
fn crash_rounds() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds: u64 = std::env::var("WEIR_SPILL_SOAK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5EED_1234_ABCD);
    let mut acked = 0u64; // every record below this was delivered and acknowledged in an earlier round
    let mut truncations = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let durable = Arc::new(AtomicU64::new(0));
        let seen = durable.clone();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("durable ") {
                    seen.fetch_max(n.parse().unwrap(), Ordering::SeqCst);
                }
            }
        });
        // Wait for the child to get going, then kill it at a random moment.
        let started = Instant::now();
        while durable.load(Ordering::SeqCst) <= acked && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        lines.join().unwrap();
        let durable = durable.load(Ordering::SeqCst);
        assert!(
            durable > acked,
            "round {round}: the child acknowledged nothing"
        );

        let log = SpillLog::<Record>::open(dir.path(), config()).expect("reopen after the crash");
        truncations += log.metrics().snapshot().truncations;
        let mut next = acked;
        while let Some(spilled) = log.read().expect("no corruption after a crash") {
            assert_eq!(
                spilled.seq, next,
                "round {round}: replay in order, no gap, no duplicate"
            );
            assert_eq!(
                spilled.item,
                record(next),
                "round {round}: record {next} intact"
            );
            next += 1;
        }
        assert!(
            next >= durable,
            "round {round}: records {next}..{durable} were acknowledged as durable but are lost"
        );
        // Acknowledge a random prefix; the rest must come back next round.
        let upto = acked + rng.below(next - acked + 1);
        log.ack_through(upto).unwrap();
        log.close().unwrap();
        drop(log);
        acked = upto;
    }
    eprintln!(
        "{rounds} crash rounds, {acked} records acknowledged, {truncations} torn tails truncated"
    );
}
