//! Operator subcommands: each is one call to the server's HTTP API and a rendering of the
//! answer. The rule id of a push is printed on stdout even when the push fails, so scripts
//! can remove or inspect it.
#![allow(clippy::print_stdout)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use portunus_core::error::{ErrorCode, Failure};
use portunus_core::rule::{ListenSpec, Protocol, RuleSpec};
use portunus_http::client::{ApiClient, CallError};
use portunus_http::dto::{
    CountersDto, NewGrantRequest, NewUserRequest, PushRuleRequest, RoleDto, RuleDto, UserDto,
};
use serde::Serialize;

use crate::cli::{Command, Format, PushRuleArgs, RoleArg};
use crate::datadir;

pub async fn run(dir: &Path, server: Option<&str>, command: Command) -> Result<(), Failure> {
    let base = match server {
        Some(url) => url.to_owned(),
        None => datadir::api_url(dir)?,
    };
    let token = datadir::cli_token(dir)?;
    let timeout = match &command {
        Command::PushRule(args) => Duration::from_millis(args.ack_timeout) + Duration::from_secs(30),
        // A large store takes a while to copy and move; a stuck server still ends the wait.
        Command::Backup { .. } => Duration::from_secs(3600),
        _ => Duration::from_secs(30),
    };
    let api = ApiClient::new(&base, &token, timeout)?;
    match command {
        Command::Serve(_)
        | Command::ResetPassword { .. }
        | Command::BootstrapSuperadmin
        | Command::Restore { .. } => {
            unreachable!("serve and the offline commands are dispatched in main")
        }
        Command::Backup { out } => backup(&api, &out).await?,
        Command::EnrollClient { name, expires_in } => {
            let issued = api.enroll(&name, expires_in).await.map_err(plain)?;
            println!("{}", issued.command);
            eprintln!("code expires at {}", issued.expires_at);
        }
        Command::PushRule(args) => push_rule(&api, args).await?,
        Command::ListClients { format } => {
            let clients = api.list_clients().await.map_err(plain)?;
            match format {
                Format::Json => print_json(&clients),
                Format::Table => {
                    let rows = clients
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.id.clone(),
                                c.status.clone(),
                                if c.connected { "yes" } else { "no" }.to_owned(),
                                c.n_rules.to_string(),
                                c.version.clone().unwrap_or_default(),
                                c.last_seen_at.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    print_table(
                        &["NAME", "ID", "STATUS", "CONNECTED", "RULES", "VERSION", "LAST SEEN"],
                        rows,
                    );
                }
            }
        }
        Command::ListRules { client, owner, state, protocol, format } => {
            let filters: Vec<(&str, &str)> =
                [("client", &client), ("owner", &owner), ("state", &state), ("protocol", &protocol)]
                    .into_iter()
                    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
                    .collect();
            let rules = api.list_rules(&filters).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&rules),
                Format::Table => print_table(
                    &["ID", "CLIENT", "PROTO", "LISTEN", "TARGETS", "STATE", "OWNER"],
                    rules.iter().map(rule_row).collect(),
                ),
            }
        }
        Command::RuleStats { rule_id, per_port, per_target, format } => {
            let stats = api.rule_stats(rule_id, per_port, per_target).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&stats),
                Format::Table => {
                    let mut rows = vec![counters_row("total".into(), &stats.totals)];
                    for port in stats.per_port.iter().flatten() {
                        rows.push(counters_row(format!("port {}", port.port), &port.counters));
                    }
                    for target in stats.per_target.iter().flatten() {
                        rows.push(counters_row(
                            format!("{} ({})", target.target, target.health),
                            &target.counters,
                        ));
                    }
                    println!("rule {} ({})", stats.rule_id, stats.state);
                    print_table(&["SCOPE", "BYTES_IN", "BYTES_OUT", "CONNS", "ACTIVE", "CONNECT_FAIL"], rows);
                }
            }
        }
        Command::RemoveRule { rule_id } => {
            api.remove_rule(rule_id).await.map_err(plain)?;
            eprintln!("rule {rule_id} removed");
        }
        Command::Revoke { client } => {
            let revoked = api.revoke(&client).await.map_err(plain)?;
            eprintln!("client {} ({}) revoked", revoked.name, revoked.id);
        }
        Command::UserAdd { user, role, password_stdin, api_token } => {
            let password = if password_stdin { Some(read_password_line()?) } else { None };
            let role = match role {
                RoleArg::User => RoleDto::User,
                RoleArg::Superadmin => RoleDto::Superadmin,
            };
            let created =
                api.create_user(&NewUserRequest { id: user, role, password }).await.map_err(plain)?;
            if api_token {
                let minted = api.create_token(&created.id, Some("cli")).await.map_err(plain)?;
                println!("api_token={}", minted.token);
            } else {
                println!("{}", created.id);
            }
        }
        Command::UserList { format } => {
            let users = api.list_users().await.map_err(plain)?;
            match format {
                Format::Json => print_json(&users),
                Format::Table => {
                    print_table(&["ID", "ROLE", "PASSWORD", "CREATED"], users.iter().map(user_row).collect())
                }
            }
        }
        Command::UserGet { user, format } => {
            let user = api.get_user(&user).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&user),
                Format::Table => print_table(&["ID", "ROLE", "PASSWORD", "CREATED"], vec![user_row(&user)]),
            }
        }
        Command::UserRemove { user } => {
            api.delete_user(&user).await.map_err(plain)?;
            eprintln!("user {user} removed");
        }
        Command::GrantAdd { user, client, ports, protocols } => {
            let protocols = if protocols.is_empty() { vec!["tcp".to_owned()] } else { protocols };
            let protocols = protocols.iter().map(|p| parse_protocol(p)).collect::<Result<Vec<_>, _>>()?;
            let request = NewGrantRequest { user, client, ports: ListenSpec::Text(ports), protocols };
            let grant = api.create_grant(&request).await.map_err(plain)?;
            println!("{}", grant.id);
        }
        Command::GrantList { user, format } => {
            let grants = api.list_grants(user.as_deref()).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&grants),
                Format::Table => print_table(
                    &["ID", "USER", "CLIENT", "PORTS", "PROTOCOLS"],
                    grants
                        .iter()
                        .map(|g| {
                            let protocols: Vec<&str> = g.protocols.iter().map(|p| p.as_str()).collect();
                            vec![
                                g.id.clone(),
                                g.user.clone(),
                                g.client.clone(),
                                g.ports.clone(),
                                protocols.join(","),
                            ]
                        })
                        .collect(),
                ),
            }
        }
        Command::GrantRevoke { grant } => {
            api.delete_grant(&grant).await.map_err(plain)?;
            eprintln!("grant {grant} revoked");
        }
    }
    Ok(())
}

/// `backup --out PATH`: the server's copy, written to a new 0600 file that is synced and then
/// checked as a store before its path is printed. A failed backup leaves no file behind.
async fn backup(api: &ApiClient, out: &Path) -> Result<(), Failure> {
    let io_failure = |what: &str, err: std::io::Error| {
        Failure::new(ErrorCode::IoError, format!("cannot {what} {}: {err}", out.display()))
    };
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(out).map_err(|err| {
            match err.kind() {
                std::io::ErrorKind::AlreadyExists => Failure::new(
                    ErrorCode::InvalidRequest,
                    format!("{} exists; a backup never overwrites a file", out.display()),
                ),
                _ => io_failure("create", err),
            }
        })?;
    let written = async {
        let n_bytes = api.backup(&mut file).await.map_err(plain)?;
        file.sync_all().map_err(|err| io_failure("sync", err))?;
        drop(file);
        let version = portunus_store_redb::RedbStore::check(out).map_err(Failure::from)?;
        Ok::<_, Failure>((n_bytes, version))
    }
    .await;
    let (n_bytes, version) = written.inspect_err(|_| {
        let _ = std::fs::remove_file(out);
    })?;
    tracing::info!(event = "backup.written", path = %out.display(), bytes = n_bytes, schema_version = version);
    println!("{}", out.display());
    Ok(())
}

fn user_row(user: &UserDto) -> Vec<String> {
    let role = match user.role {
        RoleDto::Superadmin => "superadmin",
        RoleDto::User => "user",
    };
    let password = match (user.has_password, user.must_change_password) {
        (false, _) => "none",
        (true, true) => "temporary",
        (true, false) => "set",
    };
    vec![user.id.clone(), role.to_owned(), password.to_owned(), user.created_at.clone()]
}

/// The first line of stdin, without its line ending.
fn read_password_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::new(ErrorCode::IoError, format!("reading the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

async fn push_rule(api: &ApiClient, args: PushRuleArgs) -> Result<(), Failure> {
    let protocol = parse_protocol(&args.protocol)?;
    let spec = RuleSpec {
        name: args.name,
        protocol,
        listen_port: ListenSpec::Text(args.listen),
        listen_addr: args.listen_addr,
        target: args.target,
        targets: args.targets,
        prefer_ipv6: args.prefer_ipv6,
        health_check_interval_secs: args.health_check_interval_secs,
    };
    let request = PushRuleRequest { client: args.client, rule: spec, ack_timeout_ms: Some(args.ack_timeout) };
    match api.push_rule(&request).await {
        Ok(rule) => {
            println!("{}", rule.id);
            Ok(())
        }
        Err(CallError { failure, rule_id }) => {
            if let Some(id) = rule_id {
                println!("{id}");
            }
            Err(failure)
        }
    }
}

fn parse_protocol(text: &str) -> Result<Protocol, Failure> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => {
            Err(Failure::new(ErrorCode::InvalidRequest, format!("unknown protocol {other:?} (tcp or udp)")))
        }
    }
}

fn plain(err: CallError) -> Failure {
    err.failure
}

fn print_json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn rule_row(rule: &RuleDto) -> Vec<String> {
    let spec = &rule.spec;
    let targets = spec.target.iter().chain(spec.targets.iter()).cloned().collect::<Vec<_>>().join(" ");
    let listen = match &spec.listen_port {
        ListenSpec::Port(p) => p.to_string(),
        ListenSpec::Text(t) => t.clone(),
    };
    let listen = match spec.listen_addr {
        Some(addr) if addr.is_ipv6() => format!("[{addr}]:{listen}"),
        Some(addr) => format!("{addr}:{listen}"),
        None => listen,
    };
    let state = match &rule.failure {
        Some(f) => format!("failed({})", f.code),
        None => rule.state.clone(),
    };
    vec![
        rule.id.to_string(),
        rule.client_name.clone(),
        spec.protocol.to_string(),
        listen,
        targets,
        state,
        rule.owner.clone(),
    ]
}

fn counters_row(scope: String, c: &CountersDto) -> Vec<String> {
    vec![
        scope,
        c.bytes_in.to_string(),
        c.bytes_out.to_string(),
        c.connections_total.to_string(),
        c.connections_active.to_string(),
        c.connect_failures.to_string(),
    ]
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
