//! The command line. Flags override `PORTUNUS_*` environment variables, which override
//! `<data-dir>/server.toml`, which overrides the defaults.
//!
//! `--server` is global so it may stand before or after the subcommand, but only the operator
//! commands use it: [`Command::works_offline`] names the ones that refuse it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use portunus_telemetry::log::LogFormat;

/// What `--help` prints after the options: the environment, then the exit statuses.
const AFTER_HELP: &str = "\
Environment:
  PORTUNUS_DATA_DIR             --data-dir
  PORTUNUS_SERVER               --server (operator commands only)
  PORTUNUS_OPERATOR_TOKEN       operator commands: the bearer token [default: <data-dir>/operator.token]
  PORTUNUS_LOG, else RUST_LOG   log filter, e.g. `debug` or `info,portunus_http=debug` [default: info]
  PORTUNUS_CONTROL_LISTEN, PORTUNUS_OPERATOR_HTTP_LISTEN, PORTUNUS_METRICS_LISTEN,
  PORTUNUS_ADVERTISED_ENDPOINT, PORTUNUS_CERT_SANS, PORTUNUS_ENROLLMENT_TTL_SECS,
  PORTUNUS_STATS_INTERVAL_SECS, PORTUNUS_AUDIT_RETENTION_DAYS, PORTUNUS_PUBLIC_ORIGINS,
  PORTUNUS_TRUSTED_PROXIES      `serve` settings (see `portunus-server serve --help`)
  MALLOC_ARENA_MAX, GLIBC_TUNABLES
                                when either is set, `serve` leaves glibc's malloc arenas as
                                configured (otherwise it caps them at 2)

Exit statuses: 0 success; 1 internal or I/O failure; 2 usage or validation; 3 capability gate;
4 client not connected or not authenticated; 5 port or route conflict; 6 RBAC denial;
7 activation timeout (rule left pending); 8 not found; 65 store file damaged (left untouched);
75 store held by another process; 78 store schema newer than this binary.";

/// The Portunus server.
#[derive(Debug, Parser)]
#[command(name = "portunus-server", version = portunus_cli_support::version(env!("CARGO_PKG_VERSION")), about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Data directory: store, certificate, operator token, bound addresses.
    #[arg(long, global = true, env = "PORTUNUS_DATA_DIR", default_value = "/var/lib/portunus")]
    pub data_dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "json", value_parser = portunus_cli_support::log_format_parser())]
    pub log_format: LogFormat,
    /// Operator API base URL for operator commands [default: read from <data-dir>/server.addr].
    /// Refused by the commands that work on the data dir (serve, reset-password,
    /// bootstrap-superadmin, restore).
    #[arg(long, global = true, env = "PORTUNUS_SERVER", value_name = "URL")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
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
    /// Rename a client; its id, token and rules stay.
    RenameClient {
        /// The client's current name, or its id.
        client: String,
        /// The new name.
        new_name: String,
    },
    /// List rules.
    ListRules {
        /// Only rules of this client (name or id).
        #[arg(long)]
        client: Option<String>,
        /// Only rules of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only rules in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only rules of this protocol.
        #[arg(long, value_enum)]
        protocol: Option<ProtocolArg>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a rule's traffic counters (bytes and connections for TCP; datagrams, bytes and
    /// flows for UDP).
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
    /// Replace a rule's own caps on the running client, in place (its listener and live
    /// connections stay); without any cap flag, lift them. The rule's owner or a superadmin;
    /// the client must be connected. Bandwidth counts bytes (not bits) per second.
    SetRuleCaps {
        /// Rule id.
        rule_id: u64,
        /// The new caps (every cap not given is lifted).
        #[command(flatten)]
        limits: RateLimitArgs,
        /// Output format of the rule's caps after the change.
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
    /// Show the account this command acts as (the operator token acts as `_operator`).
    Whoami {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Mint an API token for a user; prints `api_token=…` once (the token is never shown again)
    /// and its id on stderr.
    TokenMint {
        /// User id.
        user: String,
        /// A label for the token (1 to 64 characters).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a user's API tokens (ids and labels; never the token text).
    TokenList {
        /// User id.
        user: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke one of a user's API tokens.
    TokenRevoke {
        /// User id.
        user: String,
        /// Token id (tk_…), from `token-list`.
        token_id: String,
    },
    /// Grant a user a client (or '*'), a listen port range and protocols; prints the grant id.
    GrantAdd {
        /// User id.
        user: String,
        /// Client name or id, or '*' for every client.
        client: String,
        /// PORT or START-END.
        ports: String,
        /// Allowed protocol (repeatable) [default: tcp].
        #[arg(long = "protocol", value_enum)]
        protocols: Vec<ProtocolArg>,
    },
    /// List grants, with the name of each granted client.
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
    /// Monthly traffic quotas per user and client: set, read, credit, remove.
    Quota {
        #[command(subcommand)]
        action: QuotaCommand,
    },
    /// Owner envelopes: rate limits on all of a user's rules on one client together, binding
    /// before each rule's own caps: set, read, list, remove.
    OwnerCap {
        #[command(subcommand)]
        action: OwnerCapCommand,
    },
    /// Query the audit trail, oldest first (superadmins).
    Audit(AuditArgs),
    /// Delete the audit records written before a time (the newest record always stays);
    /// prints how many. The server also prunes by itself what is older than
    /// `audit_retention_days` (server.toml, default 90; 0 keeps everything).
    AuditPrune {
        /// RFC 3339 UTC time, e.g. 2026-01-01T00:00:00Z.
        #[arg(long)]
        before: String,
    },
    /// Show or change server settings kept in the store.
    Settings {
        #[command(subcommand)]
        action: SettingsCommand,
    },
    /// Offline (stop `serve` first): give a user a temporary password, printed once as
    /// `temporary_password=…`; the user must change it at the next login. Ends their Web
    /// sessions and revokes their API tokens.
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
    /// Print a shell completion script to stdout, e.g.
    /// `portunus-server completions bash > /etc/bash_completion.d/portunus-server`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: portunus_cli_support::ShellArg,
    },
    /// Write man pages (`portunus-server.1` and one `portunus-server-<subcommand>.1` each).
    #[command(hide = true)]
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

impl Command {
    /// The subcommand's name when it works without a running server (so `--server` means
    /// nothing to it), `None` for the operator commands that call the API.
    pub fn works_offline(&self) -> Option<&'static str> {
        match self {
            Command::Serve(_) => Some("serve"),
            Command::ResetPassword { .. } => Some("reset-password"),
            Command::BootstrapSuperadmin => Some("bootstrap-superadmin"),
            Command::Restore { .. } => Some("restore"),
            Command::Completions { .. } => Some("completions"),
            Command::Man { .. } => Some("man"),
            _ => None,
        }
    }
}

/// `quota …`.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Create or replace the quota of a user on a client (superadmins; a grant must give the
    /// user the client). Replacing with the same anchor keeps the period's usage.
    Set {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
        /// Bytes (both directions together) per billing period; suffixes K, M, G, T (powers of
        /// 1024) are accepted, e.g. 500G.
        #[arg(long)]
        monthly_bytes: String,
        /// Unix seconds the monthly periods count from [default: now, or the existing anchor].
        #[arg(long)]
        billing_anchor: Option<i64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Change the cap of an existing quota, keeping its period and usage.
    Cap {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
        /// The new cap (suffixes K, M, G, T).
        monthly_bytes: String,
    },
    /// Clear the current period's usage once (a credit); the period's boundaries stay.
    Credit {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
    },
    /// Remove a quota: the pair is no longer metered or capped.
    Delete {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
    },
    /// One quota's cap, period and usage (a user may read their own; `get` is the same).
    #[command(visible_alias = "get")]
    Status {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List quotas with their usage (all for superadmins, one's own for users).
    List {
        /// Only quotas of this user.
        #[arg(long)]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// `owner-cap …`.
#[derive(Debug, Subcommand)]
pub enum OwnerCapCommand {
    /// Create or replace the envelope of a user on a client (superadmins; a grant must give
    /// the user the client, and a connected client must support rate limits). At least one
    /// cap flag; bandwidth counts bytes (not bits) per second. Replacing keeps the live
    /// buckets' levels.
    Set {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
        /// The caps (every cap not given is lifted).
        #[command(flatten)]
        limits: RateLimitArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One envelope, every burst written out (a user may read their own).
    Get {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List envelopes (all for superadmins, one's own for users).
    List {
        /// Only envelopes of this user.
        #[arg(long)]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove an envelope: the user's rules keep only their own caps.
    Delete {
        /// User id.
        user: String,
        /// Client name or id.
        client: String,
    },
}

/// `settings …`.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show settings (all, or one), with where each value comes from.
    Get {
        /// The setting [default: all].
        #[arg(value_enum)]
        key: Option<SettingKey>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Set a setting; it is kept in the store and wins over flags, environment and server.toml.
    Set {
        /// The setting.
        #[arg(value_enum)]
        key: SettingKey,
        /// The value (advertised-endpoint: a bare host:port the server certificate covers).
        value: String,
    },
    /// Remove a setting set with `settings set`, falling back to flags, environment,
    /// server.toml or the default.
    Unset {
        /// The setting.
        #[arg(value_enum)]
        key: SettingKey,
    },
}

/// A setting the API offers under `/v1/settings/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SettingKey {
    /// The host:port put in enrollment commands.
    AdvertisedEndpoint,
}

/// `audit` filters and paging.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records at or after this time (RFC 3339, UTC, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only records before this time (RFC 3339, UTC).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only records with this outcome.
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Records per page, 1 to 500 [default: 100].
    #[arg(long)]
    pub limit: Option<u64>,
    /// Start after this cursor (printed on stderr when more records follow).
    #[arg(long, conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Follow the cursors and print every matching record.
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// An audit outcome on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    /// It did what it asked.
    Success,
    /// Refused (authentication, RBAC, CSRF, rate limit, bootstrap).
    Denied,
    /// Allowed but failed.
    Failed,
}

/// A user's role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Own rules within own grants.
    User,
    /// Everything.
    Superadmin,
}

/// A rule's protocol on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// TCP connections.
    Tcp,
    /// UDP datagrams.
    Udp,
}

/// A rule state to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Stored and sent, no outcome yet.
    Pending,
    /// Bound on the client.
    Active,
    /// The client could not bind it.
    Failed,
    /// Pending or active, but its client is revoked.
    Suspended,
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
    /// gRPC control listener [default: 0.0.0.0:7443].
    #[arg(long, env = "PORTUNUS_CONTROL_LISTEN")]
    pub control_listen: Option<SocketAddr>,
    /// Operator HTTP API listener [default: 127.0.0.1:7080].
    #[arg(long, env = "PORTUNUS_OPERATOR_HTTP_LISTEN")]
    pub operator_http_listen: Option<SocketAddr>,
    /// Metrics listener [default: 127.0.0.1:7081].
    #[arg(long, env = "PORTUNUS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// host:port put in enrollment commands [default: 127.0.0.1:<control port>].
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
    /// Days the audit trail keeps a record; 0 keeps every record [default 90].
    #[arg(long, env = "PORTUNUS_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// An origin (scheme://host[:port]) the Web UI is reached at; cookie-authenticated writes
    /// from any other origin are refused (repeatable) [default the operator listener's own].
    #[arg(long = "public-origin", env = "PORTUNUS_PUBLIC_ORIGINS", value_delimiter = ',')]
    pub public_origins: Vec<String>,
    /// A reverse proxy's address whose X-Forwarded-For/-Proto are believed (repeatable).
    #[arg(long = "trusted-proxy", env = "PORTUNUS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
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
    /// Protocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Tcp)]
    pub protocol: ProtocolArg,
    /// Address to bind on the client [default: dual-stack any].
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
    /// TLS SNI routing (TCP, one port): take only connections whose ClientHello names this
    /// host (api.example.com) or a host one label below a suffix (*.example.com). SNI rules
    /// on one port share its listener.
    #[arg(long = "sni", value_name = "PATTERN", conflicts_with = "sni_fallback")]
    pub sni_pattern: Option<String>,
    /// The SNI port's fallback: takes the TLS connections that name no host or one no
    /// pattern on the port matches (at most one per port).
    #[arg(long)]
    pub sni_fallback: bool,
    /// Caps on the rule's traffic.
    #[command(flatten)]
    pub limits: RateLimitArgs,
    /// How long to wait for the client's outcome: 2s, 500ms, or seconds.
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub ack_timeout: u64,
}

/// Rate limits as flags (a rule's caps, or an owner envelope). Bandwidth counts **bytes** per
/// second: the `bps` of `--bandwidth-in-bps` is bytes, not bits.
#[derive(Debug, Clone, Default, Args)]
pub struct RateLimitArgs {
    /// Bytes (not bits) per second from connecting peers towards the targets.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub bandwidth_in_bps: Option<u64>,
    /// Bucket size of --bandwidth-in-bps, in bytes [default: one second's worth, at least 64 KiB].
    #[arg(long, value_name = "BYTES")]
    pub bandwidth_in_burst: Option<u64>,
    /// Bytes (not bits) per second from the targets back to the peers.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub bandwidth_out_bps: Option<u64>,
    /// Bucket size of --bandwidth-out-bps, in bytes [default: one second's worth, at least 64 KiB].
    #[arg(long, value_name = "BYTES")]
    pub bandwidth_out_burst: Option<u64>,
    /// New TCP connections (or new UDP flows) admitted per second.
    #[arg(long, value_name = "N")]
    pub new_connections_per_sec: Option<u32>,
    /// Bucket size of --new-connections-per-sec [default: one second's worth].
    #[arg(long, value_name = "N")]
    pub new_connections_burst: Option<u32>,
    /// TCP connections (or UDP flows) open at once.
    #[arg(long, value_name = "N")]
    pub concurrent_connections: Option<u32>,
}

impl RateLimitArgs {
    /// The flags as the API's `rate_limit` object (validated by the server).
    pub fn to_limits(&self) -> portunus_core::ratelimit::RateLimits {
        portunus_core::ratelimit::RateLimits {
            bandwidth_in_bps: self.bandwidth_in_bps,
            bandwidth_in_burst_bytes: self.bandwidth_in_burst,
            bandwidth_out_bps: self.bandwidth_out_bps,
            bandwidth_out_burst_bytes: self.bandwidth_out_burst,
            new_connections_per_sec: self.new_connections_per_sec,
            new_connections_burst: self.new_connections_burst,
            concurrent_connections: self.concurrent_connections,
        }
    }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_is_global_and_offline_commands_are_named() {
        let cli = Cli::try_parse_from(["portunus-server", "restore", "--in", "b", "--server", "http://x"])
            .expect("clap accepts the global flag anywhere");
        assert_eq!(cli.server.as_deref(), Some("http://x"));
        assert_eq!(cli.command.works_offline(), Some("restore"));
        let cli = Cli::try_parse_from(["portunus-server", "--server", "http://x", "list-clients"])
            .expect("before the subcommand too");
        assert_eq!(cli.command.works_offline(), None);
    }

    #[test]
    fn enumerated_flags_refuse_unknown_values() {
        for args in [
            &["portunus-server", "list-rules", "--state", "gone"][..],
            &["portunus-server", "push-rule", "c", "80", "h:1", "--protocol", "sctp"],
            &["portunus-server", "--log-format", "xml", "list-clients"],
            &["portunus-server", "audit", "--outcome", "maybe"],
            &["portunus-server", "set-rule-caps", "7", "--bandwidth-in-bps", "10M"],
            &["portunus-server", "owner-cap", "set", "alice", "edge-01", "--concurrent-connections", "-1"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_cap_commands_read_the_rate_limit_flags() {
        let cli = Cli::try_parse_from([
            "portunus-server",
            "owner-cap",
            "set",
            "alice",
            "edge-01",
            "--bandwidth-in-bps",
            "1000000",
            "--bandwidth-in-burst",
            "2000000",
            "--concurrent-connections",
            "50",
        ])
        .expect("parses");
        let Command::OwnerCap { action: OwnerCapCommand::Set { user, client, limits, .. } } = cli.command
        else {
            panic!("owner-cap set: {:?}", cli.command);
        };
        assert_eq!((user.as_str(), client.as_str()), ("alice", "edge-01"));
        let limits = limits.to_limits();
        assert_eq!(
            (limits.bandwidth_in_bps, limits.bandwidth_in_burst_bytes, limits.concurrent_connections),
            (Some(1_000_000), Some(2_000_000), Some(50))
        );
        assert_eq!(limits.bandwidth_out_bps, None);
        let cli =
            Cli::try_parse_from(["portunus-server", "set-rule-caps", "7"]).expect("no flag lifts the caps");
        let Command::SetRuleCaps { rule_id: 7, limits, .. } = cli.command else {
            panic!("set-rule-caps: {:?}", cli.command);
        };
        assert!(limits.to_limits().is_empty());
    }

    #[test]
    fn bandwidth_flags_say_bytes_not_bits() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("owner-cap")
            .and_then(|c| c.find_subcommand_mut("set"))
            .expect("owner-cap set")
            .render_long_help()
            .to_string();
        assert!(help.contains("Bytes (not bits) per second"), "{help}");
        let help = command
            .find_subcommand_mut("set-rule-caps")
            .expect("set-rule-caps")
            .render_long_help()
            .to_string();
        assert!(help.contains("--bandwidth-out-bps <BYTES_PER_SEC>"), "{help}");
    }
}
