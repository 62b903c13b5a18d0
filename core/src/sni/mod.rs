//! SNI routing's decisions: read the server name from a TLS ClientHello as it arrives, and
//! pick a listener's route for it. The data plane owns the sockets and the peek deadline.
//!
//! - [`HelloReader`] takes the first bytes of a connection in chunks of any size and answers
//!   [`Progress::NeedMore`], [`Progress::Done`] with a [`Hello`], or [`Progress::Refused`]
//!   with a [`Refusal`] (`not_tls`, `malformed`, `too_large`, `unsupported_version`). It keeps
//!   the bytes unchanged for the caller to replay to the target.
//! - [`SniPattern`] is an exact host or `*.suffix`; [`SniRoutes`] maps patterns (and one
//!   fallback) to routes: exact, then wildcard, then fallback.
//! - [`HostName`] is the one form names are compared in: valid and lowercase.
//! - [`SniListenerReport`] is what a listener counts (routes, refusals, the peek histogram
//!   with [`PEEK_BUCKETS_SECONDS`]), reported by the client and exposed by the server.
//!
//! A `host_name` that is not a valid host name (an IDN sent as UTF-8 rather than as its
//! `xn--` A-label, an IP literal, bad characters) does not refuse the hello: the hello is well
//! formed, so it is `Done` with [`SniStatus::Invalid`] and no [`Hello::server_name`], and it
//! routes like a hello without SNI (the fallback, or close). Only valid names ever reach a
//! lookup.
//!
//! Invariants: bounded memory (at most [`MAX_BUFFERED_LEN`] bytes per reader while a hello is
//! incomplete, no allocation sized by a length the peer declares); no panic on any input (all
//! parsing goes through checked reads; the fuzz target `client_hello` holds it to that); no
//! clock (the caller enforces the peek deadline); the answer never depends on how the bytes
//! were split.

mod hello;
mod name;
mod report;
mod route;

pub use hello::{
    Hello, HelloReader, MAX_BUFFERED_LEN, MAX_HELLO_LEN, MAX_HELLO_RECORDS, MAX_RECORD_LEN, Progress,
    RECORD_HEADER_LEN, Refusal, SniStatus,
};
pub use name::{HostName, MAX_HOST_NAME_LEN, MAX_LABEL_LEN};
pub use report::{
    MAX_CONCURRENT_PEEKS, PEEK_BUCKETS_SECONDS, PEEK_DEADLINE, PeekEnd, SniListenerReport, peek_bucket,
};
pub use route::{MatchKind, RouteError, SniPattern, SniRoutes};

/// Fuzz entry point: any bytes, fed whole or in chunks, give the same answer without a
/// panic; an accepted name is a valid lowercase host name; a pattern that parses renders to
/// text that parses to itself.
#[cfg(any(fuzzing, test))]
pub fn fuzz_logic(data: &[u8]) {
    let mut whole = HelloReader::default();
    let expected = whole.handle_bytes(data);
    match &expected {
        Progress::Done(hello) => {
            assert!(hello.len <= data.len());
            assert_eq!(whole.buffered(), data);
            assert_name_is_canonical(hello);
        }
        Progress::NeedMore | Progress::Refused(_) => assert!(whole.buffered().len() <= MAX_BUFFERED_LEN),
    }

    // The same bytes in chunks whose size the input picks.
    let step = usize::from(data.first().copied().unwrap_or(0)) % 61 + 1;
    let mut split = HelloReader::default();
    let mut last = Progress::NeedMore;
    for chunk in data.chunks(step) {
        last = split.handle_bytes(chunk);
        if last != Progress::NeedMore {
            break;
        }
    }
    assert_eq!(last, expected);

    if let Some(name) = HostName::from_sni(data) {
        assert_eq!(HostName::parse(name.as_str()).as_ref(), Some(&name));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(pattern) = SniPattern::parse(text)
    {
        assert_eq!(SniPattern::parse(&pattern.to_string()), Ok(pattern));
    }
}

#[cfg(any(fuzzing, test))]
fn assert_name_is_canonical(hello: &Hello) {
    match &hello.server_name {
        Some(name) => {
            assert_eq!(hello.sni, SniStatus::Valid);
            assert!(
                name.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            );
            assert_eq!(HostName::parse(name.as_str()).as_ref(), Some(name));
        }
        None => assert_ne!(hello.sni, SniStatus::Valid),
    }
}

#[cfg(test)]
mod tests;
