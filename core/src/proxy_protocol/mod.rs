//! The PROXY protocol header (versions 1 and 2) that tells a target the original client
//! address: an encoder for the data plane, and a decoder kept for tests and fuzzing.
//!
//! Invariants: the encoder writes IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack
//! listener reports IPv4 peers) as IPv4; the decoder never panics, never reads past its input,
//! and refuses headers longer than the protocol allows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::rule::ProxyVersion;

/// The 12-byte signature that starts every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 1 header, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The addresses a header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// TCP over IPv4.
    V4 {
        /// The client.
        src: SocketAddrV4,
        /// The address the client connected to.
        dst: SocketAddrV4,
    },
    /// TCP over IPv6.
    V6 {
        /// The client.
        src: SocketAddrV6,
        /// The address the client connected to.
        dst: SocketAddrV6,
    },
    /// No address information (v1 `UNKNOWN`, v2 `LOCAL`).
    Unknown,
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

impl Addresses {
    /// The addresses of a connection from `src` to `dst`, IPv4-mapped addresses unmapped.
    /// Mixed families (impossible on one socket) are written as IPv6.
    pub fn of(src: SocketAddr, dst: SocketAddr) -> Self {
        match (unmap(src), unmap(dst)) {
            (SocketAddr::V4(src), SocketAddr::V4(dst)) => Addresses::V4 { src, dst },
            (src, dst) => Addresses::V6 { src: as_v6(src), dst: as_v6(dst) },
        }
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddrV6 {
    match addr {
        SocketAddr::V6(v6) => v6,
        SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
    }
}

/// Appends the header for `addresses` in `version` to `out`.
pub fn encode(version: ProxyVersion, addresses: &Addresses, out: &mut Vec<u8>) {
    match version {
        ProxyVersion::V1 => encode_v1(addresses, out),
        ProxyVersion::V2 => encode_v2(addresses, out),
    }
}

fn encode_v1(addresses: &Addresses, out: &mut Vec<u8>) {
    let line = match addresses {
        Addresses::V4 { src, dst } => {
            format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port())
        }
        Addresses::V6 { src, dst } => {
            format!("PROXY TCP6 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port())
        }
        Addresses::Unknown => "PROXY UNKNOWN\r\n".to_owned(),
    };
    out.extend_from_slice(line.as_bytes());
}

fn encode_v2(addresses: &Addresses, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    match addresses {
        Addresses::V4 { src, dst } => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&src.ip().octets());
            out.extend_from_slice(&dst.ip().octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
        Addresses::V6 { src, dst } => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&src.ip().octets());
            out.extend_from_slice(&dst.ip().octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
        Addresses::Unknown => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Which version was on the wire.
    pub version: ProxyVersion,
    /// The addresses.
    pub addresses: Addresses,
    /// Bytes the header took; the payload starts after them.
    pub len: usize,
}

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes so far are a valid prefix; read more.
    #[error("incomplete header")]
    NeedMore,
    /// Not a PROXY header, or a malformed one.
    #[error("invalid PROXY header: {0}")]
    Invalid(&'static str),
}

/// Decodes a header at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::NeedMore);
    }
    if bytes[0] == b'\r' {
        return decode_v2(bytes);
    }
    decode_v1(bytes)
}

fn decode_v1(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Err(DecodeError::Invalid("neither a v1 nor a v2 signature"));
    }
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX_LEN {
            Err(DecodeError::Invalid("v1 header longer than 107 bytes"))
        } else {
            Err(DecodeError::NeedMore)
        };
    };
    let line =
        std::str::from_utf8(&window[PREFIX.len()..end]).map_err(|_| DecodeError::Invalid("v1 not ASCII"))?;
    let len = end + 2;
    let parts: Vec<&str> = line.split(' ').collect();
    let addresses = match parts.as_slice() {
        ["UNKNOWN", ..] => Addresses::Unknown,
        ["TCP4", src, dst, sport, dport] => {
            let src: Ipv4Addr = src.parse().map_err(|_| DecodeError::Invalid("v1 bad IPv4 source"))?;
            let dst: Ipv4Addr = dst.parse().map_err(|_| DecodeError::Invalid("v1 bad IPv4 destination"))?;
            Addresses::V4 {
                src: SocketAddrV4::new(src, port(sport)?),
                dst: SocketAddrV4::new(dst, port(dport)?),
            }
        }
        ["TCP6", src, dst, sport, dport] => {
            let src: Ipv6Addr = src.parse().map_err(|_| DecodeError::Invalid("v1 bad IPv6 source"))?;
            let dst: Ipv6Addr = dst.parse().map_err(|_| DecodeError::Invalid("v1 bad IPv6 destination"))?;
            Addresses::V6 {
                src: SocketAddrV6::new(src, port(sport)?, 0, 0),
                dst: SocketAddrV6::new(dst, port(dport)?, 0, 0),
            }
        }
        _ => return Err(DecodeError::Invalid("v1 unknown protocol or field count")),
    };
    Ok(Decoded { version: ProxyVersion::V1, addresses, len })
}

fn port(text: &str) -> Result<u16, DecodeError> {
    // The spec forbids leading zeros and signs; `parse` would accept "+1" and "007".
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    text.parse().ok().filter(|_| canonical).ok_or(DecodeError::Invalid("v1 bad port"))
}

fn decode_v2(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Err(DecodeError::Invalid("bad v2 signature"));
    }
    if bytes.len() < 16 {
        return Err(DecodeError::NeedMore);
    }
    let (ver_cmd, family) = (bytes[12], bytes[13]);
    if ver_cmd >> 4 != 2 {
        return Err(DecodeError::Invalid("v2 version nibble is not 2"));
    }
    let body_len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let len = 16 + body_len;
    if bytes.len() < len {
        return Err(DecodeError::NeedMore);
    }
    let body = &bytes[16..len];
    let addresses = match (ver_cmd & 0x0f, family) {
        // LOCAL: the receiver ignores addresses and any body.
        (0x0, _) => Addresses::Unknown,
        (0x1, 0x11) if body.len() >= 12 => Addresses::V4 {
            src: SocketAddrV4::new(Ipv4Addr::new(body[0], body[1], body[2], body[3]), be16(&body[8..10])),
            dst: SocketAddrV4::new(Ipv4Addr::new(body[4], body[5], body[6], body[7]), be16(&body[10..12])),
        },
        (0x1, 0x21) if body.len() >= 36 => Addresses::V6 {
            src: SocketAddrV6::new(ipv6(&body[0..16]), be16(&body[32..34]), 0, 0),
            dst: SocketAddrV6::new(ipv6(&body[16..32]), be16(&body[34..36]), 0, 0),
        },
        (0x1, 0x00) => Addresses::Unknown,
        (0x1, 0x11 | 0x21) => return Err(DecodeError::Invalid("v2 address block too short")),
        (0x1, _) => return Err(DecodeError::Invalid("v2 unsupported address family")),
        _ => return Err(DecodeError::Invalid("v2 unknown command")),
    };
    Ok(Decoded { version: ProxyVersion::V2, addresses, len })
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn ipv6(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(b);
    Ipv6Addr::from(octets)
}

/// The IP a decoded source stands for, for tests and logs.
pub fn source_ip(addresses: &Addresses) -> Option<IpAddr> {
    match addresses {
        Addresses::V4 { src, .. } => Some(IpAddr::V4(*src.ip())),
        Addresses::V6 { src, .. } => Some(IpAddr::V6(*src.ip())),
        Addresses::Unknown => None,
    }
}

/// Fuzz entry point: decoding arbitrary bytes never panics, and whatever decodes re-encodes to
/// bytes that decode to the same addresses.
#[cfg(any(fuzzing, test))]
pub fn fuzz_logic(data: &[u8]) {
    if let Ok(decoded) = decode(data) {
        assert!(decoded.len <= data.len());
        let mut out = Vec::new();
        encode(decoded.version, &decoded.addresses, &mut out);
        let again = decode(&out).expect("an encoded header decodes");
        assert_eq!(again.addresses, decoded.addresses);
        assert_eq!(again.len, out.len());
    }
}

#[cfg(test)]
mod tests;
