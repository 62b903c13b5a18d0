//! Integration tests of the TCP data plane over real loopback sockets.

mod binding;
mod lifecycle;
mod paths;
mod support;
mod targets;
