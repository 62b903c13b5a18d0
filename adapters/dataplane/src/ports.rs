//! The data plane seen from the control loop and the standalone runner. (It waits on the
//! network, so it lives here rather than among core's synchronous ports.)

pub use portunus_resolver::{BoxFuture, ResolveFailure, Resolver};

/// The client's data plane, seen from the control loop (and the standalone runner).
///
/// `bind` is all or nothing: when it fails, no listener of the rule stays bound. `unbind`
/// stops the listeners and closes the rule's connections; unbinding an unknown rule is a
/// no-op. Other rules' connections are never touched.
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
    /// Cumulative counters of every bound rule since its runtime instance started.
    fn report(&self) -> Vec<(portunus_core::ids::RuleId, portunus_core::stats::RuleReport)>;
}
