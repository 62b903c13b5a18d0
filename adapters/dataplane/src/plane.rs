//! [`DataPlane`]: the registry of bound rules and the [`RuleRuntime`] the control loop drives.
//! TCP rules run here (listeners and connections); UDP rules run in `crate::udp`.
//!
//! Invariants: a rule id maps to at most one bound runtime, TCP or UDP; binding an id that is
//! bound replaces it, whatever its protocol was (the old listeners are closed first); a bound
//! runtime owns its listeners and stops them, and cuts its connections (or flows), when it
//! leaves the registry, by `unbind`, by `shutdown`, or by the plane being dropped. The
//! registry locks are held only by control operations (bind, unbind, report, settings,
//! limits), never by a connection or a flow, and never both at once. Rate limits are kept per
//! rule id apart from the registry (a path may be set before its rule binds, and stays through
//! rebinds until replaced); their lock is taken before a registry lock, never after, so a bind
//! and a `set_limits` of the same rule cannot leave the rule with the older path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::ports::{BoxFuture, Resolver, RuleRuntime};
use portunus_core::config::DataPlaneSettings;
use portunus_core::ids::RuleId;
use portunus_core::ratelimit::LimitPath;
use portunus_core::rule::{Protocol, RuleDef};
use portunus_core::stats::RuleReport;
use portunus_core::{ErrorCode, Failure};
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::conn::{PortState, RuleShared};
use crate::counters::{PortView, rule_report};
use crate::events::RuleLabel;
use crate::listen::{self, Family, ListenerSlot};
use crate::relay::{CopyPath, PathNotes, SpliceFault};
use crate::settings::SharedSettings;
use crate::sni::{Membership, SniListeners};
use crate::target::TargetPlan;
use crate::udp::UdpRule;

/// How often `shutdown` looks at the open-connection count while it drains.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How long `shutdown` waits for cut connections to finish closing their sockets.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// Process-wide choices made when the plane is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPlaneOptions {
    /// Use the `splice(2)` fast path for rules that allow it (Linux only).
    pub splice: bool,
    /// Group UDP datagrams into GSO sends where the kernel takes them.
    pub udp_gso: bool,
    /// Test hook: injects a fast-path refusal. Leave `None`.
    #[doc(hidden)]
    pub splice_fault: Option<SpliceFault>,
}

impl DataPlaneOptions {
    /// The options and the DNS server from the triage and test switches, as the apps read
    /// them from the environment (deliberately absent from `--help`):
    /// `PORTUNUS_DISABLE_SPLICE=1` forces the userspace copy, `PORTUNUS_DISABLE_UDP_GSO=1`
    /// sends datagrams one by one, `PORTUNUS_DNS_SERVER=ip:port` asks one DNS server instead
    /// of the system configuration (anything else there is `invalid_config`).
    ///
    /// ```
    /// use std::ffi::OsStr;
    /// use portunus_dataplane::DataPlaneOptions;
    ///
    /// let (options, dns) = DataPlaneOptions::from_switches(Some(OsStr::new("1")), None, Some("127.0.0.1:5353"))?;
    /// assert!(!options.splice, "PORTUNUS_DISABLE_SPLICE=1 forces the userspace copy");
    /// assert_eq!(dns, Some("127.0.0.1:5353".parse().unwrap()));
    /// let refused = DataPlaneOptions::from_switches(None, None, Some("localhost")).unwrap_err();
    /// assert_eq!(refused.code, portunus_core::ErrorCode::InvalidConfig);
    /// # Ok::<(), portunus_core::Failure>(())
    /// ```
    pub fn from_switches(
        disable_splice: Option<&std::ffi::OsStr>,
        disable_udp_gso: Option<&std::ffi::OsStr>,
        dns_server: Option<&str>,
    ) -> Result<(Self, Option<std::net::SocketAddr>), portunus_core::Failure> {
        let on = |value: Option<&std::ffi::OsStr>| value.is_some_and(|v| v == "1");
        let options = Self::with_switches(on(disable_splice), on(disable_udp_gso));
        let dns_server = match dns_server.filter(|text| !text.is_empty()) {
            Some(text) => Some(text.parse().map_err(|_| {
                portunus_core::Failure::new(
                    portunus_core::ErrorCode::InvalidConfig,
                    format!("PORTUNUS_DNS_SERVER={text:?} is not ip:port"),
                )
            })?),
            None => None,
        };
        Ok((options, dns_server))
    }

    /// The defaults with the triage switches applied.
    pub fn with_switches(disable_splice: bool, disable_udp_gso: bool) -> Self {
        let defaults = DataPlaneOptions::default();
        DataPlaneOptions {
            splice: defaults.splice && !disable_splice,
            udp_gso: defaults.udp_gso && !disable_udp_gso,
            ..defaults
        }
    }
}

impl Default for DataPlaneOptions {
    /// The fast paths wherever they exist.
    fn default() -> Self {
        DataPlaneOptions {
            splice: cfg!(target_os = "linux"),
            udp_gso: cfg!(target_os = "linux"),
            splice_fault: None,
        }
    }
}

/// The data plane of one client process.
#[derive(Debug)]
pub struct DataPlane {
    options: DataPlaneOptions,
    runtime: Handle,
    settings: Arc<SharedSettings>,
    family: Family,
    rules: Mutex<HashMap<RuleId, BoundRule>>,
    udp_rules: Mutex<HashMap<RuleId, UdpRule>>,
    /// Each rule id's limit path as last set, bound or not; no entry limits nothing.
    limits: Mutex<HashMap<RuleId, LimitPath>>,
    /// The listeners SNI rules share, by address and port (owned by the rules' memberships).
    sni: SniListeners,
    shutting_down: AtomicBool,
    resolver: ResolverSlot,
}

/// The resolver of DNS-name targets, if the process has one.
#[derive(Clone, Default)]
struct ResolverSlot(Option<Arc<dyn Resolver>>);

impl std::fmt::Debug for ResolverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ResolverSlot(Some)" } else { "ResolverSlot(None)" })
    }
}

/// One rule's live runtime.
#[derive(Debug)]
struct BoundRule {
    instance: u64,
    shared: Arc<RuleShared>,
    ports: Vec<Arc<PortState>>,
    listeners: Vec<Arc<ListenerSlot>>,
    accept_tasks: Vec<AbortHandle>,
    /// An SNI rule's place on its port's shared listener (then `listeners` is empty).
    sni: Option<Membership>,
}

impl BoundRule {
    /// Closes every listener (the ports are free on return); open connections go on. An
    /// SNI rule's shared listener stays for its siblings (its membership leaves on drop).
    fn close_listeners(&self) {
        for slot in &self.listeners {
            slot.close();
        }
    }

    /// Shutdown's first step: every listener the rule listens on closes, an SNI rule's
    /// shared one included (for all its members: the whole plane stops accepting).
    fn stop_accepting(&self) {
        self.close_listeners();
        if let Some(membership) = &self.sni {
            membership.close_listener();
        }
    }

    fn report(&self) -> RuleReport {
        let ports = self.ports.iter().map(|p| PortView {
            port: p.port,
            own: p.counters.snapshot(),
            targets: &p.targets,
        });
        let (mut report, traffic) = rule_report(self.instance, ports, self.shared.plan.n_targets());
        report.per_target = self.shared.plan.report(&traffic);
        report
    }
}

impl Drop for BoundRule {
    /// Closes the listeners now and aborts the accept tasks, which own (and so abort) the
    /// rule's connections.
    fn drop(&mut self) {
        self.close_listeners();
        for task in &self.accept_tasks {
            task.abort();
        }
    }
}

impl DataPlane {
    /// A plane with no rules and default settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let plane = DataPlane::new(DataPlaneOptions::with_switches(false, false));
    /// assert!(plane.report().is_empty(), "no rule is bound yet");
    /// // Settings from the control plane (or a standalone file) apply to later rules.
    /// plane.apply_settings(portunus_core::config::DataPlaneSettings {
    ///     tcp_idle_timeout: Duration::from_secs(600),
    ///     ..Default::default()
    /// });
    /// assert_eq!(plane.settings().tcp_idle_timeout, Duration::from_secs(600));
    /// assert_eq!(plane.shutdown(Duration::from_secs(1)).await, 0, "nothing to cut");
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the plane keeps the current runtime's handle to run its
    /// listeners and connections.
    pub fn new(options: DataPlaneOptions) -> Arc<DataPlane> {
        Self::build(options, ResolverSlot(None))
    }

    /// A plane that resolves DNS-name targets with `resolver` (per new connection or flow).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`DataPlane::new`].
    pub fn with_resolver(options: DataPlaneOptions, resolver: Arc<dyn Resolver>) -> Arc<DataPlane> {
        Self::build(options, ResolverSlot(Some(resolver)))
    }

    fn build(options: DataPlaneOptions, resolver: ResolverSlot) -> Arc<DataPlane> {
        if !options.udp_gso {
            crate::sys::batch::disable_gso();
        }
        Arc::new(DataPlane {
            options,
            runtime: Handle::current(),
            settings: Arc::new(SharedSettings::new(DataPlaneSettings::default())),
            family: Family::default(),
            rules: Mutex::new(HashMap::new()),
            udp_rules: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            sni: SniListeners::default(),
            shutting_down: AtomicBool::new(false),
            resolver,
        })
    }

    /// The options the plane was built with.
    pub fn options(&self) -> DataPlaneOptions {
        self.options
    }

    /// The settings new connections use.
    pub fn settings(&self) -> DataPlaneSettings {
        self.settings.all()
    }

    /// Stops accepting on every rule, lets open connections finish for up to `drain`, then
    /// cuts the rest. Returns how many were cut. UDP rules stop at once: a flow has no end
    /// to wait for, and its replies could no longer leave once its listener is closed.
    /// Afterwards no rule is bound and `bind` refuses new ones; calling it again returns 0.
    pub async fn shutdown(&self, drain: Duration) -> u64 {
        RuleRuntime::stop_accepting(self);
        let ports: Vec<Arc<PortState>> =
            self.lock_rules().values().flat_map(|rule| rule.ports.iter().cloned()).collect();
        let active = || ports.iter().map(|p| p.counters.connections_active()).sum::<u64>();
        let deadline = Instant::now() + drain;
        while active() > 0 && Instant::now() < deadline {
            tokio::time::sleep_until(deadline.min(Instant::now() + DRAIN_POLL)).await;
        }
        let cut = active();
        let removed: Vec<BoundRule> = self.lock_rules().drain().map(|(_, rule)| rule).collect();
        drop(removed);
        let grace = Instant::now() + CUT_GRACE;
        while active() > 0 && Instant::now() < grace {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if cut > 0 {
            tracing::info!(event = "dataplane.shutdown_cut_connections", connections = cut);
        }
        cut
    }

    fn lock_rules(&self) -> MutexGuard<'_, HashMap<RuleId, BoundRule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_udp_rules(&self) -> MutexGuard<'_, HashMap<RuleId, UdpRule>> {
        self.udp_rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_limits(&self) -> MutexGuard<'_, HashMap<RuleId, LimitPath>> {
        self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live UDP flows of `rule` (0 when it is not a bound UDP rule). For tests.
    #[doc(hidden)]
    pub fn udp_flows(&self, rule: RuleId) -> usize {
        self.lock_udp_rules().get(&rule).map_or(0, UdpRule::n_flows)
    }

    fn bind_now(&self, id: RuleId, def: &RuleDef) -> Result<(), Failure> {
        if self.shutting_down.load(Relaxed) {
            return Err(Failure::new(ErrorCode::Internal, "the data plane is shutting down"));
        }
        match def.protocol {
            Protocol::Tcp => {
                // The id may have been a UDP rule until now.
                drop(self.lock_udp_rules().remove(&id));
                self.bind_tcp(id, def)
            }
            Protocol::Udp => {
                drop(self.lock_rules().remove(&id));
                self.bind_udp(id, def)
            }
        }
    }

    fn bind_udp(&self, id: RuleId, def: &RuleDef) -> Result<(), Failure> {
        // Held until the rule is in the registry: a concurrent `set_limits` lands after.
        let paths = self.lock_limits();
        let limits = paths.get(&id).cloned().unwrap_or_default();
        let mut rules = self.lock_udp_rules();
        // Close the old runtime's listeners before binding, so its own ports are free.
        drop(rules.remove(&id));
        let bound = UdpRule::bind(
            &self.runtime,
            &self.family,
            id,
            def,
            &self.settings.all(),
            self.resolver.0.clone(),
            limits,
        )?;
        tracing::debug!(event = "rule.bound", rule = %id, listen = %def.listen, protocol = "udp");
        rules.insert(id, bound);
        Ok(())
    }

    fn bind_tcp(&self, id: RuleId, def: &RuleDef) -> Result<(), Failure> {
        // Listeners register with the runtime's reactor, which needs its context.
        let _runtime = self.runtime.enter();
        // Held until the rule is in the registry: a concurrent `set_limits` lands after.
        let paths = self.lock_limits();
        let limits = paths.get(&id).cloned().unwrap_or_default();
        let mut rules = self.lock_rules();
        // Close the old runtime's listeners before binding, so its own ports are free.
        drop(rules.remove(&id));
        let keepalive = self.settings.tcp().keepalive;
        let rule_shared = |listener_keepalive| {
            Arc::new(RuleShared::new(
                id,
                TargetPlan::with_context(def, RuleLabel(Some(id)), self.resolver.0.clone()),
                self.copy_path(def),
                PathNotes::new(RuleLabel(Some(id)), self.options.splice_fault),
                Arc::clone(&self.settings),
                listener_keepalive,
                limits.clone(),
            ))
        };
        if let Some(route) = &def.sni {
            // One port (validation holds SNI rules to it), on the listener its siblings share.
            let port = def.listen.start();
            let listener =
                self.sni.listener(&self.runtime, &self.family, (def.listen_addr, port), keepalive)?;
            let shared = rule_shared(listener.keepalive());
            let state = Arc::new(PortState::new(port, def.targets.len()));
            let membership = listener.join(route, Arc::clone(&shared), Arc::clone(&state))?;
            let mut bound = BoundRule {
                instance: rand::random::<u64>().max(1),
                shared,
                ports: vec![state],
                listeners: Vec::new(),
                accept_tasks: Vec::new(),
                sni: Some(membership),
            };
            self.start_probe(&mut bound, def);
            tracing::debug!(event = "rule.bound", rule = %id, listen = %def.listen, sni = %route);
            rules.insert(id, bound);
            return Ok(());
        }
        let listeners = listen::bind_all(&self.family, def, keepalive)?;
        let mut bound = BoundRule {
            instance: rand::random::<u64>().max(1),
            shared: rule_shared(keepalive),
            ports: Vec::with_capacity(listeners.len()),
            listeners: Vec::with_capacity(listeners.len()),
            accept_tasks: Vec::with_capacity(listeners.len()),
            sni: None,
        };
        for (port, listener) in listeners {
            let state = Arc::new(PortState::new(port, def.targets.len()));
            let slot = Arc::new(ListenerSlot::new(listener));
            let task = self.runtime.spawn(listen::accept_loop(
                Arc::clone(&bound.shared),
                Arc::clone(&state),
                Arc::clone(&slot),
            ));
            bound.ports.push(state);
            bound.listeners.push(slot);
            bound.accept_tasks.push(task.abort_handle());
        }
        self.start_probe(&mut bound, def);
        tracing::debug!(event = "rule.bound", rule = %id, listen = %def.listen, path = ?bound.shared.path);
        rules.insert(id, bound);
        Ok(())
    }

    /// Starts the rule's active health probe, if it has one.
    fn start_probe(&self, bound: &mut BoundRule, def: &RuleDef) {
        if let Some(secs) = def.health_check_interval_secs {
            // The probe task lives and dies with the rule, like its accept loops.
            let probe = self
                .runtime
                .spawn(probe_loop(Arc::clone(&bound.shared), Duration::from_secs(u64::from(secs))));
            bound.accept_tasks.push(probe.abort_handle());
        }
    }

    /// The rule's usual path: the fast path when the option allows it. A connection whose
    /// limit path caps bandwidth when it is accepted takes the userspace copy instead (its
    /// chunks are counted against the caps there); `conn` decides that per connection.
    fn copy_path(&self, _def: &RuleDef) -> CopyPath {
        if self.options.splice { CopyPath::Splice } else { CopyPath::Userspace }
    }
}

impl RuleRuntime for DataPlane {
    fn apply_settings(&self, settings: DataPlaneSettings) {
        self.settings.store(settings);
        for rule in self.lock_udp_rules().values() {
            rule.apply_settings(&settings);
        }
    }

    fn bind(&self, rule: RuleId, def: RuleDef) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move { self.bind_now(rule, &def) })
    }

    fn unbind(&self, rule: RuleId) {
        let removed = self.lock_rules().remove(&rule);
        // Dropped outside the lock: closes the listeners and cuts the connections.
        drop(removed);
        let removed_udp = self.lock_udp_rules().remove(&rule);
        // Closes the listeners (the ports are free on return) and ends the flows.
        drop(removed_udp);
    }

    fn set_budget(&self, rule: RuleId, budget: Option<Arc<crate::budget::QuotaBudget>>) {
        if let Some(bound) = self.lock_rules().get(&rule) {
            *bound.shared.budget.lock().unwrap_or_else(|p| p.into_inner()) = budget;
            return;
        }
        if let Some(bound) = self.lock_udp_rules().get(&rule) {
            bound.set_budget(budget);
        }
    }

    fn set_limits(&self, rule: RuleId, path: LimitPath) {
        // Held across the registry updates, so a bind of the same rule comes wholly before
        // or wholly after.
        let mut paths = self.lock_limits();
        if path.owner().is_none() && path.rule().is_none() {
            paths.remove(&rule);
        } else {
            paths.insert(rule, path.clone());
        }
        let tcp = self.lock_rules().get(&rule).map(|bound| Arc::clone(&bound.shared));
        match tcp {
            Some(shared) => shared.set_limits(path),
            None => {
                if let Some(bound) = self.lock_udp_rules().get(&rule) {
                    bound.set_limits(path);
                }
            }
        }
        drop(paths);
    }

    fn stop_accepting(&self) {
        self.shutting_down.store(true, Relaxed);
        let udp: Vec<UdpRule> = self.lock_udp_rules().drain().map(|(_, rule)| rule).collect();
        // Dropped outside the lock: the sockets close and the ports are free on return.
        drop(udp);
        for rule in self.lock_rules().values() {
            rule.stop_accepting();
        }
    }

    fn report(&self) -> Vec<(RuleId, RuleReport)> {
        let rules = self.lock_rules();
        let mut reports: Vec<(RuleId, RuleReport)> =
            rules.iter().map(|(id, rule)| (*id, rule.report())).collect();
        drop(rules);
        reports.extend(self.lock_udp_rules().iter().map(|(id, rule)| (*id, rule.report())));
        reports.sort_by_key(|(id, _)| *id);
        reports
    }

    fn sni_report(&self) -> Vec<portunus_core::sni::SniListenerReport> {
        self.sni.report()
    }
}

/// Active health probes of one rule: every `interval`, one TCP connect per target, bounded by
/// the connect timeout; results feed the same health book as real connections.
async fn probe_loop(rule: Arc<RuleShared>, interval: Duration) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let timeout = rule.settings.tcp().connect_timeout.unwrap_or(Duration::from_secs(10));
        rule.plan.probe_all(timeout.min(interval)).await;
    }
}
