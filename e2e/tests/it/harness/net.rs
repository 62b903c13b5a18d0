//! Loopback tools: free ports, TCP backends in threads, a client side that sends and checks
//! bytes, a bare HTTP/1.1 GET, and a look at `/proc/net/tcp*` for TIME_WAIT sockets.
//!
//! Invariants: traffic only ever targets 127.0.0.1; every port comes from the kernel
//! (binding port 0) and is handed out once per test binary, so parallel tests never share a
//! rule port.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DEADLINE;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Binds a dual-stack wildcard listener on a port the kernel picks (IPv4 only when the host
/// has no IPv6), skipping ports this test binary already handed out.
pub fn hold_port() -> (TcpListener, u16) {
    loop {
        let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0))
            .or_else(|_| TcpListener::bind("0.0.0.0:0"))
            .expect("the kernel hands out a free port");
        let port = listener.local_addr().expect("bound listener has an address").port();
        let mut handed = HANDED_OUT.lock().expect("port registry lock");
        if handed.get_or_insert_with(HashSet::new).insert(port) {
            return (listener, port);
        }
    }
}

/// A port that was free a moment ago, for a rule or a listener flag.
pub fn free_port() -> u16 {
    hold_port().1
}

/// Whether a new listener could bind `port` on the wildcard address right now (the same
/// way a rule listener binds it).
pub fn port_is_free(port: u16) -> bool {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => false,
        Err(_) => TcpListener::bind(("0.0.0.0", port)).is_ok(),
    }
}

/// What a backend does with each connection.
#[derive(Clone)]
enum Behaviour {
    /// Writes back what it reads, as it reads it; half-closes after the peer's EOF.
    Echo,
    /// Reads to EOF, then writes back everything it read followed by [`digest`] of it.
    EchoAfterEof,
    /// Writes a greeting and closes at once.
    Greet(Vec<u8>),
    /// Accepts and never says a word (reads until the peer gives up).
    Silent,
    /// Writes a greeting, shuts down its write side, then reads to EOF and records what it
    /// read.
    SpeakFirst(Vec<u8>),
}

/// A TCP backend on 127.0.0.1:0, served from threads until it drops.
pub struct Backend {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Backend {
    /// An interactive echo server.
    pub fn echo() -> Backend {
        Backend::spawn(Behaviour::Echo)
    }

    /// A server that answers only after the peer shut down its write side.
    pub fn echo_after_eof() -> Backend {
        Backend::spawn(Behaviour::EchoAfterEof)
    }

    /// A server that greets and hangs up first (so the proxy side closes first).
    pub fn greeter(greeting: &[u8]) -> Backend {
        Backend::spawn(Behaviour::Greet(greeting.to_vec()))
    }

    /// A server that accepts connections and never answers (a stuck TLS peer).
    pub fn silent() -> Backend {
        Backend::spawn(Behaviour::Silent)
    }

    /// A server that half-closes first and keeps reading (see [`Backend::received`]).
    pub fn speak_first(greeting: &[u8]) -> Backend {
        Backend::spawn(Behaviour::SpeakFirst(greeting.to_vec()))
    }

    /// What each finished `speak_first` connection read, in order of completion.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("received lock").clone()
    }

    fn spawn(behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend binds loopback");
        let addr = listener.local_addr().expect("backend has an address");
        let stopping = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop, record) = (stopping.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (behaviour, record) = (behaviour.clone(), record.clone());
                std::thread::spawn(move || serve(stream, &behaviour, &record));
            }
        });
        Backend { addr, stopping, received }
    }

    /// `127.0.0.1:PORT`, as a rule target.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut stream: TcpStream, behaviour: &Behaviour, record: &Mutex<Vec<Vec<u8>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    match behaviour {
        Behaviour::Echo => {
            let Ok(mut reader) = stream.try_clone() else { return };
            let _ = std::io::copy(&mut reader, &mut stream);
            let _ = stream.shutdown(Shutdown::Write);
        }
        Behaviour::EchoAfterEof => {
            let mut received = Vec::new();
            if stream.read_to_end(&mut received).is_ok() {
                let _ = stream.write_all(&received);
                let _ = stream.write_all(digest(&received).as_bytes());
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
        Behaviour::Greet(greeting) => {
            let _ = stream.write_all(greeting);
        }
        Behaviour::Silent => {
            let _ = stream.read_to_end(&mut Vec::new());
        }
        Behaviour::SpeakFirst(greeting) => {
            let mut received = Vec::new();
            let said = stream.write_all(greeting).and_then(|()| stream.shutdown(Shutdown::Write));
            if said.is_ok() && stream.read_to_end(&mut received).is_ok() {
                record.lock().expect("received lock").push(received);
            }
        }
    }
}

/// `"<length> <FNV-1a 64 hex>"` of `data`.
pub fn digest(data: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{} {hash:016x}", data.len())
}

/// Connects to a rule's port on 127.0.0.1, with I/O timeouts as hang guards.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).expect("set read timeout");
    stream.set_write_timeout(Some(DEADLINE)).expect("set write timeout");
    stream
}

/// Sends `message` on an echo connection and checks it comes back unchanged.
pub fn roundtrip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("write through the rule");
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).expect("read the echo back through the rule");
    assert_eq!(back, message, "the echo came back changed");
}

/// `GET path` over HTTP/1.1 on `addr`; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None)
}

/// `METHOD path` (empty body) over HTTP/1.1 on `addr`, with an optional bearer token;
/// returns the status and the body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(DEADLINE)).expect("set read timeout");
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    (status, body)
}

/// The body of a chunked HTTP/1.1 response, reassembled.
pub(crate) fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// How many sockets with local port `port` are in TIME_WAIT (IPv4 and IPv6 tables).
pub fn time_wait_sockets_on(port: u16) -> usize {
    const TIME_WAIT: &str = "06";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&TIME_WAIT)
        })
        .count()
}
