//! The advertised endpoint: the bare `host:port` that enrollment URIs and bundles carry, its
//! coverage by the server certificate's SANs, and the fail-closed choice between the tiers
//! (operator override, configured seed, address derived from the control listener, loopback).
//!
//! Invariant: an endpoint whose host the certificate cannot prove is never advertised.

use std::fmt;
use std::net::IpAddr;

use crate::error::{ErrorCode, Failure};

/// A validated `host:port`: a DNS name or an IPv4 literal, and a non-zero port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses a bare `host:port`. Schemes, paths, IPv6 literals, whitespace and port 0 are
    /// refused with `endpoint_invalid`.
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let bad = |why: &str| {
            Failure::new(ErrorCode::EndpointInvalid, format!("{text:?} is not a bare host:port: {why}"))
        };
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty or contains whitespace"));
        }
        if text.contains("://")
            || text.contains('/')
            || text.contains('?')
            || text.contains('#')
            || text.contains('@')
        {
            return Err(bad("no scheme, path, query or user part is allowed"));
        }
        if text.starts_with('[') || text.matches(':').count() > 1 {
            return Err(bad("IPv6 literals are not supported; use a DNS name"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("port must be 1-65535"))?;
        let host = host.to_ascii_lowercase();
        let valid_host = host.parse::<std::net::Ipv4Addr>().is_ok()
            || (!host.is_empty()
                && host.len() <= 253
                && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid_host {
            return Err(bad("host is neither a DNS name nor an IPv4 address"));
        }
        Ok(Endpoint { host, port })
    }

    /// The host, lowercase.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One subject alternative name of the server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS SAN, possibly `*.`-wildcarded in its left-most label.
    Dns(String),
    /// An IP SAN.
    Ip(IpAddr),
}

/// True when `sans` prove `host`: an IP needs an equal IP SAN; a name needs a DNS SAN equal
/// to it (case-insensitively) or a `*.rest` SAN where the name is exactly one label plus
/// `.rest`.
pub fn san_covers(sans: &[San], host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return sans.iter().any(|san| matches!(san, San::Ip(s) if *s == ip));
    }
    let host = host.to_ascii_lowercase();
    sans.iter().any(|san| match san {
        San::Ip(_) => false,
        San::Dns(name) => {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                None => name == host,
                Some(rest) => {
                    host.split_once('.').is_some_and(|(label, tail)| !label.is_empty() && tail == rest)
                }
            }
        }
    })
}

/// Which tier produced the effective endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    /// Set by an operator at runtime.
    Override,
    /// `--advertised-endpoint` / `PORTUNUS_ADVERTISED_ENDPOINT` / `server.toml`.
    Seed,
    /// The control listener's own, specific address.
    Derived,
    /// `127.0.0.1:<control port>`: only reachable from the server host.
    Loopback,
}

/// The outcome of endpoint resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The endpoint to advertise; `None` when the chosen tier is not covered (fail closed).
    pub effective: Option<Endpoint>,
    /// The tier that decided.
    pub source: EndpointSource,
    /// Why `effective` is `None`, for logs and the settings API.
    pub diagnostic: Option<String>,
}

/// Picks the first configured tier and checks it against the certificate; never falls
/// through from a configured but uncovered tier to a lower one.
pub fn resolve(
    override_: Option<&Endpoint>,
    seed: Option<&Endpoint>,
    control_listen: std::net::SocketAddr,
    sans: &[San],
) -> Resolution {
    let (candidate, source) = if let Some(e) = override_ {
        (e.clone(), EndpointSource::Override)
    } else if let Some(e) = seed {
        (e.clone(), EndpointSource::Seed)
    } else if !control_listen.ip().is_unspecified() && control_listen.is_ipv4() {
        (
            Endpoint { host: control_listen.ip().to_string(), port: control_listen.port() },
            EndpointSource::Derived,
        )
    } else {
        (Endpoint { host: "127.0.0.1".into(), port: control_listen.port() }, EndpointSource::Loopback)
    };
    if san_covers(sans, &candidate.host) {
        Resolution { effective: Some(candidate), source, diagnostic: None }
    } else {
        let diagnostic = format!("host {:?} is not covered by the server certificate SANs", candidate.host);
        Resolution { effective: None, source, diagnostic: Some(diagnostic) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_parse(text: &str, ok: bool) {
        assert_eq!(Endpoint::parse(text).is_ok(), ok, "{text}");
    }

    #[test]
    fn endpoint_grammar() {
        check_parse("proxy.example.com:34567", true);
        check_parse("10.0.0.5:7443", true);
        check_parse("https://proxy.example.com:1", false);
        check_parse("proxy.example.com:1/path", false);
        check_parse("[::1]:7443", false);
        check_parse("::1:7443", false);
        check_parse("host :1", false);
        check_parse("host:0", false);
        check_parse("host", false);
        check_parse("-bad.example:1", false);
        check_parse("999.0.0.1:1", false);
    }

    #[test]
    fn san_coverage() {
        let sans = vec![
            San::Dns("Proxy.Example.com".into()),
            San::Dns("*.edge.example.com".into()),
            San::Ip("127.0.0.1".parse().unwrap()),
        ];
        assert!(san_covers(&sans, "proxy.example.COM"));
        assert!(san_covers(&sans, "a.edge.example.com"));
        assert!(!san_covers(&sans, "a.b.edge.example.com"), "wildcards cover one label only");
        assert!(!san_covers(&sans, "edge.example.com"));
        assert!(san_covers(&sans, "127.0.0.1"));
        assert!(!san_covers(&[San::Dns("127.0.0.1".into())], "127.0.0.1"), "an IP needs an IP SAN");
    }

    #[test]
    fn resolution_fails_closed_without_falling_through() {
        let sans = vec![San::Ip("127.0.0.1".parse().unwrap()), San::Dns("localhost".into())];
        let listen: std::net::SocketAddr = "0.0.0.0:7443".parse().unwrap();
        let loopback = resolve(None, None, listen, &sans);
        assert_eq!(loopback.source, EndpointSource::Loopback);
        assert_eq!(loopback.effective.unwrap().to_string(), "127.0.0.1:7443");
        let seed = Endpoint::parse("far.example.com:1").unwrap();
        let uncovered = resolve(None, Some(&seed), listen, &sans);
        assert_eq!((uncovered.source, uncovered.effective), (EndpointSource::Seed, None));
        assert!(uncovered.diagnostic.unwrap().contains("far.example.com"));
    }
}
