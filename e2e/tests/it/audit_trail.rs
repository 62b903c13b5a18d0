//! The audit trail's size is bounded and visible: a flood of bad tokens leaves at most its
//! source's budget of records and warn lines (the rest is counted in
//! `portunus_audit_rows_dropped_total`), the trail's rows and bytes are metrics, and
//! `DELETE /v1/audit?before=` prunes it.

use serde_json::Value;

use crate::harness::{Auth, Scenario, Server, ServerOpts, http_get, http_request};
use crate::metrics::sample;

fn audit_records(server: &Server) -> Vec<Value> {
    let operator = server.operator_token();
    let page = server.api().call("GET", "/v1/audit?limit=500", &Auth::Bearer(&operator), None);
    assert_eq!(page.status, 200, "{}", page.text);
    page.body["records"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_flood_of_bad_tokens_leaves_a_bounded_trail_counted_in_metrics_and_the_trail_can_be_pruned() {
    let scn = Scenario::new("audit_trail");
    let server = Server::start(&scn, ServerOpts::default());
    let api = server.addrs().operator_http;
    const FLOOD: usize = 300;
    for n in 0..FLOOD {
        let (status, _) = http_request(api, "GET", "/v1/rules", Some(&format!("pt_bogus{n}")));
        assert_eq!(status, 401);
    }
    // The default budget is 20 at once and 60 a minute per source: well under the flood.
    // Records are written behind (within 200 ms); each kept one has its warn line, the
    // dropped ones have neither.
    let anonymous = || audit_records(&server).iter().filter(|r| r["actor"] == "anonymous").count();
    let warned = || server.proc().events_matching("auth.failure", &[("kind", "operator_api")]).len();
    let kept = crate::harness::wait_until("one record per warn line, at least the burst", || {
        let (n, w) = (anonymous(), warned());
        (n >= 20 && n == w).then_some(n)
    });
    assert!(kept < 60, "{kept} of {FLOOD} bad requests were audited");

    let (status, body) = http_get(server.addrs().metrics, "/metrics");
    assert_eq!(status, 200);
    let dropped = sample(&body, "portunus_audit_rows_dropped_total").expect("dropped counter");
    assert_eq!(dropped as usize, FLOOD - kept, "{body}");
    let rows = sample(&body, "portunus_audit_rows").expect("rows gauge");
    assert!(rows >= kept as f64, "{body}");
    assert!(sample(&body, "portunus_audit_bytes").is_some_and(|b| b > 0.0), "{body}");

    // A superadmin prunes everything older than an hour from now: only the newest record
    // and the prune's own remain, and the metric follows.
    let operator = server.operator_token();
    let cut = "2100-01-01T00:00:00Z";
    let pruned =
        server.api().call("DELETE", &format!("/v1/audit?before={cut}"), &Auth::Bearer(&operator), None);
    assert_eq!(pruned.status, 200, "{}", pruned.text);
    assert_eq!(pruned.body["more"], Value::Bool(false));
    assert!(pruned.body["pruned"].as_u64().is_some_and(|n| n as usize >= kept - 1), "{}", pruned.text);
    let left = audit_records(&server);
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[1]["action"], "audit.prune");
    let (_, body) = http_get(server.addrs().metrics, "/metrics");
    assert_eq!(sample(&body, "portunus_audit_rows"), Some(2.0), "{body}");

    let bad = server.api().call("DELETE", "/v1/audit?before=yesterday", &Auth::Bearer(&operator), None);
    assert_eq!((bad.status, bad.code()), (400, "invalid_request"), "{}", bad.text);

    // The same from the command line: the two records left are one prune (the newest stays).
    let printed = server.cli_ok(&["audit-prune", "--before", cut]);
    assert_eq!(printed.trim(), "1", "{printed}");
    let refused = server.cli(&["audit-prune", "--before", "soon"]);
    assert_eq!(refused.code, 2, "{refused:?}");
}
