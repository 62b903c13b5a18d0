//! `portunus-loadtest`: starts one real `portunus-server` on loopback, enrolls N clients and
//! runs them as simulated edge clients in this process, then measures connect time, server
//! memory and CPU, push latency and throughput, listing latency and a reconnect storm.
//! `cargo xtask loadtest --clients N` builds it in release mode and runs it.
//!
//! Invariants: every address it talks to is loopback; every phase has a deadline; the only
//! process it signals is the server it started, by PID.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

mod api;
mod procfs;
mod report;
mod server;
mod sim;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use portunus_control::ClientInfo;
use portunus_core::capability::Capability;
use portunus_core::enroll::{Bundle, EnrollUri};

use crate::api::{Api, CallError};
use crate::report::{Report, Storm, Throughput, markdown};
use crate::server::Server;
use crate::sim::Fleet;
use crate::stats::{Summary, Tally, ms};

/// Operator tasks of the concurrent push phase.
const CONCURRENT_OPERATORS: usize = 32;
/// The concurrent push phase stops after this many pushes …
const CONCURRENT_MAX_PUSHES: usize = 2_000;
/// … or after this long, whichever comes first.
const CONCURRENT_WINDOW: Duration = Duration::from_secs(20);
/// Listings are timed once at least this many rules exist.
const LIST_MIN_RULES: usize = 1_000;
/// Timed requests per listing.
const LIST_REQUESTS: usize = 200;
/// Listings timed right after a change each.
const LIST_AFTER_CHANGE: usize = 50;
/// Connections sending bad tokens during the flood phase …
const FLOOD_TASKS: usize = 4;
/// … each at most one request per FLOOD_INTERVAL (4 × 500 = 2,000 requests/s: a flood the
/// server must absorb, paced so that the load generator does not take the host's CPU) …
const FLOOD_INTERVAL: Duration = Duration::from_millis(2);
/// … and the most requests they send in all.
const FLOOD_MAX_REQUESTS: usize = 500_000;
/// Concurrent enroll-and-redeem tasks.
const ENROLL_WORKERS: usize = 16;

/// Load test of the control plane: one real server, N simulated clients.
#[derive(Debug, Parser)]
#[command(name = "portunus-loadtest", version, about)]
struct Args {
    /// Simulated clients.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    clients: u32,
    /// Seconds of each idle CPU measurement.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    idle_secs: u64,
    /// Sequential pushes timed for the latency percentiles.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pushes: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The portunus-server binary [default: beside this binary].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where to create the server's temporary data dir (not tmpfs) [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the data dir and server log (kept anyway when the run fails).
    #[arg(long)]
    keep_data: bool,
}

/// Everything measured; `None` where a phase did not get that far.
fn main() -> ExitCode {
    let args = Args::parse();
    let nofile = match raise_nofile_limit() {
        Ok(limit) => limit,
        Err(err) => {
            eprintln!("portunus-loadtest: cannot raise RLIMIT_NOFILE: {err}");
            0
        }
    };
    portunus_control::install_default_provider();
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let data = match std::fs::create_dir_all(&work_dir)
        .and_then(|()| tempfile::Builder::new().prefix("portunus-loadtest-").tempdir_in(&work_dir))
    {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("portunus-loadtest: cannot create a data dir in {}: {err}", work_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report {
        clients: args.clients,
        idle_secs: args.idle_secs,
        pushes: args.pushes,
        nofile_soft_limit: nofile,
        data_dir: data.path().join("srv").display().to_string(),
        ..Report::default()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("portunus-loadtest: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = runtime.block_on(run(&args, &data.path().join("srv"), &mut report)) {
        report.failures.push(format!("{err:#}"));
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    report.server_log_problems = server::log_problems(&data.path().join("srv"));
    print!("{}", markdown(&report));
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(err) = std::fs::write(out, json + "\n") {
            eprintln!("portunus-loadtest: cannot write {}: {err}", out.display());
            report.failures.push(format!("cannot write {}", out.display()));
        }
    }
    if args.keep_data || !report.failures.is_empty() {
        let kept = data.keep();
        println!("\ndata dir and server log kept in {}", kept.join("srv").display());
    }
    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Raises the soft descriptor limit to the hard one (the server child inherits it); returns
/// the new soft limit.
fn raise_nofile_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

fn server_bin(args: &Args) -> Result<PathBuf> {
    if let Some(bin) = &args.server_bin {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe().context("cannot find this binary")?;
    Ok(me.with_file_name("portunus-server"))
}

/// Polls `done` every 10 ms until it holds or `deadline` passes.
async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `job(i)` for `i` in `0..total` on `workers` tasks; no new job starts after
/// `deadline`. Returns whether every job ran.
async fn for_each_concurrent<F, Fut>(workers: usize, total: usize, deadline: Instant, job: F) -> bool
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.min(total.max(1)) {
        let next = next.clone();
        let job = job.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                job(i).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    next.load(Ordering::Relaxed) >= total
}

fn count_call(tally: &Mutex<Tally>, result: Result<(), CallError>) {
    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) => tally.ok(),
        Err(CallError::Timeout(kind)) => tally.timeout(&kind),
        Err(CallError::Failed(kind)) => tally.error(&kind),
    }
}

fn take<T: Default>(shared: &Arc<Mutex<T>>) -> T {
    std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()))
}

fn ensure_running(server: &mut Server, phase: &str) -> Result<()> {
    if !server.running() {
        bail!("portunus-server is no longer running (before {phase})");
    }
    Ok(())
}

/// CPU the server used over `secs` of idling, scaled to ms per minute, and the sample taken
/// at the end of the window.
async fn idle_cpu(server: &Server, secs: u64) -> Result<(f64, procfs::Sample)> {
    let before = procfs::sample(server.pid())?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = procfs::sample(server.pid())?;
    Ok((ms(after.cpu_since(&before)) * 60.0 / secs as f64, after))
}

/// Pushes `count` rules with `workers` operator tasks, rule `i` to `clients[pick(i)]`.
/// Returns the tally, the latencies of the successful pushes, and whether the deadline cut
/// the phase short.
async fn push_many(
    api: &Api,
    fleet: &Fleet,
    count: usize,
    workers: usize,
    deadline: Instant,
    pick: impl Fn(usize) -> usize + Send + Sync + 'static,
) -> (Tally, Vec<Duration>, bool) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let clients = fleet.clients.clone();
    let all_ran = for_each_concurrent(workers, count, deadline, {
        let (api, tally, latencies) = (api.clone(), tally.clone(), latencies.clone());
        move |i| {
            let client = clients[pick(i) % clients.len()].clone();
            let (api, tally, latencies) = (api.clone(), tally.clone(), latencies.clone());
            async move {
                let started = Instant::now();
                let result = api.push_rule(&client.bundle.client_name, client.take_port()).await;
                if result.is_ok() {
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).push(started.elapsed());
                }
                count_call(&tally, result.map(|_| ()));
            }
        }
    })
    .await;
    (take(&tally), take(&latencies), !all_ran)
}

async fn run(args: &Args, data_dir: &Path, report: &mut Report) -> Result<()> {
    let n = usize::try_from(args.clients)?;
    let bin = server_bin(args)?;
    if !bin.exists() {
        bail!("{} not found (build it, or pass --server-bin)", bin.display());
    }
    if report.nofile_soft_limit < 2 * n as u64 + 256 {
        eprintln!(
            "portunus-loadtest: warning: RLIMIT_NOFILE is {}, {n} clients need about {}",
            report.nofile_soft_limit,
            2 * n + 256
        );
    }

    // 1. The server, idle with no clients.
    let started = Instant::now();
    let mut server = Server::start(&bin, data_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    report.server_start_ms = Some(ms(started.elapsed()));
    let mut api = Api::new(server.api_base(), server.operator_token()?)?;
    eprintln!("server pid {} control {} api {}", server.pid(), server.addrs.control, server.api_base());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = procfs::sample(server.pid())?;
    report.rss_idle_kib = Some(idle.rss_kib);
    report.threads_idle = Some(idle.threads);

    // 2. Enroll N clients over HTTP and redeem each code over gRPC.
    eprintln!("enrolling {n} clients");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30) + Duration::from_millis(50) * args.clients;
    let bundles: Arc<Mutex<Vec<Option<Bundle>>>> = Arc::new(Mutex::new(vec![None; n]));
    let enroll_tally = Arc::new(Mutex::new(Tally::default()));
    let redeem_tally = Arc::new(Mutex::new(Tally::default()));
    let all_ran = for_each_concurrent(ENROLL_WORKERS, n, deadline, {
        let (api, bundles, enroll_tally, redeem_tally) =
            (api.clone(), bundles.clone(), enroll_tally.clone(), redeem_tally.clone());
        move |i| {
            let (api, bundles, enroll_tally, redeem_tally) =
                (api.clone(), bundles.clone(), enroll_tally.clone(), redeem_tally.clone());
            async move {
                let uri = match api.enroll(&format!("lt-{i:05}")).await {
                    Ok(uri) => uri,
                    Err(err) => return count_call(&enroll_tally, Err(err)),
                };
                count_call(&enroll_tally, Ok(()));
                let redeemed = redeem(&uri).await;
                let mut tally = redeem_tally.lock().unwrap_or_else(|p| p.into_inner());
                match redeemed {
                    Ok(bundle) => {
                        tally.ok();
                        bundles.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(bundle);
                    }
                    Err(CallError::Timeout(kind)) => tally.timeout(&kind),
                    Err(CallError::Failed(kind)) => tally.error(&kind),
                }
            }
        }
    })
    .await;
    report.enroll_redeem_ms = Some(ms(started.elapsed()));
    let (enrolled, redeemed) = (take(&enroll_tally), take(&redeem_tally));
    let bundles: Vec<Bundle> = take(&bundles).into_iter().flatten().collect();
    let enroll_failed = enrolled.errors + enrolled.timeouts > 0;
    let redeem_failed = redeemed.errors + redeemed.timeouts > 0;
    report.phase("enroll (POST /v1/clients)", enrolled, !all_ran);
    report.phase("redeem (Enrollment.Redeem)", redeemed, !all_ran);
    if bundles.len() != n || enroll_failed || redeem_failed || !all_ran {
        bail!("enrollment: only {} of {n} clients enrolled and redeemed", bundles.len());
    }

    // 3. Connect all N at once; each is ready when Welcome and the replay arrived.
    eprintln!("connecting {n} clients");
    let overflows = procfs::listen_overflows();
    let started = Instant::now();
    let fleet = Fleet::start(bundles);
    let deadline = started + Duration::from_secs(30) + Duration::from_millis(30) * args.clients;
    let all = wait_until(deadline, || fleet.ready() == n).await;
    report.listen_overflows_during_connect =
        overflows.zip(procfs::listen_overflows()).map(|(a, b)| b.saturating_sub(a));
    let result = phase_after_connect(args, &mut server, &mut api, &fleet, started, all, report).await;
    let counters = &fleet.counters;
    report.rule_acks_sent = counters.acks.load(Ordering::Relaxed);
    report.stats_reports_sent = counters.reports.load(Ordering::Relaxed);
    (report.client_connect_failures, report.client_streams_ended) = fleet.failure_counts();
    report.client_failure_reasons =
        std::mem::take(&mut *counters.reasons.lock().unwrap_or_else(|p| p.into_inner()));
    fleet.shutdown().await;
    let stopped = server.stop().await;
    result?;
    stopped.context("final stop")?;
    Ok(())
}

/// Redeems an enrollment URI with the real client's function, loopback only.
async fn redeem(uri: &str) -> Result<Bundle, CallError> {
    let uri = EnrollUri::parse(uri).map_err(|f| CallError::Failed(f.code.as_str().to_owned()))?;
    let loopback = uri.endpoint.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
    if !loopback {
        return Err(CallError::Failed(format!("endpoint {} is not loopback", uri.endpoint)));
    }
    let info = ClientInfo {
        counters_journal: None,
        version: sim::VERSION.to_owned(),
        git_revision: "loadtest".to_owned(),
        capabilities: Capability::ALL.to_vec(),
    };
    match tokio::time::timeout(
        Duration::from_secs(30),
        portunus_control::redeem(&uri, &info, &portunus_core::config::ControlPolicy::default()),
    )
    .await
    {
        Ok(Ok(bundle)) => Ok(bundle),
        Ok(Err(failure)) => Err(CallError::Failed(failure.code.as_str().to_owned())),
        Err(_) => Err(CallError::Timeout("redeem timeout".into())),
    }
}

/// Everything from "all connected" on; the caller stops the fleet and the server afterwards.
async fn phase_after_connect(
    args: &Args,
    server: &mut Server,
    api: &mut Api,
    fleet: &Fleet,
    connect_started: Instant,
    all_connected: bool,
    report: &mut Report,
) -> Result<()> {
    let n = fleet.clients.len();
    if !all_connected {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for client in fleet.clients.iter().filter(|c| !c.is_ready()) {
            let why = client.failures().2.unwrap_or_else(|| "still connecting".into());
            *reasons.entry(why).or_default() += 1;
        }
        bail!("only {} of {n} clients connected in time; not connected: {reasons:?}", fleet.ready());
    }
    let last_ready = fleet.clients.iter().filter_map(|c| c.ready_info()).map(|(at, _, _)| at).max();
    report.connect_all_ms = last_ready.map(|at| ms(at.duration_since(connect_started)));
    report.client_failures_until_all_connected = Some(fleet.failure_counts());
    report.connected_seen_by_server = connected_seen(api).await;

    // 4. CPU while idle with N clients and no rules; then memory and threads (sampled after
    // the idle window, so short-lived blocking-pool threads from the connect burst are gone
    // when the window is longer than their 10 s keep-alive).
    eprintln!("idle CPU, no rules ({} s)", args.idle_secs);
    ensure_running(server, "the idle CPU sample")?;
    let (cpu, connected) = idle_cpu(server, args.idle_secs).await?;
    report.cpu_idle_no_rules_ms_per_min = Some(cpu);
    report.rss_connected_kib = Some(connected.rss_kib);
    report.threads_connected = Some(connected.threads);
    if let (Some(idle_rss), Some(idle_threads)) = (report.rss_idle_kib, report.threads_idle) {
        report.rss_per_client_kib = Some((connected.rss_kib as f64 - idle_rss as f64) / n as f64);
        report.threads_per_client = Some((connected.threads as f64 - idle_threads as f64) / n as f64);
    }

    // 6. Sequential push latency, to distinct clients.
    let pushes = usize::try_from(args.pushes)?;
    eprintln!("{pushes} sequential pushes");
    ensure_running(server, "sequential pushes")?;
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(100) * args.pushes;
    let (tally, latencies, cut) = push_many(api, fleet, pushes, 1, deadline, |i| i).await;
    let sequential_bad = tally.errors + tally.timeouts > 0 || cut;
    report.push_sequential = Some(Summary::of(&latencies));
    report.phase("push, sequential", tally, cut);
    if sequential_bad {
        report.failures.push("sequential pushes: timeouts, errors or deadline".into());
    }

    // 6b. The same pushes while FLOOD_TASKS connections send bad tokens at a steady rate
    // (bounded by FLOOD_MAX_REQUESTS and the pushes' deadline): refused requests must not
    // take the writer from the pushes.
    eprintln!("{pushes} sequential pushes under a bad-token flood");
    ensure_running(server, "pushes under a flood")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood_started = Instant::now();
    let flooders: Vec<_> = (0..FLOOD_TASKS)
        .map(|n| {
            let bad = api.with_token(&format!("tk_{n:016x}.not-a-token"));
            let (stop, sent) = (stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(FLOOD_INTERVAL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < FLOOD_MAX_REQUESTS
                {
                    every.tick().await;
                    let _ = bad.get_raw("/v1/clients").await;
                }
            })
        })
        .collect();
    // Let the flood reach its rate before the timed pushes start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(100) * args.pushes;
    let (tally, latencies, cut) = push_many(api, fleet, pushes, 1, deadline, |i| i).await;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let flood_sent = sent.load(Ordering::Relaxed).min(FLOOD_MAX_REQUESTS) as u64;
    report.push_sequential_flood = Some(Summary::of(&latencies));
    report.flood_requests = Some(flood_sent);
    report.flood_requests_per_sec = Some(flood_sent as f64 / flood_secs.max(1e-9));
    report.flood_audit_rows_dropped = api.get_text("/v1/metrics").await.ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("portunus_audit_rows_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    });
    report.phase("push, sequential, under a bad-token flood", tally, cut);

    // 7. One rule on every client that has none yet.
    let bare: Vec<usize> = (0..n).filter(|&i| fleet.clients[i].rule_count() == 0).collect();
    if !bare.is_empty() {
        eprintln!("one rule on each of {} more clients", bare.len());
        let deadline =
            Instant::now() + Duration::from_secs(30) + Duration::from_millis(50) * bare.len() as u32;
        let count = bare.len();
        let (tally, _, cut) =
            push_many(api, fleet, count, CONCURRENT_OPERATORS, deadline, move |i| bare[i]).await;
        if tally.errors + tally.timeouts > 0 || cut {
            report.failures.push("filling one rule per client: timeouts, errors or deadline".into());
        }
        report.phase("push, one rule per client", tally, cut);
    }

    // 8. CPU while idle with a rule on every client.
    eprintln!("idle CPU, rules on every client ({} s)", args.idle_secs);
    ensure_running(server, "the idle CPU sample")?;
    report.rules_during_cpu_idle = Some(fleet.clients.iter().map(|c| c.rule_count()).sum());
    report.cpu_idle_rules_ms_per_min = Some(idle_cpu(server, args.idle_secs).await?.0);

    // 9. At least LIST_MIN_RULES rules, spread over the clients.
    let existing = api.rules().await.map_err(|e| anyhow::anyhow!("GET /v1/rules: {e:?}"))?.len();
    if existing < LIST_MIN_RULES {
        let missing = LIST_MIN_RULES - existing;
        eprintln!("{missing} more rules to reach {LIST_MIN_RULES}");
        let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(50) * missing as u32;
        let offset = existing;
        let (tally, _, cut) =
            push_many(api, fleet, missing, CONCURRENT_OPERATORS, deadline, move |i| i + offset).await;
        if tally.errors + tally.timeouts > 0 || cut {
            report
                .failures
                .push(format!("pushing up to {LIST_MIN_RULES} rules: timeouts, errors or deadline"));
        }
        report.phase("push, top-up", tally, cut);
    }
    let rules = api.rules().await.map_err(|e| anyhow::anyhow!("GET /v1/rules: {e:?}"))?;
    report.rules_total = Some(rules.len());

    // 10. Listing latency, at about LIST_MIN_RULES rules: repeated reads of unchanged state,
    // then reads each right after a change (an enrollment, untimed), which the server cannot
    // answer from the listing it rendered before.
    eprintln!(
        "listing latency ({LIST_REQUESTS} requests each, then {LIST_AFTER_CHANGE} after a change each)"
    );
    for (path, slot) in [("/v1/clients", 0), ("/v1/rules", 1), ("/v1/clients", 2), ("/v1/rules", 3)] {
        let after_change = slot >= 2;
        let n_requests = if after_change { LIST_AFTER_CHANGE } else { LIST_REQUESTS };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut tally = Tally::default();
        let mut latencies = Vec::with_capacity(n_requests);
        let mut cut = false;
        for i in 0..n_requests {
            if Instant::now() >= deadline {
                cut = true;
                break;
            }
            if after_change && let Err(err) = api.enroll(&format!("lt-change-{slot}-{i}")).await {
                tally.error(&format!("change before the read: {err:?}"));
                continue;
            }
            let started = Instant::now();
            let result = api.get_raw(path).await;
            if result.is_ok() {
                latencies.push(started.elapsed());
            }
            match result {
                Ok(_) => tally.ok(),
                Err(CallError::Timeout(kind)) => tally.timeout(&kind),
                Err(CallError::Failed(kind)) => tally.error(&kind),
            }
        }
        if tally.errors + tally.timeouts > 0 || cut {
            report.failures.push(format!("GET {path}: timeouts, errors or deadline"));
        }
        let summary = Some(Summary::of(&latencies));
        match slot {
            0 => report.list_clients = summary,
            1 => report.list_rules = summary,
            2 => report.list_clients_changed = summary,
            _ => report.list_rules_changed = summary,
        }
        let phase = if after_change { format!("GET {path} after a change") } else { format!("GET {path}") };
        report.phase(&phase, tally, cut);
    }
    // 11. Push throughput (after the listings, which the goal states at 1,000 rules) from concurrent operators.
    eprintln!("concurrent pushes ({CONCURRENT_OPERATORS} operators)");
    ensure_running(server, "concurrent pushes")?;
    let started = Instant::now();
    let (tally, latencies, _) = push_many(
        api,
        fleet,
        CONCURRENT_MAX_PUSHES,
        CONCURRENT_OPERATORS,
        started + CONCURRENT_WINDOW,
        |i| i,
    )
    .await;
    let elapsed = started.elapsed();
    if tally.errors > 0 {
        report.failures.push("concurrent pushes: errors other than timeouts".into());
    }
    report.push_concurrent = Some(Throughput {
        operators: CONCURRENT_OPERATORS,
        pushes_ok: tally.ok,
        elapsed_ms: ms(elapsed),
        pushes_per_sec: tally.ok as f64 / elapsed.as_secs_f64(),
        latency: Summary::of(&latencies),
    });
    report.phase("push, concurrent", tally, false);
    // The storm checks every client's replay against the rules as they are now.
    let rules = api.rules().await.map_err(|e| anyhow::anyhow!("GET /v1/rules: {e:?}"))?;
    report.rules_at_rss = Some(rules.len());

    let with_rules = procfs::sample(server.pid())?;
    report.rss_with_rules_kib = Some(with_rules.rss_kib);
    report.threads_with_rules = Some(with_rules.threads);

    // 12. Reconnect storm: SIGTERM, restart on the same control port, full replay to all.
    storm(server, api, fleet, &rules, report).await
}

/// `GET /v1/clients`, counting the connected ones.
async fn connected_seen(api: &Api) -> Option<usize> {
    api.clients().await.ok().map(|list| list.iter().filter(|c| c.connected).count())
}

async fn storm(
    server: &mut Server,
    api: &mut Api,
    fleet: &Fleet,
    rules: &[api::ListedRule],
    report: &mut Report,
) -> Result<()> {
    let n = fleet.clients.len();
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for rule in rules.iter().filter(|r| r.state != "removed") {
        *expected.entry(rule.client_id.as_str()).or_default() += 1;
    }
    let want = |client: &sim::SimClient| expected.get(client.bundle.client_id.as_str()).copied().unwrap_or(0);
    let mut storm = Storm {
        rules_replayed: expected.values().sum(),
        rule_set_mismatches_before: fleet.clients.iter().filter(|c| c.rule_count() != want(c)).count(),
        ..Storm::default()
    };
    if storm.rule_set_mismatches_before > 0 {
        report.failures.push(format!(
            "{} clients hold a rule set that differs from the server's list",
            storm.rule_set_mismatches_before
        ));
    }
    report.client_failures_before_storm = Some(fleet.failure_counts());
    storm.server_cpu_until_storm_ms =
        procfs::sample(server.pid()).ok().map(|s| ms(s.cpu_since(&procfs::Sample { cpu_ticks: 0, ..s })));
    eprintln!("reconnect storm: SIGTERM to pid {}", server.pid());
    let control = server.addrs.control;
    let overflows = procfs::listen_overflows();
    let sigterm = Instant::now();
    match server.stop().await {
        Ok(took) => storm.sigterm_to_exit_ms = Some(ms(took)),
        Err(err) => report.failures.push(format!("reconnect storm: {err:#}")),
    }
    let epoch = fleet.next_epoch();
    let spawned = Instant::now();
    let (bin, dir) = (server.bin.clone(), server.data_dir.clone());
    let restarted = Server::start(&bin, &dir, control).await;
    let restarted = match restarted {
        Ok(s) => s,
        Err(err) => {
            report.storm = Some(storm);
            return Err(err.context(format!("restarting on {control}")));
        }
    };
    *server = restarted;
    let ready = Instant::now();
    storm.restart_to_ready_ms = Some(ms(ready.duration_since(spawned)));
    *api = Api::new(server.api_base(), server.operator_token()?)?;
    eprintln!("server pid {} back on {control}; waiting for {n} replays", server.pid());
    let deadline = ready + Duration::from_secs(30) + Duration::from_millis(30) * n as u32;
    let replayed =
        |c: &sim::SimClient| c.ready_info().is_some_and(|(_, e, got)| e == epoch && got == want(c));
    let all = wait_until(deadline, || fleet.clients.iter().all(|c| replayed(c))).await;
    storm.clients_replayed = fleet.clients.iter().filter(|c| replayed(c)).count();
    storm.listen_overflows = overflows.zip(procfs::listen_overflows()).map(|(a, b)| b.saturating_sub(a));
    let mut tally = Tally::default();
    for client in &fleet.clients {
        match client.ready_info() {
            Some((_, e, got)) if e == epoch && got == want(client) => tally.ok(),
            Some((_, e, _)) if e == epoch => tally.error("replay size differs"),
            _ => tally.timeout("not reconnected"),
        }
    }
    if all {
        let last = fleet.clients.iter().filter_map(|c| c.ready_info()).map(|(at, _, _)| at).max();
        if let Some(last) = last {
            storm.ready_to_all_replayed_ms = Some(ms(last.saturating_duration_since(ready)));
            storm.sigterm_to_all_replayed_ms = Some(ms(last.duration_since(sigterm)));
        }
    } else {
        report
            .failures
            .push(format!("reconnect storm: {} of {n} clients replayed in time", storm.clients_replayed));
    }
    report.phase("reconnect storm", tally, !all);
    storm.connected_seen_by_server = connected_seen(api).await;
    report.storm = Some(storm);
    Ok(())
}
