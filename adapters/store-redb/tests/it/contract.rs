//! The core `Store` contract, run against both backends of the adapter.

use std::cell::Cell;

use portunus_core::test_support::store_contract;
use portunus_store_redb::RedbStore;

use crate::support::temp_dir;

#[test]
fn in_memory_store_passes_the_store_contract() {
    store_contract(&|| Box::new(RedbStore::in_memory().unwrap()));
}

#[test]
fn file_store_passes_the_store_contract() {
    let dir = temp_dir();
    let n_files = Cell::new(0u32);
    store_contract(&|| {
        n_files.set(n_files.get() + 1);
        let path = dir.path().join(format!("contract-{}.redb", n_files.get()));
        Box::new(RedbStore::open(&path).unwrap())
    });
    assert!(n_files.get() > 0);
}

mod model {
    //! Random batches applied to the redb store and to core's reference `MemoryStore` leave
    //! both with the same contents and the same id sequence.

    use portunus_core::ids::{ClientName, RuleId};
    use portunus_core::ports::{ClientStore, RuleIds, RuleStore, Store, Write};
    use portunus_core::test_support::MemoryStore;
    use portunus_store_redb::RedbStore;
    use proptest::prelude::*;

    use crate::support::{Snapshot, client, enrollment, rule, totals};

    /// Client `k` may only take the names `c{k}-0..3`, so renames never collide; a collision
    /// is a core bug the redb store refuses, which the reference store does not model.
    const NAMES: [&str; 9] = ["c0-0", "c0-1", "c0-2", "c1-0", "c1-1", "c1-2", "c2-0", "c2-1", "c2-2"];
    const CODES: [&str; 3] = ["code-0", "code-1", "code-2"];

    #[derive(Debug, Clone)]
    enum Op {
        PutClient { k: u8, name: usize },
        PutRule { id: u64, k: u8, port: i64 },
        DeleteRule { id: u64 },
        PutEnrollment { code: usize, k: u8 },
        PutTotals { id: u64, bytes: u64 },
    }

    impl Op {
        fn into_write(self) -> Write {
            let id_of = |k: u8| client(k + 1, "placeholder").id;
            match self {
                Op::PutClient { k, name } => {
                    let mut c = client(k + 1, "placeholder");
                    c.name = ClientName::parse(NAMES[usize::from(k) * 3 + name]).unwrap();
                    Write::PutClient(c)
                }
                Op::PutRule { id, k, port } => Write::PutRule(rule(RuleId::new(id), &id_of(k), port)),
                Op::DeleteRule { id } => Write::DeleteRule(RuleId::new(id)),
                Op::PutEnrollment { code, k } => Write::PutEnrollment(enrollment(CODES[code], &id_of(k))),
                Op::PutTotals { id, bytes } => Write::PutTotals(RuleId::new(id), totals(bytes)),
            }
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 0usize..3).prop_map(|(k, name)| Op::PutClient { k, name }),
            (1u64..8, 0u8..3, 1i64..65536).prop_map(|(id, k, port)| Op::PutRule { id, k, port }),
            (1u64..8).prop_map(|id| Op::DeleteRule { id }),
            (0usize..3, 0u8..3).prop_map(|(code, k)| Op::PutEnrollment { code, k }),
            (1u64..8, 0u64..1_000_000).prop_map(|(id, bytes)| Op::PutTotals { id, bytes }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn redb_store_matches_the_reference_store(
            steps in proptest::collection::vec((proptest::collection::vec(op(), 0..6), any::<bool>()), 1..12)
        ) {
            let redb = RedbStore::in_memory().unwrap();
            let reference = MemoryStore::default();
            for (ops, take_id) in steps {
                if take_id {
                    prop_assert_eq!(redb.next_rule_id().unwrap(), reference.next_rule_id().unwrap());
                }
                let writes: Vec<Write> = ops.into_iter().map(Op::into_write).collect();
                redb.commit(writes.clone()).unwrap();
                reference.commit(writes).unwrap();
                prop_assert_eq!(Snapshot::of(&redb, &NAMES, &CODES), Snapshot::of(&reference, &NAMES, &CODES));
                for k in 1..=3u8 {
                    let id = client(k, "placeholder").id;
                    prop_assert_eq!(
                        redb.rules_for_client(&id).unwrap(),
                        reference.rules_for_client(&id).unwrap()
                    );
                    prop_assert_eq!(redb.get_client(&id).unwrap(), reference.get_client(&id).unwrap());
                }
            }
        }
    }
}
