//! A tiny authoritative DNS server on loopback for tests (feature `test-server`): answers A and
//! AAAA queries from a table with chosen TTLs, can go silent to simulate an outage, and counts
//! the queries it saw (to prove that concurrent lookups share one).
//!
//! Invariant: it never panics on malformed packets; it simply does not answer them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

#[derive(Default)]
struct State {
    records: Mutex<HashMap<String, (Vec<IpAddr>, u32)>>,
    silent: AtomicBool,
    queries: AtomicUsize,
    delay_ms: AtomicUsize,
}

/// A running test DNS server; it stops when dropped.
pub struct DnsTestServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsTestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsTestServer {
    /// Starts a server on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let state = Arc::new(State::default());
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { continue };
                served.queries.fetch_add(1, Ordering::SeqCst);
                if served.silent.load(Ordering::SeqCst) {
                    continue;
                }
                let delay = served.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                }
                let records = served.records.lock().map(|r| r.clone()).unwrap_or_default();
                if let Some(reply) = answer(&buf[..n], &records) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Ok(DnsTestServer { addr, state, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or replaces) the answer for `name`.
    pub fn set(&self, name: &str, addrs: Vec<IpAddr>, ttl_secs: u32) {
        if let Ok(mut records) = self.state.records.lock() {
            records.insert(name.trim_end_matches('.').to_ascii_lowercase(), (addrs, ttl_secs));
        }
    }

    /// Stops (true) or resumes (false) answering.
    pub fn set_silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::SeqCst);
    }

    /// Delays every answer, so concurrent lookups overlap.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.state.queries.load(Ordering::SeqCst)
    }
}

/// Builds the reply to one query packet, or `None` for packets it does not understand.
fn answer(query: &[u8], records: &HashMap<String, (Vec<IpAddr>, u32)>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to a zero byte, then type and class.
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    if question_end > query.len() {
        return None;
    }
    let name = labels.join(".");
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[0..2]);
    let found = records.get(&name);
    let matching: Vec<IpAddr> = found
        .map(|(addrs, _)| {
            addrs
                .iter()
                .copied()
                .filter(|ip| matches!((qtype, ip), (1, IpAddr::V4(_)) | (28, IpAddr::V6(_))))
                .collect()
        })
        .unwrap_or_default();
    // QR, RD copied, RA; rcode NXDOMAIN when the name is unknown.
    let rcode = if found.is_none() { 3 } else { 0 };
    reply.extend_from_slice(&[0x81 | (query[2] & 0x01), 0x80 | rcode]);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(matching.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    let ttl = found.map_or(0, |(_, ttl)| *ttl);
    for ip in matching {
        reply.extend_from_slice(&[0xc0, 0x0c]);
        match ip {
            IpAddr::V4(v4) => {
                reply.extend_from_slice(&[0, 1, 0, 1]);
                reply.extend_from_slice(&ttl.to_be_bytes());
                reply.extend_from_slice(&[0, 4]);
                reply.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                reply.extend_from_slice(&[0, 28, 0, 1]);
                reply.extend_from_slice(&ttl.to_be_bytes());
                reply.extend_from_slice(&[0, 16]);
                reply.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(reply)
}
