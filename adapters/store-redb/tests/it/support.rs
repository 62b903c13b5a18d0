//! Shared fixtures: temp dirs on the target disk, sample records, and a whole-store snapshot
//! for comparing a redb store with the reference `MemoryStore`.
//!
//! Invariant: fixtures are deterministic (fixed ids, names and timestamps), so two stores fed
//! the same batches must produce equal snapshots.

use std::path::PathBuf;

use portunus_core::client::{Client, Enrollment};
use portunus_core::ids::{ClientId, ClientName, RuleId, Timestamp, UserId};
use portunus_core::ports::Store;
use portunus_core::rule::{Rule, RuleState};
use portunus_core::secret::SecretHash;
use portunus_core::stats::{Counters, RuleReport, RuleTotals};
use portunus_core::test_support::tcp_rule;
use tempfile::TempDir;

/// A fresh directory under the crate's target dir.
pub fn temp_dir() -> TempDir {
    TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under CARGO_TARGET_TMPDIR")
}

/// The store file's path inside `dir`.
pub fn store_path(dir: &TempDir) -> PathBuf {
    dir.path().join("portunus.redb")
}

pub fn client(n: u8, name: &str) -> Client {
    Client {
        id: ClientId::from_random([n; 10]),
        name: ClientName::parse(name).expect("valid name"),
        token: Some(SecretHash::of(&format!("token-{n}"))),
        revoked_at: None,
        created_at: Timestamp::from_millis(1_000 + u64::from(n)),
        last_seen_at: Some(Timestamp::from_millis(2_000)),
        version: Some("0.1.0".into()),
    }
}

pub fn rule(id: RuleId, client: &ClientId, port: i64) -> Rule {
    Rule {
        id,
        client: client.clone(),
        owner: UserId::operator(),
        def: tcp_rule(port),
        state: RuleState::Pending,
        created_at: Timestamp::from_millis(3_000),
        updated_at: Timestamp::from_millis(3_000),
    }
}

pub fn enrollment(code: &str, client: &ClientId) -> Enrollment {
    Enrollment {
        code_hash: SecretHash::of(code),
        client: client.clone(),
        created_at: Timestamp::from_millis(4_000),
        expires_at: Timestamp::from_millis(5_000),
        endpoint: "127.0.0.1:7443".into(),
        consumed_at: None,
    }
}

pub fn totals(bytes: u64) -> RuleTotals {
    let mut totals = RuleTotals::default();
    totals.record(RuleReport {
        instance: 7,
        totals: Counters {
            bytes_in: bytes,
            bytes_out: bytes / 2,
            connections_total: 3,
            ..Default::default()
        },
        per_port: [(18080, Counters { bytes_in: bytes, ..Default::default() })].into(),
        per_target: vec![],
    });
    totals
}

/// Everything a store holds that the tests can name: listings plus lookups of the given
/// names and enrollment codes (which have no listing).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub clients: Vec<Client>,
    pub by_name: Vec<Option<Client>>,
    pub rules: Vec<Rule>,
    pub totals: Vec<(RuleId, RuleTotals)>,
    pub enrollments: Vec<Option<Enrollment>>,
}

impl Snapshot {
    pub fn of(store: &dyn Store, names: &[&str], codes: &[&str]) -> Snapshot {
        Snapshot {
            clients: store.list_clients().unwrap(),
            by_name: names
                .iter()
                .map(|n| store.client_by_name(&ClientName::parse(n).unwrap()).unwrap())
                .collect(),
            rules: store.list_rules().unwrap(),
            totals: store.list_totals().unwrap(),
            enrollments: codes.iter().map(|c| store.get_enrollment(&SecretHash::of(c)).unwrap()).collect(),
        }
    }
}
