//! [`HelloReader`]: finds the server name in a TLS ClientHello as its bytes trickle in,
//! without decrypting anything, and keeps every byte so the caller can replay them.
//!
//! Invariants: the reader buffers at most [`MAX_BUFFERED_LEN`] bytes before it answers (plus,
//! once the hello is complete, the rest of the chunk that completed it); it never allocates by
//! a length the peer declares, only by bytes actually received; it never panics and never
//! indexes past its input (every read goes through a checked cursor); it never reads a clock
//! (the peek deadline is the caller's). Its answer depends only on the bytes, never on how
//! they were split into calls.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use super::name::HostName;

/// Bytes of a TLS record header: content type, version, length.
pub const RECORD_HEADER_LEN: usize = 5;

/// Largest record body a peer may send before encryption starts (2^14, RFC 8446 §5.1).
pub const MAX_RECORD_LEN: usize = 16 * 1024;

/// Largest ClientHello accepted, its 4-byte handshake header included. Real hellos are far
/// smaller (about 1.8 KiB with a post-quantum key share), so this leaves room for larger
/// key shares and many extensions while bounding what one peeking peer costs.
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// How many record headers the buffer bound allows for on top of the hello: a hello split
/// into more, smaller records runs past [`MAX_BUFFERED_LEN`] and is refused as too large.
pub const MAX_HELLO_RECORDS: usize = 64;

/// The most bytes a reader buffers while it still needs more: a maximal hello plus the
/// headers of [`MAX_HELLO_RECORDS`] records. Reaching it without a complete hello is
/// [`Refusal::TooLarge`].
pub const MAX_BUFFERED_LEN: usize = MAX_HELLO_LEN + MAX_HELLO_RECORDS * RECORD_HEADER_LEN;

const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HEADER_LEN: usize = 4;
const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const NAME_TYPE_HOST_NAME: u8 = 0;
const TLS_1_0: u16 = 0x0301;
const TLS_1_3: u16 = 0x0304;
/// Highest record-layer minor version a TLS 1.0–1.3 client writes (1.3 never writes 4, but
/// it names a TLS version, so it is not refused as foreign bytes).
const MAX_RECORD_MINOR: u8 = 4;
const RANDOM_LEN: usize = 32;
const MAX_SESSION_ID_LEN: usize = 32;
/// Smallest buffer the reader allocates, so a hello trickling in does not reallocate per byte.
const INITIAL_CAPACITY: usize = 512;

/// Why a reader gave up. The stable names feed counters and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The first bytes are not a TLS handshake record: plain HTTP, an SSLv2-compatible hello,
    /// any other protocol.
    NotTls,
    /// TLS records, but not a well-formed ClientHello: a bad length, a record of another type
    /// before the hello ended, a duplicate extension, trailing bytes…
    Malformed,
    /// The hello (or its records) would exceed [`MAX_HELLO_LEN`] or [`MAX_BUFFERED_LEN`].
    TooLarge,
    /// A ClientHello from SSL 3.0 or older, which predates the server name extension.
    UnsupportedVersion,
}

impl Refusal {
    /// Every reason, for counters that list them all.
    pub const ALL: &'static [Refusal] =
        &[Refusal::NotTls, Refusal::Malformed, Refusal::TooLarge, Refusal::UnsupportedVersion];

    /// The stable snake_case name (`not_tls`, `malformed`, `too_large`, `unsupported_version`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::NotTls => "not_tls",
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too_large",
            Refusal::UnsupportedVersion => "unsupported_version",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the `server_name` extension held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SniStatus {
    /// No `server_name` extension, or one without a `host_name` entry.
    Absent,
    /// A `host_name` that is a valid host name; [`Hello::server_name`] holds it.
    Valid,
    /// A `host_name` that is not a valid host name (UTF-8 IDN, IP literal, bad characters).
    /// Routed like [`SniStatus::Absent`] (it can match no pattern), but told apart for counts.
    Invalid,
}

/// The parts of a complete ClientHello that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The first `host_name` of the `server_name` extension, lowercase, without a trailing
    /// dot. `Some` exactly when [`Hello::sni`] is [`SniStatus::Valid`].
    pub server_name: Option<HostName>,
    /// Whether the name was absent, valid or invalid.
    pub sni: SniStatus,
    /// The version in the first record header (`0x0301` for nearly every client).
    pub record_version: u16,
    /// The hello's `legacy_version` (`0x0303` for TLS 1.2 and 1.3 clients).
    pub client_version: u16,
    /// Whether the `supported_versions` extension offers TLS 1.3.
    pub offers_tls13: bool,
    /// Bytes of [`HelloReader::buffered`] the hello's records take; anything after them
    /// arrived with the last chunk and is replayed too.
    pub len: usize,
}

/// The answer to each chunk of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The bytes so far start a ClientHello that is not complete yet: read more (until the
    /// caller's deadline).
    NeedMore,
    /// The ClientHello is complete.
    Done(Hello),
    /// Not a ClientHello this reader accepts; close the connection.
    Refused(Refusal),
}

/// An incremental ClientHello reader for one connection.
///
/// Feed it every chunk read from the socket with [`HelloReader::handle_bytes`] until it
/// answers [`Progress::Done`] or [`Progress::Refused`]; then write
/// [`HelloReader::buffered`] to the chosen target unchanged and copy the rest of the stream.
///
/// ```
/// use portunus_core::sni::{HelloReader, Progress, Refusal};
///
/// let mut reader = HelloReader::default();
/// assert_eq!(reader.handle_bytes(&[0x16, 0x03]), Progress::NeedMore);
/// assert_eq!(reader.buffered(), &[0x16, 0x03]);
///
/// let mut http = HelloReader::default();
/// assert_eq!(http.handle_bytes(b"GET / HTTP/1.1\r\n"), Progress::Refused(Refusal::NotTls));
/// ```
#[derive(Debug, Default)]
pub struct HelloReader {
    /// Every byte fed so far, unchanged.
    buf: Vec<u8>,
    /// Offset in `buf` of the first record not yet complete.
    scan: usize,
    /// Handshake bytes carried by the complete records before `scan`.
    handshake_len: usize,
    /// The first handshake bytes: message type and 24-bit length.
    handshake_head: [u8; HANDSHAKE_HEADER_LEN],
    /// The final answer, once there is one.
    finished: Option<Progress>,
}

impl HelloReader {
    /// Takes the next chunk of bytes from the peer and says whether the hello is complete.
    ///
    /// Once the answer is `Done` or `Refused`, later calls buffer nothing and repeat it. A
    /// chunk that completes the hello is kept whole (its tail belongs to the stream too);
    /// otherwise at most [`MAX_BUFFERED_LEN`] bytes are kept and reaching that bound is
    /// [`Refusal::TooLarge`].
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Progress {
        if let Some(finished) = &self.finished {
            return finished.clone();
        }
        let room = MAX_BUFFERED_LEN.saturating_sub(self.buf.len());
        let (now, later) = bytes.split_at(bytes.len().min(room));
        self.reserve(now.len());
        self.buf.extend_from_slice(now);
        let progress = match self.scan_records() {
            Ok(Some(hello)) => {
                self.buf.extend_from_slice(later);
                Progress::Done(hello)
            }
            Ok(None) if self.buf.len() >= MAX_BUFFERED_LEN => Progress::Refused(Refusal::TooLarge),
            Ok(None) => return Progress::NeedMore,
            Err(refusal) => Progress::Refused(refusal),
        };
        self.finished = Some(progress.clone());
        progress
    }

    /// Every byte fed so far (up to the bound), unchanged: what to replay to the target.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The buffered bytes, without a copy.
    pub fn into_buffered(self) -> Vec<u8> {
        self.buf
    }

    /// Grows the buffer for `extra` more bytes, doubling as usual but never past
    /// [`MAX_BUFFERED_LEN`], so a trickling peer costs no more than the bound.
    fn reserve(&mut self, extra: usize) {
        let needed = self.buf.len().saturating_add(extra);
        if needed <= self.buf.capacity() {
            return;
        }
        let target = needed
            .max(self.buf.capacity().saturating_mul(2))
            .max(INITIAL_CAPACITY)
            .min(MAX_BUFFERED_LEN.max(needed));
        self.buf.reserve_exact(target - self.buf.len());
    }

    /// Walks the records after `scan`: commits the complete ones, checks what has arrived of
    /// the next, and parses the hello once its last byte is in.
    fn scan_records(&mut self) -> Result<Option<Hello>, Refusal> {
        loop {
            let rest = self.buf.get(self.scan..).unwrap_or_default();
            let Some(body_len) = record_header(rest, self.scan == 0)? else { return Ok(None) };
            let body = rest.get(RECORD_HEADER_LEN..).unwrap_or_default();
            let available = body.get(..body_len).unwrap_or(body);

            // Check the handshake header as soon as its bytes arrive, even in a partial
            // record, so a wrong message type or an oversized length is refused at once.
            let mut head = self.handshake_head;
            let mut n_head = self.handshake_len.min(HANDSHAKE_HEADER_LEN);
            for byte in available {
                let Some(slot) = head.get_mut(n_head) else { break };
                *slot = *byte;
                n_head += 1;
            }
            let declared = handshake_head(head.get(..n_head).unwrap_or_default())?;

            if available.len() < body_len {
                return Ok(None);
            }
            self.handshake_head = head;
            self.handshake_len += body_len;
            self.scan += RECORD_HEADER_LEN + body_len;
            if let Some(message_len) = declared
                && self.handshake_len >= message_len
            {
                return self.finish(message_len).map(Some);
            }
        }
    }

    /// Reassembles the complete message (`message_len` bytes, header included) from the
    /// records before `scan` and parses it.
    fn finish(&self, message_len: usize) -> Result<Hello, Refusal> {
        let records = self.buf.get(..self.scan).unwrap_or_default();
        let first_body = records.get(RECORD_HEADER_LEN..).unwrap_or_default();
        let first_len = record_len(records).ok_or(Refusal::Malformed)?;
        let message: Cow<'_, [u8]> = if first_len >= message_len {
            // The usual case: the hello sits in one record, parse it in place.
            Cow::Borrowed(first_body.get(..message_len).ok_or(Refusal::Malformed)?)
        } else {
            let mut joined = Vec::with_capacity(message_len);
            let mut rest = records;
            while joined.len() < message_len {
                let len = record_len(rest).ok_or(Refusal::Malformed)?;
                let end = RECORD_HEADER_LEN + len;
                joined.extend_from_slice(rest.get(RECORD_HEADER_LEN..end).ok_or(Refusal::Malformed)?);
                rest = rest.get(end..).ok_or(Refusal::Malformed)?;
            }
            joined.truncate(message_len);
            Cow::Owned(joined)
        };
        let body = message.get(HANDSHAKE_HEADER_LEN..).ok_or(Refusal::Malformed)?;
        let parsed = parse_client_hello(body)?;
        let record_version = records
            .get(1..3)
            .and_then(|v| v.try_into().ok())
            .map(u16::from_be_bytes)
            .ok_or(Refusal::Malformed)?;
        Ok(Hello {
            server_name: parsed.server_name,
            sni: parsed.sni,
            record_version,
            client_version: parsed.client_version,
            offers_tls13: parsed.offers_tls13,
            len: self.scan,
        })
    }
}

/// The length field of the record header at the start of `bytes`.
fn record_len(bytes: &[u8]) -> Option<usize> {
    let len: [u8; 2] = bytes.get(3..5)?.try_into().ok()?;
    Some(usize::from(u16::from_be_bytes(len)))
}

/// Checks as much of a record header as `bytes` holds; the body length once all five bytes
/// are in. Foreign bytes in the first header are `NotTls`; in a later one, `Malformed`.
fn record_header(bytes: &[u8], first: bool) -> Result<Option<usize>, Refusal> {
    let foreign = if first { Refusal::NotTls } else { Refusal::Malformed };
    if bytes.first().is_some_and(|t| *t != CONTENT_TYPE_HANDSHAKE) {
        return Err(foreign);
    }
    if bytes.get(1).is_some_and(|major| *major != 3) {
        return Err(foreign);
    }
    if bytes.get(2).is_some_and(|minor| *minor > MAX_RECORD_MINOR) {
        return Err(foreign);
    }
    let Some(len) = record_len(bytes) else { return Ok(None) };
    // Empty handshake records are forbidden (RFC 8446 §5.1), and no plaintext record is
    // longer than 2^14.
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(Refusal::Malformed);
    }
    Ok(Some(len))
}

/// Checks the handshake header bytes seen so far; the whole message length (header
/// included) once all four are in.
fn handshake_head(head: &[u8]) -> Result<Option<usize>, Refusal> {
    if head.first().is_some_and(|t| *t != HANDSHAKE_CLIENT_HELLO) {
        return Err(Refusal::Malformed);
    }
    let Some(&[_, a, b, c]) = head.get(..HANDSHAKE_HEADER_LEN) else { return Ok(None) };
    let len = HANDSHAKE_HEADER_LEN + ((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c));
    if len > MAX_HELLO_LEN {
        return Err(Refusal::TooLarge);
    }
    Ok(Some(len))
}

/// What [`parse_client_hello`] extracts.
struct ParsedHello {
    client_version: u16,
    server_name: Option<HostName>,
    sni: SniStatus,
    offers_tls13: bool,
}

/// Parses a ClientHello body (after the handshake header), which must be consumed exactly.
fn parse_client_hello(body: &[u8]) -> Result<ParsedHello, Refusal> {
    let mut hello = Cursor::new(body);
    let client_version = hello.u16()?;
    if client_version >> 8 != 3 {
        return Err(Refusal::Malformed);
    }
    if client_version < TLS_1_0 {
        return Err(Refusal::UnsupportedVersion);
    }
    hello.take(RANDOM_LEN)?;
    if hello.u8_prefixed()?.len() > MAX_SESSION_ID_LEN {
        return Err(Refusal::Malformed);
    }
    let suites = hello.u16_prefixed()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Refusal::Malformed);
    }
    if hello.u8_prefixed()?.is_empty() {
        return Err(Refusal::Malformed);
    }
    let mut parsed =
        ParsedHello { client_version, server_name: None, sni: SniStatus::Absent, offers_tls13: false };
    // A hello without an extensions block ends here (TLS 1.0–1.2 allow it).
    if hello.is_empty() {
        return Ok(parsed);
    }
    let mut extensions = Cursor::new(hello.u16_prefixed()?);
    if !hello.is_empty() {
        return Err(Refusal::Malformed);
    }
    let mut seen = BTreeSet::new();
    while !extensions.is_empty() {
        let ext_type = extensions.u16()?;
        let data = extensions.u16_prefixed()?;
        // RFC 8446 §4.2: no extension type appears twice.
        if !seen.insert(ext_type) {
            return Err(Refusal::Malformed);
        }
        match ext_type {
            EXT_SERVER_NAME => {
                let name = first_host_name(data)?;
                parsed.server_name = name.and_then(HostName::from_sni);
                parsed.sni = match (name, &parsed.server_name) {
                    (None, _) => SniStatus::Absent,
                    (Some(_), Some(_)) => SniStatus::Valid,
                    (Some(_), None) => SniStatus::Invalid,
                };
            }
            EXT_SUPPORTED_VERSIONS => parsed.offers_tls13 = offers_tls13(data)?,
            _ => {}
        }
    }
    Ok(parsed)
}

/// The raw bytes of the first `host_name` entry of a `server_name` extension (RFC 6066 §3).
/// Entries of other name types are skipped; an empty list or an empty name is malformed.
fn first_host_name(data: &[u8]) -> Result<Option<&[u8]>, Refusal> {
    let mut ext = Cursor::new(data);
    let mut list = Cursor::new(ext.u16_prefixed()?);
    if !ext.is_empty() || list.is_empty() {
        return Err(Refusal::Malformed);
    }
    let mut first = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.u16_prefixed()?;
        if name.is_empty() {
            return Err(Refusal::Malformed);
        }
        if name_type == NAME_TYPE_HOST_NAME && first.is_none() {
            first = Some(name);
        }
    }
    Ok(first)
}

/// Whether a client's `supported_versions` list (RFC 8446 §4.2.1) names TLS 1.3.
fn offers_tls13(data: &[u8]) -> Result<bool, Refusal> {
    let mut ext = Cursor::new(data);
    let versions = ext.u8_prefixed()?;
    if !ext.is_empty() || versions.is_empty() || versions.len() % 2 != 0 {
        return Err(Refusal::Malformed);
    }
    Ok(versions.chunks_exact(2).any(|v| v == TLS_1_3.to_be_bytes()))
}

/// A read position in a byte slice; every read is checked and a short read is `Malformed`.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        let (head, rest) = self.bytes.split_at_checked(n).ok_or(Refusal::Malformed)?;
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Refusal> {
        let (first, rest) = self.bytes.split_first().ok_or(Refusal::Malformed)?;
        self.bytes = rest;
        Ok(*first)
    }

    fn u16(&mut self) -> Result<u16, Refusal> {
        let bytes: [u8; 2] = self.take(2)?.try_into().map_err(|_| Refusal::Malformed)?;
        Ok(u16::from_be_bytes(bytes))
    }

    /// A vector with a one-byte length prefix.
    fn u8_prefixed(&mut self) -> Result<&'a [u8], Refusal> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length prefix.
    fn u16_prefixed(&mut self) -> Result<&'a [u8], Refusal> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}
