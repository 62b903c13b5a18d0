//! Embedding the control plane's rule service: an in-memory store, a fake link to one
//! connected client, a push in its two steps, the command it would send and its audit row.
//!
//! Run with `cargo run -p portunus-core --example embed`. A real server does the same
//! through `portunus-runtime`: the writer thread runs `begin_push` inside a redb write
//! transaction, queues the command on the client's gRPC stream, waits for the outcome with
//! a timeout, and calls `complete_push`.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use portunus_core::audit::AuditQuery;
use portunus_core::capability::Capability;
use portunus_core::client::Client;
use portunus_core::config::ServerSettings;
use portunus_core::ids::{ClientId, ClientName, Timestamp};
use portunus_core::policy::Actor;
use portunus_core::ports::{AuditStore, Store, Write};
use portunus_core::rule::{ListenSpec, RuleSpec, RuleState};
use portunus_core::secret::SecretHash;
use portunus_core::service::{Begun, Cx, PushOutcome, RuleService};
use portunus_core::test_support::{FakeSessions, MemoryStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The ports: a store (any `Store`; here the in-memory one) and the live sessions.
    let store = MemoryStore::default();
    let sessions = FakeSessions::default();
    let now = Timestamp::from_millis(1_750_000_000_000);

    // One enrolled client, connected with its capabilities.
    let client = Client {
        id: ClientId::from_random([7; 10]),
        name: ClientName::parse("edge-01")?,
        token: Some(SecretHash::of("token")),
        revoked_at: None,
        created_at: now,
        last_seen_at: None,
        version: None,
    };
    store.commit(vec![Write::PutClient(client.clone())])?;
    sessions.connect(&client.id, &[Capability::Tcp]);

    // Just the rule service, with the server's default limits.
    let rules = RuleService::new(&ServerSettings::resolve(Default::default())?);
    let spec = RuleSpec {
        name: Some("web".into()),
        protocol: Default::default(),
        listen_port: ListenSpec::Port(18080),
        listen_addr: None,
        target: Some("127.0.0.1:8080".into()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    };
    let ack_timeout = Duration::from_secs(2);

    // Step one, inside one write transaction: decide, stage the rule and its audit row.
    let mut begun: Option<Begun> = None;
    store.transact(&mut |tx| {
        let mut cx = Cx::new(tx, &sessions, now);
        begun = rules.begin_push(&mut cx, &Actor::operator(), "edge-01", &spec, ack_timeout).ok();
        tx.apply(cx.finish().writes)
    })?;
    let begun = begun.ok_or("the push was refused")?;
    println!("stored rule {} ({}), state {}", begun.rule.id, begun.rule.def.listen, begun.rule.state.name());
    println!("command for {}: {:?}", begun.client_name, begun.command);

    // The caller sends the command and waits; here the client answers at once.
    let mut cx = Cx::new(&store, &sessions, now);
    let view = rules
        .complete_push(
            &mut cx,
            &Actor::operator(),
            begun,
            PushOutcome::Reported(RuleState::Active),
            ack_timeout,
        )
        .map_err(|f| f.failure)?;
    println!("answer: rule {} is {}", view.rule.id, view.rule.state.name());

    // The audit row was committed with the rule, in the same transaction.
    for row in store.audit_page(&AuditQuery::new(None, None, None, None, None)?)? {
        println!("audit #{}: {} {} by {}", row.seq, row.action, row.target.unwrap_or_default(), row.actor);
    }
    Ok(())
}
