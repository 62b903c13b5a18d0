//! Criterion bench of the SNI route lookup one listener does per connection:
//! `cargo bench -p portunus-client --bench sni_routes`.
//!
//! - `sni_lookup/{exact,wildcard,fallback}/{10,1000,10000}`: one lookup in a table of that
//!   many names (half exact hosts, half `*.suffix` patterns, plus a fallback), for a name
//!   that hits an exact route, a wildcard route, or neither. The table is two hash maps, so
//!   the cost should stay flat as the names grow.
//! - `sni_hello/openssl_tls13`: reading a captured ClientHello whole, for scale.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portunus_core::sni::{HelloReader, HostName, SniPattern, SniRoutes};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// A table of `n` routes (every other one a wildcard) and a fallback.
fn table(n: usize) -> SniRoutes<usize> {
    let mut routes = SniRoutes::default();
    for idx in 0..n {
        let text =
            if idx % 2 == 0 { format!("host-{idx}.tenant.example") } else { format!("*.zone-{idx}.example") };
        let pattern = SniPattern::parse(&text).expect("pattern");
        routes.insert(Some(pattern), idx).expect("distinct patterns");
    }
    routes.insert(None, usize::MAX).expect("one fallback");
    routes
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("sni_lookup");
    for n in SIZES {
        let routes = table(n);
        // Names from the middle of the table, so a scan would pay for half of it.
        let exact_idx = (n / 2) & !1;
        let wildcard_idx = (n / 2) | 1;
        let names = [
            ("exact", format!("host-{exact_idx}.tenant.example")),
            ("wildcard", format!("www.zone-{wildcard_idx}.example")),
            ("fallback", "nobody.example.org".to_owned()),
        ];
        for (kind, name) in names {
            let name = HostName::parse(&name).expect("name");
            assert!(routes.lookup(Some(&name)).is_some());
            group.bench_with_input(BenchmarkId::new(kind, n), &name, |b, name| {
                b.iter(|| black_box(routes.lookup(Some(black_box(name)))))
            });
        }
    }
    group.finish();
}

fn hello(c: &mut Criterion) {
    const HELLO: &[u8] = include_bytes!("../core/src/sni/testdata/openssl_tls13.bin");
    c.bench_function("sni_hello/openssl_tls13", |b| {
        b.iter(|| {
            let mut reader = HelloReader::default();
            black_box(reader.handle_bytes(black_box(HELLO)))
        })
    });
}

criterion_group!(benches, lookup, hello);
criterion_main!(benches);
