//! The client side: redeeming an enrollment, and the control loop that keeps a stream to the
//! server, feeds core's `Agent`, drives the data plane and reports outcomes and traffic.
//!
//! Invariants: the token is sent only after the pinned handshake succeeded; losing the
//! stream never stops the data plane; a pin mismatch or an authentication refusal ends the
//! loop (retrying cannot fix them), every other failure is retried forever with capped,
//! jittered backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use portunus_core::agent::{Agent, AgentCommand, ServerMsg};
use portunus_core::backoff::Backoff;
use portunus_core::capability::Capability;
use portunus_core::config::ControlPolicy;
use portunus_core::enroll::{Bundle, EnrollUri};
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::stats::ReportGate;
use portunus_dataplane::RuleRuntime;
use portunus_proto::v1 as pb;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::convert::{self, ServerEvent};
use crate::server::REASON_KEY;
use crate::tls::{PinnedVerifier, pinned_client_config};

/// What the client says about itself in Hello.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Version string.
    pub version: String,
    /// Git revision of the build.
    pub git_revision: String,
    /// What this build's data plane can run.
    pub capabilities: Vec<Capability>,
    /// Where to journal forwarded-but-unreported traffic, so a crash or `kill -9` loses at
    /// most a quarter second of it (`None`: no journal).
    pub counters_journal: Option<std::path::PathBuf>,
}

/// A connection attempt's failure, classified.
enum ConnectError {
    /// Retrying cannot help: the process should exit with this failure.
    Fatal(Failure),
    /// Try again after a backoff.
    Transient(String),
}

/// Opens a pinned TLS channel to `endpoint`. The token is not involved yet.
async fn connect(endpoint: &str, pin: &str, policy: &ControlPolicy) -> Result<Channel, ConnectError> {
    let connect_timeout = policy.connect_timeout;
    let policy = *policy;
    let verifier = PinnedVerifier::new(pin);
    let config = pinned_client_config(verifier.clone()).map_err(ConnectError::Fatal)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = endpoint.to_owned();
    let uri = format!("http://{endpoint}");
    let channel_endpoint = Endpoint::from_shared(uri)
        .map_err(|e| {
            ConnectError::Fatal(Failure::new(ErrorCode::InvalidBundle, format!("bad endpoint: {e}")))
        })?
        .connect_timeout(connect_timeout);
    // No HTTP/2 pings: the transport's keepalive is TCP's, handled by the kernel.
    let attempt = channel_endpoint
        .connect_with_connector(tower::service_fn(move |_uri: tonic::transport::Uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let addr: SocketAddr = tokio::net::lookup_host(&target).await?.next().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "endpoint did not resolve")
                })?;
                let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                tcp.set_nodelay(true)?;
                crate::server::set_keepalive(&tcp, &policy)?;
                let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h).to_owned();
                let name = ServerName::try_from(host).unwrap_or_else(|_| {
                    ServerName::try_from("portunus.invalid").expect("literal is a valid name")
                });
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await;
    match attempt {
        Ok(channel) => Ok(channel),
        Err(err) => match verifier.take_refused() {
            Some(got) => {
                tracing::error!(event = "control.tls_pinned_mismatch", expected = verifier.pin(), got = %got);
                Err(ConnectError::Fatal(Failure::new(
                    ErrorCode::TlsPinMismatch,
                    format!("server certificate sha256 {got} does not match the pinned {}", verifier.pin()),
                )))
            }
            None => Err(ConnectError::Transient(error_chain(&err))),
        },
    }
}

/// A pinned TLS channel to `endpoint` with `policy`'s connect timeout and TCP keepalive, as
/// the client opens its own (for tools that speak the protocol, like the load test). A pin
/// mismatch is `tls_pin_mismatch`; anything else that stops the connection is
/// `server_unreachable`.
pub async fn connect_pinned(endpoint: &str, pin: &str, policy: &ControlPolicy) -> Result<Channel, Failure> {
    connect(endpoint, pin, policy).await.map_err(|err| match err {
        ConnectError::Fatal(failure) => failure,
        ConnectError::Transient(why) => Failure::new(ErrorCode::ServerUnreachable, why),
    })
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Redeems `uri`'s code and returns the bundle to write. Transient network failures are
/// retried a few times; a refused code is returned at once (the server keeps it valid when
/// the refusal was a precondition, so the same command can be run again later).
pub async fn redeem(uri: &EnrollUri, info: &ClientInfo, policy: &ControlPolicy) -> Result<Bundle, Failure> {
    let mut backoff = Backoff::new(policy.redeem_backoff.0, policy.redeem_backoff.1);
    let mut last = String::new();
    for _ in 0..policy.redeem_attempts {
        match connect(&uri.endpoint, &uri.pin_sha256, policy).await {
            Ok(channel) => {
                let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
                let request = convert::redeem_request(uri.code.expose(), &info.version);
                return match client.redeem(request).await {
                    Ok(resp) => convert::bundle_from_wire(resp.into_inner(), &uri.pin_sha256),
                    Err(status) => Err(failure_of_status(&status)),
                };
            }
            Err(ConnectError::Fatal(failure)) => return Err(failure),
            Err(ConnectError::Transient(why)) => {
                tracing::warn!(event = "control.connect_failed", endpoint = %uri.endpoint, reason = %why);
                last = why;
                tokio::time::sleep(backoff.next_delay(rand::random())).await;
            }
        }
    }
    Err(Failure::new(ErrorCode::ServerUnreachable, format!("could not reach {}: {last}", uri.endpoint)))
}

fn failure_of_status(status: &tonic::Status) -> Failure {
    let code =
        status.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorCode::parse).unwrap_or(
            match status.code() {
                tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
                tonic::Code::PermissionDenied => ErrorCode::EnrollmentNotFound,
                tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
                tonic::Code::InvalidArgument => ErrorCode::InvalidRequest,
                tonic::Code::Unavailable => ErrorCode::ServerUnreachable,
                _ => ErrorCode::Internal,
            },
        );
    Failure::new(code, status.message().to_owned())
}

/// Runs the control loop until `shutdown` resolves (`Ok`) or the server refuses this client
/// for good (`Err`: pin mismatch, invalid or revoked token).
pub async fn run(
    bundle: &Bundle,
    info: &ClientInfo,
    runtime: Arc<dyn RuleRuntime>,
    policy: &ControlPolicy,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    let mut agent = Agent::default();
    let mut backoff = Backoff::new(policy.reconnect_backoff.0, policy.reconnect_backoff.1);
    let mut gate = ReportGate::default();
    let mut quota = crate::quota::Enforcer::default();
    let mut limiter = crate::limits::Limiter::default();
    // What a previous process counted but never reported goes out first; from now on this
    // process's counters are journaled in the background, connected or not.
    let (mut handover, saver) = match &info.counters_journal {
        Some(path) => {
            let mut journal = crate::journal::Journal::new(path.clone());
            let handover = journal.take();
            let runtime = Arc::clone(&runtime);
            let saver = tokio::spawn(async move {
                let mut every = tokio::time::interval(crate::journal::JOURNAL_INTERVAL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    journal.save(runtime.report());
                }
            });
            (handover, Some(AbortOnDrop(saver)))
        }
        None => (Vec::new(), None),
    };
    let _saver = saver;
    // This process on every stream it opens (never 0, which means "not announced").
    let instance = rand::random::<u64>() | 1;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let connected = tokio::select! {
            () = &mut shutdown => return Ok(()),
            connected = connect(&bundle.server_endpoint, &bundle.server_cert_sha256, policy) => connected,
        };
        let result = match connected {
            Ok(channel) => {
                let mut link = Link {
                    agent: &mut agent,
                    backoff: &mut backoff,
                    gate: &mut gate,
                    quota: &mut quota,
                    limiter: &mut limiter,
                    handover: &mut handover,
                    instance,
                };
                session(channel, bundle, info, &*runtime, policy, &mut link, shutdown.as_mut()).await
            }
            Err(err) => Err(err),
        };
        let why = match result {
            Ok(Ended::Stopped) => return Ok(()),
            Err(ConnectError::Fatal(failure)) => return Err(failure),
            Err(ConnectError::Transient(why)) | Ok(Ended::Dropped(why)) => why,
        };
        if why == ErrorCode::ClientAlreadyConnected.as_str() {
            // Another process holds this client's session (it connected while this one's link
            // was down): it serves the rules now, so this one lets go of them until it gets
            // the session back, and two processes never keep the same ports.
            release_all(&mut agent, &*runtime);
        }
        let delay = backoff.next_delay(rand::random());
        tracing::warn!(
            event = "control.disconnected",
            endpoint = %bundle.server_endpoint,
            reason = %why,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            rules_kept = agent.bound_rules().count(),
        );
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Unbinds every rule the agent holds (as if the server's rule set were empty).
fn release_all(agent: &mut Agent, runtime: &dyn RuleRuntime) {
    agent.handle(ServerMsg::Sync(Vec::new()));
    let mut released = 0usize;
    while let Some(command) = agent.poll_command() {
        if let AgentCommand::Unbind(id) = command {
            runtime.unbind(id);
            released += 1;
        }
    }
    if released > 0 {
        tracing::warn!(
            event = "control.rules_released",
            rules = released,
            reason = "client_already_connected"
        );
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a stream ended without a fatal error.
enum Ended {
    /// The client is stopping: it closed its side and the server saw a normal end.
    Stopped,
    /// It ended for a retryable reason.
    Dropped(String),
}

/// What a client's successive streams share.
struct Link<'a> {
    agent: &'a mut Agent,
    backoff: &'a mut Backoff,
    gate: &'a mut ReportGate,
    /// Traffic quotas of the users whose rules this client runs.
    quota: &'a mut crate::quota::Enforcer,
    /// Rate-limit scopes of the rules and owner envelopes.
    limiter: &'a mut crate::limits::Limiter,
    /// A previous process's unreported counters, sent ahead of everything on the first
    /// stream and then dropped.
    handover: &'a mut Vec<(portunus_core::ids::RuleId, portunus_core::stats::RuleReport)>,
    /// This process's instance, announced in Hello.
    instance: u64,
}

/// One stream's life, until it ends or `shutdown` resolves.
async fn session(
    channel: Channel,
    bundle: &Bundle,
    info: &ClientInfo,
    runtime: &dyn RuleRuntime,
    policy: &ControlPolicy,
    link: &mut Link<'_>,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Ended, ConnectError> {
    let Link { agent, backoff, gate, quota, limiter, handover, instance } = link;
    gate.reset();
    let (tx, rx) = mpsc::channel::<pb::ClientMessage>(256);
    // The channel is fresh, so the first message always fits.
    let _ = tx.try_send(convert::hello(&info.version, &info.git_revision, &info.capabilities, *instance));
    if !handover.is_empty() {
        // Right behind Hello, before any report of this process's own rule instances (which
        // would retire the old ones first): the old instances' last counters. Once only.
        let _ = tx.try_send(convert::stats_message(handover, &[]));
        tracing::info!(event = "client.counters_journal_replayed", rules = handover.len());
        handover.clear();
    }
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", bundle.token);
    let value = bearer.parse().map_err(|_| {
        ConnectError::Fatal(Failure::new(ErrorCode::InvalidBundle, "token has invalid characters"))
    })?;
    request.metadata_mut().insert("authorization", value);
    let mut client = pb::control_client::ControlClient::new(channel)
        .max_decoding_message_size(policy.max_message_bytes)
        .max_encoding_message_size(policy.max_message_bytes);
    let opened = tokio::select! {
        () = &mut shutdown => return Ok(Ended::Stopped),
        opened = client.channel(request) => opened,
    };
    let mut inbound = match opened {
        Ok(resp) => resp.into_inner(),
        Err(status) => return Err(classify_status(&status)),
    };
    let min = policy.min_stats_interval;
    let mut stats_every = tokio::time::interval(stats_interval(None, min));
    stats_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The SNI listener counters this stream last carried (none yet: a new stream sends them).
    let mut sent_sni: Option<Vec<portunus_core::sni::SniListenerReport>> = None;
    // Quota debits: a few times a second while some pair has a quota.
    let mut quota_every = tokio::time::interval(QUOTA_DEBIT_INTERVAL);
    quota_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                // Release the listen ports first, so that a successor that connects as soon
                // as this stream ends can bind them while accepted connections drain here.
                runtime.stop_accepting();
                // What was forwarded since the last report reaches the server (and the
                // quotas) before this process goes.
                let _ = report_now(gate, runtime, &tx, &mut sent_sni).await;
                // Close this side (END_STREAM), so the server logs a normal disconnect, and
                // give it the drain time to end its side; the connection goes either way.
                drop(tx);
                let _ = tokio::time::timeout(policy.control_drain, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return Ok(Ended::Stopped);
            }
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return Ok(Ended::Dropped("stream closed by server".into())),
                    Err(status) => return match classify_status(&status) {
                        ConnectError::Fatal(f) => Err(ConnectError::Fatal(f)),
                        ConnectError::Transient(why) => Ok(Ended::Dropped(why)),
                    },
                };
                match convert::server_event(msg) {
                    ServerEvent::Welcome { client_name, server_version, settings, quotas, owner_caps } => {
                        backoff.reset();
                        // Envelopes before the replay, like quotas: no rule binds without them.
                        limiter.sync(owner_caps);
                        limiter.install(agent, runtime);
                        // Quotas first: a pair out of budget never binds its rules.
                        for change in quota.sync(quotas) {
                            quota.enforce(change, agent, runtime).await;
                        }
                        quota.install(agent, runtime);
                        runtime.apply_settings(settings);
                        stats_every = tokio::time::interval(stats_interval(Some(settings.stats_interval), min));
                        stats_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        tracing::info!(
                            event = "control.connected",
                            endpoint = %bundle.server_endpoint,
                            client = %client_name,
                            server_version = %server_version,
                        );
                    }
                    ServerEvent::Rules(msgs) => {
                        for msg in msgs {
                            agent.handle(msg);
                        }
                        drive(agent, runtime, &tx, quota, limiter).await;
                        quota.install(agent, runtime);
                    }
                    ServerEvent::Quota(pair) => {
                        if let Some(change) = quota.apply(pair) {
                            if matches!(change, portunus_core::quota::GateChange::Suspend(_)) {
                                let _ = report_now(gate, runtime, &tx, &mut sent_sni).await;
                            }
                            quota.enforce(change, agent, runtime).await;
                        }
                        quota.install(agent, runtime);
                    }
                    ServerEvent::OwnerCaps(update) => {
                        limiter.apply(update);
                        limiter.install(agent, runtime);
                    }
                    ServerEvent::Ignored => {}
                }
            }
            _ = quota_every.tick(), if quota.is_active() => {
                let changes = quota.debit(&runtime.report());
                // A pause drops the paused rules' counters: report what they forwarded first.
                if !changes.is_empty() && !report_now(gate, runtime, &tx, &mut sent_sni).await {
                    return Ok(Ended::Dropped("outbound stream closed".into()));
                }
                let resumed = !changes.is_empty();
                for change in changes {
                    quota.enforce(change, agent, runtime).await;
                }
                if resumed {
                    quota.install(agent, runtime);
                }
            }
            _ = stats_every.tick() => {
                if !report_now(gate, runtime, &tx, &mut sent_sni).await {
                    return Ok(Ended::Dropped("outbound stream closed".into()));
                }
            }
        }
    }
}

/// Sends the counters that changed since the last report (and the SNI listeners when they
/// changed); false when the stream is gone.
async fn report_now(
    gate: &mut ReportGate,
    runtime: &dyn RuleRuntime,
    tx: &mpsc::Sender<pb::ClientMessage>,
    sent_sni: &mut Option<Vec<portunus_core::sni::SniListenerReport>>,
) -> bool {
    // Only what changed: an idle client sends nothing and costs the server nothing.
    let changed = gate.changed(runtime.report());
    // SNI listeners go whole in every report once there are any (the server replaces what
    // it kept), and whenever they changed, so an empty list after the last one went tells
    // the server to forget them.
    let sni = runtime.sni_report();
    let sni_changed = match sent_sni {
        Some(sent) => *sent != sni,
        None => !sni.is_empty(),
    };
    if changed.is_empty() && !sni_changed {
        return true;
    }
    if tx.send(convert::stats_message(&changed, &sni)).await.is_err() {
        return false;
    }
    *sent_sni = Some(sni);
    true
}

/// How often bytes are debited from the pairs' quotas.
const QUOTA_DEBIT_INTERVAL: Duration = Duration::from_millis(250);

fn stats_interval(interval: Option<Duration>, min: Duration) -> Duration {
    interval.unwrap_or(Duration::from_secs(2)).max(min)
}

fn classify_status(status: &tonic::Status) -> ConnectError {
    if status.code() == tonic::Code::AlreadyExists {
        // Another process with this bundle holds the client's session: wait for our turn,
        // bound to nothing, rather than fight it for the ports.
        tracing::warn!(
            event = "control.refused",
            reason = ErrorCode::ClientAlreadyConnected.as_str(),
            message = %status.message(),
        );
        return ConnectError::Transient(ErrorCode::ClientAlreadyConnected.as_str().to_owned());
    }
    if status.code() == tonic::Code::Unauthenticated {
        let failure = failure_of_status(status);
        let reason = match failure.code {
            ErrorCode::TokenRevoked => "token_revoked",
            _ => status.message(),
        };
        tracing::error!(event = "auth.failure", reason = %reason);
        return ConnectError::Fatal(failure);
    }
    ConnectError::Transient(format!("{}: {}", status.code(), status.message()))
}

/// Executes the agent's commands until it has none left.
async fn drive(
    agent: &mut Agent,
    runtime: &dyn RuleRuntime,
    tx: &mpsc::Sender<pb::ClientMessage>,
    quota: &mut crate::quota::Enforcer,
    limiter: &mut crate::limits::Limiter,
) {
    while let Some(command) = agent.poll_command() {
        match command {
            AgentCommand::Bind(id, def) if quota.holds(id) => {
                limiter.before_bind(id, &def, runtime);
                // Its pair is out of budget: it binds when the pair has budget again.
                quota.note_paused(id);
                tracing::info!(event = "rule.bound", rule = %id, listen = %def.listen, paused = "traffic_quota");
                agent.handle_bind_result(id, &def, Ok(()));
            }
            AgentCommand::Bind(id, def) => {
                limiter.before_bind(id, &def, runtime);
                let result = runtime.bind(id, def.clone()).await;
                match &result {
                    Ok(()) => tracing::info!(event = "rule.bound", rule = %id, listen = %def.listen),
                    Err(f) => {
                        tracing::warn!(event = "rule.bind_failed", rule = %id, code = %f.code, message = %f.message)
                    }
                }
                agent.handle_bind_result(id, &def, result);
            }
            AgentCommand::Unbind(id) => {
                runtime.unbind(id);
                limiter.forget(id, runtime);
                tracing::info!(event = "rule.unbound", rule = %id);
            }
            AgentCommand::Retune(id, def) => limiter.retune(id, def.rate_limit, runtime),
            AgentCommand::Report(id, outcome) => {
                // A closed stream loses the report; the next full sync restates it.
                let _ = tx.send(convert::outcome_message(id, outcome)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use portunus_core::ids::RuleId;
    use portunus_core::rule::RuleDef;
    use portunus_core::stats::RuleReport;

    use super::*;

    /// Records what the loop asks of the data plane.
    #[derive(Default)]
    struct Recording {
        unbound: Mutex<Vec<RuleId>>,
    }

    impl RuleRuntime for Recording {
        fn apply_settings(&self, _settings: portunus_core::config::DataPlaneSettings) {}
        fn bind(&self, _rule: RuleId, _def: RuleDef) -> futures::future::BoxFuture<'_, Result<(), Failure>> {
            Box::pin(async { Ok(()) })
        }
        fn unbind(&self, rule: RuleId) {
            self.unbound.lock().expect("log").push(rule);
        }
        fn stop_accepting(&self) {}
        fn report(&self) -> Vec<(RuleId, RuleReport)> {
            Vec::new()
        }
    }

    #[test]
    fn a_process_refused_for_another_live_session_lets_go_of_every_rule() {
        let mut agent = Agent::default();
        let (one, two) = (RuleId::new(1), RuleId::new(2));
        let def = portunus_core::test_support::tcp_rule(18080);
        agent.handle(ServerMsg::Sync(vec![(one, def.clone()), (two, def.clone())]));
        while let Some(command) = agent.poll_command() {
            if let AgentCommand::Bind(id, def) = command {
                agent.handle_bind_result(id, &def, Ok(()));
            }
        }
        assert_eq!(agent.bound_rules().count(), 2);
        let runtime = Recording::default();
        release_all(&mut agent, &runtime);
        assert_eq!(*runtime.unbound.lock().expect("log"), vec![one, two]);
        assert_eq!(agent.bound_rules().count(), 0, "nothing is kept bound");
        // Given the session back, the replay binds them again.
        agent.handle(ServerMsg::Sync(vec![(one, def)]));
        assert!(matches!(agent.poll_command(), Some(AgentCommand::Bind(id, _)) if id == one));
    }
}
