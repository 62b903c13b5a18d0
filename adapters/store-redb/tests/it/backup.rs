//! Backups of an open store: every row, one committed state even while writes go on, a new
//! private file that opens as a store, and never an overwrite.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use portunus_core::ids::RuleId;
use portunus_core::ports::{ClientStore, RuleIds, RuleStore, Store, Write};
use portunus_store_redb::{RedbStore, SCHEMA_VERSION};

use crate::support::{Snapshot, client, enrollment, rule, store_path, temp_dir, totals};

const NAMES: [&str; 2] = ["edge-01", "edge-02"];
const CODES: [&str; 1] = ["code-1"];

#[test]
fn a_backup_holds_every_row_and_opens_as_a_store() {
    let dir = temp_dir();
    let store = RedbStore::open(&store_path(&dir)).unwrap();
    let (a, b) = (client(1, "edge-01"), client(2, "edge-02"));
    let ids: Vec<RuleId> = (0..2).map(|_| store.next_rule_id().unwrap()).collect();
    store
        .commit(vec![
            Write::PutClient(a.clone()),
            Write::PutClient(b.clone()),
            Write::PutRule(rule(ids[0], &a.id, 18080)),
            Write::PutRule(rule(ids[1], &b.id, 18081)),
            Write::PutTotals(ids[0], totals(100)),
            Write::PutEnrollment(enrollment("code-1", &b.id)),
        ])
        .unwrap();
    let copy = dir.path().join("backup.redb");
    store.backup_to(&copy).unwrap();
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);

    assert_eq!(RedbStore::check(&copy).unwrap(), SCHEMA_VERSION);
    let restored = RedbStore::open(&copy).unwrap();
    assert_eq!(Snapshot::of(&restored, &NAMES, &CODES), Snapshot::of(&store, &NAMES, &CODES));
    // The rule id sequence goes on where the original's stands.
    assert_eq!(restored.next_rule_id().unwrap(), store.next_rule_id().unwrap());
}

#[test]
fn a_backup_never_overwrites_a_file() {
    let dir = temp_dir();
    let store = RedbStore::open(&store_path(&dir)).unwrap();
    let copy = dir.path().join("backup.redb");
    std::fs::write(&copy, b"keep me").unwrap();
    store.backup_to(&copy).unwrap_err();
    assert_eq!(std::fs::read(&copy).unwrap(), b"keep me");
}

#[test]
fn a_backup_taken_while_writes_go_on_is_one_committed_state() {
    let dir = temp_dir();
    let store = Arc::new(RedbStore::open(&store_path(&dir)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // Each batch adds a client and its rule together: a copy with one but not the other
    // would hold half a batch.
    let writer = std::thread::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        move || {
            let mut n = 0u8;
            while !stop.load(Ordering::SeqCst) && n < 200 {
                n += 1;
                let edge = client(n, &format!("edge-{n}"));
                let id = store.next_rule_id().unwrap();
                store
                    .commit(vec![
                        Write::PutClient(edge.clone()),
                        Write::PutRule(rule(id, &edge.id, 20000 + i64::from(n))),
                    ])
                    .unwrap();
            }
            n
        }
    });
    // Back up only once writes are under way (the writer stops by itself after 200 batches).
    while store.list_clients().unwrap().len() < 5 {
        assert!(!writer.is_finished(), "the writer stopped early");
        std::thread::yield_now();
    }
    let mut n_seen = Vec::new();
    for i in 0..5 {
        let copy = dir.path().join(format!("backup-{i}.redb"));
        store.backup_to(&copy).unwrap();
        let restored = RedbStore::open(&copy).unwrap();
        let clients = restored.list_clients().unwrap();
        let rules = restored.list_rules().unwrap();
        assert_eq!(clients.len(), rules.len(), "backup {i} holds half a batch");
        for edge in &clients {
            assert_eq!(restored.rules_for_client(&edge.id).unwrap().len(), 1, "backup {i}: {}", edge.name);
        }
        n_seen.push(clients.len());
    }
    stop.store(true, Ordering::SeqCst);
    let n_written = writer.join().unwrap();
    assert!(n_seen.windows(2).all(|w| w[0] <= w[1]), "later backups hold fewer rows: {n_seen:?}");
    assert!(n_seen.iter().all(|n| (5..=usize::from(n_written)).contains(n)), "{n_seen:?} of {n_written}");
}
