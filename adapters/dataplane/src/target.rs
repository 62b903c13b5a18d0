//! Target choice and connect for one accepted connection.
//!
//! [`TargetPlan::candidates`] is the single place that decides which targets a connection
//! tries and in what order. Today that is the rule's static preference (priority, then the
//! order given); health-based failover will replace the ordering there and nowhere else.
//!
//! Invariant: a connection tries each candidate at most once, each attempt bounded by the
//! connect timeout, and the first success wins.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use portunus_core::rule::{Host, PortRange, RuleDef, Target};
use tokio::net::TcpStream;

/// A rule's targets in preference order, fixed when the rule is bound.
#[derive(Debug)]
pub(crate) struct TargetPlan {
    listen: PortRange,
    /// `(index in the rule's target list, target)`, best first.
    ordered: Vec<(usize, Target)>,
}

/// One place to try for one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub(crate) host: &'a Host,
    pub(crate) port: u16,
}

/// A connection that reached a target.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    /// True when a better-preferred target was tried first and failed.
    pub(crate) failed_over: bool,
}

/// Every candidate failed. Describes the most preferred one, which is what an operator
/// looks at first.
#[derive(Debug)]
pub(crate) struct ConnectFailure {
    pub(crate) target: String,
    pub(crate) reason: &'static str,
    pub(crate) errno_name: String,
    pub(crate) n_tried: usize,
}

impl TargetPlan {
    pub(crate) fn new(def: &RuleDef) -> Self {
        let ordered = def.targets_by_preference().into_iter().map(|(idx, t)| (idx, t.clone())).collect();
        TargetPlan { listen: def.listen, ordered }
    }

    /// The targets a connection that arrived on `listen_port` tries, best first.
    pub(crate) fn candidates(&self, listen_port: u16) -> impl Iterator<Item = Candidate<'_>> + '_ {
        self.ordered
            .iter()
            .map(move |(_, t)| Candidate { host: &t.host, port: t.port_for(self.listen, listen_port) })
    }
}

impl Candidate<'_> {
    fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connects to the first candidate that answers within `timeout` (`None`: the OS decides).
pub(crate) async fn connect_first(
    plan: &TargetPlan,
    listen_port: u16,
    timeout: Option<Duration>,
) -> Result<Connected, ConnectFailure> {
    let mut first_failure = None;
    let mut n_tried = 0;
    for candidate in plan.candidates(listen_port) {
        n_tried += 1;
        match connect_one(candidate, timeout).await {
            Ok(stream) => return Ok(Connected { stream, failed_over: n_tried > 1 }),
            Err(why) => {
                first_failure.get_or_insert((candidate.label(), why));
            }
        }
    }
    // A validated rule has at least one target; the "-" case only guards the invariant.
    let (target, (reason, errno_name)) =
        first_failure.unwrap_or_else(|| ("-".to_owned(), ("no_targets", "-".to_owned())));
    Err(ConnectFailure { target, reason, errno_name, n_tried })
}

/// One attempt; the error is `(reason, errno_name)` for the event.
async fn connect_one(
    candidate: Candidate<'_>,
    timeout: Option<Duration>,
) -> Result<TcpStream, (&'static str, String)> {
    let ip = match candidate.host {
        Host::Ip(ip) => *ip,
        // DNS-name targets need the resolver adapter; until it is wired in they count as
        // a failed target so the next one is tried.
        Host::Name(_) => return Err(("dns_target_unsupported", "-".to_owned())),
    };
    let connect = TcpStream::connect(SocketAddr::new(ip, candidate.port));
    let res = match timeout {
        Some(limit) => match tokio::time::timeout(limit, connect).await {
            Ok(res) => res,
            Err(_elapsed) => return Err(("timeout", "ETIMEDOUT".to_owned())),
        },
        None => connect.await,
    };
    res.map_err(|err| (reason(&err), crate::sys::errno_name(&err)))
}

fn reason(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
        io::ErrorKind::AddrNotAvailable => "address_not_available",
        _ => "io_error",
    }
}

#[cfg(test)]
mod tests;
