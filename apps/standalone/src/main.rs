//! `portunus-standalone --config portunus.toml`: the client's data plane with rules from a
//! TOML file and no server ("one TOML on one VPS"). `--check` validates the file and exits
//! 0, or 2 with a message naming the rule and field. The whole wiring is here.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::standalone::StandaloneConfig;
use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{DataPlane, DataPlaneOptions};
use portunus_telemetry::log::LogFormat;

/// Portunus without a control plane.
#[derive(Debug, Parser)]
#[command(name = "portunus-standalone", version = version(), about,
    after_help = "Exit statuses: 0 success; 1 internal or I/O failure; 2 invalid configuration; 5 a listen port is in use.")]
struct Cli {
    /// The rules file: `[[rule]]` tables (name, protocol, listen_port, target…) and optional `[settings]`.
    #[arg(long, env = "PORTUNUS_CONFIG")]
    config: PathBuf,
    /// Validate the file and exit.
    #[arg(long)]
    check: bool,
    /// Log format on stderr.
    #[arg(long, default_value = "json", value_parser = parse_log_format)]
    log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long open connections may finish before they are cut (seconds).
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
}

fn version() -> &'static str {
    // Built once per process; clap wants a 'static string.
    Box::leak(portunus_telemetry::version_text(env!("CARGO_PKG_VERSION")).into_boxed_str())
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

fn main() {
    let cli = Cli::parse();
    portunus_telemetry::log::init(cli.log_format, log_directive().as_deref());
    let result = std::fs::read_to_string(&cli.config)
        .map_err(|e| {
            Failure::new(ErrorCode::InvalidConfig, format!("cannot read {}: {e}", cli.config.display()))
        })
        .and_then(|text| StandaloneConfig::parse(&text))
        .map_err(|f| {
            // Every configuration problem is a usage error, whatever its code.
            Failure::new(f.code, format!("{}: {}", cli.config.display(), f.message))
        });
    let result = match (result, cli.check) {
        (Err(failure), _) => {
            eprintln!("{}: {}", failure.code, failure.message);
            std::process::exit(i32::from(ErrorCode::InvalidConfig.exit_status()));
        }
        (Ok(config), true) => {
            eprintln!("{}: {} rule(s) OK", cli.config.display(), config.rules.len());
            Ok(())
        }
        (Ok(config), false) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => {
                rt.block_on(run(config, Duration::from_secs_f64(cli.drain_timeout.clamp(0.0, 86_400.0))))
            }
            Err(err) => Err(Failure::new(ErrorCode::Internal, format!("tokio runtime: {err}"))),
        },
    };
    if let Err(failure) = result {
        eprintln!("{}: {}", failure.code, failure.message);
        std::process::exit(i32::from(failure.code.exit_status()));
    }
}

async fn run(config: StandaloneConfig, drain: Duration) -> Result<(), Failure> {
    if let Err(err) = portunus_dataplane::raise_nofile_limit() {
        tracing::warn!(event = "startup.nofile_limit_failed", error = %err);
    }
    // Built on the first DNS-name target; if it cannot be, those connections fail one by one
    // (`rule.dns_failed`) while IP targets keep working.
    let (options, dns_server) = data_plane_switches()?;
    let plane = DataPlane::with_resolver(options, portunus_resolver::LazyResolver::new(dns_server));
    plane.apply_settings(config.settings);
    for (id, name, def) in config.rules {
        let listen = def.listen;
        if let Err(failure) = plane.bind(id, def).await {
            tracing::error!(event = "rule.bind_failed", rule = %id, name = %name, code = %failure.code,
                message = %failure.message);
            plane.shutdown(Duration::ZERO).await;
            return Err(Failure::new(failure.code, format!("rule {name:?}: {}", failure.message)));
        }
        tracing::info!(event = "rule.bound", rule = %id, name = %name, listen = %listen);
    }
    tracing::info!(event = "standalone.started", version = %version());
    shutdown_signal().await;
    tracing::info!(event = "standalone.stopping");
    let cut = plane.shutdown(drain).await;
    tracing::info!(event = "standalone.stopped", connections_cut = cut);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
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
