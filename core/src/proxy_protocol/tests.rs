use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

fn addrs(src: &str, dst: &str) -> Addresses {
    Addresses::of(src.parse::<SocketAddr>().unwrap(), dst.parse::<SocketAddr>().unwrap())
}

fn encoded(version: ProxyVersion, a: &Addresses) -> Vec<u8> {
    let mut out = Vec::new();
    encode(version, a, &mut out);
    out
}

#[test]
fn v1_matches_the_specification_text() {
    assert_eq!(
        encoded(ProxyVersion::V1, &addrs("192.0.2.1:56324", "198.51.100.7:443")),
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
    );
    assert_eq!(
        encoded(ProxyVersion::V1, &addrs("[2001:db8::1]:1000", "[2001:db8::2]:80")),
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n"
    );
    assert_eq!(encoded(ProxyVersion::V1, &Addresses::Unknown), b"PROXY UNKNOWN\r\n");
}

#[test]
fn v2_has_signature_command_family_and_length() {
    let bytes = encoded(ProxyVersion::V2, &addrs("192.0.2.1:56324", "198.51.100.7:443"));
    assert_eq!(&bytes[..12], &V2_SIGNATURE);
    assert_eq!(&bytes[12..16], &[0x21, 0x11, 0x00, 0x0c]);
    assert_eq!(&bytes[16..20], &[192, 0, 2, 1]);
    assert_eq!(&bytes[20..24], &[198, 51, 100, 7]);
    assert_eq!(&bytes[24..28], &[0xdc, 0x04, 0x01, 0xbb]);
    let v6 = encoded(ProxyVersion::V2, &addrs("[2001:db8::1]:1", "[2001:db8::2]:2"));
    assert_eq!(&v6[12..16], &[0x21, 0x21, 0x00, 0x24]);
    assert_eq!(v6.len(), 16 + 36);
}

#[test]
fn ipv4_mapped_sources_are_written_as_ipv4() {
    let a = addrs("[::ffff:203.0.113.9]:4000", "[::ffff:127.0.0.1]:8080");
    assert_eq!(a, addrs("203.0.113.9:4000", "127.0.0.1:8080"));
    assert_eq!(encoded(ProxyVersion::V1, &a), b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 8080\r\n");
}

#[test]
fn decoding_reports_need_more_and_invalid() {
    let full = encoded(ProxyVersion::V2, &addrs("192.0.2.1:1", "192.0.2.2:2"));
    for cut in 0..full.len() {
        assert_eq!(decode(&full[..cut]), Err(DecodeError::NeedMore), "prefix of {cut} bytes");
    }
    let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /";
    let decoded = decode(v1).unwrap();
    assert_eq!(decoded.len, v1.len() - 5);
    assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(DecodeError::Invalid("neither a v1 nor a v2 signature")));
    assert!(matches!(decode(&[b'P'; 200]), Err(DecodeError::Invalid(_))));
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend(std::iter::repeat_n(b'1', 120));
    assert!(matches!(decode(&long), Err(DecodeError::Invalid(_))));
    assert!(matches!(
        decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
        Err(DecodeError::Invalid("v1 bad port"))
    ));
    assert!(matches!(
        decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
        Err(DecodeError::Invalid("v1 bad port"))
    ));
}

fn arb_addresses() -> impl Strategy<Value = Addresses> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, sp, d, dp)| {
            Addresses::V4 {
                src: SocketAddrV4::new(Ipv4Addr::from(s), sp),
                dst: SocketAddrV4::new(Ipv4Addr::from(d), dp),
            }
        }),
        (any::<[u8; 16]>(), any::<u16>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, sp, d, dp)| {
            Addresses::V6 {
                src: SocketAddrV6::new(Ipv6Addr::from(s), sp, 0, 0),
                dst: SocketAddrV6::new(Ipv6Addr::from(d), dp, 0, 0),
            }
        }),
        Just(Addresses::Unknown),
    ]
}

proptest! {
    #[test]
    fn every_header_round_trips(a in arb_addresses(), v2 in any::<bool>(), tail in any::<Vec<u8>>()) {
        let version = if v2 { ProxyVersion::V2 } else { ProxyVersion::V1 };
        let mut bytes = encoded(version, &a);
        let header_len = bytes.len();
        prop_assert!(version == ProxyVersion::V2 || header_len <= V1_MAX_LEN);
        bytes.extend_from_slice(&tail);
        let decoded = decode(&bytes).unwrap();
        prop_assert_eq!(decoded, Decoded { version, addresses: a, len: header_len });
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in any::<Vec<u8>>()) {
        fuzz_logic(&data);
    }

    #[test]
    fn arbitrary_bytes_after_a_signature_never_panic(body in any::<Vec<u8>>()) {
        let mut data = V2_SIGNATURE.to_vec();
        data.extend_from_slice(&body);
        fuzz_logic(&data);
        let mut v1 = b"PROXY ".to_vec();
        v1.extend_from_slice(&body);
        fuzz_logic(&v1);
    }
}
