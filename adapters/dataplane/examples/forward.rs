//! Forwarding one port from your own Rust service with the data plane alone: no server, no
//! control stream, no store.
//!
//! ```text
//! cargo run -p portunus-dataplane --example forward -- 8080 127.0.0.1:80
//! ```
//!
//! listens on `127.0.0.1:8080` (a range such as `8080-8089` works too), forwards every TCP
//! connection to the target (`host:port` in the rule grammar, so `[::1]:80` or a DNS name as
//! well), and on Ctrl-C prints the rule's counters and stops. The integration test
//! `example::the_forward_example_forwards_and_reports_its_counters` runs [`forward`].
#![allow(clippy::print_stdout)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use portunus_core::Failure;
use portunus_core::ids::RuleId;
use portunus_core::rule::{ListenSpec, Protocol, RuleLimits, RuleSpec};
use portunus_core::stats::RuleReport;
use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime};
use portunus_resolver::LazyResolver;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(target), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: forward <listen-port> <target host:port>".into());
    };
    let ctrl_c = async {
        // An error here means no signal handler could be installed: stop at once.
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = forward(&listen, &target, ctrl_c).await?;
    let t = report.totals;
    println!(
        "{} connections, {} bytes in, {} bytes out, {} connect failures",
        t.connections_total, t.bytes_in, t.bytes_out, t.connect_failures
    );
    Ok(())
}

/// Forwards `127.0.0.1:listen` to `target` until `stop` resolves, then returns the rule's
/// counters and shuts the plane down (open connections get a second to finish).
pub async fn forward(
    listen: &str,
    target: &str,
    stop: impl Future<Output = ()>,
) -> Result<RuleReport, Failure> {
    // The rule, validated exactly as the server validates a pushed one.
    let spec = RuleSpec {
        name: Some("example".to_owned()),
        protocol: Protocol::Tcp,
        listen_port: ListenSpec::Text(listen.to_owned()),
        // `None` would listen on every interface (dual-stack `[::]`).
        listen_addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        target: Some(target.to_owned()),
        targets: Vec::new(),
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    };
    let def = spec.validate(RuleLimits::default())?;

    // The plane runs its listeners and connections on the current tokio runtime. The lazy
    // resolver is built only if a target is a DNS name.
    let plane = DataPlane::with_resolver(DataPlaneOptions::default(), LazyResolver::new(None));
    let id = RuleId::new(1);
    plane.bind(id, def).await?;
    println!("forwarding 127.0.0.1:{listen} to {target}; Ctrl-C to stop");

    stop.await;
    let report = plane.report().into_iter().find(|(rule, _)| *rule == id).map(|(_, report)| report);
    plane.shutdown(Duration::from_secs(1)).await;
    Ok(report.unwrap_or_default())
}
