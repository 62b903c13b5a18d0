//! The store at startup: one server per data dir, no store from a newer schema, no damaged
//! store (left byte for byte as it was), no data dir on a memory filesystem, and no secret
//! of the data dir readable by group or others.

use std::path::PathBuf;

use crate::harness::{Scenario, Server, ServerOpts, digest, mode_of};

/// The table and key the store keeps its schema version under.
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");

#[test]
fn a_second_serve_on_the_same_data_dir_exits_75() {
    let scn = Scenario::new("store_in_use");
    let server = Server::start(&scn, ServerOpts::default());
    let second = Server::spawn_serve(&scn, server.data_dir(), &ServerOpts::default());
    assert_eq!(second.wait_exit(), 75, "second serve: {}", second.log_text());
    second.wait_event("startup.store_in_use", &[]);
    // The first server is unaffected and still the one operator commands reach.
    assert!(server.proc().exit_status().is_none());
    server.cli_ok(&["list-clients"]);
}

#[test]
fn a_store_written_by_a_newer_schema_exits_78() {
    let scn = Scenario::new("schema_too_new");
    let mut server = Server::start(&scn, ServerOpts::default());
    assert_eq!(server.stop(), 0);
    let store = server.data_dir().join("portunus.redb");
    {
        let db = redb::Database::open(&store).expect("open the stopped server's store");
        let tx = db.begin_write().expect("write transaction");
        tx.open_table(META).expect("meta table").insert("schema_version", 99).expect("set version");
        tx.commit().expect("commit");
    }
    let newer = Server::spawn_serve(&scn, server.data_dir(), &ServerOpts::default());
    assert_eq!(newer.wait_exit(), 78, "serve on a newer store: {}", newer.log_text());
    newer.wait_event("startup.schema_version_too_new", &[]);
}

/// Starts `serve` on a data dir whose store is `bytes`: it must exit with `store_damaged`'s
/// status, log `startup.store_damaged` naming the file, and leave the file as it was.
fn assert_refused_as_damaged(scn: &Scenario, name: &str, bytes: &[u8]) {
    let dir = scn.path(name);
    std::fs::create_dir_all(&dir).expect("data dir");
    let store = dir.join("portunus.redb");
    std::fs::write(&store, bytes).expect("write the store file");
    let before = digest(&std::fs::read(&store).expect("read the store"));

    let serve = Server::spawn_serve(scn, &dir, &ServerOpts::default());
    let damaged = portunus_core::ErrorCode::StoreDamaged;
    assert_eq!(serve.wait_exit(), i32::from(damaged.exit_status()), "{name}: {}", serve.log_text());
    let path = store.to_string_lossy().into_owned();
    serve.wait_event("startup.store_damaged", &[("path", &path)]);
    assert!(serve.log_text().contains("store_damaged:"), "{name}: the exit line names the code");
    assert_eq!(
        digest(&std::fs::read(&store).expect("read the store")),
        before,
        "{name}: the store was modified"
    );
    assert!(!dir.join("server.addr").exists(), "{name}: the server went on to bind");
}

#[test]
fn an_empty_truncated_or_garbage_store_is_refused_and_left_as_it_was() {
    let scn = Scenario::new("store_damaged");
    let mut server = Server::start(&scn, ServerOpts::default());
    server.enroll("edge-01");
    assert_eq!(server.stop(), 0);
    let real =
        std::fs::read(server.data_dir().join("portunus.redb")).expect("read the stopped server's store");
    assert!(real.len() > 8192, "a real store spans several pages");

    assert_refused_as_damaged(&scn, "empty", b"");
    assert_refused_as_damaged(&scn, "truncated", &real[..real.len() / 2]);
    let garbage: Vec<u8> = (0u32..64 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    assert_refused_as_damaged(&scn, "garbage", &garbage);
}

/// The secret-bearing files `serve` leaves in its data dir.
const SECRET_FILES: [&str; 3] = ["portunus.redb", "server.key", "operator.token"];

#[test]
fn secrets_are_private_and_loose_ones_are_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let scn = Scenario::new("permissions_tightened");
    let mut server = Server::start(&scn, ServerOpts::default());
    let dir = server.data_dir().to_path_buf();
    assert_eq!(mode_of(&dir), 0o700, "a data dir serve created");
    for name in SECRET_FILES {
        assert_eq!(mode_of(&dir.join(name)), 0o600, "{name} as first written");
    }
    assert!(server.proc().events_matching("startup.permissions_tightened", &[]).is_empty());
    assert_eq!(server.stop(), 0);

    for name in SECRET_FILES {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).expect("chmod 0644");
    }
    server.start_again();
    for name in SECRET_FILES {
        let path = dir.join(name).to_string_lossy().into_owned();
        server.proc().wait_event(
            "startup.permissions_tightened",
            &[("path", &path), ("from", "0644"), ("to", "0600")],
        );
        assert_eq!(mode_of(&dir.join(name)), 0o600, "{name} after the start");
    }
    // The server works on the tightened files, and the next start has nothing to tighten.
    server.cli_ok(&["list-clients"]);
    server.restart();
    assert!(server.proc().events_matching("startup.permissions_tightened", &[]).is_empty());
}

/// A directory under /dev/shm, removed when dropped.
struct ShmDir(PathBuf);

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_data_dir_on_tmpfs_is_refused() {
    let scn = Scenario::new("tmpfs_data_dir");
    let shm = PathBuf::from("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs) to exist");
    let dir = ShmDir(shm.join(format!("portunus-e2e-{}", std::process::id())));
    let serve = Server::spawn_serve(&scn, &dir.0, &ServerOpts::default());
    assert_eq!(serve.wait_exit(), 2, "serve on tmpfs: {}", serve.log_text());
    serve.wait_event("startup.unsupported_filesystem", &[]);
    assert!(serve.log_text().contains("unsupported_filesystem"));
    assert!(!dir.0.join("portunus.redb").exists(), "no store was created on tmpfs");
}

#[test]
fn acknowledged_changes_survive_a_server_kill() {
    let scn = Scenario::new("changes_survive_kill");
    let (mut server, client) = crate::harness::server_with_edge(&scn, &Default::default());
    let backend = crate::harness::Backend::echo();
    let kept = server.push_rule("edge-01", crate::harness::free_port(), &backend.target());
    let removed = server.push_rule("edge-01", crate::harness::free_port(), &backend.target());
    server.cli_ok(&["remove-rule", &removed.to_string()]);
    let uri = server.enroll("edge-02");

    // No clean shutdown: whatever was acknowledged must already be on disk.
    server.kill();
    server.start_again();
    let ids: Vec<u64> = server.rules().iter().filter_map(|r| r["id"].as_u64()).collect();
    assert_eq!(ids, [kept], "the pushed rule is kept and the removed one stays removed");
    assert_eq!(
        server.client("edge-01").and_then(|c| c["status"].as_str().map(str::to_owned)).as_deref(),
        Some("enrolled")
    );
    crate::harness::Client::enroll_ok(&scn, &uri, &scn.path("edge-02.bundle.json"));
    client.proc().wait_event_n(2, "control.connected", &[]);
    server.wait_rule_state(kept, "active");
}
