use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------------------------
// Building hellos

const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_GROUPS: u16 = 10;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_KEY_SHARE: u16 = 51;
const GROUP_X25519_MLKEM768: u16 = 0x11ec;
/// An X25519MLKEM768 client key share: an ML-KEM-768 encapsulation key and an X25519 share.
const MLKEM768_SHARE_LEN: usize = 1184 + 32;

/// The fields of a synthetic ClientHello.
#[derive(Clone)]
struct Spec {
    client_version: u16,
    session_id: Vec<u8>,
    suites: Vec<u8>,
    compression: Vec<u8>,
    /// `None`: no extensions block at all.
    extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            client_version: 0x0303,
            session_id: vec![7; 32],
            suites: vec![0x13, 0x01, 0xc0, 0x2f],
            compression: vec![0],
            extensions: Some(vec![]),
        }
    }
}

fn u16_prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The handshake message (4-byte header included).
fn message(spec: &Spec) -> Vec<u8> {
    let mut body = spec.client_version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x5a; 32]);
    body.push(u8::try_from(spec.session_id.len()).unwrap());
    body.extend_from_slice(&spec.session_id);
    body.extend(u16_prefixed(&spec.suites));
    body.push(u8::try_from(spec.compression.len()).unwrap());
    body.extend_from_slice(&spec.compression);
    if let Some(extensions) = &spec.extensions {
        let mut block = Vec::new();
        for (ext_type, data) in extensions {
            block.extend_from_slice(&ext_type.to_be_bytes());
            block.extend(u16_prefixed(data));
        }
        body.extend(u16_prefixed(&block));
    }
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut out = vec![1, len[1], len[2], len[3]];
    out.extend(body);
    out
}

/// `payload` as handshake records: the first `sizes` bytes each, then one record for the rest.
fn records(payload: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = payload;
    for &size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
        if rest.is_empty() {
            break;
        }
        let (fragment, tail) = rest.split_at(size.min(rest.len()));
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend(u16_prefixed(fragment));
        rest = tail;
    }
    out
}

/// One record holding `spec`'s hello.
fn hello(spec: &Spec) -> Vec<u8> {
    records(&message(spec), &[])
}

fn sni_ext(entries: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (name_type, name) in entries {
        list.push(*name_type);
        list.extend(u16_prefixed(name));
    }
    (EXT_SERVER_NAME, u16_prefixed(&list))
}

fn key_share_ext(group: u16, share_len: usize) -> (u16, Vec<u8>) {
    let mut entry = group.to_be_bytes().to_vec();
    entry.extend(u16_prefixed(&vec![0x42; share_len]));
    (EXT_KEY_SHARE, u16_prefixed(&entry))
}

fn versions_ext(versions: &[u16]) -> (u16, Vec<u8>) {
    let list: Vec<u8> = versions.iter().flat_map(|v| v.to_be_bytes()).collect();
    let mut data = vec![u8::try_from(list.len()).unwrap()];
    data.extend(list);
    (EXT_SUPPORTED_VERSIONS, data)
}

fn with_extensions(extensions: Vec<(u16, Vec<u8>)>) -> Spec {
    Spec { extensions: Some(extensions), ..Spec::default() }
}

/// A TLS 1.3-style hello naming `name`.
fn named(name: &[u8]) -> Vec<u8> {
    hello(&with_extensions(vec![sni_ext(&[(0, name)]), versions_ext(&[0x0304, 0x0303])]))
}

// ---------------------------------------------------------------------------------------------
// Driving the reader

/// Feeds `chunks` in order, stopping at the first final answer.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Progress, HelloReader) {
    let mut reader = HelloReader::default();
    let mut last = Progress::NeedMore;
    for chunk in chunks {
        last = reader.handle_bytes(chunk);
        if last != Progress::NeedMore {
            break;
        }
    }
    (last, reader)
}

/// The answer for `input` fed whole, after checking that byte by byte gives the same one.
fn answer(input: &[u8]) -> Progress {
    let (whole, _) = feed([input]);
    let (bytewise, _) = feed(input.chunks(1));
    assert_eq!(bytewise, whole, "byte-by-byte feeding disagrees with whole feeding");
    whole
}

fn check(input: &[u8], expected: Progress) {
    assert_eq!(answer(input), expected);
}

fn refused(input: &[u8]) -> Refusal {
    match answer(input) {
        Progress::Refused(refusal) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn done(input: &[u8]) -> Hello {
    match answer(input) {
        Progress::Done(hello) => hello,
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

fn name_of(input: &[u8]) -> (Option<String>, SniStatus) {
    let hello = done(input);
    (hello.server_name.map(|n| n.as_str().to_owned()), hello.sni)
}

// ---------------------------------------------------------------------------------------------
// Captured hellos

/// A ClientHello captured from a real client on loopback (`testdata/README.md`).
struct Fixture {
    file: &'static str,
    bytes: &'static [u8],
    name: Option<&'static str>,
    sni: SniStatus,
    client_version: u16,
    offers_tls13: bool,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        file: "openssl_tls12",
        bytes: include_bytes!("testdata/openssl_tls12.bin"),
        name: Some("api.example.com"),
        sni: SniStatus::Valid,
        client_version: 0x0303,
        offers_tls13: false,
    },
    Fixture {
        file: "openssl_tls13",
        bytes: include_bytes!("testdata/openssl_tls13.bin"),
        name: Some("api.example.com"),
        sni: SniStatus::Valid,
        client_version: 0x0303,
        offers_tls13: true,
    },
    Fixture {
        file: "openssl_tls10",
        bytes: include_bytes!("testdata/openssl_tls10.bin"),
        name: Some("legacy.example.com"),
        sni: SniStatus::Valid,
        client_version: 0x0301,
        offers_tls13: false,
    },
    Fixture {
        file: "openssl_upper",
        bytes: include_bytes!("testdata/openssl_upper.bin"),
        name: Some("api.example.com"),
        sni: SniStatus::Valid,
        client_version: 0x0303,
        offers_tls13: true,
    },
    Fixture {
        file: "openssl_no_sni",
        bytes: include_bytes!("testdata/openssl_no_sni.bin"),
        name: None,
        sni: SniStatus::Absent,
        client_version: 0x0303,
        offers_tls13: true,
    },
    Fixture {
        file: "curl_default",
        bytes: include_bytes!("testdata/curl_default.bin"),
        name: Some("api.example.com"),
        sni: SniStatus::Valid,
        client_version: 0x0303,
        offers_tls13: true,
    },
    Fixture {
        file: "curl_tls12",
        bytes: include_bytes!("testdata/curl_tls12.bin"),
        name: Some("api.example.com"),
        sni: SniStatus::Valid,
        client_version: 0x0303,
        offers_tls13: false,
    },
    Fixture {
        file: "curl_idn",
        bytes: include_bytes!("testdata/curl_idn.bin"),
        name: Some("xn--bcher-kva.example"),
        sni: SniStatus::Valid,
        client_version: 0x0303,
        offers_tls13: true,
    },
    Fixture {
        file: "curl_ip_literal",
        bytes: include_bytes!("testdata/curl_ip_literal.bin"),
        name: None,
        sni: SniStatus::Absent,
        client_version: 0x0303,
        offers_tls13: true,
    },
];

fn assert_fixture(fixture: &Fixture, progress: &Progress) {
    let Progress::Done(hello) = progress else { panic!("{}: {progress:?}", fixture.file) };
    assert_eq!(hello.server_name.as_ref().map(HostName::as_str), fixture.name, "{}", fixture.file);
    assert_eq!(hello.sni, fixture.sni, "{}", fixture.file);
    assert_eq!(hello.client_version, fixture.client_version, "{}", fixture.file);
    assert_eq!(hello.offers_tls13, fixture.offers_tls13, "{}", fixture.file);
    assert_eq!(hello.record_version, 0x0301, "{}", fixture.file);
    assert_eq!(hello.len, fixture.bytes.len(), "{}", fixture.file);
}

#[test]
fn captured_hellos_give_their_names_when_fed_whole() {
    for fixture in FIXTURES {
        let (progress, reader) = feed([fixture.bytes]);
        assert_fixture(fixture, &progress);
        assert_eq!(reader.buffered(), fixture.bytes, "{}: replay bytes differ", fixture.file);
    }
}

#[test]
fn captured_hellos_need_every_byte_when_fed_one_at_a_time() {
    for fixture in FIXTURES {
        let mut reader = HelloReader::default();
        let (last, before) = fixture.bytes.split_last().unwrap();
        for (idx, byte) in before.iter().enumerate() {
            assert_eq!(reader.handle_bytes(&[*byte]), Progress::NeedMore, "{} at {idx}", fixture.file);
        }
        assert_fixture(fixture, &reader.handle_bytes(&[*last]));
        assert_eq!(reader.into_buffered(), fixture.bytes, "{}", fixture.file);
    }
}

#[test]
fn captured_hellos_split_at_every_offset_give_the_same_answer() {
    for fixture in FIXTURES {
        for cut in 0..=fixture.bytes.len() {
            let (head, tail) = fixture.bytes.split_at(cut);
            let mut reader = HelloReader::default();
            let first = reader.handle_bytes(head);
            if cut < fixture.bytes.len() {
                assert_eq!(first, Progress::NeedMore, "{} cut at {cut}", fixture.file);
                assert_fixture(fixture, &reader.handle_bytes(tail));
            } else {
                assert_fixture(fixture, &first);
            }
            assert_eq!(reader.buffered(), fixture.bytes, "{} cut at {cut}", fixture.file);
        }
    }
}

#[test]
fn captured_hellos_spread_over_many_records_give_the_same_name() {
    for fixture in FIXTURES {
        let message = fixture.bytes.get(RECORD_HEADER_LEN..).unwrap();
        for size in [1, 2, 3, 4, 5, 17, 100, 256] {
            let rerecorded = records(message, &vec![size; message.len()]);
            let hello = done(&rerecorded);
            assert_eq!(hello.server_name.as_ref().map(HostName::as_str), fixture.name, "{}", fixture.file);
            assert_eq!(hello.len, rerecorded.len());
        }
    }
}

#[test]
fn bytes_after_the_hello_are_kept_for_the_replay() {
    let fixture = &FIXTURES[1];
    let mut input = fixture.bytes.to_vec();
    input.extend_from_slice(b"\x14\x03\x03\x00\x01\x01early data");
    let (progress, reader) = feed([input.as_slice()]);
    assert_fixture(fixture, &progress);
    assert_eq!(reader.buffered(), input.as_slice());
}

#[test]
fn a_final_answer_is_repeated_and_later_bytes_are_not_buffered() {
    let fixture = &FIXTURES[0];
    let mut reader = HelloReader::default();
    let first = reader.handle_bytes(fixture.bytes);
    assert_eq!(reader.handle_bytes(b"more"), first);
    assert_eq!(reader.buffered(), fixture.bytes);

    let mut http = HelloReader::default();
    assert_eq!(http.handle_bytes(b"GET"), Progress::Refused(Refusal::NotTls));
    assert_eq!(http.handle_bytes(fixture.bytes), Progress::Refused(Refusal::NotTls));
}

// ---------------------------------------------------------------------------------------------
// Large and fragmented hellos

fn post_quantum_spec(sni_first: bool) -> Spec {
    let mut extensions = vec![
        (EXT_SUPPORTED_GROUPS, vec![0, 4, 0x11, 0xec, 0, 0x1d]),
        key_share_ext(GROUP_X25519_MLKEM768, MLKEM768_SHARE_LEN),
        versions_ext(&[0x0304]),
    ];
    let sni = sni_ext(&[(0, b"pq.example.com")]);
    if sni_first {
        extensions.insert(0, sni);
    } else {
        extensions.push(sni);
    }
    with_extensions(extensions)
}

#[test]
fn a_post_quantum_key_share_spanning_two_records_is_read() {
    let message = message(&post_quantum_spec(true));
    assert!(message.len() > MLKEM768_SHARE_LEN);
    // Cut inside the key share: record one ends in the middle of it.
    let input = records(&message, &[700]);
    assert_eq!(input.len(), message.len() + 2 * RECORD_HEADER_LEN);
    let hello = done(&input);
    assert_eq!(hello.server_name.unwrap().as_str(), "pq.example.com");
    assert!(hello.offers_tls13);
    assert_eq!(hello.len, input.len());
}

#[test]
fn a_name_in_the_second_record_is_found() {
    let message = message(&post_quantum_spec(false));
    let name_at = message.windows(14).position(|w| w == b"pq.example.com").unwrap();
    // Record one ends before the server_name extension starts (type, lengths, name type).
    let input = records(&message, &[name_at - 9]);
    let second_record = &input[name_at - 9 + RECORD_HEADER_LEN..];
    assert_eq!(&second_record[..3], &[0x16, 0x03, 0x01]);
    assert!(second_record.windows(14).any(|w| w == b"pq.example.com"));
    assert_eq!(name_of(&input), (Some("pq.example.com".into()), SniStatus::Valid));
    // And split at every offset, as it might arrive.
    for cut in 0..input.len() {
        let (progress, _) = feed([&input[..cut], &input[cut..]]);
        assert!(matches!(progress, Progress::Done(ref h) if h.server_name.is_some()), "cut at {cut}");
    }
}

#[test]
fn the_largest_hello_is_accepted_and_one_byte_more_is_too_large() {
    let base = message(&with_extensions(vec![sni_ext(&[(0, b"big.example.com")])]));
    // Pad with an unknown extension so the message is exactly the limit.
    let padding = MAX_HELLO_LEN - base.len() - 4;
    let spec = with_extensions(vec![sni_ext(&[(0, b"big.example.com")]), (0xfe02, vec![0; padding])]);
    let largest = message(&spec);
    assert_eq!(largest.len(), MAX_HELLO_LEN);
    let input = records(&largest, &[MAX_RECORD_LEN]);
    assert_eq!(name_of(&input).0.as_deref(), Some("big.example.com"));

    let spec = with_extensions(vec![sni_ext(&[(0, b"big.example.com")]), (0xfe02, vec![0; padding + 1])]);
    let input = records(&message(&spec), &[MAX_RECORD_LEN]);
    // Refused as soon as the handshake header is in, long before the body.
    assert_eq!(feed([&input[..9]]).0, Progress::Refused(Refusal::TooLarge));
}

#[test]
fn a_hello_in_tiny_records_is_refused_once_the_buffer_bound_is_reached() {
    let small = message(&with_extensions(vec![sni_ext(&[(0, b"tiny.example.com")])]));
    let input = records(&small, &vec![1; small.len()]);
    assert_eq!(name_of(&input).0.as_deref(), Some("tiny.example.com"));

    let spec = with_extensions(vec![sni_ext(&[(0, b"tiny.example.com")]), (0xfe02, vec![0; 4000])]);
    let large = message(&spec);
    let input = records(&large, &vec![1; large.len()]);
    assert!(input.len() > MAX_BUFFERED_LEN);
    let (progress, reader) = feed(input.chunks(1000));
    assert_eq!(progress, Progress::Refused(Refusal::TooLarge));
    assert_eq!(reader.buffered().len(), MAX_BUFFERED_LEN);
}

#[test]
fn a_huge_chunk_is_buffered_only_up_to_the_bound() {
    // A valid start: a record and a hello header that both promise more than arrives.
    let mut input = vec![0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x20, 0x00, 0x00];
    for _ in 0..20_000 {
        input.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x00]);
    }
    let (progress, reader) = feed([input.as_slice()]);
    assert_eq!(progress, Progress::Refused(Refusal::TooLarge));
    assert_eq!(reader.buffered().len(), MAX_BUFFERED_LEN);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn foreign_protocols_are_not_tls_from_their_first_bytes() {
    check(b"G", Progress::Refused(Refusal::NotTls));
    check(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Progress::Refused(Refusal::NotTls));
    check(b"SSH-2.0-OpenSSH_9.2\r\n", Progress::Refused(Refusal::NotTls));
    check(b"\r\n\r\n\0\r\nQUIT\n", Progress::Refused(Refusal::NotTls));
    // An SSLv2-compatible hello: two-byte length with the high bit set, type 1, version 3.1.
    check(
        &[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10],
        Progress::Refused(Refusal::NotTls),
    );
    // Other record types and versions.
    check(&[0x17, 0x03, 0x03, 0x00, 0x10], Progress::Refused(Refusal::NotTls));
    check(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28], Progress::Refused(Refusal::NotTls));
    check(&[0x16, 0x02, 0x00], Progress::Refused(Refusal::NotTls));
    check(&[0x16, 0x03, 0x05], Progress::Refused(Refusal::NotTls));
}

#[test]
fn valid_prefixes_need_more() {
    check(b"", Progress::NeedMore);
    check(&[0x16], Progress::NeedMore);
    check(&[0x16, 0x03, 0x00, 0x01], Progress::NeedMore);
    check(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01], Progress::NeedMore);
    let full = named(b"api.example.com");
    check(&full[..full.len() - 1], Progress::NeedMore);
}

#[test]
fn broken_records_are_malformed() {
    // Empty and oversized records.
    assert_eq!(refused(&[0x16, 0x03, 0x01, 0x00, 0x00]), Refusal::Malformed);
    assert_eq!(refused(&[0x16, 0x03, 0x01, 0x40, 0x01]), Refusal::Malformed);
    // Another handshake message than ClientHello, seen from its first byte.
    assert_eq!(refused(&[0x16, 0x03, 0x01, 0x00, 0x30, 0x02]), Refusal::Malformed);
    // An alert record in the middle of the hello.
    let message = message(&Spec::default());
    let mut input = records(&message[..10], &[]);
    input.extend_from_slice(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28]);
    assert_eq!(refused(&input), Refusal::Malformed);
    // A hello header promising less than its fields take.
    let mut short = named(b"api.example.com");
    short[8] -= 1;
    short[4] -= 1;
    short.pop();
    assert_eq!(refused(&short), Refusal::Malformed);
}

#[test]
fn broken_hello_fields_are_refused() {
    let cases = [
        ("ssl 3.0", Spec { client_version: 0x0300, ..Spec::default() }, Refusal::UnsupportedVersion),
        ("version 2", Spec { client_version: 0x0200, ..Spec::default() }, Refusal::Malformed),
        ("long session id", Spec { session_id: vec![0; 33], ..Spec::default() }, Refusal::Malformed),
        ("odd suites", Spec { suites: vec![0x13, 0x01, 0x00], ..Spec::default() }, Refusal::Malformed),
        ("no suites", Spec { suites: vec![], ..Spec::default() }, Refusal::Malformed),
        ("no compression", Spec { compression: vec![], ..Spec::default() }, Refusal::Malformed),
        (
            "duplicate extension",
            with_extensions(vec![versions_ext(&[0x0304]), versions_ext(&[0x0303])]),
            Refusal::Malformed,
        ),
        (
            "duplicate server_name",
            with_extensions(vec![sni_ext(&[(0, b"a.example")]), sni_ext(&[(0, b"b.example")])]),
            Refusal::Malformed,
        ),
        ("empty name list", with_extensions(vec![(EXT_SERVER_NAME, vec![0, 0])]), Refusal::Malformed),
        ("server's empty sni", with_extensions(vec![(EXT_SERVER_NAME, vec![])]), Refusal::Malformed),
        ("empty name", with_extensions(vec![sni_ext(&[(0, b"")])]), Refusal::Malformed),
        ("empty versions", with_extensions(vec![(EXT_SUPPORTED_VERSIONS, vec![0])]), Refusal::Malformed),
        ("odd versions", with_extensions(vec![(EXT_SUPPORTED_VERSIONS, vec![1, 3])]), Refusal::Malformed),
    ];
    for (what, spec, expected) in cases {
        assert_eq!(refused(&hello(&spec)), expected, "{what}");
    }

    // Bytes after the extensions block, an extension running past it, a cut extension header.
    let valid_block = [0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04];
    let mut trailing = u16_prefixed(&valid_block);
    trailing.push(0);
    let tails = [trailing, u16_prefixed(&[0x00, 0x2b, 0x00, 0x10, 0x01]), u16_prefixed(&[0x00]), vec![0x00]];
    for tail in tails {
        assert_eq!(refused(&records(&message_with_tail(&tail), &[])), Refusal::Malformed, "{tail:?}");
    }
    assert!(done(&records(&message_with_tail(&u16_prefixed(&valid_block)), &[])).offers_tls13);
}

/// A hello without an extensions block, followed by `tail` as its last bytes.
fn message_with_tail(tail: &[u8]) -> Vec<u8> {
    let mut out = message(&Spec { extensions: None, ..Spec::default() });
    out.extend_from_slice(tail);
    let len = u32::try_from(out.len() - 4).unwrap().to_be_bytes();
    out[1..4].copy_from_slice(&len[1..]);
    out
}

#[test]
fn refusals_have_stable_names() {
    let names: Vec<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names, ["not_tls", "malformed", "too_large", "unsupported_version"]);
    assert_eq!(Refusal::TooLarge.to_string(), "too_large");
    assert_eq!(MatchKind::Wildcard.as_str(), "wildcard");
}

// ---------------------------------------------------------------------------------------------
// Names in hellos

#[test]
fn hellos_without_a_host_name_have_no_server_name() {
    assert_eq!(name_of(&hello(&Spec { extensions: None, ..Spec::default() })), (None, SniStatus::Absent));
    assert_eq!(name_of(&hello(&with_extensions(vec![]))), (None, SniStatus::Absent));
    // Only an entry of an unknown name type.
    assert_eq!(name_of(&hello(&with_extensions(vec![sni_ext(&[(7, b"x")])]))), (None, SniStatus::Absent));
}

#[test]
fn the_first_host_name_wins() {
    let spec = with_extensions(vec![sni_ext(&[(7, b"opaque"), (0, b"one.example"), (0, b"two.example")])]);
    assert_eq!(name_of(&hello(&spec)), (Some("one.example".into()), SniStatus::Valid));
}

#[test]
fn names_are_lowercased_and_lose_one_trailing_dot() {
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"API.Example.COM", Some("api.example.com")),
        (b"api.example.com.", Some("api.example.com")),
        (b"localhost", Some("localhost")),
        (b"xn--bcher-kva.example", Some("xn--bcher-kva.example")),
        (b"a-1.b2.c", Some("a-1.b2.c")),
        (b"10.0.0.1.example", Some("10.0.0.1.example")),
        (b"api.example.com..", None),
        ("bücher.example".as_bytes(), None),
        (b"127.0.0.1", None),
        (b"[::1]", None),
        (b"a..b", None),
        (b".a.b", None),
        (b"-a.b", None),
        (b"a-.b", None),
        (b"a_b.example", None),
        (b"a b.example", None),
        (b"api.example.com\0evil", None),
        (b"*.example.com", None),
        (b".", None),
    ];
    for (sent, expected) in cases {
        let status = if expected.is_some() { SniStatus::Valid } else { SniStatus::Invalid };
        assert_eq!(
            name_of(&named(sent)),
            (expected.map(str::to_owned), status),
            "{:?}",
            String::from_utf8_lossy(sent)
        );
    }
}

#[test]
fn host_name_length_limits_hold() {
    let label63 = "a".repeat(63);
    assert!(HostName::parse(&format!("{label63}.example")).is_some());
    assert!(HostName::parse(&format!("{}.example", "a".repeat(64))).is_none());
    // 253 bytes is the longest name; 254 is too long, with or without an SNI trailing dot.
    let longest = [label63.as_str(), label63.as_str(), label63.as_str(), "b".repeat(61).as_str()].join(".");
    assert_eq!(longest.len(), 253);
    assert!(HostName::parse(&longest).is_some());
    assert!(HostName::from_sni(format!("{longest}.").as_bytes()).is_some());
    assert!(HostName::parse(&format!("c{longest}")).is_none());
    assert_eq!(name_of(&named(format!("c{longest}").as_bytes())), (None, SniStatus::Invalid));
}

#[test]
fn fuzz_logic_accepts_the_fixtures_and_garbage() {
    for fixture in FIXTURES {
        fuzz_logic(fixture.bytes);
    }
    fuzz_logic(b"");
    fuzz_logic(b"*.example.com");
    fuzz_logic(&[0x16, 0x03, 0x01, 0xff, 0xff]);
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Byte strings that are often, but not always, host names.
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,4}\\.?".prop_map(String::into_bytes),
        "[a-z0-9.*_-]{1,30}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 1..40),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_never_panics_and_splits_agree(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_logic(&data);
    }

    #[test]
    fn garbage_after_a_record_header_never_panics(
        minor in 0u8..5,
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut data = vec![0x16, 0x03, minor, 0x02, 0x58, 0x01, 0x00, 0x02, 0x54, 0x03, 0x03];
        data.extend(tail);
        fuzz_logic(&data);
    }

    #[test]
    fn mutated_captures_never_panic_nor_accept_bad_names(
        fixture_idx in 0..FIXTURES.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut data = FIXTURES[fixture_idx].bytes.to_vec();
        for (at, byte) in flips {
            let at = at.index(data.len());
            data[at] = byte;
        }
        fuzz_logic(&data);
    }

    #[test]
    fn captures_split_anywhere_give_the_same_hello(
        fixture_idx in 0..FIXTURES.len(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let fixture = &FIXTURES[fixture_idx];
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(fixture.bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([fixture.bytes.len()]) {
            chunks.push(&fixture.bytes[start..cut]);
            start = cut;
        }
        let (progress, reader) = feed(chunks);
        assert_fixture(fixture, &progress);
        prop_assert_eq!(reader.buffered(), fixture.bytes);
    }

    #[test]
    fn captures_in_any_records_give_the_same_name(
        fixture_idx in 0..FIXTURES.len(),
        sizes in proptest::collection::vec(1usize..300, 0..20),
    ) {
        let fixture = &FIXTURES[fixture_idx];
        let input = records(&fixture.bytes[RECORD_HEADER_LEN..], &sizes);
        let hello = done(&input);
        prop_assert_eq!(hello.server_name.as_ref().map(HostName::as_str), fixture.name);
        prop_assert_eq!(hello.len, input.len());
    }

    #[test]
    fn a_sent_name_is_accepted_exactly_when_it_is_a_valid_host(sent in name_bytes()) {
        let (name, status) = name_of(&named(&sent));
        let trimmed = sent.strip_suffix(b".").unwrap_or(&sent);
        let expected = HostName::parse(std::str::from_utf8(trimmed).unwrap_or("\u{fffd}"));
        prop_assert_eq!(name.as_deref(), expected.as_ref().map(HostName::as_str));
        prop_assert_eq!(status == SniStatus::Valid, expected.is_some());
        if let Some(name) = name {
            prop_assert_eq!(name.clone(), String::from_utf8_lossy(trimmed).to_ascii_lowercase());
            prop_assert!(name.len() <= MAX_HOST_NAME_LEN);
            prop_assert!(!name.ends_with('.') && !name.starts_with('.') && !name.contains(".."));
        }
    }
}
