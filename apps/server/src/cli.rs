//! The command line. Flags override `PORTUNUS_*` environment variables, which override
//! `<data-dir>/server.toml`, which overrides the defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use portunus_telemetry::log::LogFormat;

const EXIT_STATUSES: &str = "\
Exit statuses: 0 success; 1 internal or I/O failure; 2 usage or validation; 3 capability gate;
4 client not connected or not authenticated; 5 port or route conflict; 6 RBAC denial;
7 activation timeout (rule left pending); 8 not found; 65 store file damaged (left untouched);
75 store held by another process; 78 store schema newer than this binary.";

/// The Portunus server.
#[derive(Debug, Parser)]
#[command(name = "portunus-server", version = version(), about, after_help = EXIT_STATUSES)]
pub struct Cli {
    /// Data directory: store, certificate, operator token, bound addresses.
    #[arg(long, global = true, env = "PORTUNUS_DATA_DIR", default_value = "/var/lib/portunus")]
    pub data_dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "json", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Operator API base URL for operator commands (default: read from <data-dir>/server.addr).
    #[arg(long, global = true, env = "PORTUNUS_SERVER")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

fn version() -> &'static str {
    // Built once per process; clap wants a 'static string.
    Box::leak(portunus_telemetry::version_text(env!("CARGO_PKG_VERSION")).into_boxed_str())
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (control stream, operator API, metrics).
    Serve(ServeArgs),
    /// Issue an enrollment command for an edge client (re-enrolls an existing name).
    EnrollClient {
        /// Client name.
        name: String,
        /// Code lifetime in seconds (default 600, at most 86400).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Push a rule to a client and wait for it to activate.
    PushRule(PushRuleArgs),
    /// List clients.
    ListClients {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List rules.
    ListRules {
        /// Only rules of this client.
        #[arg(long)]
        client: Option<String>,
        /// Only rules of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only rules in this state (pending, active, failed).
        #[arg(long)]
        state: Option<String>,
        /// Only rules of this protocol (tcp, udp).
        #[arg(long)]
        protocol: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a rule's traffic counters.
    RuleStats {
        /// Rule id.
        rule_id: u64,
        /// Per listen port counters.
        #[arg(long)]
        per_port: bool,
        /// Per target counters and health.
        #[arg(long)]
        per_target: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove a rule.
    RemoveRule {
        /// Rule id.
        rule_id: u64,
    },
    /// Revoke a client's token and disconnect it.
    Revoke {
        /// Client name or id.
        client: String,
    },
    /// Create a user account.
    UserAdd {
        /// User id: 1 to 32 of a-z, 0-9, '.', '_', '-'.
        user: String,
        /// Role.
        #[arg(long, value_enum, default_value_t = RoleArg::User)]
        role: RoleArg,
        /// Read an initial password (at least 12 characters) from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Also mint an API token for the user and print `api_token=…` once.
        #[arg(long)]
        api_token: bool,
    },
    /// List user accounts.
    UserList {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one user account.
    UserGet {
        /// User id.
        user: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove a user with their grants, tokens, sessions and rules.
    UserRemove {
        /// User id.
        user: String,
    },
    /// Grant a user a client (or '*'), a listen port range and protocols; prints the grant id.
    GrantAdd {
        /// User id.
        user: String,
        /// Client name or id, or '*' for every client.
        client: String,
        /// PORT or START-END.
        ports: String,
        /// Allowed protocol (repeatable) [default tcp].
        #[arg(long = "protocol", value_name = "tcp|udp")]
        protocols: Vec<String>,
    },
    /// List grants.
    GrantList {
        /// Only grants of this user.
        #[arg(long)]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke a grant; rules no remaining grant covers are removed.
    GrantRevoke {
        /// Grant id (gr_…).
        grant: String,
    },
    /// Offline (stop `serve` first): give a user a temporary password, printed once as
    /// `temporary_password=…`; ends their Web sessions and revokes their API tokens.
    ResetPassword {
        /// User id.
        user: String,
        /// The new password is temporary: the user must change it at the next login (always
        /// the case; accepted for clarity).
        #[arg(long)]
        temporary: bool,
        /// Keep the user's API tokens.
        #[arg(long)]
        keep_api_tokens: bool,
    },
    /// Offline (stop `serve` first): create the `_superadmin` account for automation and print
    /// its API token once as `api_token=…`. Closes Web onboarding.
    BootstrapSuperadmin,
    /// Copy the running server's store, as of one moment, to a new file (mode 0600) while it
    /// keeps serving; prints the file's path. Needs a superadmin credential.
    Backup {
        /// The backup file to create; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Offline (stop `serve` first): replace the data dir's store with a backup, migrated to
    /// this binary's schema. Certificate, key and operator token are not part of a backup.
    Restore {
        /// The backup file (from `backup`).
        #[arg(long = "in", value_name = "PATH")]
        input: PathBuf,
        /// Restore into a data dir that is not empty, replacing its store.
        #[arg(long)]
        force: bool,
    },
}

/// A user's role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Own rules within own grants.
    User,
    /// Everything.
    Superadmin,
}

/// Output formats of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON, as the API returns it.
    Json,
}

/// `serve` flags; each has a `PORTUNUS_*` variable and a `server.toml` key.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC control listener [default 0.0.0.0:7443].
    #[arg(long, env = "PORTUNUS_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,
    /// Operator HTTP API listener [default 127.0.0.1:7080].
    #[arg(long, env = "PORTUNUS_OPERATOR_HTTP_LISTEN")]
    pub operator_http_listen: Option<SocketAddr>,
    /// Metrics listener [default 127.0.0.1:7081].
    #[arg(long, env = "PORTUNUS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// host:port put in enrollment commands [default 127.0.0.1:<control port>].
    #[arg(long, env = "PORTUNUS_ADVERTISED_ENDPOINT")]
    pub advertised_endpoint: Option<String>,
    /// Extra SAN for a certificate generated at first start (repeatable).
    #[arg(long = "cert-san", env = "PORTUNUS_CERT_SANS", value_delimiter = ',')]
    pub cert_sans: Vec<String>,
    /// Default enrollment code lifetime in seconds.
    #[arg(long, env = "PORTUNUS_ENROLLMENT_TTL_SECS")]
    pub enrollment_ttl_secs: Option<u64>,
    /// Seconds between client traffic reports.
    #[arg(long, env = "PORTUNUS_STATS_INTERVAL_SECS")]
    pub stats_interval_secs: Option<u64>,
}

/// `push-rule CLIENT LISTEN [TARGET] [--target SPEC]…`.
#[derive(Debug, Args)]
pub struct PushRuleArgs {
    /// Client name or id.
    pub client: String,
    /// PORT or START-END.
    pub listen: String,
    /// host:port[-port][@priority][,proxy=v1|v2] (IPv6 hosts in brackets).
    #[arg(conflicts_with = "targets")]
    pub target: Option<String>,
    /// A target (repeatable, for failover); excludes the positional TARGET.
    #[arg(long = "target", value_name = "SPEC")]
    pub targets: Vec<String>,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Address to bind on the client [default dual-stack any].
    #[arg(long)]
    pub listen_addr: Option<IpAddr>,
    /// A label for the rule.
    #[arg(long)]
    pub name: Option<String>,
    /// Resolve DNS-name targets AAAA first.
    #[arg(long)]
    pub prefer_ipv6: bool,
    /// Active TCP health probe interval (1-3600 s).
    #[arg(long)]
    pub health_check_interval_secs: Option<u32>,
    /// How long to wait for the client's outcome: 2s, 500ms, or seconds.
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub ack_timeout: u64,
}

/// Parses `2s`, `500ms`, `1.5` (seconds) into milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 2s, 500ms)");
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        (text, 1000.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !(value.is_finite() && value > 0.0) {
        return Err(bad());
    }
    Ok((value * scale).round() as u64)
}
