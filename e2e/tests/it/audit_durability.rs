//! `kill -9` in the middle of a stream of concurrent mutations, several times over: after
//! each restart every acknowledged mutation exists and has exactly one audit row (a success),
//! an object exists exactly when its audit row does, and the trail is numbered 1..=n without
//! gaps or repeats, with everything read before the kill still at the front.
//!
//! Invariant under test: the control plane commits a mutation and its audit record in one
//! store transaction (possibly shared with other mutations) and answers only after that
//! commit. A request in flight at the kill may or may not have committed; either is fine, as
//! long as its object and its audit row committed together.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::harness::{Auth, DEADLINE, Scenario, Server, ServerOpts, wait_until};

/// Kill/restart rounds.
const ROUNDS: usize = 4;
/// Concurrent mutation streams per round.
const THREADS: usize = 4;
/// The kill comes this long (ms, inclusive range) after the round's first acknowledgement.
const KILL_AFTER_MS: (u64, u64) = (50, 300);
/// Every user id and client name this test creates starts with this, so its audit rows and
/// objects are told apart from anything else.
const PREFIX: &str = "kd-";
/// Set to a number to replay a run's kill delays (every run prints its seed).
const SEED_VAR: &str = "AUDIT_DURABILITY_SEED";

/// The mutations the streams issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `POST /v1/users`; audited as `user.create` on the user id.
    User,
    /// `POST /v1/users/{user}/tokens`; audited as `token.create` on `"{user} {token id}"`.
    Token,
    /// `POST /v1/grants`; audited as `grant.create` on `"{user} {grant id}"`.
    Grant,
    /// `POST /v1/clients`; audited as `client.enroll` on the client name.
    Client,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::User, Kind::Token, Kind::Grant, Kind::Client];

    fn action(self) -> &'static str {
        match self {
            Kind::User => "user.create",
            Kind::Token => "token.create",
            Kind::Grant => "grant.create",
            Kind::Client => "client.enroll",
        }
    }
}

/// What the caller of one request learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A complete 2xx response: the mutation was acknowledged.
    Acked,
    /// A complete non-2xx response: the server refused it.
    Refused(u16),
    /// Connected, but no complete response came back: the kill came first.
    Lost,
    /// The connection was refused: the server was already gone.
    NotSent,
}

/// One request of a stream.
#[derive(Debug, Clone)]
struct Attempt {
    round: usize,
    kind: Kind,
    /// The user id (users, tokens, grants) or the client name (clients). Each user gets at
    /// most one token and one grant, so `(kind, subject)` names one mutation.
    subject: String,
    /// The token or grant id the acknowledgement carried.
    id: Option<String>,
    fate: Fate,
}

/// A small xorshift64* generator: the test only needs varied, replayable kill delays.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = std::env::var(SEED_VAR).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        });
        (Rng(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of a chunked message, or `None` while its last chunk has not arrived.
fn dechunk_complete(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Status and JSON body of `raw` when it holds a whole HTTP response; `None` when it was cut.
fn complete_response(raw: &[u8]) -> Option<(u16, Value)> {
    let head_end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.lines();
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let body = if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        rest.get(..length)?.to_vec()
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk_complete(rest)?
    } else {
        // `Connection: close` without a length: the body ends where the stream did.
        rest.to_vec()
    };
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// `POST path` with `body` as the operator; never panics on a dead server.
fn post(addr: SocketAddr, token: &str, path: &str, body: &Value) -> (Fate, Value) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (Fate::NotSent, Value::Null);
    };
    // A guard only: a killed server's sockets close at once.
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (Fate::Lost, Value::Null);
    }
    let mut raw = Vec::new();
    // A reset after the whole response arrived still leaves the whole response in `raw`.
    let _ = stream.read_to_end(&mut raw);
    match complete_response(&raw) {
        Some((status, value)) if (200..300).contains(&status) => (Fate::Acked, value),
        Some((status, value)) => (Fate::Refused(status), value),
        None => (Fate::Lost, Value::Null),
    }
}

/// Records the secrets an acknowledgement carries (an API token's text, an enrollment code)
/// so the final leak check looks for them in every log line and audit row.
fn remember_minted_secrets(scn: &Scenario, answer: &Value) {
    if let Some(text) = answer["token"].as_str() {
        scn.remember_secret("API token", text.split_once('.').map_or(text, |(_, secret)| secret));
    }
    if let Some(code) = answer["enroll_uri"].as_str().and_then(|uri| uri.split("code=").nth(1)) {
        scn.remember_secret("enrollment code", code.split('&').next().unwrap_or(code));
    }
}

/// One stream: user, then its token, its grant and a client, over and over, until the stop
/// flag is set or a request is not acknowledged (the server is gone).
fn stream_mutations(
    scn: &Scenario,
    addr: SocketAddr,
    token: &str,
    round: usize,
    thread: usize,
    stop: &AtomicBool,
    acked: &AtomicUsize,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut attempt = |kind: Kind, subject: &str, path: &str, body: Value| -> bool {
        let (fate, answer) = post(addr, token, path, &body);
        remember_minted_secrets(scn, &answer);
        let id = match kind {
            Kind::Token | Kind::Grant => answer["id"].as_str().map(str::to_owned),
            Kind::User | Kind::Client => None,
        };
        attempts.push(Attempt { round, kind, subject: subject.to_owned(), id, fate });
        if fate == Fate::Acked {
            acked.fetch_add(1, Ordering::SeqCst);
        }
        fate == Fate::Acked && !stop.load(Ordering::SeqCst)
    };
    for n in 0usize.. {
        let user = format!("{PREFIX}r{round}-t{thread}-u{n}");
        let client = format!("{PREFIX}r{round}-t{thread}-c{n}");
        let token_name = format!("{user}-token");
        let grant = json!({"user": user, "client": "*", "ports": "40000-40099", "protocols": ["tcp"]});
        let going = attempt(Kind::User, &user, "/v1/users", json!({"id": user}))
            && attempt(Kind::Token, &user, &format!("/v1/users/{user}/tokens"), json!({"name": token_name}))
            && attempt(Kind::Grant, &user, "/v1/grants", grant)
            && attempt(Kind::Client, &client, "/v1/clients", json!({"name": client}));
        if !going {
            break;
        }
    }
    attempts
}

/// `GET path` as the operator, which must answer 200.
fn get_ok(server: &Server, token: &str, path: &str) -> Value {
    let resp = server.api().call("GET", path, &Auth::Bearer(token), None);
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text);
    resp.body
}

/// This test's objects in the store, as `(kind, subject) -> ids` (the token or grant ids of a
/// user; one empty string for a user or a client that exists).
fn stored_objects(server: &Server, token: &str) -> BTreeMap<(Kind, String), Vec<String>> {
    let mut found: BTreeMap<(Kind, String), Vec<String>> = BTreeMap::new();
    let ours = |v: &Value| v.as_str().filter(|s| s.starts_with(PREFIX)).map(str::to_owned);
    let users: Vec<String> = get_ok(server, token, "/v1/users")
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| ours(&u["id"]))
        .collect();
    for user in &users {
        found.entry((Kind::User, user.clone())).or_default().push(String::new());
        for listed in get_ok(server, token, &format!("/v1/users/{user}/tokens")).as_array().expect("tokens") {
            assert_eq!(listed["name"].as_str(), Some(format!("{user}-token").as_str()), "{listed}");
            let id = listed["id"].as_str().expect("token id").to_owned();
            found.entry((Kind::Token, user.clone())).or_default().push(id);
        }
    }
    for grant in get_ok(server, token, "/v1/grants").as_array().expect("grants") {
        if let Some(user) = ours(&grant["user"]) {
            let id = grant["id"].as_str().expect("grant id").to_owned();
            found.entry((Kind::Grant, user)).or_default().push(id);
        }
    }
    for client in get_ok(server, token, "/v1/clients").as_array().expect("clients") {
        if let Some(name) = ours(&client["name"]) {
            found.entry((Kind::Client, name)).or_default().push(String::new());
        }
    }
    found
}

/// This test's audit rows as `(kind, subject) -> rows`: the subject is the target's first
/// word (the user of a token or a grant, whose id is the second word).
fn audit_rows_by_subject(rows: &[Value]) -> BTreeMap<(Kind, String), Vec<Value>> {
    let mut by: BTreeMap<(Kind, String), Vec<Value>> = BTreeMap::new();
    for row in rows {
        let Some(kind) = Kind::ALL.into_iter().find(|k| row["action"].as_str() == Some(k.action())) else {
            continue;
        };
        let Some(target) = row["target"].as_str().filter(|t| t.starts_with(PREFIX)) else {
            continue;
        };
        let subject = target.split(' ').next().unwrap_or(target).to_owned();
        by.entry((kind, subject)).or_default().push(row.clone());
    }
    by
}

/// What one check found, for the report.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    lost_committed: usize,
    lost_gone: usize,
    not_sent: usize,
    refused: usize,
}

/// Reads the trail and the store after a restart and checks the invariant over every attempt
/// so far (see [`verify`]); returns the trail for the next check.
fn check_after_restart(
    server: &Server,
    token: &str,
    attempts: &[Attempt],
    before: &[Value],
) -> (Vec<Value>, Tally) {
    let rows = server.audit_rows();
    let stored = stored_objects(server, token);
    let tally = verify(attempts, &stored, &rows, before).unwrap_or_else(|violation| panic!("{violation}"));
    (rows, tally)
}

/// Returns `Err(message)` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// The invariant, over every attempt so far, the objects in the store and the whole audit
/// trail (`before` is the trail as the previous check read it): the first violation, or the
/// tally of what the attempts came to.
fn verify(
    attempts: &[Attempt],
    stored: &BTreeMap<(Kind, String), Vec<String>>,
    rows: &[Value],
    before: &[Value],
) -> Result<Tally, String> {
    for (i, row) in rows.iter().enumerate() {
        ensure!(
            row["seq"].as_u64() == Some(i as u64 + 1),
            "the audit trail is numbered 1..=n with neither gaps nor repeats, yet row {i} is {row}"
        );
    }
    ensure!(rows.len() >= before.len(), "the trail shrank from {} to {} rows", before.len(), rows.len());
    ensure!(
        rows[..before.len()] == *before,
        "the trail read before the kill is no longer its beginning:\nbefore {before:?}\nnow {rows:?}"
    );

    let audited = audit_rows_by_subject(rows);
    let ours: usize = audited.values().map(Vec::len).sum();
    // The streams are the only callers and the checks only read, so every row is theirs.
    ensure!(ours == rows.len(), "the trail holds rows no stream mutation explains: {rows:?}");
    let mut tally = Tally::default();
    let mut attempted = BTreeSet::new();
    for a in attempts {
        let key = (a.kind, a.subject.clone());
        ensure!(attempted.insert(key.clone()), "{key:?} was attempted twice");
        let ids = stored.get(&key).map(Vec::as_slice).unwrap_or_default();
        let rows_of = audited.get(&key).map(Vec::as_slice).unwrap_or_default();
        let exists = !ids.is_empty();
        let context = format!("{a:?}: stored {ids:?}, audit rows {rows_of:?}");
        ensure!(ids.len() <= 1, "one request made more than one object: {context}");
        match a.fate {
            Fate::Acked => {
                ensure!(exists, "an acknowledged mutation is missing after kill -9: {context}");
                if let Some(id) = &a.id {
                    ensure!(ids == [id.clone()], "the stored object is not the acknowledged one: {context}");
                }
                tally.acked += 1;
            }
            Fate::NotSent | Fate::Refused(_) => {
                ensure!(!exists, "a mutation that was never accepted exists: {context}");
                if a.fate == Fate::NotSent {
                    tally.not_sent += 1;
                } else {
                    tally.refused += 1;
                }
            }
            Fate::Lost if exists => tally.lost_committed += 1,
            Fate::Lost => tally.lost_gone += 1,
        }
        // Every request of the streams is valid, so the only row it may leave is a success,
        // and it leaves one exactly when its object exists.
        ensure!(
            rows_of.len() == usize::from(exists),
            "object exists <=> exactly one audit row, yet {} rows: {context}",
            rows_of.len()
        );
        if let Some(row) = rows_of.first() {
            ensure!(row["outcome"].as_str() == Some("success"), "not a success: {context}");
            ensure!(row["actor"].as_str() == Some("_operator"), "not the operator's: {context}");
            if matches!(a.kind, Kind::Token | Kind::Grant) {
                let target = format!("{} {}", a.subject, ids[0]);
                ensure!(
                    row["target"].as_str() == Some(target.as_str()),
                    "the row does not name the stored id: {context}"
                );
            }
        }
    }
    for key in stored.keys().chain(audited.keys()) {
        ensure!(attempted.contains(key), "{key:?} exists or is audited but was never attempted");
    }
    Ok(tally)
}

#[test]
fn after_kill_9_mid_stream_every_acknowledged_mutation_has_exactly_one_audit_row() {
    let started = Instant::now();
    let scn = Scenario::new("audit_durability_kill");
    let mut server = Server::start(&scn, ServerOpts::default());
    let token = Arc::new(server.operator_token());
    let addr = server.api().addr();
    let (mut rng, seed) = Rng::seeded();
    eprintln!("audit_durability: seed {seed} (replay with {SEED_VAR}={seed})");
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut trail: Vec<Value> = server.audit_rows();

    for round in 0..ROUNDS {
        let round_started = Instant::now();
        let delay = Duration::from_millis(rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let workers: Vec<JoinHandle<Vec<Attempt>>> = (0..THREADS)
            .map(|thread| {
                let (scn, token, stop, acked) = (scn.clone(), token.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || stream_mutations(&scn, addr, &token, round, thread, &stop, &acked))
            })
            .collect();
        wait_until("the round's first acknowledged mutation (or every stream ended)", || {
            (acked.load(Ordering::SeqCst) > 0 || workers.iter().all(JoinHandle::is_finished)).then_some(())
        });
        assert!(
            acked.load(Ordering::SeqCst) > 0,
            "round {round}: no mutation was acknowledged before any kill; server log:\n{}",
            server.proc().log_text()
        );
        std::thread::sleep(delay);
        let acked_at_kill = acked.load(Ordering::SeqCst);
        let proc = server.proc();
        proc.signal(Signal::SIGKILL);
        assert_eq!(proc.wait_exit(), 128 + 9, "serve died of the SIGKILL");
        server.forget_exited();
        // No stream may reach the next server: each ends at its first unanswered request,
        // and the flag ends one that is between requests.
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            attempts.extend(worker.join().expect("a mutation stream panicked"));
        }
        let restart = Instant::now();
        server.start_again();
        let restart_took = restart.elapsed();
        let this_round: Vec<&Attempt> = attempts.iter().filter(|a| a.round == round).collect();
        let (rows, tally) = check_after_restart(&server, &token, &attempts, &trail);
        let lost: Vec<String> = this_round
            .iter()
            .filter(|a| a.fate == Fate::Lost)
            .map(|a| format!("{:?} {}", a.kind, a.subject))
            .collect();
        eprintln!(
            "audit_durability: round {round}: kill {}ms after the first ack ({acked_at_kill} acked by then), \
             {} requests this round, {} audit rows in all; cumulative {tally:?}; in flight at the kill: \
             {lost:?}; restart took {restart_took:?}, round took {:?}",
            delay.as_millis(),
            this_round.len(),
            rows.len(),
            round_started.elapsed()
        );
        trail = rows;
    }

    let refused: Vec<&Attempt> = attempts.iter().filter(|a| matches!(a.fate, Fate::Refused(_))).collect();
    assert!(refused.is_empty(), "every request of the streams is valid, yet some were refused: {refused:?}");
    for kind in Kind::ALL {
        assert!(
            attempts.iter().any(|a| a.kind == kind && a.fate == Fate::Acked),
            "no {kind:?} mutation was ever acknowledged, so the test proved nothing about it"
        );
    }
    server.assert_no_secret_leaked();
    eprintln!("audit_durability: {} requests over {ROUNDS} kills in {:?}", attempts.len(), started.elapsed());
}

/// An audit row as `GET /v1/audit` returns it, for [`verify`]'s own test.
fn synthetic_row(seq: u64, action: &str, target: &str) -> Value {
    json!({"seq": seq, "at": "2026-01-01T00:00:00Z", "actor": "_operator", "action": action,
        "target": target, "outcome": "success", "code": null, "remote": "127.0.0.1"})
}

#[test]
fn the_audit_check_catches_a_missing_a_stray_and_a_duplicate_row_and_a_gap() {
    let attempt = |kind, subject: &str, id: Option<&str>, fate| Attempt {
        round: 0,
        kind,
        subject: subject.to_owned(),
        id: id.map(str::to_owned),
        fate,
    };
    let attempts = vec![
        attempt(Kind::User, "kd-a", None, Fate::Acked),
        attempt(Kind::Token, "kd-a", Some("tk_1"), Fate::Acked),
        attempt(Kind::Grant, "kd-a", None, Fate::Lost),
        attempt(Kind::Client, "kd-c", None, Fate::Lost),
        attempt(Kind::User, "kd-b", None, Fate::NotSent),
    ];
    let key = |kind, subject: &str| (kind, subject.to_owned());
    let stored: BTreeMap<(Kind, String), Vec<String>> = BTreeMap::from([
        (key(Kind::User, "kd-a"), vec![String::new()]),
        (key(Kind::Token, "kd-a"), vec!["tk_1".to_owned()]),
        (key(Kind::Grant, "kd-a"), vec!["gr_1".to_owned()]),
    ]);
    let rows = vec![
        synthetic_row(1, "user.create", "kd-a"),
        synthetic_row(2, "token.create", "kd-a tk_1"),
        synthetic_row(3, "grant.create", "kd-a gr_1"),
    ];
    let tally = verify(&attempts, &stored, &rows, &rows[..1]).expect("the consistent trail passes");
    assert_eq!((tally.acked, tally.lost_committed, tally.lost_gone, tally.not_sent), (2, 1, 1, 1));

    let refused =
        |what: &str, stored: &BTreeMap<(Kind, String), Vec<String>>, rows: &[Value], before: &[Value]| {
            assert!(verify(&attempts, stored, rows, before).is_err(), "the check accepted {what}");
        };
    // The audit row as a second commit that the kill lost: an acknowledged, unaudited token.
    let renumbered =
        vec![synthetic_row(1, "user.create", "kd-a"), synthetic_row(2, "grant.create", "kd-a gr_1")];
    refused("an acknowledged mutation without its audit row", &stored, &renumbered, &rows[..1]);
    // The same for a mutation that committed just before the kill, unacknowledged.
    refused("a committed mutation without its audit row", &stored, &rows[..2], &rows[..1]);
    // The audit row committed first and the object never: a row for a mutation that is not there.
    let stray = [rows.clone(), vec![synthetic_row(4, "client.enroll", "kd-c")]].concat();
    refused("an audit row for an object that does not exist", &stored, &stray, &rows[..1]);
    let mut lost = stored.clone();
    lost.remove(&key(Kind::Token, "kd-a"));
    refused("an acknowledged mutation that is gone", &lost, &rows, &rows[..1]);
    let twice = [rows.clone(), vec![synthetic_row(4, "user.create", "kd-a")]].concat();
    refused("two audit rows for one mutation", &stored, &twice, &rows[..1]);
    let mut gap = rows.clone();
    gap[2]["seq"] = json!(4);
    refused("a gap in the sequence numbers", &stored, &gap, &rows[..1]);
    let mut repeated = rows.clone();
    repeated[2]["seq"] = json!(2);
    refused("a repeated sequence number", &stored, &repeated, &rows[..1]);
    refused("a trail that lost rows read before the kill", &stored, &rows[1..], &rows[..1]);
    let mut wrong_id = rows.clone();
    wrong_id[1]["target"] = json!("kd-a tk_2");
    refused("a row naming another token than the stored one", &stored, &wrong_id, &rows[..1]);
}
