//! The data plane seen from the control loop and the standalone runner. (It waits on the
//! network, so it lives here rather than among core's synchronous ports.)

pub use portunus_resolver::{BoxFuture, ResolveFailure, Resolver};

/// The client's data plane, seen from the control loop (and the standalone runner).
///
/// `bind` is all or nothing: when it fails, no listener of the rule stays bound. `unbind`
/// stops the listeners and closes the rule's connections; unbinding an unknown rule is a
/// no-op. Other rules' connections are never touched.
///
/// ```
/// use portunus_core::ids::RuleId;
/// use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
/// use portunus_core::ErrorCode;
/// use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Port `busy` is held by someone else, so a range that includes it binds nothing.
/// let holder = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let busy = holder.local_addr()?.port();
/// let range = RuleSpec {
///     name: None,
///     protocol: Default::default(),
///     listen_port: ListenSpec::Text(format!("{}-{busy}", busy - 1)),
///     listen_addr: Some("127.0.0.1".parse()?),
///     target: Some("127.0.0.1:9".into()),
///     targets: vec![],
///     prefer_ipv6: false,
///     health_check_interval_secs: None,
///     sni_pattern: None,
///     sni_fallback: false,
///     rate_limit: None,
/// }
/// .validate(RuleLimits::default())?;
/// let plane = DataPlane::new(DataPlaneOptions::default());
/// let failure = plane.bind(RuleId::new(7), range).await.unwrap_err();
/// assert_eq!((failure.code, failure.code.exit_status()), (ErrorCode::PortInUse, 5));
/// assert!(plane.report().is_empty(), "nothing of the rule stays bound");
/// plane.unbind(RuleId::new(7)); // Unknown rule: a no-op.
/// # Ok(())
/// # }
/// ```
pub trait RuleRuntime: Send + Sync {
    /// Settings from Welcome (or the standalone file); applies to rules bound afterwards
    /// and, where it can, to running ones.
    fn apply_settings(&self, settings: portunus_core::config::DataPlaneSettings);
    /// Binds every listen port of `def` and starts forwarding.
    fn bind(
        &self,
        rule: portunus_core::ids::RuleId,
        def: portunus_core::rule::RuleDef,
    ) -> BoxFuture<'_, Result<(), portunus_core::Failure>>;
    /// Stops a rule.
    fn unbind(&self, rule: portunus_core::ids::RuleId);
    /// The first step of stopping: every listen port is released (TCP listeners closed, UDP
    /// rules ended) while accepted TCP connections go on, so another process can bind the
    /// ports before this one has drained. Nothing binds afterwards.
    fn stop_accepting(&self);
    /// Cumulative counters of every bound rule since its runtime instance started.
    fn report(&self) -> Vec<(portunus_core::ids::RuleId, portunus_core::stats::RuleReport)>;
    /// Cumulative counters of every SNI listener (shared by a port's SNI rules) since it was
    /// bound; none by default.
    fn sni_report(&self) -> Vec<portunus_core::sni::SniListenerReport> {
        Vec::new()
    }
    /// Gives a bound rule its pair's quota budget (or takes it away): its TCP connections
    /// debit it as bytes land and stop once it is spent, its UDP flows debit it per batch and
    /// drop what comes after; new connections and flows are refused while it is spent.
    /// A no-op by default and for rules not bound.
    fn set_budget(
        &self,
        _rule: portunus_core::ids::RuleId,
        _budget: Option<std::sync::Arc<crate::budget::QuotaBudget>>,
    ) {
    }
    /// Gives a bound rule (TCP or UDP) the rate limits its new connections and new UDP flows
    /// pass: its owner's scope, then its own ([`LimitPath`]; the default limits nothing). A
    /// refused connection is closed at accept, a refused flow's datagram dropped; a
    /// connection over a bandwidth cap waits, a datagram over one is dropped.
    ///
    /// The path belongs to the rule id, bound or not: give it before the bind and the rule's
    /// first connection passes it; it stays through rebinds and unbinds until replaced, and
    /// [`LimitPath::default()`] clears it. Connections and flows opened before the call keep
    /// the path they were admitted with; cap changes reach them through
    /// [`SharedScope::update`] on the scopes themselves, at once. Every scope must be created
    /// and updated with [`crate::limits::now`]. A no-op by default.
    ///
    /// [`LimitPath`]: portunus_core::ratelimit::LimitPath
    /// [`SharedScope::update`]: portunus_core::ratelimit::SharedScope::update
    fn set_limits(&self, _rule: portunus_core::ids::RuleId, _path: portunus_core::ratelimit::LimitPath) {}
}
