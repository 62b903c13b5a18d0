//! Opening a store file: the lock, the schema version, persistence across reopen, and the
//! guards against files and writes Portunus did not make.

use portunus_core::ErrorCode;
use portunus_core::ids::{ClientName, RuleId};
use portunus_core::ports::{ClientStore, EnrollmentStore, RuleIds, RuleStore, Store, StoreError, Write};
use portunus_core::secret::SecretHash;
use portunus_store_redb::{RedbStore, SCHEMA_VERSION};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::support::{Snapshot, client, enrollment, rule, store_path, temp_dir, totals};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Overwrites the recorded schema version with plain redb, as another binary would.
fn write_schema_version(path: &std::path::Path, version: u64) {
    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(META).unwrap().insert("schema_version", version).unwrap();
    tx.commit().unwrap();
    db.close().unwrap();
}

#[test]
fn a_second_open_of_the_same_file_is_in_use() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::InUse), "{err:?}");
    assert_eq!(err.code(), ErrorCode::StoreInUse);
    first.close().unwrap();
    RedbStore::open(&path).unwrap();
}

#[test]
fn a_newer_schema_is_refused_and_the_file_left_untouched() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let store = RedbStore::open(&path).unwrap();
    store.commit(vec![Write::PutClient(client(1, "edge-01"))]).unwrap();
    store.close().unwrap();
    write_schema_version(&path, 99);
    let before = std::fs::read(&path).unwrap();

    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, supported: SCHEMA_VERSION }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::SchemaVersionTooNew);
    assert!(std::fs::read(&path).unwrap() == before, "the refused file was modified");
    // Refusing twice is just as harmless.
    assert!(matches!(RedbStore::open(&path), Err(StoreError::SchemaTooNew { found: 99, .. })));
    assert!(std::fs::read(&path).unwrap() == before, "the refused file was modified");
}

#[test]
fn a_fresh_file_records_the_schema_version_and_every_table() {
    let dir = temp_dir();
    let path = store_path(&dir);
    RedbStore::open(&path).unwrap().close().unwrap();

    let db = Database::open(&path).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    assert_eq!(meta.get("schema_version").unwrap().unwrap().value(), SCHEMA_VERSION);
    assert_eq!(meta.get("next_rule_id").unwrap().unwrap().value(), 1);
    let mut tables: Vec<String> =
        tx.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_owned()).collect();
    tables.sort();
    assert_eq!(
        tables,
        [
            "api_tokens",
            "audit",
            "client_names",
            "clients",
            "enrollments",
            "grants",
            "meta",
            "quotas",
            "rules",
            "sessions",
            "settings",
            "throttles",
            "totals",
            "traffic_1h",
            "traffic_1m",
            "users"
        ]
    );
}

/// Writes a version 1 file with plain redb, the way the first release laid it out: the six
/// version 1 tables, one client with its name entry, one rule.
fn write_version_1_file(
    path: &std::path::Path,
) -> (portunus_core::client::Client, portunus_core::rule::Rule) {
    let edge = client(1, "edge-01");
    let kept = rule(RuleId::new(1), &edge.id, 18080);
    let db = Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut meta = tx.open_table(META).unwrap();
        meta.insert("schema_version", 1).unwrap();
        meta.insert("next_rule_id", 2).unwrap();
        let text = |name| TableDefinition::<&str, &[u8]>::new(name);
        let numbered = |name| TableDefinition::<u64, &[u8]>::new(name);
        tx.open_table(text("clients"))
            .unwrap()
            .insert(edge.id.as_str(), serde_json::to_vec(&edge).unwrap().as_slice())
            .unwrap();
        tx.open_table(TableDefinition::<&str, &str>::new("client_names"))
            .unwrap()
            .insert(edge.name.as_str(), edge.id.as_str())
            .unwrap();
        tx.open_table(numbered("rules"))
            .unwrap()
            .insert(1, serde_json::to_vec(&kept).unwrap().as_slice())
            .unwrap();
        tx.open_table(text("enrollments")).unwrap();
        tx.open_table(numbered("totals")).unwrap();
    }
    tx.commit().unwrap();
    db.close().unwrap();
    (edge, kept)
}

#[test]
fn a_version_1_file_is_migrated_forward_and_keeps_its_data() {
    use portunus_core::ports::{StateStore, UserStore};
    let dir = temp_dir();
    let path = store_path(&dir);
    let (edge, kept) = write_version_1_file(&path);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get_client(&edge.id).unwrap(), Some(edge.clone()));
    assert_eq!(store.client_by_name(&edge.name).unwrap(), Some(edge.clone()));
    assert_eq!(store.list_rules().unwrap(), vec![kept.clone()]);
    // A client's rules are read from the rules themselves (version 3 built an index of them,
    // version 6 dropped it).
    assert_eq!(store.rules_for_client(&edge.id).unwrap(), vec![kept]);
    assert_eq!(store.rule_counts().unwrap().get(&edge.id), Some(&1));
    assert!(store.list_users().unwrap().is_empty());
    // Version 4's quotas start empty.
    assert!(portunus_core::ports::QuotaStore::list_quotas(&store).unwrap().is_empty());
    assert!(
        !store.runtime_settings().unwrap().onboarding.is_complete(),
        "onboarding is open after an upgrade"
    );
    assert_eq!(store.next_rule_id().unwrap(), RuleId::new(2));
    store.close().unwrap();

    let db = Database::open(&path).unwrap();
    let tx = db.begin_read().unwrap();
    assert_eq!(tx.open_table(META).unwrap().get("schema_version").unwrap().unwrap().value(), SCHEMA_VERSION);
    assert!(tx.list_tables().unwrap().any(|t| redb::TableHandle::name(&t) == "audit"));
    assert!(tx.list_tables().unwrap().any(|t| redb::TableHandle::name(&t) == "quotas"));
    assert_eq!(tx.list_multimap_tables().unwrap().count(), 0, "version 6 dropped the client→rules index");
}

#[test]
fn a_version_5_file_drops_its_client_index_and_keeps_its_rules() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let edge = client(1, "edge-01");
    let (one, two) = (rule(RuleId::new(1), &edge.id, 18080), rule(RuleId::new(2), &edge.id, 18081));
    {
        let store = RedbStore::open(&path).unwrap();
        let _ = (store.next_rule_id().unwrap(), store.next_rule_id().unwrap());
        store
            .commit(vec![
                Write::PutClient(edge.clone()),
                Write::PutRule(one.clone()),
                Write::PutRule(two.clone()),
            ])
            .unwrap();
        store.close().unwrap();
    }
    // Turn it back into what version 5 wrote: the same tables plus the index.
    {
        let db = Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().insert("schema_version", 5).unwrap();
        let index = redb::MultimapTableDefinition::<&str, u64>::new("client_rules");
        let mut index = tx.open_multimap_table(index).unwrap();
        index.insert(edge.id.as_str(), 1).unwrap();
        index.insert(edge.id.as_str(), 2).unwrap();
        drop(index);
        tx.commit().unwrap();
        db.close().unwrap();
    }

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.rules_for_client(&edge.id).unwrap(), vec![one.clone(), two.clone()]);
    assert_eq!(store.rule_counts().unwrap().get(&edge.id), Some(&2));
    assert_eq!(store.next_rule_id().unwrap(), RuleId::new(3));
    store.commit(vec![Write::DeleteRule(one.id)]).unwrap();
    assert_eq!(store.rules_for_client(&edge.id).unwrap(), vec![two]);
    store.close().unwrap();

    let db = Database::open(&path).unwrap();
    let tx = db.begin_read().unwrap();
    assert_eq!(tx.open_table(META).unwrap().get("schema_version").unwrap().unwrap().value(), SCHEMA_VERSION);
    assert_eq!(tx.list_multimap_tables().unwrap().count(), 0, "the index is gone");
}

#[test]
fn a_fresh_store_reads_as_empty() {
    let dir = temp_dir();
    let on_disk = RedbStore::open(&store_path(&dir)).unwrap();
    let in_memory = RedbStore::in_memory().unwrap();
    for store in [&on_disk as &dyn Store, &in_memory] {
        let empty = Snapshot::of(store, &["edge-01"], &["code"]);
        assert_eq!(
            empty,
            Snapshot {
                clients: vec![],
                by_name: vec![None],
                rules: vec![],
                totals: vec![],
                enrollments: vec![None]
            }
        );
        assert_eq!(store.get_rule(RuleId::new(1)).unwrap(), None);
        assert_eq!(store.get_client(&client(1, "edge-01").id).unwrap(), None);
    }
}

#[test]
fn data_survives_close_and_reopen() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let names = ["edge-01", "edge-02", "renamed"];
    let codes = ["code-1", "code-2"];
    let (before, last_id) = {
        let store = RedbStore::open(&path).unwrap();
        let a = client(1, "edge-01");
        let mut b = client(2, "edge-02");
        let ids: Vec<RuleId> = (0..3).map(|_| store.next_rule_id().unwrap()).collect();
        store
            .commit(vec![
                Write::PutClient(a.clone()),
                Write::PutClient(b.clone()),
                Write::PutRule(rule(ids[0], &a.id, 18080)),
                Write::PutRule(rule(ids[1], &b.id, 18081)),
                Write::PutRule(rule(ids[2], &b.id, 18082)),
                Write::PutTotals(ids[0], totals(100)),
                Write::PutTotals(ids[1], totals(200)),
                Write::PutEnrollment(enrollment("code-1", &a.id)),
                Write::PutEnrollment(enrollment("code-2", &b.id)),
            ])
            .unwrap();
        b.name = ClientName::parse("renamed").unwrap();
        store.commit(vec![Write::PutClient(b), Write::DeleteRule(ids[2])]).unwrap();
        let snapshot = Snapshot::of(&store, &names, &codes);
        store.close().unwrap();
        (snapshot, ids[2])
    };
    assert_eq!(before.clients.len(), 2);
    assert_eq!(before.by_name.iter().filter(|c| c.is_some()).count(), 2);
    assert_eq!(before.rules.len(), 2);
    assert_eq!(before.totals.len(), 2);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(Snapshot::of(&store, &names, &codes), before);
    // The sequence continues where it stopped, even past a deleted rule's id.
    assert_eq!(store.next_rule_id().unwrap(), RuleId::new(last_id.get() + 1));
}

#[test]
fn a_name_held_by_another_client_is_refused_and_its_batch_dropped() {
    let store = RedbStore::in_memory().unwrap();
    let a = client(1, "edge");
    store.commit(vec![Write::PutClient(a.clone())]).unwrap();
    let id = store.next_rule_id().unwrap();
    let err = store
        .commit(vec![Write::PutRule(rule(id, &a.id, 18080)), Write::PutClient(client(2, "edge"))])
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupted { .. }), "{err:?}");
    assert_eq!(store.client_by_name(&a.name).unwrap(), Some(a));
    assert_eq!(store.get_rule(id).unwrap(), None, "the batch was applied in part");
    assert_eq!(store.list_clients().unwrap().len(), 1);
}

#[test]
fn schema_version_zero_is_damaged() {
    let dir = temp_dir();
    let path = store_path(&dir);
    RedbStore::open(&path).unwrap().close().unwrap();
    write_schema_version(&path, 0);
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[test]
fn a_redb_file_of_another_program_is_refused() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let db = Database::create(&path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(TableDefinition::<u64, u64>::new("other")).unwrap().insert(1, 2).unwrap();
    tx.commit().unwrap();
    db.close().unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[test]
fn a_file_that_is_not_a_database_is_damaged_with_its_cause() {
    let dir = temp_dir();
    let path = store_path(&dir);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StoreDamaged, "{err:?}");
    assert!(err.to_string().contains("magic number"), "{err}");
}

#[test]
fn enrollments_are_found_by_code_hash_only() {
    let store = RedbStore::in_memory().unwrap();
    let a = client(1, "edge-01");
    let mut issued = enrollment("the-code", &a.id);
    store.commit(vec![Write::PutEnrollment(issued.clone())]).unwrap();
    issued.consumed_at = Some(portunus_core::ids::Timestamp::from_millis(4_500));
    store.commit(vec![Write::PutEnrollment(issued.clone())]).unwrap();
    assert_eq!(store.get_enrollment(&SecretHash::of("the-code")).unwrap(), Some(issued));
    assert_eq!(store.get_enrollment(&SecretHash::of("other-code")).unwrap(), None);
}
