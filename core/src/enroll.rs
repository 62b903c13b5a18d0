//! The enrollment URI (`portunus://HOST:PORT/enroll?pin=sha256:HEX&code=CODE`) and the
//! client bundle written by a successful redeem.
//!
//! Invariant: parsers refuse anything ambiguous with a stable code and never panic (fuzzed).

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::ClientId;
use crate::secret::Secret;

/// A parsed enrollment URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollUri {
    /// `host:port` of the control listener.
    pub endpoint: String,
    /// Lowercase hex SHA-256 of the server certificate (DER).
    pub pin_sha256: String,
    /// The one-time code.
    pub code: Secret,
}

const SCHEME: &str = "portunus://";

impl EnrollUri {
    /// Parses the URI printed by `enroll-client`.
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let bad = |why: &str| Failure::new(ErrorCode::EnrollUriInvalid, format!("enrollment URI: {why}"));
        let text = text.trim();
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| bad("must start with portunus://"))?;
        let (endpoint, rest) = rest.split_once("/enroll?").ok_or_else(|| bad("missing /enroll?"))?;
        if endpoint.is_empty() || !endpoint.contains(':') || endpoint.contains('/') {
            return Err(bad("missing HOST:PORT"));
        }
        let port_ok = endpoint
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok {
            return Err(bad("HOST:PORT has no valid port"));
        }
        let (mut pin, mut code) = (None, None);
        for pair in rest.split('&') {
            match pair.split_once('=') {
                Some(("pin", v)) if pin.is_none() => pin = Some(v),
                Some(("code", v)) if code.is_none() => code = Some(v),
                _ => return Err(bad("unexpected or repeated query parameter")),
            }
        }
        let pin = pin
            .and_then(|p| p.strip_prefix("sha256:"))
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("pin must be sha256:<64 hex digits>"))?;
        let code = code
            .filter(|c| (16..=128).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| bad("code must be 16-128 letters or digits"))?;
        Ok(EnrollUri {
            endpoint: endpoint.to_owned(),
            pin_sha256: pin.to_ascii_lowercase(),
            code: Secret::new(code),
        })
    }

    /// Formats the URI. Contains the plaintext code: print it only to the operator.
    pub fn render(&self) -> String {
        format!("{SCHEME}{}/enroll?pin=sha256:{}&code={}", self.endpoint, self.pin_sha256, self.code.expose())
    }
}

/// What a client needs to connect: written by `portunus-client enroll`, mode 0600.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// `host:port` of the server's control listener.
    pub server_endpoint: String,
    /// Pinned server certificate SHA-256, lowercase hex.
    pub server_cert_sha256: String,
    /// Stable client id.
    pub client_id: ClientId,
    /// Client name at enrollment time.
    pub client_name: String,
    /// Bearer token.
    pub token: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("server_endpoint", &self.server_endpoint)
            .field("client_id", &self.client_id)
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Parses and checks a bundle file's text.
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let bundle: Bundle = serde_json::from_str(text)
            .map_err(|err| Failure::new(ErrorCode::InvalidBundle, format!("bundle: {err}")))?;
        let pin_ok = bundle.server_cert_sha256.len() == 64
            && bundle.server_cert_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !pin_ok {
            return Err(Failure::new(
                ErrorCode::InvalidBundle,
                "bundle: server_cert_sha256 must be 64 hex digits",
            ));
        }
        if bundle.token.is_empty() || !bundle.server_endpoint.contains(':') {
            return Err(Failure::new(
                ErrorCode::InvalidBundle,
                "bundle: token and server_endpoint are required",
            ));
        }
        Ok(bundle)
    }

    /// The bundle as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bundle fields always serialise")
    }
}

/// A client bearer token: `<client id>.<64 hex>`, so the server finds the client without an
/// index over token hashes.
pub fn split_token(token: &str) -> Option<(ClientId, &str)> {
    let (id, secret) = token.split_once('.')?;
    Some((ClientId::parse(id)?, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PIN: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

    #[test]
    fn uri_round_trips() {
        let text = format!("portunus://127.0.0.1:7443/enroll?pin=sha256:{PIN}&code=0123456789abcdef0123");
        let uri = EnrollUri::parse(&text).unwrap();
        assert_eq!(uri.endpoint, "127.0.0.1:7443");
        assert_eq!(uri.render(), text);
    }

    #[test]
    fn malformed_uris_get_enroll_uri_invalid() {
        for text in [
            "",
            "http://h:1/enroll?pin=sha256:x&code=y",
            &format!("portunus://h/enroll?pin=sha256:{PIN}&code=0123456789abcdef"),
            &format!("portunus://h:0/enroll?pin=sha256:{PIN}&code=0123456789abcdef"),
            &format!("portunus://h:1/enroll?pin=md5:{PIN}&code=0123456789abcdef"),
            &format!("portunus://h:1/enroll?pin=sha256:{PIN}&code=short"),
            &format!("portunus://h:1/enroll?pin=sha256:{PIN}&code=0123456789abcdef&code=0123456789abcdef"),
            "portunus://h:1/enroll?pin=sha256:abc&code=0123456789abcdef",
        ] {
            assert_eq!(EnrollUri::parse(text).unwrap_err().code, ErrorCode::EnrollUriInvalid, "{text}");
        }
    }

    #[test]
    fn bundle_debug_hides_the_token() {
        let b = Bundle {
            server_endpoint: "h:1".into(),
            server_cert_sha256: PIN.into(),
            client_id: ClientId::from_random([1; 10]),
            client_name: "edge-01".into(),
            token: "supersecrettoken".into(),
        };
        assert!(!format!("{b:?}").contains("supersecret"));
        assert_eq!(Bundle::parse(&b.to_json()).unwrap(), b);
        assert_eq!(Bundle::parse("{}").unwrap_err().code, ErrorCode::InvalidBundle);
    }

    proptest! {
        #[test]
        fn uri_parser_never_panics(text in "\\PC{0,200}") {
            let _ = EnrollUri::parse(&text);
        }
    }
}
