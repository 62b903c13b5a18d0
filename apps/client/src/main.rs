//! `portunus-client`: `enroll URI --bundle FILE` redeems an enrollment and writes the bundle;
//! without a subcommand it runs: connects to the pinned server, binds the rules it is sent
//! and forwards. The whole wiring is here.
#![forbid(unsafe_code)]

mod bundle;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portunus_control::ClientInfo;
use portunus_core::capability::Capability;
use portunus_core::config::ControlPolicy;
use portunus_core::enroll::EnrollUri;
use portunus_core::error::{ErrorCode, Failure};
use portunus_dataplane::{DataPlane, DataPlaneOptions};
use portunus_telemetry::log::LogFormat;

const EXIT_STATUSES: &str = "\
Exit statuses: 0 success (or drained after SIGTERM/SIGINT); 1 internal or I/O failure;
2 usage, malformed enrollment URI or bundle; 4 server refused us (pinned certificate mismatch,
invalid or revoked token, expired or used enrollment code).";

/// The Portunus edge client.
#[derive(Debug, Parser)]
#[command(name = "portunus-client", version = version(), about, after_help = EXIT_STATUSES)]
struct Cli {
    /// The bundle written by `enroll` (server endpoint, pin, token).
    #[arg(long, global = true, env = "PORTUNUS_BUNDLE")]
    bundle: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "json", value_parser = parse_log_format)]
    log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long open connections may finish before they are cut (seconds).
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Redeem an enrollment URI printed by `portunus-server enroll-client` and write the bundle.
    Enroll {
        /// `portunus://HOST:PORT/enroll?pin=sha256:…&code=…`
        uri: String,
    },
}

fn version() -> &'static str {
    // Built once per process; clap wants a 'static string.
    Box::leak(portunus_telemetry::version_text(env!("CARGO_PKG_VERSION")).into_boxed_str())
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// What this build's data plane runs, announced in Hello.
const CAPABILITIES: &[Capability] = &[
    Capability::Tcp,
    Capability::Udp,
    Capability::PortRange,
    Capability::MultiTarget,
    Capability::DnsTarget,
    Capability::ProxyProtocol,
];

fn main() {
    let cli = Cli::parse();
    portunus_telemetry::log::init(cli.log_format, log_directive().as_deref());
    portunus_control::install_default_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(err) => Err(Failure::new(ErrorCode::Internal, format!("tokio runtime: {err}"))),
    };
    if let Err(failure) = result {
        eprintln!("{}: {}", failure.code, failure.message);
        std::process::exit(i32::from(failure.code.exit_status()));
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let bundle_path = cli.bundle.ok_or_else(|| {
        Failure::new(ErrorCode::InvalidRequest, "--bundle FILE (or PORTUNUS_BUNDLE) is required")
    })?;
    let info = ClientInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        git_revision: portunus_telemetry::GIT_REVISION.to_owned(),
        capabilities: announced_capabilities(),
    };
    if let Some(Command::Enroll { uri }) = cli.command {
        let uri = EnrollUri::parse(&uri)?;
        let bundle = portunus_control::redeem(&uri, &info, &ControlPolicy::default()).await?;
        bundle::write(&bundle_path, &bundle)?;
        tracing::info!(event = "client.enrolled", client = %bundle.client_name, client_id = %bundle.client_id,
            bundle = %bundle_path.display());
        return Ok(());
    }
    let bundle = bundle::read(&bundle_path)?;
    match portunus_dataplane::raise_nofile_limit() {
        Ok((before, after)) => tracing::debug!(event = "startup.nofile_limit", before, after),
        Err(err) => tracing::warn!(event = "startup.nofile_limit_failed", error = %err),
    }
    // Built on the first DNS-name target; if it cannot be, those connections fail one by one
    // (`rule.dns_failed`) while IP targets keep working.
    let (options, dns_server) = data_plane_switches()?;
    let plane = DataPlane::with_resolver(options, portunus_resolver::LazyResolver::new(dns_server));
    tracing::info!(event = "client.started", client = %bundle.client_name, client_id = %bundle.client_id,
        server = %bundle.server_endpoint, version = %version());
    let policy = ControlPolicy::default();
    let result = portunus_control::run(&bundle, &info, plane.clone(), &policy, shutdown_signal()).await;
    let drain = if result.is_ok() {
        Duration::from_secs_f64(cli.drain_timeout.clamp(0.0, 86_400.0))
    } else {
        Duration::ZERO
    };
    let cut = plane.shutdown(drain).await;
    tracing::info!(event = "client.stopped", connections_cut = cut);
    result
}

/// The capabilities to announce: all this build has, or — for tests of the server's gates,
/// deliberately absent from `--help` — the subset named in `PORTUNUS_CLIENT_CAPABILITIES`.
fn announced_capabilities() -> Vec<Capability> {
    match std::env::var("PORTUNUS_CLIENT_CAPABILITIES") {
        Ok(list) => {
            let named = portunus_core::capability::parse_set(list.split(',').map(str::trim));
            CAPABILITIES.iter().copied().filter(|c| named.contains(c)).collect()
        }
        Err(_) => CAPABILITIES.to_vec(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(event = "client.stopping");
}

/// The log filter: `PORTUNUS_LOG`, else `RUST_LOG`.
fn log_directive() -> Option<String> {
    ["PORTUNUS_LOG", "RUST_LOG"].into_iter().find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
}

/// The triage and test switches from the environment (see `DataPlaneOptions::from_switches`).
fn data_plane_switches() -> Result<(DataPlaneOptions, Option<std::net::SocketAddr>), Failure> {
    DataPlaneOptions::from_switches(
        std::env::var_os("PORTUNUS_DISABLE_SPLICE").as_deref(),
        std::env::var_os("PORTUNUS_DISABLE_UDP_GSO").as_deref(),
        std::env::var("PORTUNUS_DNS_SERVER").ok().as_deref(),
    )
}
