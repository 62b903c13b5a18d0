//! `portunus-client`: `enroll URI` redeems an enrollment and writes the bundle; without a
//! subcommand it runs: connects to the pinned server, binds the rules it is sent and forwards.
//! `completions` and `man` print what clap knows of the command line. The whole wiring is here.
#![forbid(unsafe_code)]

mod bundle;

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use portunus_cli_support::{finish, print_completions, write_man_pages};
use portunus_control::ClientInfo;
use portunus_core::capability::Capability;
use portunus_core::config::ControlPolicy;
use portunus_core::enroll::EnrollUri;
use portunus_core::error::{ErrorCode, Failure};
use portunus_dataplane::{DataPlane, DataPlaneOptions};
use portunus_telemetry::log::LogFormat;

const AFTER_HELP: &str = "\
The bundle: `--bundle PATH`, else PORTUNUS_BUNDLE, else as root /etc/portunus/bundle.json, else
$XDG_CONFIG_HOME/portunus/bundle.json, else $HOME/.config/portunus/bundle.json. `enroll` writes
to the first of the default paths (creating its directory, mode 0700) and prints where; a plain
run reads the first that exists.

Environment:
  PORTUNUS_BUNDLE               --bundle
  PORTUNUS_STATE_DIR            --state-dir
  XDG_CONFIG_HOME, HOME         where the default bundle path is (see above; not as root)
  PORTUNUS_LOG, else RUST_LOG   log filter, e.g. `debug` or `info,portunus_control=debug` [default: info]
  PORTUNUS_DISABLE_SPLICE=1     triage: copy TCP through userspace instead of splice(2)
  PORTUNUS_DISABLE_UDP_GSO=1    triage: send UDP datagrams one by one (no segmentation offload)
  PORTUNUS_DNS_SERVER           ip:port of the one DNS server for DNS-name targets
                                [default: the system's, /etc/resolv.conf]
  PORTUNUS_CLIENT_CAPABILITIES  testing only: announce just these capabilities (comma-separated)

Exit statuses: 0 success (or drained after SIGTERM/SIGINT); 1 internal or I/O failure;
2 usage, malformed enrollment URI, missing or malformed bundle; 4 server refused us (pinned
certificate mismatch, invalid or revoked token, expired or used enrollment code).";

/// The Portunus edge client.
#[derive(Debug, Parser)]
#[command(name = "portunus-client", version = portunus_cli_support::version(env!("CARGO_PKG_VERSION")), about, after_help = AFTER_HELP)]
struct Cli {
    /// The bundle written by `enroll` (server endpoint, pin, token) [default: see below].
    #[arg(long, global = true, env = "PORTUNUS_BUNDLE", value_name = "PATH")]
    bundle: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "json", value_parser = portunus_cli_support::log_format_parser())]
    log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long open connections may finish before they are cut (seconds).
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Where the client journals traffic it forwarded but has not reported yet, so a crash
    /// loses at most a quarter second of it [default: the bundle's directory].
    #[arg(long, env = "PORTUNUS_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Redeem an enrollment URI printed by `portunus-server enroll-client` and write the bundle
    /// (to --bundle PATH, or the default path; see below).
    Enroll {
        /// `portunus://HOST:PORT/enroll?pin=sha256:…&code=…`
        uri: String,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `portunus-client completions bash > /etc/bash_completion.d/portunus-client`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: portunus_cli_support::ShellArg,
    },
    /// Write man pages (`portunus-client.1` and one `portunus-client-<subcommand>.1` each).
    #[command(hide = true)]
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// What this build's data plane runs, announced in Hello.
const CAPABILITIES: &[Capability] = &[
    Capability::Tcp,
    Capability::Udp,
    Capability::PortRange,
    Capability::MultiTarget,
    Capability::DnsTarget,
    Capability::ProxyProtocol,
    Capability::Sni,
    Capability::RateLimit,
];

fn main() {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Completions { shell }) => return finish(print_completions(Cli::command(), *shell)),
        Some(Command::Man { out_dir }) => return finish(write_man_pages(Cli::command(), out_dir)),
        _ => {}
    }
    portunus_telemetry::log::init(cli.log_format, log_directive().as_deref());
    portunus_control::install_default_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(err) => Err(Failure::new(ErrorCode::Internal, format!("tokio runtime: {err}"))),
    };
    finish(result);
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let info = ClientInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        git_revision: portunus_telemetry::GIT_REVISION.to_owned(),
        capabilities: announced_capabilities(),
        counters_journal: None,
    };
    if let Some(Command::Enroll { uri }) = cli.command {
        let uri = EnrollUri::parse(&uri)?;
        let bundle_path = match cli.bundle {
            Some(path) => path,
            None => {
                let path = bundle::path_to_write(&bundle::default_paths_here())?;
                bundle::create_parent(&path)?;
                path
            }
        };
        let bundle = portunus_control::redeem(&uri, &info, &ControlPolicy::default()).await?;
        bundle::write(&bundle_path, &bundle)?;
        tracing::info!(event = "client.enrolled", client = %bundle.client_name, client_id = %bundle.client_id,
            bundle = %bundle_path.display());
        eprintln!("bundle written to {}", bundle_path.display());
        return Ok(());
    }
    let bundle_path = match cli.bundle {
        Some(path) => path,
        None => bundle::path_to_read(&bundle::default_paths_here())?,
    };
    let bundle = bundle::read(&bundle_path)?;
    let info =
        ClientInfo { counters_journal: Some(journal_path(&bundle_path, cli.state_dir.as_deref())), ..info };
    match portunus_dataplane::raise_nofile_limit() {
        Ok((before, after)) => tracing::debug!(event = "startup.nofile_limit", before, after),
        Err(err) => tracing::warn!(event = "startup.nofile_limit_failed", error = %err),
    }
    // Built on the first DNS-name target; if it cannot be, those connections fail one by one
    // (`rule.dns_failed`) while IP targets keep working.
    let (options, dns_server) = data_plane_switches()?;
    let plane = DataPlane::with_resolver(options, portunus_resolver::LazyResolver::new(dns_server));
    tracing::info!(event = "client.started", client = %bundle.client_name, client_id = %bundle.client_id,
        server = %bundle.server_endpoint, version = %portunus_cli_support::version(env!("CARGO_PKG_VERSION")));
    let policy = ControlPolicy::default();
    let result = portunus_control::run(&bundle, &info, plane.clone(), &policy, shutdown_signal()?).await;
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
/// marked "testing only" in `--help` — the subset named in `PORTUNUS_CLIENT_CAPABILITIES`.
/// The journal of unreported traffic: `<bundle file name>.unreported`, in the state directory
/// when one is given, else beside the bundle.
fn journal_path(bundle: &std::path::Path, state_dir: Option<&std::path::Path>) -> PathBuf {
    let mut name = bundle.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_else(|| "bundle".into());
    name.push(".unreported");
    match state_dir {
        Some(dir) => dir.join(name),
        None => bundle.with_file_name(name),
    }
}

fn announced_capabilities() -> Vec<Capability> {
    match std::env::var("PORTUNUS_CLIENT_CAPABILITIES") {
        Ok(list) => {
            let named = portunus_core::capability::parse_set(list.split(',').map(str::trim));
            CAPABILITIES.iter().copied().filter(|c| named.contains(c)).collect()
        }
        Err(_) => CAPABILITIES.to_vec(),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed here, before the client starts
/// connecting, so a stop that comes early is a clean stop, never death by signal.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Failure::new(ErrorCode::Internal, format!("cannot catch {name}: {e}")))
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!(event = "client.stopping");
    })
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
