//! `portunus-standalone --config portunus.toml`: the client's data plane with rules from a
//! TOML file and no server ("one TOML on one VPS"). `--check` validates the file and exits
//! 0, or 2 with a message naming the rule and field. `completions` and `man` print what clap
//! knows of the command line. The whole wiring is here.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use portunus_cli_support::{finish, print_completions, write_man_pages};
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ratelimit::{LimitPath, SharedScope};
use portunus_core::standalone::StandaloneConfig;
use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{DataPlane, DataPlaneOptions};
use portunus_telemetry::log::LogFormat;

const AFTER_HELP: &str = "\
Environment:
  PORTUNUS_CONFIG               --config
  PORTUNUS_LOG, else RUST_LOG   log filter, e.g. `debug` [default: info]
  PORTUNUS_DISABLE_SPLICE=1     triage: copy TCP through userspace instead of splice(2)
  PORTUNUS_DISABLE_UDP_GSO=1    triage: send UDP datagrams one by one (no segmentation offload)
  PORTUNUS_DNS_SERVER           ip:port of the one DNS server for DNS-name targets
                                [default: the system's, /etc/resolv.conf]

Exit statuses: 0 success; 1 internal or I/O failure; 2 invalid configuration; 5 a listen port is in use.";

/// Portunus without a control plane.
#[derive(Debug, Parser)]
#[command(name = "portunus-standalone", version = portunus_cli_support::version(env!("CARGO_PKG_VERSION")), about, after_help = AFTER_HELP,
    subcommand_negates_reqs = true)]
struct Cli {
    /// The rules file: `[[rule]]` tables (name, protocol, listen_port, target…) and optional `[settings]`.
    #[arg(long, env = "PORTUNUS_CONFIG", required = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the file and exit.
    #[arg(long)]
    check: bool,
    /// Log format on stderr.
    #[arg(long, default_value = "json", value_parser = portunus_cli_support::log_format_parser())]
    log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long open connections may finish before they are cut (seconds).
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Subcommands: none runs the rules file.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print a shell completion script to stdout, e.g.
    /// `portunus-standalone completions bash > /etc/bash_completion.d/portunus-standalone`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: portunus_cli_support::ShellArg,
    },
    /// Write man pages (`portunus-standalone.1` and one `portunus-standalone-<subcommand>.1` each).
    #[command(hide = true)]
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let config_path = match (&cli.command, cli.config) {
        (Some(Command::Completions { shell }), _) => {
            return finish(print_completions(Cli::command(), *shell));
        }
        (Some(Command::Man { out_dir }), _) => return finish(write_man_pages(Cli::command(), out_dir)),
        (None, Some(path)) => path,
        // clap requires --config when no subcommand is given.
        (None, None) => {
            return finish(Err(Failure::new(ErrorCode::InvalidConfig, "--config PATH is required")));
        }
    };
    portunus_telemetry::log::init(cli.log_format, log_directive().as_deref());
    let result = std::fs::read_to_string(&config_path)
        .map_err(|e| {
            Failure::new(ErrorCode::InvalidConfig, format!("cannot read {}: {e}", config_path.display()))
        })
        .and_then(|text| StandaloneConfig::parse(&text))
        .map_err(|f| {
            // Every configuration problem is a usage error, whatever its code.
            Failure::new(f.code, format!("{}: {}", config_path.display(), f.message))
        });
    let result = match (result, cli.check) {
        (Err(failure), _) => {
            eprintln!("{}: {}", failure.code, failure.message);
            std::process::exit(i32::from(ErrorCode::InvalidConfig.exit_status()));
        }
        (Ok(config), true) => {
            eprintln!("{}: {} rule(s) OK", config_path.display(), config.rules.len());
            Ok(())
        }
        (Ok(config), false) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => {
                rt.block_on(run(config, Duration::from_secs_f64(cli.drain_timeout.clamp(0.0, 86_400.0))))
            }
            Err(err) => Err(Failure::new(ErrorCode::Internal, format!("tokio runtime: {err}"))),
        },
    };
    finish(result);
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
        // A capped rule's scope is in place before its first connection: the same
        // enforcement path as a client's (`[rule.rate_limit]` takes the API's fields).
        if !def.rate_limit.is_unlimited() {
            let scope = SharedScope::new(def.rate_limit, portunus_dataplane::limits::now());
            plane.set_limits(id, LimitPath::new(None, Some(std::sync::Arc::new(scope))));
        }
        if let Err(failure) = plane.bind(id, def).await {
            tracing::error!(event = "rule.bind_failed", rule = %id, name = %name, code = %failure.code,
                message = %failure.message);
            plane.shutdown(Duration::ZERO).await;
            return Err(Failure::new(failure.code, format!("rule {name:?}: {}", failure.message)));
        }
        tracing::info!(event = "rule.bound", rule = %id, name = %name, listen = %listen);
    }
    tracing::info!(event = "standalone.started", version = %portunus_cli_support::version(env!("CARGO_PKG_VERSION")));
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
