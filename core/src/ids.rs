//! Identifier newtypes, and the rules every name the API accepts follows. Ids never cross
//! a port as bare integers or strings.
//!
//! Invariant: no accepted name holds a character that renders as nothing or reorders the
//! text around it ([`is_hidden_char`]), so two names that look alike are alike; and an
//! error message quotes at most [`QUOTE_MAX_CHARS`] characters of what it refuses, escaped.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rule's id: an integer taken from the store's sequence, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(u64);

impl RuleId {
    /// Wraps a raw id (from the store sequence or the wire).
    pub const fn new(raw: u64) -> Self {
        RuleId(raw)
    }
    /// The raw integer, for keys and wire messages.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client's stable opaque id: `cl_` followed by 20 lowercase hex digits.
///
/// Unlike the client's name, the id never changes, so references survive renames.
///
/// ```
/// use portunus_core::ids::ClientId;
///
/// let id = ClientId::from_random([0xab; 10]);
/// assert_eq!(id.as_str(), "cl_abababababababababab");
/// assert_eq!(ClientId::parse(id.as_str()), Some(id));
/// // Anything else is not an id (it may still be a client name).
/// assert_eq!(ClientId::parse("edge-01"), None);
/// assert_eq!(ClientId::parse("cl_ABABABABABABABABABAB"), None, "uppercase hex");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

/// The prefix of every client id; client names may not start with it.
pub const CLIENT_ID_PREFIX: &str = "cl_";

impl ClientId {
    /// Builds an id from 10 random bytes.
    pub fn from_random(bytes: [u8; 10]) -> Self {
        ClientId(format!("{CLIENT_ID_PREFIX}{}", crate::secret::hex(&bytes)))
    }
    /// Parses an id; `None` unless it has the id shape.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(CLIENT_ID_PREFIX)?;
        (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| ClientId(s.to_owned()))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClientId::parse(&s).ok_or_else(|| format!("not a client id: {s:?}"))
    }
}

impl From<ClientId> for String {
    fn from(id: ClientId) -> String {
        id.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A principal's id: a user, or a built-in principal such as `_operator`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// The built-in principal behind the server host's operator token.
    pub const OPERATOR: &'static str = "_operator";

    /// The `_operator` principal.
    pub fn operator() -> Self {
        UserId(Self::OPERATOR.to_owned())
    }
    /// Wraps a user id that was already validated (or read back from the store).
    pub fn new(raw: impl Into<String>) -> Self {
        UserId(raw.into())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl UserId {
    /// The built-in superadmin that `bootstrap-superadmin` creates for automation.
    pub const BOOTSTRAP_SUPERADMIN: &'static str = "_superadmin";

    /// Validates a user id chosen by an operator: 1 to 32 of `[a-z0-9._-]`, starting with a
    /// letter or a digit. Ids starting with `_` are reserved for built-in principals.
    ///
    /// ```
    /// use portunus_core::{ErrorCode, ids::UserId};
    ///
    /// assert_eq!(UserId::parse("alice.ops")?.as_str(), "alice.ops");
    /// assert_eq!(UserId::parse("_superadmin").unwrap_err().code, ErrorCode::InvalidName);
    /// assert_eq!(UserId::parse("Alice").unwrap_err().code, ErrorCode::InvalidName);
    /// # Ok::<(), portunus_core::Failure>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, crate::Failure> {
        let bad = |why: &str| {
            Err(crate::Failure::new(crate::ErrorCode::InvalidName, format!("user id {} {why}", quoted(s))))
        };
        if s.is_empty() || s.len() > 32 {
            return bad("must be 1 to 32 characters long");
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return bad("may contain only a-z, 0-9, '.', '_' and '-'");
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("must start with a letter or a digit (ids starting with '_' are built-in)");
        }
        Ok(UserId(s.to_owned()))
    }

    /// True for built-in principals (`_operator`, `_superadmin`).
    pub fn is_builtin(&self) -> bool {
        self.0.starts_with('_')
    }
}

macro_rules! random_ids {
    ($( $(#[$doc:meta])* $name:ident => $prefix:literal, $n_bytes:literal; )+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Builds an id from random bytes.
            pub fn from_random(bytes: [u8; $n_bytes]) -> Self {
                $name(format!("{}{}", $prefix, crate::secret::hex(&bytes)))
            }
            /// Parses an id; `None` unless it has this kind's shape.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                (rest.len() == 2 * $n_bytes
                    && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .then(|| $name(s.to_owned()))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::parse(&s).ok_or_else(|| format!("not a {} id: {s:?}", stringify!($name)))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}

random_ids! {
    /// A grant's id: `gr_` and 16 hex digits.
    GrantId => "gr_", 8;
    /// A user API token's id: `tk_` and 16 hex digits. The token text starts with it.
    TokenId => "tk_", 8;
    /// A Web session's id: `ss_` and 32 hex digits. The cookie value starts with it.
    SessionId => "ss_", 16;
}

/// A client name: 1..=63 of `[a-z0-9._-]`, starting with a letter or digit, never shaped
/// like a client id, so an API path segment is unambiguously one or the other.
///
/// ```
/// use portunus_core::{ErrorCode, ids::ClientName};
///
/// let name = ClientName::parse("edge-01.fra")?;
/// assert_eq!(name.to_string(), "edge-01.fra");
/// for bad in ["", "Edge", "-edge", "cl_edge", "edge\u{200b}01"] {
///     let refused = ClientName::parse(bad).unwrap_err();
///     assert_eq!(refused.code, ErrorCode::InvalidName, "{bad:?}");
///     assert_eq!(refused.code.exit_status(), 2);
/// }
/// # Ok::<(), portunus_core::Failure>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientName(String);

impl ClientName {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<Self, crate::Failure> {
        let bad = |why: &str| {
            Err(crate::Failure::new(
                crate::ErrorCode::InvalidName,
                format!("client name {} {why}", quoted(s)),
            ))
        };
        if s.is_empty() || s.len() > 63 {
            return bad("must be 1 to 63 characters long");
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return bad("may contain only a-z, 0-9, '.', '_' and '-'");
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("must start with a letter or a digit");
        }
        if s.starts_with(CLIENT_ID_PREFIX) {
            return bad("must not start with \"cl_\" (reserved for client ids)");
        }
        Ok(ClientName(s.to_owned()))
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientName {
    type Error = crate::Failure;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClientName::parse(&s)
    }
}

impl From<ClientName> for String {
    fn from(n: ClientName) -> String {
        n.0
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most characters of a refused value that an error message quotes.
pub const QUOTE_MAX_CHARS: usize = 64;

/// `text` quoted for an error message: its first [`QUOTE_MAX_CHARS`] characters, escaped as
/// Rust's `Debug` escapes them (controls, bidi and other invisible characters show as
/// `\u{…}`), and `…` after the closing quote when the text was cut.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// True for characters no name may hold: controls (general category Cc), the line and
/// paragraph separators, and the invisible format characters (Cf: bidi embeddings,
/// overrides and isolates, zero-width spaces and joiners, the byte order mark, tags…). They
/// render as nothing or reorder the text around them, so a name holding one can pass for
/// another.
pub fn is_hidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format_char(c)
}

/// Unicode general category Cf (Format), as of Unicode 15.1.
pub fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Checks a free-text label (a rule's or an API token's name, `what`): 1 to 64 bytes with
/// no [hidden character](is_hidden_char). Refused with `validation.invalid_name`.
pub fn check_label(what: &str, text: &str) -> Result<(), crate::Failure> {
    let why = if text.is_empty() || text.len() > 64 {
        "must be 1 to 64 bytes long"
    } else if text.chars().any(is_hidden_char) {
        "must not contain control, bidi or other invisible format characters"
    } else {
        return Ok(());
    };
    Err(crate::Failure::new(crate::ErrorCode::InvalidName, format!("{what} {} {why}", quoted(text))))
}

/// Wall-clock time as milliseconds since the Unix epoch. Core never reads the clock:
/// callers pass `now` in (see [`crate::ports::Clock`]).
///
/// ```
/// use portunus_core::ids::Timestamp;
///
/// let t = Timestamp::from_millis(1_764_100_079_123);
/// assert_eq!(t.to_rfc3339(), "2025-11-25T19:47:59.123Z");
/// assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
/// assert_eq!(t.plus(std::time::Duration::from_secs(1)).as_millis(), 1_764_100_080_123);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }
    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
    /// RFC 3339 UTC with millisecond precision, e.g. `2026-11-25T21:07:59.123Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        if !(0..=9999).contains(&y) {
            return format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                self.0 % 1000
            );
        }
        // The common case without the formatting machinery: listings print thousands of these.
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, y as u64);
        put(5, 2, u64::from(m));
        put(8, 2, u64::from(d));
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 3, self.0 % 1000);
        out.iter().map(|&b| char::from(b)).collect()
    }
    /// Parses RFC 3339 UTC as [`Timestamp::to_rfc3339`] writes it: `YYYY-MM-DDTHH:MM:SS`,
    /// optionally `.f` to `.fff…` (milliseconds kept), then `Z`. Dates before 1970 and other
    /// offsets are refused (`None`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let rest = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
        let (date, time) = rest.split_once(['T', 't'])?;
        let number = |s: &str, len: usize| -> Option<u64> {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
        };
        let mut d = date.split('-');
        let (year, month, day) = (number(d.next()?, 4)?, number(d.next()?, 2)?, number(d.next()?, 2)?);
        if d.next().is_some() {
            return None;
        }
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                (hms, f)
            }
            Some(_) => return None,
            None => (time, ""),
        };
        let mut t = hms.split(':');
        let (hour, minute, second) = (number(t.next()?, 2)?, number(t.next()?, 2)?, number(t.next()?, 2)?);
        if t.next().is_some()
            || year < 1970
            || !(1..=12).contains(&month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if day == 0 || day > month_days[(month - 1) as usize] {
            return None;
        }
        let days = days_from_civil(year as i64, month as u32, day as u32);
        let millis = fraction
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
        secs.checked_mul(1000)?.checked_add(millis).map(Timestamp)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A proleptic Gregorian (year, month, day) to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(Timestamp::from_millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(951_782_400_123).to_rfc3339(), "2000-02-29T00:00:00.123Z");
        assert_eq!(Timestamp::from_millis(1_795_640_879_000).to_rfc3339(), "2026-11-25T21:07:59.000Z");
    }

    #[test]
    fn rfc3339_parses_what_it_prints_and_refuses_the_rest() {
        for ms in [0, 951_782_400_123, 1_795_640_879_000, 4_102_444_799_999] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-25T21:07:59Z"),
            Some(Timestamp::from_millis(1_795_640_879_000))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-25T21:07:59.5Z"),
            Some(Timestamp::from_millis(1_795_640_879_500))
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T21:07:59",
            "2026-02-30T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T21:07:59+01:00",
            "2026-1-25T21:07:59Z",
            "2026-11-25T21:07:59.Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_round_trips(ms in 0u64..253_402_300_799_999) {
            let t = Timestamp::from_millis(ms);
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }
    }

    #[test]
    fn random_ids_have_one_shape() {
        let id = GrantId::from_random([0x1f; 8]);
        assert_eq!(GrantId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(TokenId::parse(id.as_str()), None);
        assert_eq!(SessionId::parse("ss_00"), None);
    }

    #[test]
    fn user_ids_are_validated_and_underscore_is_reserved() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b-c_1").is_ok());
        for bad in ["", "_operator", "Alice", "a b", &"x".repeat(33)] {
            assert_eq!(UserId::parse(bad).unwrap_err().code, crate::ErrorCode::InvalidName, "{bad}");
        }
        assert!(UserId::operator().is_builtin());
    }

    /// Every Cf character of [`is_format_char`]'s table, plus a control and the separators.
    fn hidden_chars() -> Vec<char> {
        let mut hidden: Vec<char> =
            (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|c| is_format_char(*c)).collect();
        hidden.extend(['\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}']);
        hidden
    }

    /// Refuses `text` in every kind of name: client names, user ids, rule and token names.
    fn refusals(text: &str) -> Vec<crate::Failure> {
        vec![
            ClientName::parse(text).unwrap_err(),
            UserId::parse(text).unwrap_err(),
            check_label("rule name", text).unwrap_err(),
            check_label("token name", text).unwrap_err(),
        ]
    }

    #[test]
    fn the_format_table_holds_the_bidi_controls_and_invisible_characters() {
        let table = hidden_chars();
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}').chain('\u{200B}'..='\u{200F}') {
            assert!(is_format_char(c), "{c:?}");
        }
        for c in ['\u{FEFF}', '\u{AD}', '\u{2060}', '\u{E0041}', '\u{1343F}'] {
            assert!(is_format_char(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', '–', '\u{3000}', '\u{2070}', '\u{202F}', '\u{200A}', '\u{2065}'] {
            assert!(!is_hidden_char(c), "{c:?}");
        }
        assert_eq!(table.len(), 170 + 6, "Cf holds 170 characters in Unicode 15.1");
    }

    #[test]
    fn labels_take_visible_text_and_refuse_hidden_characters() {
        for good in ["web", "Web – café", "ci token #2", "日本語", &"x".repeat(64)] {
            assert_eq!(check_label("rule name", good), Ok(()), "{good}");
        }
        let refused = check_label("rule name", "admin\u{202E}txt.exe").unwrap_err();
        assert_eq!(refused.code, crate::ErrorCode::InvalidName);
        assert!(refused.message.contains(r#""admin\u{202e}txt.exe""#), "{}", refused.message);
        for bad in ["", &"x".repeat(65), &"é".repeat(33)] {
            assert_eq!(check_label("token name", bad).unwrap_err().code, crate::ErrorCode::InvalidName);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_hidden_character_anywhere_is_refused_in_every_name(
            head in "[a-z][a-z0-9]{0,12}",
            hidden in proptest::sample::select(hidden_chars()),
            tail in "[a-z0-9]{0,12}",
        ) {
            let text = format!("{head}{hidden}{tail}");
            for refusal in refusals(&text) {
                proptest::prop_assert_eq!(refusal.code, crate::ErrorCode::InvalidName);
                proptest::prop_assert!(!refusal.message.contains(hidden), "{:?}", refusal.message);
            }
        }

        #[test]
        fn a_refusal_quotes_at_most_the_first_64_characters(
            head in "[a-zé\u{202E}\u{200B} ]{64}",
            tail in "Z{1,200}",
        ) {
            let text = format!("{head}{tail}");
            for refusal in refusals(&text) {
                let quote = format!("{head:?}…");
                proptest::prop_assert!(refusal.message.contains(&quote), "{:?}", refusal.message);
                proptest::prop_assert!(!refusal.message.contains('Z'), "{:?}", refusal.message);
            }
        }
    }

    #[test]
    fn client_ids_have_one_shape() {
        let id = ClientId::from_random([0xab; 10]);
        assert_eq!(ClientId::parse(id.as_str()), Some(id));
        assert_eq!(ClientId::parse("cl_xyz"), None);
        assert!(ClientName::parse("cl_0123456789abcdef0123").is_err());
    }
}
