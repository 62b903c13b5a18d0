//! The text grammar shared by the CLI, the JSON API and the TOML file:
//! `LISTEN` = `PORT` | `START-END`, and
//! `TARGET` = `host:port[-port][@priority][,proxy=v1|v2]` with IPv6 hosts in brackets.
//!
//! Invariant: every rejection carries a stable code; no input panics (fuzzed).

use std::net::{IpAddr, Ipv4Addr};

use super::{Host, PortRange, ProxyVersion, Target};
use crate::error::{ErrorCode, Failure};

/// Parses `PORT` or `START-END`.
///
/// ```
/// use portunus_core::{ErrorCode, rule::parse_listen};
///
/// let range = parse_listen("20000-20009")?;
/// assert_eq!((range.start(), range.end(), range.len()), (20000, 20009, 10));
/// assert_eq!(parse_listen("8080")?.to_string(), "8080");
/// assert_eq!(parse_listen("0").unwrap_err().code, ErrorCode::InvalidPort);
/// assert_eq!(parse_listen("9-1").unwrap_err().code, ErrorCode::InvertedRange);
/// # Ok::<(), portunus_core::Failure>(())
/// ```
pub fn parse_listen(text: &str) -> Result<PortRange, Failure> {
    let text = text.trim();
    match text.split_once('-') {
        None => parse_port(text).map(|p| PortRange::single(p).expect("parse_port refuses 0")),
        Some((a, b)) => {
            let (start, end) = (parse_port(a)?, parse_port(b)?);
            PortRange::new(start, end).ok_or_else(|| {
                Failure::new(ErrorCode::InvertedRange, format!("port range {text:?} is inverted"))
            })
        }
    }
}

/// Parses one port number 1..=65535.
pub fn parse_port(text: &str) -> Result<u16, Failure> {
    let bad = || Failure::new(ErrorCode::InvalidPort, format!("{text:?} is not a port (1-65535)"));
    let n: u32 = text.trim().parse().map_err(|_| bad())?;
    u16::try_from(n).ok().filter(|&p| p != 0).ok_or_else(bad)
}

/// Parses a target. The priority defaults to 0 and the PROXY version to none.
///
/// ```
/// use portunus_core::rule::{Host, ProxyVersion, parse_target};
///
/// let target = parse_target("[::1]:8443@2,proxy=v2")?;
/// assert_eq!(target.host, Host::Ip("::1".parse().unwrap()));
/// assert_eq!((target.ports.start(), target.priority, target.proxy), (8443, 2, Some(ProxyVersion::V2)));
/// assert_eq!(target.to_string(), "[::1]:8443@2,proxy=v2");
/// assert!(matches!(parse_target("backend.internal:80")?.host, Host::Name(_)));
/// assert_eq!(parse_target("no-port").unwrap_err().code, portunus_core::ErrorCode::InvalidTarget);
/// # Ok::<(), portunus_core::Failure>(())
/// ```
pub fn parse_target(text: &str) -> Result<Target, Failure> {
    let bad = |why: &str| {
        Failure::new(
            ErrorCode::InvalidTarget,
            format!("target {text:?}: {why} (expected host:port[-port][@priority][,proxy=v1|v2])"),
        )
    };
    let (main, options) = match text.split_once(',') {
        Some((m, o)) => (m, Some(o)),
        None => (text, None),
    };
    let proxy = match options {
        None => None,
        Some(opts) => {
            let mut proxy = None;
            for opt in opts.split(',') {
                match opt.trim() {
                    "proxy=v1" if proxy.is_none() => proxy = Some(ProxyVersion::V1),
                    "proxy=v2" if proxy.is_none() => proxy = Some(ProxyVersion::V2),
                    "" => return Err(bad("empty option")),
                    other => return Err(bad(&format!("unknown or repeated option {other:?}"))),
                }
            }
            proxy
        }
    };
    let (hostport, priority) = match main.rsplit_once('@') {
        Some((hp, prio)) => {
            let prio: u16 = prio.trim().parse().map_err(|_| bad("priority must be 0-65535"))?;
            (hp, prio)
        }
        None => (main, 0),
    };
    let (host_text, port_text) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("missing :port after ']'"))?;
        let ip: std::net::Ipv6Addr = host.parse().map_err(|_| bad("bracketed host must be IPv6"))?;
        (HostText::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
        if host.contains(':') {
            return Err(bad("IPv6 hosts must be written in brackets"));
        }
        (HostText::Raw(host), port)
    };
    let ports = match port_text.split_once('-') {
        None => PortRange::single(parse_target_port(port_text).ok_or_else(|| bad("port must be 1-65535"))?),
        Some((a, b)) => {
            let start = parse_target_port(a).ok_or_else(|| bad("port must be 1-65535"))?;
            let end = parse_target_port(b).ok_or_else(|| bad("port must be 1-65535"))?;
            PortRange::new(start, end)
        }
    }
    .ok_or_else(|| bad("port range is inverted"))?;
    let host = match host_text {
        HostText::Ip(ip) => Host::Ip(ip),
        HostText::Raw(raw) => {
            parse_host(raw).ok_or_else(|| bad("host is neither an IPv4 address nor a DNS name"))?
        }
    };
    Ok(Target { host, ports, priority, proxy })
}

enum HostText<'a> {
    Ip(IpAddr),
    Raw(&'a str),
}

fn parse_target_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|&p| p != 0)
}

/// An IPv4 literal, or a DNS name (letters, digits and hyphens per label, labels of 1..=63,
/// 253 characters at most, not all-numeric). Names are lowercased; a trailing dot is dropped.
fn parse_host(raw: &str) -> Option<Host> {
    if let Ok(v4) = raw.parse::<Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(v4)));
    }
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    // A dotted all-numeric string that is not a valid IPv4 literal (e.g. 999.1.1.1) is a typo,
    // not a name.
    let all_numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (labels_ok && !all_numeric).then_some(Host::Name(name))
}
