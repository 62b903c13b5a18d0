//! Backup and restore on the real binaries: `backup` copies a running server's store while
//! writes go on (no downtime, no `store_in_use`), and `restore` puts the copy into another data
//! dir, where a new server finds every change acknowledged before the backup began. Restore is
//! offline and refuses what it must: a live store, a non-empty dir, a file that is no store.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use portunus_core::ErrorCode;

use crate::harness::{
    Auth, Backend, ClientOpts, Scenario, Server, ServerOpts, digest, free_port, mode_of, run_server_cli,
    server_with_edge, wait_until,
};

fn user_id(n: usize) -> String {
    format!("u{n:05}")
}

/// `portunus-server --data-dir DIR ARGS…`, without a running server's help.
fn cli_in(scn: &Scenario, dir: &Path, args: &[&str]) -> crate::harness::Output {
    let dir = dir.to_string_lossy().into_owned();
    let mut full = vec!["--data-dir", dir.as_str()];
    full.extend_from_slice(args);
    run_server_cli(scn, &full, &[])
}

fn exit_of(code: ErrorCode) -> i32 {
    i32::from(code.exit_status())
}

#[test]
fn a_backup_under_writes_restores_every_acknowledged_change_into_a_new_server() {
    let scn = Scenario::new("backup_round_trip");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let rule = server.push_rule("edge-01", free_port(), &backend.target());
    let operator = server.operator_token();

    // One writer creates users one after another; `acked` is how many it was answered for.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = std::thread::spawn({
        let (api, token, stop, acked) = (server.api(), operator.clone(), stop.clone(), acked.clone());
        move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 5_000 {
                n += 1;
                api.create_user(&Auth::Bearer(&token), &user_id(n), "user", None);
                acked.store(n, Ordering::SeqCst);
            }
        }
    });
    wait_until("the writer to get going", || (acked.load(Ordering::SeqCst) >= 20).then_some(()));

    let out_path = scn.path("portunus-backup.redb");
    let out_text = out_path.to_string_lossy().into_owned();
    let n_before = acked.load(Ordering::SeqCst);
    let backup = server.cli(&["backup", "--out", &out_text]);
    let n_during = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer never failed a write");
    let n_total = acked.load(Ordering::SeqCst);

    assert_eq!(backup.code, 0, "backup: {backup:?}");
    assert_eq!(backup.stdout.trim(), out_text, "backup prints the file's path");
    assert_eq!(mode_of(&out_path), 0o600, "a backup holds secrets' hashes");
    assert!(server.proc().exit_status().is_none(), "the server kept running");
    assert!(n_during >= n_before, "writes went on while the backup ran");
    server.proc().wait_event("backup.served", &[("user", "_operator")]);
    let leftovers: Vec<String> = std::fs::read_dir(server.data_dir())
        .expect("list the data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".redb.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary copies left in the data dir: {leftovers:?}");

    // A second backup to the same path is refused, and the first is kept as it was.
    let kept = digest(&std::fs::read(&out_path).expect("read the backup"));
    let again = server.cli(&["backup", "--out", &out_text]);
    assert_eq!(again.code, exit_of(ErrorCode::InvalidRequest), "{again:?}");
    assert_eq!(digest(&std::fs::read(&out_path).expect("read the backup")), kept);

    // Restore into a fresh data dir and serve from it.
    let fresh = scn.path("restored");
    let restore = cli_in(&scn, &fresh, &["restore", "--in", &out_text]);
    assert_eq!(restore.code, 0, "restore: {restore:?}");
    assert_eq!(mode_of(&fresh), 0o700);
    assert_eq!(mode_of(&fresh.join("portunus.redb")), 0o600);
    let restored = Server::start_in(&scn, &fresh, ServerOpts::default());
    let token = restored.operator_token();
    let users = restored.api().call("GET", "/v1/users", &Auth::Bearer(&token), None);
    assert_eq!(users.status, 200, "{}", users.text);
    let ids: BTreeSet<String> = users
        .body
        .as_array()
        .expect("a user list")
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .filter(|id| id.starts_with('u'))
        .collect();
    // One committed state: the first k users for some k, with every user acknowledged before
    // the backup began among them.
    let k = ids.len();
    assert!(
        (n_before..=n_total).contains(&k),
        "restored {k} users; {n_before} acknowledged before, {n_total} in all"
    );
    assert_eq!(ids, (1..=k).map(user_id).collect::<BTreeSet<_>>(), "the backup is not one committed state");
    assert!(restored.rule(rule).is_some(), "the rule pushed before the backup is restored");
    assert!(restored.client("edge-01").is_some(), "the enrolled client is restored");
    let created =
        restored.audit_rows().iter().filter(|r| r["action"].as_str() == Some("user.create")).count();
    assert!(created >= n_before, "the audit trail is restored ({created} user.create rows)");
}

#[test]
fn backup_is_for_superadmins_and_restore_refuses_live_stores_full_dirs_and_damaged_files() {
    let scn = Scenario::new("backup_refusals");
    let server = Server::start(&scn, ServerOpts::default());
    let operator = server.operator_token();
    let api = server.api();
    api.create_user(&Auth::Bearer(&operator), "root", "superadmin", None);
    api.create_user(&Auth::Bearer(&operator), "alice", "user", None);
    let alice = api.mint_token(&Auth::Bearer(&operator), "alice");
    let denied = api.call("GET", "/v1/admin/backup", &Auth::Bearer(&alice), None);
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert_eq!(denied.code(), "not_owner");
    server.proc().wait_event("backup.denied", &[("user", "alice")]);

    let out = scn.path("backup.redb");
    let out_text = out.to_string_lossy().into_owned();
    assert_eq!(server.cli(&["backup", "--out", &out_text]).code, 0);

    // The running server's own data dir: not empty, and with --force its store is in use.
    let live = server.data_dir().to_path_buf();
    let store_before = digest(&std::fs::read(live.join("portunus.redb")).expect("read the live store"));
    let full = cli_in(&scn, &live, &["restore", "--in", &out_text]);
    assert_eq!(full.code, exit_of(ErrorCode::InvalidRequest), "{full:?}");
    let held = cli_in(&scn, &live, &["restore", "--in", &out_text, "--force"]);
    assert_eq!(held.code, exit_of(ErrorCode::StoreInUse), "{held:?}");
    assert!(held.stderr.contains("store_in_use"), "{held:?}");
    assert_eq!(digest(&std::fs::read(live.join("portunus.redb")).expect("read")), store_before);
    assert!(server.proc().exit_status().is_none());
    server.cli_ok(&["list-clients"]);

    // A file that is not a store is refused before anything is written.
    let garbage = scn.path("garbage.redb");
    std::fs::write(&garbage, vec![0x42; 16 * 1024]).expect("write garbage");
    let empty_dir = scn.path("never-restored");
    let damaged = cli_in(&scn, &empty_dir, &["restore", "--in", &garbage.to_string_lossy()]);
    assert_eq!(damaged.code, exit_of(ErrorCode::StoreDamaged), "{damaged:?}");
    assert!(!empty_dir.exists(), "a refused restore created the data dir");
}

#[test]
fn a_forced_restore_replaces_a_stopped_servers_store_and_keeps_its_identity() {
    let scn = Scenario::new("restore_forced");
    let mut server = Server::start(&scn, ServerOpts::default());
    let out = scn.path("backup.redb");
    let out_text = out.to_string_lossy().into_owned();
    server.enroll("kept");
    assert_eq!(server.cli(&["backup", "--out", &out_text]).code, 0);
    server.enroll("after-backup");
    let cert = std::fs::read(server.data_dir().join("server.crt")).expect("server.crt");
    assert_eq!(server.stop(), 0);

    let dir = server.data_dir().to_path_buf();
    let restore = cli_in(&scn, &dir, &["restore", "--in", &out_text, "--force"]);
    assert_eq!(restore.code, 0, "{restore:?}");
    // A copy a crash left behind is removed at the next start.
    let stale = dir.join(".backup-0123456789abcdef.redb.tmp");
    std::fs::write(&stale, b"half a copy").expect("write a stale copy");
    server.start_again();
    server.proc().wait_event("startup.stale_copy_removed", &[("path", &stale.to_string_lossy())]);
    assert!(!stale.exists());
    assert!(server.client("kept").is_some());
    assert!(server.client("after-backup").is_none(), "the store is the backup's");
    assert_eq!(std::fs::read(dir.join("server.crt")).expect("server.crt"), cert, "the identity is kept");
}

#[test]
fn a_backup_from_an_older_schema_is_migrated_as_it_is_restored() {
    let scn = Scenario::new("restore_migrates");
    let old = scn.path("version-1.redb");
    {
        // The first release's layout: the six version 1 tables, nothing in them.
        let db = redb::Database::create(&old).expect("create a version 1 file");
        let tx = db.begin_write().expect("write transaction");
        {
            let mut meta = tx.open_table(redb::TableDefinition::<&str, u64>::new("meta")).expect("meta");
            meta.insert("schema_version", 1).expect("version");
            meta.insert("next_rule_id", 1).expect("next rule id");
            for name in ["clients", "enrollments"] {
                tx.open_table(redb::TableDefinition::<&str, &[u8]>::new(name)).expect("table");
            }
            tx.open_table(redb::TableDefinition::<&str, &str>::new("client_names")).expect("table");
            for name in ["rules", "totals"] {
                tx.open_table(redb::TableDefinition::<u64, &[u8]>::new(name)).expect("table");
            }
        }
        tx.commit().expect("commit");
    }
    let kept = digest(&std::fs::read(&old).expect("read the old backup"));
    let dir = scn.path("srv");
    let restore = cli_in(&scn, &dir, &["restore", "--in", &old.to_string_lossy()]);
    assert_eq!(restore.code, 0, "{restore:?}");
    assert!(restore.stderr.contains(r#""backup_schema_version":1"#), "{}", restore.stderr);
    assert_eq!(digest(&std::fs::read(&old).expect("read")), kept, "restore never writes to its input");
    let server = Server::start_in(&scn, &dir, ServerOpts::default());
    assert!(server.clients().is_empty());
    assert!(server.setup_token().is_some(), "onboarding is open on a restored version 1 store");
}
