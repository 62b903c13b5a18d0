//! Files that are not an intact Portunus store: an empty file, the first half of a real store,
//! bytes that were never a database, pages scrambled behind a valid header. Each is refused as
//! `Damaged` (`store_damaged`) and keeps every byte it had; only a missing file is a fresh
//! install. A copy of a live store, which needs redb's crash repair, is not damaged.

use std::path::Path;

use portunus_core::ErrorCode;
use portunus_core::ports::{ClientStore, Store, StoreError, Write};
use portunus_store_redb::{RedbStore, SCHEMA_VERSION};

use crate::support::{client, store_path, temp_dir};

/// Opens `path` (twice: a refusal must be as harmless the second time) and returns the error,
/// asserting that the file's bytes never changed.
fn refused_untouched(path: &Path) -> StoreError {
    let before = std::fs::read(path).unwrap();
    let err = RedbStore::open(path).unwrap_err();
    assert!(std::fs::read(path).unwrap() == before, "the refused file was modified: {err:?}");
    let again = RedbStore::open(path).unwrap_err();
    assert_eq!(again.code(), err.code(), "{again:?}");
    assert!(std::fs::read(path).unwrap() == before, "the refused file was modified: {again:?}");
    err
}

fn assert_damaged(err: &StoreError) {
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::StoreDamaged);
}

/// A closed store holding one client, and its bytes.
fn real_store(path: &Path) -> Vec<u8> {
    let store = RedbStore::open(path).unwrap();
    store.commit(vec![Write::PutClient(client(1, "edge-01"))]).unwrap();
    store.close().unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn an_empty_file_is_damaged_never_a_fresh_install() {
    let dir = temp_dir();
    let path = store_path(&dir);
    std::fs::write(&path, b"").unwrap();
    let err = refused_untouched(&path);
    assert_damaged(&err);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn the_first_half_of_a_real_store_is_damaged_and_left_as_it_was() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let whole = real_store(&path);
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert_damaged(&refused_untouched(&path));
}

#[test]
fn the_first_half_of_a_live_store_is_damaged_and_left_as_it_was() {
    // A copy taken while a server runs is marked as needing repair; cut in half, the repair
    // itself must not be let loose on it.
    let dir = temp_dir();
    let path = store_path(&dir);
    let live = RedbStore::open(&path).unwrap();
    live.commit(vec![Write::PutClient(client(1, "edge-01"))]).unwrap();
    let whole = std::fs::read(&path).unwrap();
    drop(live);
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert_damaged(&refused_untouched(&path));
}

#[test]
fn garbage_is_damaged_and_left_as_it_was() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let garbage: Vec<u8> = (0u32..20_000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    assert_damaged(&refused_untouched(&path));
}

#[test]
fn scrambled_pages_behind_a_valid_header_are_damaged_and_left_as_they_were() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let mut bytes = real_store(&path);
    for (i, byte) in bytes.iter_mut().enumerate().skip(4096) {
        *byte ^= (i % 253) as u8 | 1;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_damaged(&refused_untouched(&path));
}

#[test]
fn a_copy_of_a_live_store_needs_only_crash_repair_and_opens_with_its_data() {
    let dir = temp_dir();
    let path = store_path(&dir);
    let edge = client(1, "edge-01");
    let live = RedbStore::open(&path).unwrap();
    live.commit(vec![Write::PutClient(edge.clone())]).unwrap();
    // What a `kill -9` leaves: every acknowledged commit on disk, the file marked as open.
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    live.close().unwrap();

    let before = std::fs::read(&copy).unwrap();
    assert_eq!(RedbStore::check(&copy).unwrap(), SCHEMA_VERSION);
    assert!(std::fs::read(&copy).unwrap() == before, "the check wrote to the file");
    let store = RedbStore::open(&copy).unwrap();
    assert_eq!(store.get_client(&edge.id).unwrap(), Some(edge));
}

#[test]
fn a_newer_schema_that_needs_crash_repair_is_refused_untouched() {
    let dir = temp_dir();
    let path = store_path(&dir);
    RedbStore::open(&path).unwrap().close().unwrap();
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        tx.commit().unwrap();
        let copy = dir.path().join("copy.redb");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::rename(&copy, &path).unwrap();
    }
    let err = refused_untouched(&path);
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err:?}");
}

#[test]
fn only_a_missing_file_is_a_fresh_store_and_it_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let path = store_path(&dir);
    RedbStore::open(&path).unwrap().close().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(RedbStore::check(&path).unwrap(), SCHEMA_VERSION);
}

#[test]
fn a_redb_file_nothing_was_committed_to_is_not_a_store_to_restore() {
    let dir = temp_dir();
    let path = store_path(&dir);
    redb::Database::create(&path).unwrap();
    assert_damaged(&RedbStore::check(&path).unwrap_err());
}

#[test]
fn a_missing_file_is_not_something_to_check() {
    let dir = temp_dir();
    let err = RedbStore::check(&store_path(&dir)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StoreError, "{err:?}");
    assert!(!store_path(&dir).exists());
}
