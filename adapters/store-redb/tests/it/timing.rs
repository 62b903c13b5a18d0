//! Read costs at fleet size, for docs/PERFORMANCE.md (ignored: a measurement, not a test).
//! `cargo test --release -p portunus-store-redb --test it timing -- --ignored --nocapture`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use portunus_core::ports::{ClientStore, RuleStore, Store, Write};

#[test]
#[ignore = "a measurement; run it by name with --release"]
fn listing_costs_with_1000_clients_and_1000_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = portunus_store_redb::RedbStore::open(&dir.path().join("t.redb")).unwrap();
    let mut writes = Vec::new();
    for n in 0..1000u32 {
        let client = portunus_core::client::Client {
            id: portunus_core::ids::ClientId::from_random([
                (n % 251) as u8,
                (n / 251) as u8,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
            ]),
            name: portunus_core::ids::ClientName::parse(&format!("edge-{n:04}")).unwrap(),
            token: Some(portunus_core::secret::SecretHash::of("t")),
            revoked_at: None,
            created_at: portunus_core::ids::Timestamp::from_millis(1),
            last_seen_at: Some(portunus_core::ids::Timestamp::from_millis(2)),
            version: Some("0.1.0".into()),
        };
        let rule = portunus_core::rule::Rule {
            id: portunus_core::ids::RuleId::new(u64::from(n) + 1),
            client: client.id.clone(),
            owner: portunus_core::ids::UserId::new("_operator"),
            def: portunus_core::test_support::tcp_rule(20000 + i64::from(n)),
            state: portunus_core::rule::RuleState::Active,
            created_at: portunus_core::ids::Timestamp::from_millis(1),
            updated_at: portunus_core::ids::Timestamp::from_millis(2),
        };
        writes.push(Write::PutClient(client));
        writes.push(Write::PutRule(rule));
    }
    store.commit(writes).unwrap();
    let time = |name: &str, f: &dyn Fn() -> usize| {
        let mut samples: Vec<f64> = (0..50)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        println!("{name}: p50 {:.3} ms, p90 {:.3} ms", samples[25], samples[45]);
    };
    time("list_clients (1000)", &|| store.list_clients().unwrap().len());
    time("list_rules (1000)", &|| store.list_rules().unwrap().len());
    time("rule_counts (1000)", &|| store.rule_counts().unwrap().len());
    let first = store.list_clients().unwrap()[0].id.clone();
    time("rules_for_client", &|| store.rules_for_client(&first).unwrap().len());
    let rules = store.list_rules().unwrap();
    time("serde_json::to_vec of 1000 rules", &|| serde_json::to_vec(&rules).unwrap().len());
}
