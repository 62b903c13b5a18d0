//! The load test's results: what is measured (serialised to `--out`), and the markdown
//! tables printed at the end.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{Summary, Tally};

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) clients: u32,
    pub(crate) idle_secs: u64,
    pub(crate) pushes: u32,
    pub(crate) nofile_soft_limit: u64,
    pub(crate) data_dir: String,
    pub(crate) server_start_ms: Option<f64>,
    pub(crate) enroll_redeem_ms: Option<f64>,
    pub(crate) connect_all_ms: Option<f64>,
    pub(crate) listen_overflows_during_connect: Option<u64>,
    pub(crate) connected_seen_by_server: Option<usize>,
    pub(crate) rss_idle_kib: Option<u64>,
    pub(crate) threads_idle: Option<u64>,
    pub(crate) rss_connected_kib: Option<u64>,
    pub(crate) threads_connected: Option<u64>,
    pub(crate) rss_per_client_kib: Option<f64>,
    pub(crate) threads_per_client: Option<f64>,
    pub(crate) cpu_idle_no_rules_ms_per_min: Option<f64>,
    pub(crate) cpu_idle_rules_ms_per_min: Option<f64>,
    pub(crate) rules_during_cpu_idle: Option<usize>,
    pub(crate) push_sequential: Option<Summary>,
    /// The same pushes while other connections send requests with bad tokens.
    pub(crate) push_sequential_flood: Option<Summary>,
    /// Bad-token requests per second during those pushes.
    pub(crate) flood_requests_per_sec: Option<f64>,
    /// Bad-token requests sent, and how many of them left an audit record.
    pub(crate) flood_requests: Option<u64>,
    pub(crate) flood_audit_rows_dropped: Option<u64>,
    pub(crate) push_concurrent: Option<Throughput>,
    pub(crate) rules_total: Option<usize>,
    pub(crate) rss_with_rules_kib: Option<u64>,
    /// Rules when that RSS was sampled (after the concurrent pushes).
    pub(crate) rules_at_rss: Option<usize>,
    pub(crate) threads_with_rules: Option<u64>,
    pub(crate) list_clients: Option<Summary>,
    pub(crate) list_rules: Option<Summary>,
    /// The same listings, each right after a change (an enrollment).
    pub(crate) list_clients_changed: Option<Summary>,
    pub(crate) list_rules_changed: Option<Summary>,
    pub(crate) storm: Option<Storm>,
    pub(crate) rule_acks_sent: u64,
    pub(crate) stats_reports_sent: u64,
    pub(crate) client_connect_failures: u64,
    pub(crate) client_streams_ended: u64,
    pub(crate) client_failures_until_all_connected: Option<(u64, u64)>,
    pub(crate) client_failures_before_storm: Option<(u64, u64)>,
    pub(crate) client_failure_reasons: BTreeMap<String, u64>,
    pub(crate) phases: Vec<PhaseTally>,
    pub(crate) server_log_problems: BTreeMap<String, (u64, String)>,
    pub(crate) failures: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PhaseTally {
    pub(crate) phase: String,
    #[serde(flatten)]
    pub(crate) tally: Tally,
    pub(crate) deadline_missed: bool,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Throughput {
    pub(crate) operators: usize,
    pub(crate) pushes_ok: u64,
    pub(crate) elapsed_ms: f64,
    pub(crate) pushes_per_sec: f64,
    pub(crate) latency: Summary,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Storm {
    pub(crate) server_cpu_until_storm_ms: Option<f64>,
    pub(crate) rules_replayed: usize,
    pub(crate) listen_overflows: Option<u64>,
    pub(crate) rule_set_mismatches_before: usize,
    pub(crate) sigterm_to_exit_ms: Option<f64>,
    pub(crate) restart_to_ready_ms: Option<f64>,
    pub(crate) ready_to_all_replayed_ms: Option<f64>,
    pub(crate) sigterm_to_all_replayed_ms: Option<f64>,
    pub(crate) clients_replayed: usize,
    pub(crate) connected_seen_by_server: Option<usize>,
}

impl Report {
    pub(crate) fn phase(&mut self, phase: &str, tally: Tally, deadline_missed: bool) {
        self.phases.push(PhaseTally { phase: phase.to_owned(), tally, deadline_missed });
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| if v >= 100.0 { format!("{v:.0} ms") } else { format!("{v:.1} ms") })
}

fn fmt_summary(s: &Option<Summary>, with_p90: bool) -> String {
    let Some(s) = s else { return "-".into() };
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    if with_p90 {
        format!("{} / {} / {} ms (max {}, n={})", f(s.p50_ms), f(s.p90_ms), f(s.p99_ms), f(s.max_ms), s.count)
    } else {
        format!("{} / {} ms (max {}, n={})", f(s.p50_ms), f(s.p99_ms), f(s.max_ms), s.count)
    }
}

fn fmt_mem(kib: Option<u64>, threads: Option<u64>) -> String {
    match (kib, threads) {
        (Some(kib), Some(t)) => format!("{:.1} MiB, {t} threads", kib as f64 / 1024.0),
        _ => "-".into(),
    }
}

pub(crate) fn markdown(r: &Report) -> String {
    let n = r.clients;
    let mut rows: Vec<(String, String)> = vec![
        (
            "clients / idle window / sequential pushes".into(),
            format!("{n} / {} s / {}", r.idle_secs, r.pushes),
        ),
        ("server start → ready".into(), fmt_ms(r.server_start_ms)),
        (format!("enroll + redeem {n} clients (16 at a time)"), fmt_ms(r.enroll_redeem_ms)),
        (format!("connect all {n} (Welcome + replay)"), fmt_ms(r.connect_all_ms)),
        (
            "SYNs dropped on full accept queues meanwhile (host ListenOverflows)".into(),
            r.listen_overflows_during_connect.map_or("-".into(), |c| c.to_string()),
        ),
        (
            "connected, as the server lists them".into(),
            r.connected_seen_by_server.map_or("-".into(), |c| format!("{c} of {n}")),
        ),
        ("server RSS idle, 0 clients".into(), fmt_mem(r.rss_idle_kib, r.threads_idle)),
        (
            format!("server RSS, {n} clients, no rules (end of idle window)"),
            fmt_mem(r.rss_connected_kib, r.threads_connected),
        ),
        (
            "per connected client".into(),
            match (r.rss_per_client_kib, r.threads_per_client) {
                (Some(kib), Some(t)) => format!("{kib:.1} KiB RSS, {t:.3} threads"),
                _ => "-".into(),
            },
        ),
        (format!("server CPU idle, {n} clients, no rules"), fmt_rate(r.cpu_idle_no_rules_ms_per_min)),
        (
            format!(
                "server CPU idle, {n} clients, {} rules (≥ 1 each)",
                r.rules_during_cpu_idle.map_or("-".into(), |c| c.to_string())
            ),
            fmt_rate(r.cpu_idle_rules_ms_per_min),
        ),
        ("push latency, sequential, p50 / p90 / p99".into(), fmt_summary(&r.push_sequential, true)),
        (
            format!(
                "push latency, sequential, under a bad-token flood ({} req/s, {} audit rows dropped of {})",
                r.flood_requests_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
                r.flood_audit_rows_dropped.map_or("-".into(), |v| v.to_string()),
                r.flood_requests.map_or("-".into(), |v| v.to_string()),
            ),
            fmt_summary(&r.push_sequential_flood, true),
        ),
    ];
    if let Some(t) = &r.push_concurrent {
        rows.push((
            format!("push throughput, {} concurrent operators", t.operators),
            format!(
                "{:.1} pushes/s ({} in {:.1} s); p50 / p99 {}",
                t.pushes_per_sec,
                t.pushes_ok,
                t.elapsed_ms / 1000.0,
                fmt_summary(&Some(t.latency.clone()), false)
            ),
        ));
    }
    let rules = r.rules_total.map_or("-".into(), |c| c.to_string());
    rows.push((format!("GET /v1/clients p50 / p99 ({n} clients)"), fmt_summary(&r.list_clients, false)));
    rows.push((format!("GET /v1/rules p50 / p99 ({rules} rules)"), fmt_summary(&r.list_rules, false)));
    rows.push((
        "GET /v1/clients p50 / p99, each right after a change".into(),
        fmt_summary(&r.list_clients_changed, false),
    ));
    rows.push((
        "GET /v1/rules p50 / p99, each right after a change".into(),
        fmt_summary(&r.list_rules_changed, false),
    ));
    rows.push((
        format!("server RSS with {} rules", r.rules_at_rss.map_or("-".into(), |c| c.to_string())),
        fmt_mem(r.rss_with_rules_kib, r.threads_with_rules),
    ));
    if let Some(s) = &r.storm {
        rows.push(("server CPU used from start until the storm".into(), fmt_ms(s.server_cpu_until_storm_ms)));
        rows.push(("storm: SIGTERM → server exited".into(), fmt_ms(s.sigterm_to_exit_ms)));
        rows.push(("storm: restart → ready (same control port)".into(), fmt_ms(s.restart_to_ready_ms)));
        rows.push((
            format!("storm: ready → all {n} reconnected + replayed ({} rules)", s.rules_replayed),
            fmt_ms(s.ready_to_all_replayed_ms),
        ));
        rows.push(("storm: SIGTERM → all replayed".into(), fmt_ms(s.sigterm_to_all_replayed_ms)));
        rows.push((
            "storm: SYNs dropped on full accept queues (host ListenOverflows)".into(),
            s.listen_overflows.map_or("-".into(), |c| c.to_string()),
        ));
        rows.push((
            "storm: clients replayed / connected per server".into(),
            format!(
                "{} / {}",
                s.clients_replayed,
                s.connected_seen_by_server.map_or("-".into(), |c| c.to_string())
            ),
        ));
    }
    rows.push((
        "RuleStatus acks sent / stats reports sent".into(),
        format!("{} / {}", r.rule_acks_sent, r.stats_reports_sent),
    ));
    let pair = |p: Option<(u64, u64)>| p.map_or("-".into(), |(c, e)| format!("{c} / {e}"));
    rows.push((
        "client connect failures / streams ended: until all connected; before storm; total".into(),
        format!(
            "{}; {}; {}",
            pair(r.client_failures_until_all_connected),
            pair(r.client_failures_before_storm),
            pair(Some((r.client_connect_failures, r.client_streams_ended)))
        ),
    ));

    let mut out = format!("\n## portunus-loadtest, {n} clients\n\n| measure | value |\n| --- | --- |\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out.push_str("\n| phase | ok | timeouts | errors | deadline missed | detail |\n| --- | --: | --: | --: | --- | --- |\n");
    for p in &r.phases {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            p.phase,
            p.tally.ok,
            p.tally.timeouts,
            p.tally.errors,
            if p.deadline_missed { "yes" } else { "no" },
            p.tally.kinds_text()
        ));
    }
    if !r.client_failure_reasons.is_empty() {
        out.push_str("\nsimulated clients, why attempts failed or streams ended:\n");
        for (reason, count) in &r.client_failure_reasons {
            out.push_str(&format!("- ×{count}: {reason}\n"));
        }
    }
    if !r.server_log_problems.is_empty() {
        out.push_str("\nserver log, warn/error events (count, first line):\n");
        for (kind, (count, first)) in &r.server_log_problems {
            out.push_str(&format!("- {kind} ×{count}: `{first}`\n"));
        }
    }
    if r.failures.is_empty() {
        out.push_str("\nresult: ok\n");
    } else {
        out.push_str("\nresult: FAILED\n");
        for f in &r.failures {
            out.push_str(&format!("- {f}\n"));
        }
    }
    out
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0} ms CPU per minute ({:.2} % of a core)", v / 600.0))
}
