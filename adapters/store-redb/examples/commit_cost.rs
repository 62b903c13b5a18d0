//! What one durable redb commit costs as a push touches more tables.
//!
//! A rule push wrote four trees in one transaction up to schema 5: the rule row, the
//! client→rules index, the audit row and the rule-id sequence (schema 6 dropped the index,
//! as this measurement suggested). This runs 3,000 durable commits against a file that
//! already holds 1,000 rules and 1,000 audit rows, first touching only the rule table, then
//! adding one tree at a time, and prints the median and p90 of the commit alone (the staged
//! writes are timed apart). Rows are the size of a typical stored rule (600 bytes).
//!
//! ```sh
//! cargo run --release -p portunus-store-redb --example commit_cost -- [dir]
//! ```
//!
//! `dir` must be on the disk the server uses (not tmpfs); it defaults to the system temp dir.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redb::{Database, Durability, MultimapTableDefinition, ReadableTable, TableDefinition};

const SEQUENCE: TableDefinition<&str, u64> = TableDefinition::new("sequence");
const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");
const INDEX: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("index");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

const COMMITS: u64 = 3_000;
const PREFILL: u64 = 1_000;
const ROW_BYTES: usize = 600;

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let dir = std::env::args().nth(1).map_or_else(std::env::temp_dir, PathBuf::from);
    println!("| trees written per commit | staged writes p50 | commit p50 | commit p90 |");
    println!("| --- | ---: | ---: | ---: |");
    for trees in 1..=4 {
        let path = dir.join(format!("portunus-commit-cost-{}-{trees}.redb", std::process::id()));
        let result = run(&path, trees);
        let _ = std::fs::remove_file(&path);
        let (staged, commit) = result?;
        println!(
            "| {trees} | {} µs | {} µs | {} µs |",
            percentile(&staged, 50),
            percentile(&commit, 50),
            percentile(&commit, 90)
        );
    }
    Ok(())
}

/// Commits `COMMITS` transactions that each write the first `trees` of rows, index, log and
/// sequence; returns the staged-write and commit durations.
fn run(path: &std::path::Path, trees: u32) -> Result<(Vec<Duration>, Vec<Duration>), Failure> {
    let db = Database::create(path)?;
    let row = vec![0x5a_u8; ROW_BYTES];
    let tx = db.begin_write()?;
    {
        let mut sequence = tx.open_table(SEQUENCE)?;
        let mut rows = tx.open_table(ROWS)?;
        let mut index = tx.open_multimap_table(INDEX)?;
        let mut log = tx.open_table(LOG)?;
        sequence.insert("next", 1)?;
        for n in 0..PREFILL {
            rows.insert(u64::MAX - n, row.as_slice())?;
            index.insert(client(n).as_str(), u64::MAX - n)?;
            log.insert(n + 1, row.as_slice())?;
        }
    }
    tx.commit()?;

    let mut staged = Vec::with_capacity(COMMITS as usize);
    let mut commit = Vec::with_capacity(COMMITS as usize);
    for n in 0..COMMITS {
        let started = Instant::now();
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            tx.open_table(ROWS)?.insert(n, row.as_slice())?;
            if trees >= 2 {
                tx.open_multimap_table(INDEX)?.insert(client(n).as_str(), n)?;
            }
            if trees >= 3 {
                let mut log = tx.open_table(LOG)?;
                let last = log.last()?.map_or(0, |(key, _)| key.value());
                log.insert(last + 1, row.as_slice())?;
            }
            if trees >= 4 {
                let mut sequence = tx.open_table(SEQUENCE)?;
                let next = sequence.get("next")?.map_or(1, |guard| guard.value());
                sequence.insert("next", next + 1)?;
            }
        }
        let written = Instant::now();
        tx.commit()?;
        staged.push(written - started);
        commit.push(written.elapsed());
    }
    Ok((staged, commit))
}

fn client(n: u64) -> String {
    format!("client-{:04}", n % PREFILL)
}

fn percentile(samples: &[Duration], pct: usize) -> u128 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)].as_micros()
}
