//! Integration tests of the data plane (TCP and UDP) over real loopback sockets.

mod binding;
mod example;
mod lifecycle;
mod paths;
mod resets;
mod rule_targets;
mod support;
mod targets;
mod udp;
