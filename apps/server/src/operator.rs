//! Operator subcommands: each is one call to the server's HTTP API and a rendering of the
//! answer. The rule id of a push is printed on stdout even when the push fails, so scripts
//! can remove or inspect it.
#![allow(clippy::print_stdout)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use portunus_core::error::{ErrorCode, Failure};
use portunus_core::quota::{QuotaPatch, QuotaSpec};
use portunus_core::ratelimit::RateLimits;
use portunus_core::rule::{ListenSpec, Protocol, RuleSpec};
use portunus_core::service::{OwnerCapsView, QuotaView};
use portunus_http::client::{ApiClient, CallError};
use portunus_http::dto::{
    AuditParams, AuditRecordDto, ClientDto, CountersDto, EndpointSettingsDto, GrantDto, NewGrantRequest,
    NewUserRequest, OutcomeDto, PushRuleRequest, RoleDto, RuleDto, TokenDto, UserDto,
};
use serde::Serialize;

use crate::cli::{
    AuditArgs, Command, Format, OutcomeArg, OwnerCapCommand, ProtocolArg, PushRuleArgs, QuotaCommand,
    RoleArg, SettingKey, SettingsCommand,
};
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
        | Command::Restore { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => {
            return Err(Failure::new(
                ErrorCode::Internal,
                "serve and the offline commands are dispatched in main, not sent to the API",
            ));
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
        Command::RenameClient { client, new_name } => {
            let renamed = api.rename_client(&client, &new_name).await.map_err(plain)?;
            eprintln!("client {} renamed to {}", renamed.id, renamed.name);
        }
        Command::ListRules { client, owner, state, protocol, format } => {
            let state = state.map(|s| match s {
                crate::cli::StateArg::Pending => "pending",
                crate::cli::StateArg::Active => "active",
                crate::cli::StateArg::Failed => "failed",
                crate::cli::StateArg::Suspended => "suspended",
            });
            let protocol = protocol.map(|p| protocol_of(p).as_str());
            let filters: Vec<(&str, &str)> = [
                ("client", client.as_deref()),
                ("owner", owner.as_deref()),
                ("state", state),
                ("protocol", protocol),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let rules = api.list_rules(&filters).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&rules),
                Format::Table => {
                    // The SNI column appears only when some rule listed routes by SNI, so
                    // plain listings keep their shape.
                    let with_sni = rules.iter().any(|r| r.spec.sni_pattern.is_some() || r.spec.sni_fallback);
                    let mut headers = vec!["ID", "CLIENT", "PROTO", "LISTEN", "TARGETS", "STATE", "OWNER"];
                    if with_sni {
                        headers.push("SNI");
                    }
                    let rows = rules
                        .iter()
                        .map(|rule| {
                            let mut row = rule_row(rule);
                            if with_sni {
                                row.push(sni_cell(rule));
                            }
                            row
                        })
                        .collect();
                    print_table(&headers, rows)
                }
            }
        }
        Command::RuleStats { rule_id, per_port, per_target, format } => {
            let stats = api.rule_stats(rule_id, per_port, per_target).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&stats),
                Format::Table => {
                    // The columns depend on the protocol, which the stats body does not carry.
                    let protocol = api.get_rule(rule_id).await.map_err(plain)?.spec.protocol;
                    let mut scoped = vec![("total".to_owned(), &stats.totals)];
                    for port in stats.per_port.iter().flatten() {
                        scoped.push((format!("port {}", port.port), &port.counters));
                    }
                    for target in stats.per_target.iter().flatten() {
                        scoped.push((format!("{} ({})", target.target, target.health), &target.counters));
                    }
                    println!("rule {} ({})", stats.rule_id, stats.state);
                    let (headers, row): (&[&str], CountersRow) = match protocol {
                        Protocol::Tcp => (&TCP_COUNTER_HEADERS, tcp_counters_row),
                        Protocol::Udp => (&UDP_COUNTER_HEADERS, udp_counters_row),
                    };
                    // The rate-limit columns appear only once a cap has acted, so uncapped
                    // rules keep their shape.
                    let limited = scoped.iter().any(|(_, c)| {
                        c.rate_limit_rejected + c.rate_limit_throttled + c.rate_limit_dropped > 0
                    });
                    let mut headers = headers.to_vec();
                    if limited {
                        headers.extend(RATE_LIMIT_COUNTER_HEADERS);
                    }
                    let rows = scoped
                        .into_iter()
                        .map(|(scope, c)| {
                            let mut cells = row(scope, c);
                            if limited {
                                cells.extend(
                                    [c.rate_limit_rejected, c.rate_limit_throttled, c.rate_limit_dropped]
                                        .map(|n| n.to_string()),
                                );
                            }
                            cells
                        })
                        .collect();
                    print_table(&headers, rows);
                }
            }
        }
        Command::SetRuleCaps { rule_id, limits, format } => {
            let rule = api.set_rule_caps(rule_id, &limits.to_limits()).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&rule),
                Format::Table => {
                    let caps = rule.spec.rate_limit.unwrap_or_default();
                    let mut headers = vec!["RULE"];
                    headers.extend(CAPS_HEADERS);
                    let mut row = vec![rule.id.to_string()];
                    row.extend(caps_cells(&caps));
                    print_table(&headers, vec![row]);
                }
            }
            match rule.spec.rate_limit {
                Some(_) => eprintln!("caps of rule {rule_id} set"),
                None => eprintln!("caps of rule {rule_id} lifted"),
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
                Format::Table => print_table(&USER_HEADERS, users.iter().map(user_row).collect()),
            }
        }
        Command::UserGet { user, format } => {
            let user = api.get_user(&user).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&user),
                Format::Table => print_table(&USER_HEADERS, vec![user_row(&user)]),
            }
        }
        Command::UserRemove { user } => {
            api.delete_user(&user).await.map_err(plain)?;
            eprintln!("user {user} removed");
        }
        Command::Whoami { format } => {
            let me = api.whoami().await.map_err(plain)?;
            match format {
                Format::Json => print_json(&me),
                Format::Table => print_table(&USER_HEADERS, vec![user_row(&me)]),
            }
        }
        Command::TokenMint { user, name } => {
            let minted = api.create_token(&user, name.as_deref()).await.map_err(plain)?;
            println!("api_token={}", minted.token);
            eprintln!(
                "token {} minted for {}; it is shown only this once",
                minted.record.id, minted.record.user
            );
        }
        Command::TokenList { user, format } => {
            let tokens = api.list_tokens(&user).await.map_err(plain)?;
            match format {
                Format::Json => print_json(&tokens),
                Format::Table => {
                    print_table(&["ID", "USER", "NAME", "CREATED"], tokens.iter().map(token_row).collect())
                }
            }
        }
        Command::TokenRevoke { user, token_id } => {
            api.revoke_token(&user, &token_id).await.map_err(plain)?;
            eprintln!("token {token_id} of {user} revoked");
        }
        Command::GrantAdd { user, client, ports, protocols } => {
            let protocols = if protocols.is_empty() { vec![ProtocolArg::Tcp] } else { protocols };
            let protocols = protocols.into_iter().map(protocol_of).collect();
            let request = NewGrantRequest { user, client, ports: ListenSpec::Text(ports), protocols };
            let grant = api.create_grant(&request).await.map_err(plain)?;
            println!("{}", grant.id);
        }
        Command::GrantList { user, format } => {
            let grants = api.list_grants(user.as_deref()).await.map_err(plain)?;
            // Grants name clients by id; the listing shows names too. A caller who may not
            // list clients still gets the grants, with ids only.
            let clients = api.list_clients().await.unwrap_or_default();
            match format {
                Format::Json => print_json(&grants_with_client_names(&grants, &clients)),
                Format::Table => print_table(
                    &["ID", "USER", "CLIENT", "CLIENT_ID", "PORTS", "PROTOCOLS"],
                    grants.iter().map(|g| grant_row(g, &clients)).collect(),
                ),
            }
        }
        Command::GrantRevoke { grant } => {
            api.delete_grant(&grant).await.map_err(plain)?;
            eprintln!("grant {grant} revoked");
        }
        Command::Audit(args) => audit(&api, args).await?,
        Command::AuditPrune { before } => {
            // The server deletes at most 10,000 records per call: call until none are left.
            let mut total = 0;
            loop {
                let pruned = api.prune_audit(&before).await.map_err(plain)?;
                total += pruned.pruned;
                if !pruned.more {
                    break;
                }
            }
            println!("{total}");
            eprintln!("{total} audit records written before {before} deleted");
        }
        Command::Settings { action } => settings(&api, action).await?,
        Command::Quota { action } => quota(&api, action).await?,
        Command::OwnerCap { action } => owner_cap(&api, action).await?,
    }
    Ok(())
}

/// `audit`: one page (its `next_cursor` on stderr when more follow), or every page with `--all`.
async fn audit(api: &ApiClient, args: AuditArgs) -> Result<(), Failure> {
    let mut params = AuditParams {
        from: args.from,
        to: args.to,
        outcome: args.outcome.map(|o| match o {
            OutcomeArg::Success => OutcomeDto::Success,
            OutcomeArg::Denied => OutcomeDto::Denied,
            OutcomeArg::Failed => OutcomeDto::Failed,
        }),
        cursor: args.cursor,
        limit: args.limit,
    };
    let mut page = api.audit(&params).await.map_err(plain)?;
    if args.all {
        while let Some(cursor) = page.next_cursor.take() {
            params.cursor = Some(cursor);
            let next = api.audit(&params).await.map_err(plain)?;
            page.records.extend(next.records);
            page.next_cursor = next.next_cursor;
        }
    }
    match args.format {
        Format::Json => print_json(&page),
        Format::Table => print_table(
            &["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "CODE", "REMOTE"],
            page.records.iter().map(audit_row).collect(),
        ),
    }
    if let Some(cursor) = &page.next_cursor {
        eprintln!("more records follow: pass --cursor {cursor} (or --all)");
    }
    Ok(())
}

fn audit_row(record: &AuditRecordDto) -> Vec<String> {
    let outcome = match record.outcome {
        OutcomeDto::Success => "success",
        OutcomeDto::Denied => "denied",
        OutcomeDto::Failed => "failed",
    };
    vec![
        record.seq.to_string(),
        record.at.clone(),
        record.actor.clone(),
        record.action.clone(),
        record.target.clone().unwrap_or_default(),
        outcome.to_owned(),
        record.code.clone().unwrap_or_default(),
        record.remote.clone().unwrap_or_default(),
    ]
}

/// `quota set|cap|credit|delete|status|list`.
async fn quota(api: &ApiClient, action: QuotaCommand) -> Result<(), Failure> {
    let show = |views: Vec<QuotaView>, format: Format| match format {
        Format::Json => print_json(&views),
        Format::Table => print_table(
            &["USER", "CLIENT", "USED", "CAP", "USED%", "PERIOD_END", "EXHAUSTED"],
            views
                .iter()
                .map(|q| {
                    let percent = q.current_period_bytes_used.saturating_mul(100) / q.monthly_bytes.max(1);
                    vec![
                        q.user.clone(),
                        q.client.clone(),
                        q.current_period_bytes_used.to_string(),
                        q.monthly_bytes.to_string(),
                        format!("{percent}%"),
                        q.period_end.clone(),
                        q.exhausted.to_string(),
                    ]
                })
                .collect(),
        ),
    };
    match action {
        QuotaCommand::Set { user, client, monthly_bytes, billing_anchor, format } => {
            let spec = QuotaSpec { monthly_bytes: parse_bytes(&monthly_bytes)?, billing_anchor };
            show(vec![api.set_quota(&user, &client, &spec).await.map_err(plain)?], format);
        }
        QuotaCommand::Cap { user, client, monthly_bytes } => {
            let patch =
                QuotaPatch { monthly_bytes: Some(parse_bytes(&monthly_bytes)?), clear_period_usage: None };
            let view = api.patch_quota(&user, &client, &patch).await.map_err(plain)?;
            eprintln!("quota of {user} on {client}: cap {} bytes", view.monthly_bytes);
        }
        QuotaCommand::Credit { user, client } => {
            let patch = QuotaPatch { monthly_bytes: None, clear_period_usage: Some(true) };
            api.patch_quota(&user, &client, &patch).await.map_err(plain)?;
            eprintln!("quota of {user} on {client}: usage of this period cleared");
        }
        QuotaCommand::Delete { user, client } => {
            api.delete_quota(&user, &client).await.map_err(plain)?;
            eprintln!("quota of {user} on {client} removed");
        }
        QuotaCommand::Status { user, client, format } => {
            show(vec![api.quota_status(&user, &client).await.map_err(plain)?], format);
        }
        QuotaCommand::List { user, format } => {
            show(api.list_quotas(user.as_deref()).await.map_err(plain)?, format)
        }
    }
    Ok(())
}

/// `owner-cap set|get|list|delete`.
async fn owner_cap(api: &ApiClient, action: OwnerCapCommand) -> Result<(), Failure> {
    let show = |views: Vec<OwnerCapsView>, format: Format| match format {
        Format::Json => print_json(&views),
        Format::Table => {
            let mut headers = vec!["USER", "CLIENT"];
            headers.extend(CAPS_HEADERS);
            headers.push("UPDATED");
            let rows = views
                .iter()
                .map(|view| {
                    let mut row = vec![view.user.clone(), view.client.clone()];
                    row.extend(caps_cells(&view.caps));
                    row.push(view.updated_at.clone());
                    row
                })
                .collect();
            print_table(&headers, rows);
        }
    };
    match action {
        OwnerCapCommand::Set { user, client, limits, format } => {
            show(vec![api.set_owner_caps(&user, &client, &limits.to_limits()).await.map_err(plain)?], format);
        }
        OwnerCapCommand::Get { user, client, format } => {
            show(vec![api.get_owner_caps(&user, &client).await.map_err(plain)?], format);
        }
        OwnerCapCommand::List { user, format } => {
            show(api.list_owner_caps(user.as_deref()).await.map_err(plain)?, format);
        }
        OwnerCapCommand::Delete { user, client } => {
            api.delete_owner_caps(&user, &client).await.map_err(plain)?;
            eprintln!("owner envelope of {user} on {client} removed");
        }
    }
    Ok(())
}

/// The columns of a set of caps: bandwidth in bytes per second and its burst in bytes, each
/// direction; new connections per second and their burst; connections open at once.
const CAPS_HEADERS: [&str; 7] =
    ["IN_BYTES/S", "IN_BURST", "OUT_BYTES/S", "OUT_BURST", "CONNS/S", "CONNS_BURST", "MAX_CONNS"];

/// The cells of `caps` under [`CAPS_HEADERS`]; `-` where nothing is capped.
fn caps_cells(caps: &RateLimits) -> Vec<String> {
    let cell = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    vec![
        cell(caps.bandwidth_in_bps),
        cell(caps.bandwidth_in_burst_bytes),
        cell(caps.bandwidth_out_bps),
        cell(caps.bandwidth_out_burst_bytes),
        cell(caps.new_connections_per_sec.map(u64::from)),
        cell(caps.new_connections_burst.map(u64::from)),
        cell(caps.concurrent_connections.map(u64::from)),
    ]
}

/// Bytes with an optional binary suffix: `500G`, `1T`, `1048576`.
fn parse_bytes(text: &str) -> Result<u64, Failure> {
    let bad = || {
        Failure::new(
            ErrorCode::QuotaBytesInvalid,
            format!("{text:?} is not a byte count (digits with an optional K, M, G or T suffix)"),
        )
    };
    let trimmed = text.trim();
    let (digits, shift) = match trimmed.char_indices().last() {
        Some((i, 'K' | 'k')) => (&trimmed[..i], 10),
        Some((i, 'M' | 'm')) => (&trimmed[..i], 20),
        Some((i, 'G' | 'g')) => (&trimmed[..i], 30),
        Some((i, 'T' | 't')) => (&trimmed[..i], 40),
        _ => (trimmed, 0),
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    number.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// `settings get|set|unset`.
async fn settings(api: &ApiClient, action: SettingsCommand) -> Result<(), Failure> {
    match action {
        SettingsCommand::Get { key, format } => {
            // Every key the API offers; today that is the advertised endpoint alone.
            let SettingKey::AdvertisedEndpoint = key.unwrap_or(SettingKey::AdvertisedEndpoint);
            let endpoint = api.advertised_endpoint().await.map_err(plain)?;
            match format {
                Format::Json => print_json(&serde_json::json!({ "advertised-endpoint": endpoint })),
                Format::Table => print_table(&SETTING_HEADERS, vec![endpoint_row(&endpoint)]),
            }
        }
        SettingsCommand::Set { key: SettingKey::AdvertisedEndpoint, value } => {
            let endpoint = api.set_advertised_endpoint(Some(&value)).await.map_err(plain)?;
            print_table(&SETTING_HEADERS, vec![endpoint_row(&endpoint)]);
        }
        SettingsCommand::Unset { key: SettingKey::AdvertisedEndpoint } => {
            let endpoint = api.set_advertised_endpoint(None).await.map_err(plain)?;
            print_table(&SETTING_HEADERS, vec![endpoint_row(&endpoint)]);
        }
    }
    Ok(())
}

const SETTING_HEADERS: [&str; 6] = ["SETTING", "EFFECTIVE", "SOURCE", "OVERRIDE", "SEED", "DIAGNOSTIC"];

fn endpoint_row(e: &EndpointSettingsDto) -> Vec<String> {
    vec![
        "advertised-endpoint".to_owned(),
        e.effective.clone().unwrap_or_else(|| "-".to_owned()),
        e.source.clone(),
        e.override_.clone().unwrap_or_default(),
        e.seed.clone().unwrap_or_default(),
        e.diagnostic.clone().unwrap_or_default(),
    ]
}

fn token_row(token: &TokenDto) -> Vec<String> {
    vec![
        token.id.clone(),
        token.user.clone(),
        token.name.clone().unwrap_or_default(),
        token.created_at.clone(),
    ]
}

/// The name of the client a grant covers: `*` for every client, the id when it is not listed.
fn client_name_of<'a>(grant: &'a GrantDto, clients: &'a [ClientDto]) -> &'a str {
    clients.iter().find(|c| c.id == grant.client).map_or(grant.client.as_str(), |c| c.name.as_str())
}

fn grant_row(grant: &GrantDto, clients: &[ClientDto]) -> Vec<String> {
    let protocols: Vec<&str> = grant.protocols.iter().map(|p| p.as_str()).collect();
    vec![
        grant.id.clone(),
        grant.user.clone(),
        client_name_of(grant, clients).to_owned(),
        grant.client.clone(),
        grant.ports.clone(),
        protocols.join(","),
    ]
}

/// The grants as the API returns them, each with a `client_name` added when it lacks one.
fn grants_with_client_names(grants: &[GrantDto], clients: &[ClientDto]) -> Vec<serde_json::Value> {
    grants
        .iter()
        .map(|grant| {
            let mut value = serde_json::to_value(grant).unwrap_or_default();
            if let Some(object) = value.as_object_mut()
                && !object.contains_key("client_name")
            {
                object.insert("client_name".to_owned(), client_name_of(grant, clients).into());
            }
            value
        })
        .collect()
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

const USER_HEADERS: [&str; 4] = ["ID", "ROLE", "PASSWORD", "CREATED"];

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

/// The first line of stdin, without its line ending; an empty stdin or line is a usage error.
fn read_password_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::new(ErrorCode::IoError, format!("reading the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            "no password on stdin (--password-stdin reads the first line)",
        ));
    }
    Ok(password.to_owned())
}

async fn push_rule(api: &ApiClient, args: PushRuleArgs) -> Result<(), Failure> {
    let protocol = protocol_of(args.protocol);
    let spec = RuleSpec {
        name: args.name,
        protocol,
        listen_port: ListenSpec::Text(args.listen),
        listen_addr: args.listen_addr,
        target: args.target,
        targets: args.targets,
        prefer_ipv6: args.prefer_ipv6,
        health_check_interval_secs: args.health_check_interval_secs,
        sni_pattern: args.sni_pattern,
        sni_fallback: args.sni_fallback,
        rate_limit: Some(args.limits.to_limits()).filter(|limits| !limits.is_empty()),
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

fn protocol_of(protocol: ProtocolArg) -> Protocol {
    match protocol {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
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

/// A rule's SNI route for the listing: its pattern, `fallback`, or `-` for a plain rule.
fn sni_cell(rule: &RuleDto) -> String {
    match (&rule.spec.sni_pattern, rule.spec.sni_fallback) {
        (Some(pattern), _) => pattern.clone(),
        (None, true) => "fallback".to_owned(),
        (None, false) => "-".to_owned(),
    }
}

/// Renders one scope's counters as a table row.
type CountersRow = fn(String, &CountersDto) -> Vec<String>;

const TCP_COUNTER_HEADERS: [&str; 6] = ["SCOPE", "BYTES_IN", "BYTES_OUT", "CONNS", "ACTIVE", "CONNECT_FAIL"];

fn tcp_counters_row(scope: String, c: &CountersDto) -> Vec<String> {
    vec![
        scope,
        c.bytes_in.to_string(),
        c.bytes_out.to_string(),
        c.connections_total.to_string(),
        c.connections_active.to_string(),
        c.connect_failures.to_string(),
    ]
}

/// Refusals by a connection cap, waits for a bandwidth cap (TCP), datagrams dropped by one (UDP).
const RATE_LIMIT_COUNTER_HEADERS: [&str; 3] = ["CAP_REJECTED", "CAP_THROTTLED", "CAP_DROPPED"];

const UDP_COUNTER_HEADERS: [&str; 8] = [
    "SCOPE",
    "DATAGRAMS_IN",
    "DATAGRAMS_OUT",
    "BYTES_IN",
    "BYTES_OUT",
    "FLOWS",
    "ACTIVE_FLOWS",
    "FLOWS_DROPPED",
];

fn udp_counters_row(scope: String, c: &CountersDto) -> Vec<String> {
    vec![
        scope,
        c.datagrams_in.to_string(),
        c.datagrams_out.to_string(),
        c.bytes_in.to_string(),
        c.bytes_out.to_string(),
        c.connections_total.to_string(),
        c.connections_active.to_string(),
        c.flows_dropped_overflow.to_string(),
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
