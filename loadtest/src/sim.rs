//! Simulated edge clients: each one its own pinned TLS connection and `Control.Channel`
//! stream with its own token, speaking the real protocol (Hello; RuleStatus ACTIVE for every
//! upserted rule; traffic reports through core's `ReportGate`, so only counters that changed
//! are sent), binding and forwarding nothing, and reconnecting with full-jitter exponential
//! backoff. Transport settings follow the real client (`ControlPolicy`: TCP keepalive, no
//! HTTP/2 pings, the same connect timeout and message size limit).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portunus_core::capability::Capability;
use portunus_core::config::ControlPolicy;
use portunus_core::enroll::Bundle;
use portunus_core::ids::RuleId;
use portunus_core::stats::{ReportGate, RuleReport};
use portunus_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// From opening the stream until Welcome and the full replay arrived.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: full jitter over `[0, min(CAP, BASE·2ⁿ)]`.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// First listen port handed out per client.
const FIRST_PORT: u32 = 30_000;

/// The version announced in Hello and Redeem.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Full-jitter exponential backoff.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay: uniform over `[0, window]`, `window` doubling from the base up to the cap.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let window = BACKOFF_BASE.saturating_mul(1u32 << self.attempt.min(16)).min(BACKOFF_CAP);
        self.attempt = self.attempt.saturating_add(1);
        window.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// One simulated client's state, shared with the coordinator.
pub struct SimClient {
    /// Credentials and endpoint from the redeem.
    pub bundle: Bundle,
    ready: AtomicBool,
    ready_state: Mutex<ReadyState>,
    rules: Mutex<BTreeSet<u64>>,
    next_port: AtomicU32,
    failures: Mutex<Failures>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ReadyState {
    at: Option<Instant>,
    epoch: u64,
    replayed: usize,
}

#[derive(Debug, Default)]
struct Failures {
    connect: u64,
    ended: u64,
    last: Option<String>,
}

impl SimClient {
    /// The client for `bundle`.
    pub fn new(bundle: Bundle) -> Self {
        SimClient {
            bundle,
            ready: AtomicBool::new(false),
            ready_state: Mutex::new(ReadyState::default()),
            rules: Mutex::new(BTreeSet::new()),
            next_port: AtomicU32::new(FIRST_PORT),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// A listen port this client has not been given yet.
    pub fn take_port(&self) -> u16 {
        u16::try_from(self.next_port.fetch_add(1, Ordering::Relaxed)).unwrap_or(u16::MAX)
    }

    /// Whether its current stream got Welcome and the replay.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// When the current stream became ready, in which epoch, with how many replayed rules.
    pub fn ready_info(&self) -> Option<(Instant, u64, usize)> {
        if !self.is_ready() {
            return None;
        }
        let state = *self.ready_state.lock().unwrap_or_else(|p| p.into_inner());
        state.at.map(|at| (at, state.epoch, state.replayed))
    }

    /// The rules the server has given it.
    pub fn rule_count(&self) -> usize {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `(failed connection attempts, streams that ended, last reason)`.
    pub fn failures(&self) -> (u64, u64, Option<String>) {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        (f.connect, f.ended, f.last.clone())
    }
}

/// Counters over every simulated client.
#[derive(Default)]
pub struct FleetCounters {
    /// RuleStatus messages sent.
    pub acks: AtomicU64,
    /// Stats reports sent.
    pub reports: AtomicU64,
    /// Streams currently ready.
    pub ready: AtomicUsize,
    /// The current epoch (bumped by the coordinator before a server restart).
    pub epoch: AtomicU64,
    /// Why connection attempts failed or streams ended, counted by reason.
    pub reasons: Mutex<BTreeMap<String, u64>>,
}

/// All simulated clients and their tasks.
pub struct Fleet {
    /// The clients, in enrollment order.
    pub clients: Vec<Arc<SimClient>>,
    /// Shared counters.
    pub counters: Arc<FleetCounters>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts one task per bundle; each connects at once.
    pub fn start(bundles: Vec<Bundle>) -> Fleet {
        let counters = Arc::new(FleetCounters::default());
        let (stop, _) = watch::channel(false);
        let clients: Vec<Arc<SimClient>> = bundles.into_iter().map(|b| Arc::new(SimClient::new(b))).collect();
        let tasks = clients
            .iter()
            .map(|client| tokio::spawn(client_loop(client.clone(), counters.clone(), stop.subscribe())))
            .collect();
        Fleet { clients, counters, stop, tasks }
    }

    /// Streams currently ready.
    pub fn ready(&self) -> usize {
        self.counters.ready.load(Ordering::Acquire)
    }

    /// `(failed connection attempts, streams that ended)` over all clients so far.
    pub fn failure_counts(&self) -> (u64, u64) {
        self.clients.iter().map(|c| c.failures()).fold((0, 0), |(a, b), (c, e, _)| (a + c, b + e))
    }

    /// Starts a new epoch: streams that become ready from now on carry it.
    pub fn next_epoch(&self) -> u64 {
        self.counters.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Stops every client task and waits (bounded) for them to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), futures_join(self.tasks)).await;
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

async fn client_loop(client: Arc<SimClient>, counters: Arc<FleetCounters>, mut stop: watch::Receiver<bool>) {
    let policy = ControlPolicy::default();
    let mut backoff = Backoff { attempt: 0 };
    let mut gate = ReportGate::default();
    loop {
        let result = tokio::select! {
            result = session(&client, &counters, &policy, &mut backoff, &mut gate) => result,
            _ = stop.wait_for(|s| *s) => return,
        };
        if client.ready.swap(false, Ordering::AcqRel) {
            counters.ready.fetch_sub(1, Ordering::AcqRel);
        }
        {
            let mut failures = client.failures.lock().unwrap_or_else(|p| p.into_inner());
            let reason = match result {
                Ok(why) => {
                    failures.ended += 1;
                    format!("stream ended: {why}")
                }
                Err(why) => {
                    failures.connect += 1;
                    format!("connect failed: {why}")
                }
            };
            let short: String = reason.chars().take(160).collect();
            *counters.reasons.lock().unwrap_or_else(|p| p.into_inner()).entry(short).or_default() += 1;
            failures.last = Some(reason);
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Opens a pinned TLS connection of its own to `endpoint` (loopback only), the way the real
/// client does (its connect timeout and TCP keepalive).
async fn open_channel(endpoint: &str, pin: &str, policy: &ControlPolicy) -> Result<Channel, String> {
    let addr: SocketAddr = endpoint.parse().map_err(|_| format!("endpoint {endpoint} is not IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("endpoint {endpoint} is not loopback"));
    }
    portunus_control::connect_pinned(endpoint, pin, policy).await.map_err(|f| f.message)
}

fn client_msg(msg: pb::client_message::Msg) -> pb::ClientMessage {
    pb::ClientMessage { msg: Some(msg) }
}

/// One stream's life: `Err` when it never got going, `Ok(reason)` when it ended later.
async fn session(
    client: &SimClient,
    counters: &FleetCounters,
    policy: &ControlPolicy,
    backoff: &mut Backoff,
    gate: &mut ReportGate,
) -> Result<String, String> {
    let bundle = &client.bundle;
    gate.reset();
    let channel = open_channel(&bundle.server_endpoint, &bundle.server_cert_sha256, policy).await?;
    let (tx, rx) = mpsc::channel::<pb::ClientMessage>(256);
    let hello = pb::Hello {
        version: VERSION.to_owned(),
        protocol_version: portunus_core::PROTOCOL_VERSION,
        capabilities: Capability::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
        git_revision: "loadtest".to_owned(),
        // One process per simulated client, as on a real edge host: the same on every stream.
        instance: std::ptr::from_ref(client).addr() as u64,
    };
    let _ = tx.try_send(client_msg(pb::client_message::Msg::Hello(hello)));
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", bundle.token).parse().map_err(|_| "token is not ASCII".to_owned())?;
    request.metadata_mut().insert("authorization", bearer);
    let opened = Instant::now();
    let mut control = pb::control_client::ControlClient::new(channel)
        .max_decoding_message_size(policy.max_message_bytes)
        .max_encoding_message_size(policy.max_message_bytes);
    let mut inbound = tokio::time::timeout(WELCOME_TIMEOUT, control.channel(request))
        .await
        .map_err(|_| "no answer to the stream request".to_owned())?
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();

    let mut welcomed = false;
    let mut ready = false;
    let mut stats_every = tokio::time::interval(Duration::from_secs(2));
    let welcome_deadline = tokio::time::sleep(WELCOME_TIMEOUT.saturating_sub(opened.elapsed()));
    tokio::pin!(welcome_deadline);
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return Ok("stream closed by server".into()),
                    Err(status) => return Ok(format!("{:?}: {}", status.code(), status.message())),
                };
                match msg.msg {
                    Some(pb::server_message::Msg::Welcome(welcome)) => {
                        welcomed = true;
                        backoff.attempt = 0;
                        let every_ms = welcome.settings.map_or(2000, |s| s.stats_interval_ms);
                        let every = Duration::from_millis(u64::from(every_ms)).max(policy.min_stats_interval);
                        stats_every = tokio::time::interval(every);
                        stats_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    // The simulated clients run no user's rules: no quota or envelope reaches them.
                    Some(pb::server_message::Msg::QuotaUpdate(_) | pb::server_message::Msg::OwnerLimits(_)) => {}
                    Some(pb::server_message::Msg::RuleUpdate(update)) => {
                        let acks = apply_update(client, &update);
                        for rule_id in acks {
                            let status = pb::RuleStatus {
                                rule_id,
                                state: pb::rule_status::State::Active as i32,
                                code: String::new(),
                                message: String::new(),
                            };
                            if tx.send(client_msg(pb::client_message::Msg::RuleStatus(status))).await.is_err() {
                                return Ok("outbound stream closed".into());
                            }
                            counters.acks.fetch_add(1, Ordering::Relaxed);
                        }
                        if update.full_sync && welcomed && !ready {
                            ready = true;
                            let epoch = counters.epoch.load(Ordering::Acquire);
                            *client.ready_state.lock().unwrap_or_else(|p| p.into_inner()) = ReadyState {
                                at: Some(Instant::now()),
                                epoch,
                                replayed: update.upsert.len(),
                            };
                            client.ready.store(true, Ordering::Release);
                            counters.ready.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    None => {}
                }
            }
            _ = stats_every.tick(), if welcomed => {
                // Nothing is forwarded, so every rule's report stays idle and the gate (the
                // real client's) lets nothing through.
                let current: Vec<(RuleId, RuleReport)> = client
                    .rules
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|&id| (RuleId::new(id), RuleReport { instance: 1, ..RuleReport::default() }))
                    .collect();
                let changed = gate.changed(current);
                if !changed.is_empty() {
                    let rules = changed.iter().map(|(id, r)| portunus_control::convert::report_to_wire(*id, r)).collect();
                    let report = pb::StatsReport { rules, sni_listeners: Vec::new() };
                    if tx.send(client_msg(pb::client_message::Msg::Stats(report))).await.is_err() {
                        return Ok("outbound stream closed".into());
                    }
                    counters.reports.fetch_add(1, Ordering::Relaxed);
                }
            }
            () = &mut welcome_deadline, if !ready => {
                return Err(format!("no Welcome and replay within {WELCOME_TIMEOUT:?}"));
            }
        }
    }
}

/// Applies an update to the client's rule set; returns the rules to acknowledge.
fn apply_update(client: &SimClient, update: &pb::RuleUpdate) -> Vec<u64> {
    let mut rules = client.rules.lock().unwrap_or_else(|p| p.into_inner());
    if update.full_sync {
        rules.clear();
    }
    for id in &update.remove {
        rules.remove(id);
    }
    update
        .upsert
        .iter()
        .map(|def| {
            rules.insert(def.rule_id);
            def.rule_id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_windows_double_up_to_the_cap() {
        let mut b = Backoff { attempt: 0 };
        let windows: Vec<Duration> = (0..10).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(windows[0], Duration::from_millis(100));
        assert_eq!(windows[1], Duration::from_millis(200));
        assert_eq!(windows[5], Duration::from_millis(3200));
        assert_eq!(windows[6], Duration::from_secs(5));
        assert_eq!(windows[9], Duration::from_secs(5));
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(2500));
    }
}
