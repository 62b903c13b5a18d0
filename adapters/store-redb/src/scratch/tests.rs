//! The scratch backend reads like the file with redb's writes on top, and never changes it.

use std::path::PathBuf;

use redb::StorageBackend;

use super::{CHUNK, ScratchBackend};

fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("file");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn read(backend: &ScratchBackend, offset: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0xee; n];
    backend.read(offset, &mut out).unwrap();
    out
}

#[test]
fn writes_are_read_back_across_chunks_and_the_file_keeps_its_bytes() {
    let original: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
    let (_dir, path) = file_with(&original);
    let backend = ScratchBackend::open(&path).unwrap();
    let at = CHUNK - 3;
    backend.write(at, &[1, 2, 3, 4, 5, 6]).unwrap();
    let mut expected = original.clone();
    expected[at as usize..at as usize + 6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
    assert_eq!(read(&backend, 0, expected.len()), expected);
    backend.sync_data().unwrap();
    backend.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), original);
}

#[test]
fn a_shrink_then_grow_reads_zeros_where_the_file_had_bytes() {
    let original = vec![7u8; 2 * CHUNK as usize];
    let (_dir, path) = file_with(&original);
    let backend = ScratchBackend::open(&path).unwrap();
    backend.write(10, &[9; 20]).unwrap();
    backend.set_len(15).unwrap();
    assert_eq!(backend.len().unwrap(), 15);
    backend.set_len(2 * CHUNK + 5).unwrap();
    let seen = read(&backend, 0, (2 * CHUNK + 5) as usize);
    assert_eq!(&seen[..10], &[7; 10]);
    assert_eq!(&seen[10..15], &[9; 5]);
    assert!(seen[15..].iter().all(|b| *b == 0), "bytes past a shrink came back");
    assert_eq!(std::fs::read(&path).unwrap(), original);
}

#[test]
fn a_read_past_the_end_is_an_unexpected_eof() {
    let (_dir, path) = file_with(&[1, 2, 3]);
    let backend = ScratchBackend::open(&path).unwrap();
    let err = backend.read(2, &mut [0; 2]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_file_opened_read_only_is_checked_without_locks() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("store.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, u64>::new("t")).unwrap().insert(1, 2).unwrap();
        tx.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let backend = ScratchBackend::over(std::fs::File::open(&path).unwrap(), false).unwrap();
    let mut builder = redb::Builder::new();
    builder.set_check_integrity_on_open(true);
    let db = builder.create_with_backend(backend).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(redb::TableDefinition::<u64, u64>::new("t")).unwrap().insert(3, 4).unwrap();
    tx.commit().unwrap();
    db.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
