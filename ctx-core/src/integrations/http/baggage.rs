//! Request-scoped values across processes: the W3C `baggage` header.
//!
//! A value travels only if its key type opts in by implementing [`Baggage`], an explicit
//! string codec, and only to and from layers configured with it: a client layer
//! ([`PropagateDeadlineLayer::baggage`](super::PropagateDeadlineLayer::baggage)) sends the
//! keys it is given, a server layer ([`ContextLayer::trust_baggage`](super::ContextLayer::trust_baggage))
//! accepts the keys it trusts and nothing else. Incoming baggage is attacker-controlled
//! input: a server layer without `trust_baggage` ignores the header altogether.
//!
//! The W3C limits hold both ways: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes.
//! An entry that is malformed, unknown, undecodable or over a limit is dropped, never fatal,
//! and the server layer says why in the request's [`BaggageReport`] extension (which lists
//! at most [`MAX_ENTRIES`] of them, and counts the rest).
//!
//! A client layer that forwards a request's `baggage` (a gateway passing on its caller's)
//! and adds its own entries sends one header: every `baggage` header of the request,
//! combined as one list (W3C), minus the forwarded entries whose key the layer sends itself
//! (its own value wins: a receiver keeps the first of a repeated key, and a forwarded
//! `tenant=999` must not override the layer's `tenant=42`), then the layer's entries. When
//! the whole would exceed [`MAX_BYTES`] or [`MAX_ENTRIES`], forwarded entries are left out
//! until it fits: the layer's own always arrive.
//!
//! ```
//! use ctx_core::{Context, ContextKey};
//! use ctx_core::http::baggage::{Baggage, BaggageKeys};
//!
//! struct TenantId(u32);
//! impl ContextKey for TenantId {
//!     const NAME: &'static str = "TenantId";
//! }
//! impl Baggage for TenantId {
//!     const KEY: &'static str = "tenant";
//!     fn encode(&self) -> String {
//!         self.0.to_string()
//!     }
//!     fn decode(value: &str) -> Result<Self, String> {
//!         value.parse().map(TenantId).map_err(|e| format!("not a tenant id: {e}"))
//!     }
//! }
//!
//! let keys = BaggageKeys::new().key::<TenantId>();
//! let ctx = Context::background().with_value(TenantId(42));
//! let header = keys.encode(&ctx).unwrap();
//! assert_eq!(header, "tenant=42");
//!
//! let (received, report) = keys.decode(&Context::background(), "tenant=42,debug=1");
//! assert_eq!(received.value::<TenantId>().map(|t| t.0), Some(42));
//! assert_eq!(report.rejected[0].reason, "no trusted key of that name");
//! ```

use std::fmt;

use crate::{Context, ContextKey};

/// The header's name.
pub const BAGGAGE: &str = "baggage";

/// The same, ready to look up or insert (see `GRPC_TIMEOUT_NAME`).
pub(crate) const BAGGAGE_NAME: http::HeaderName = http::HeaderName::from_static(BAGGAGE);
/// At most this many entries are sent or accepted (W3C).
pub const MAX_ENTRIES: usize = 64;
/// At most this many bytes of baggage are sent or accepted (W3C).
pub const MAX_BYTES: usize = 8192;

/// A context key whose values may travel in the `baggage` header: the codec is explicit,
/// so nothing crosses a process boundary by accident.
pub trait Baggage: ContextKey + Sized {
    /// The entry's key in the header: an HTTP token (letters, digits, ``!#$%&'*+-.^_`|~``).
    const KEY: &'static str;

    /// The value as text (percent-encoding is done for you).
    fn encode(&self) -> String;

    /// The value from text (already percent-decoded); `Err` says why it is not one.
    ///
    /// The text is attacker-controlled when it comes from a client: percent-decoding can
    /// produce any UTF-8, control characters (`%0A`, `%00`) included. Check it as you would
    /// any input before it reaches a log line, a file name or a query.
    fn decode(value: &str) -> Result<Self, String>;
}

/// An entry a server layer dropped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The entry's key, as received (empty if it had none).
    pub key: String,
    /// Why it was dropped.
    pub reason: String,
}

/// What a server layer did with a request's `baggage` header; in the request's extensions
/// when it had one.
///
/// Its size is bounded whatever the header holds: at most [`MAX_ENTRIES`] accepted keys and
/// [`MAX_ENTRIES`] rejected entries (each key cut to 64 characters); further rejections are
/// only counted, in [`more_rejected`](BaggageReport::more_rejected).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaggageReport {
    /// Keys accepted into the request's context.
    pub accepted: Vec<&'static str>,
    /// Entries dropped, with the reason: the first [`MAX_ENTRIES`] of them.
    pub rejected: Vec<Rejected>,
    /// How many more entries were dropped than `rejected` lists.
    pub more_rejected: usize,
}

impl BaggageReport {
    /// The report for a header that is not visible ASCII.
    pub(super) fn not_text() -> BaggageReport {
        BaggageReport {
            accepted: Vec::new(),
            rejected: vec![Rejected {
                key: String::new(),
                reason: "the header is not visible ASCII".into(),
            }],
            more_rejected: 0,
        }
    }

    /// Notes that the entry `key` was dropped for `reason`: listed while the list has room,
    /// counted after.
    fn reject(&mut self, key: &str, reason: impl FnOnce() -> String) {
        if self.rejected.len() < MAX_ENTRIES {
            self.rejected.push(Rejected {
                key: key.chars().take(64).collect(),
                reason: reason(),
            });
        } else {
            self.more_rejected += 1;
        }
    }
}

type Read = fn(&Context) -> Option<String>;
type Write = fn(&Context, &str) -> Result<Context, String>;

/// The keys a layer sends or trusts.
#[derive(Clone, Default)]
pub struct BaggageKeys {
    keys: Vec<(&'static str, Read, Write)>,
}

impl fmt::Debug for BaggageKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(key, _, _)| key))
            .finish()
    }
}

impl BaggageKeys {
    /// No keys.
    pub fn new() -> BaggageKeys {
        BaggageKeys::default()
    }

    /// Adds `K`. A `K::KEY` that is not an HTTP token is a compile error.
    pub fn key<K: Baggage>(mut self) -> BaggageKeys {
        const {
            assert!(
                is_token(K::KEY),
                "a `Baggage::KEY` must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~"
            )
        };
        fn read<K: Baggage>(ctx: &Context) -> Option<String> {
            ctx.value::<K>().map(K::encode)
        }
        fn write<K: Baggage>(ctx: &Context, value: &str) -> Result<Context, String> {
            K::decode(value).map(|value| ctx.with_value(value))
        }
        self.keys.retain(|(key, _, _)| *key != K::KEY);
        self.keys.push((K::KEY, read::<K>, write::<K>));
        self
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The header value for `ctx`'s values of these keys, `None` if it has none. Entries
    /// past [`MAX_ENTRIES`] or [`MAX_BYTES`] are left out.
    pub fn encode(&self, ctx: &Context) -> Option<String> {
        let mut list = List::default();
        for (key, read, _) in &self.keys {
            if let Some(value) = read(ctx) {
                list.push(&format!("{key}={}", percent_encode(&value)));
            }
        }
        (!list.header.is_empty()).then_some(list.header)
    }

    /// The decode of every `baggage` header in `headers`, combined as one list (W3C allows
    /// several); `None` when there is none. A header that is not visible ASCII is reported
    /// and skipped. This is what the server layers do with a request's headers.
    ///
    /// ```
    /// # use ctx_core::{Context, ContextKey};
    /// # use ctx_core::http::baggage::{Baggage, BaggageKeys};
    /// # struct TenantId(u32);
    /// # impl ContextKey for TenantId { const NAME: &'static str = "TenantId"; }
    /// # impl Baggage for TenantId {
    /// #     const KEY: &'static str = "tenant";
    /// #     fn encode(&self) -> String { self.0.to_string() }
    /// #     fn decode(value: &str) -> Result<Self, String> { value.parse().map(TenantId).map_err(|e| e.to_string()) }
    /// # }
    /// let mut headers = http::HeaderMap::new();
    /// headers.append("baggage", "debug=1".parse().unwrap());
    /// headers.append("baggage", "tenant=42".parse().unwrap());
    /// let keys = BaggageKeys::new().key::<TenantId>();
    /// let (ctx, report) = keys.decode_headers(&Context::background(), &headers).unwrap();
    /// assert_eq!(ctx.value::<TenantId>().map(|t| t.0), Some(42));
    /// assert_eq!(report.accepted, ["tenant"]);
    /// ```
    pub fn decode_headers(
        &self,
        parent: &Context,
        headers: &http::HeaderMap,
    ) -> Option<(Context, BaggageReport)> {
        let mut values = headers.get_all(BAGGAGE_NAME).iter().peekable();
        values.peek()?;
        let mut combined = String::new();
        let mut not_text = false;
        for value in values {
            match value.to_str() {
                Ok(text) => {
                    if !combined.is_empty() {
                        combined.push(',');
                    }
                    combined.push_str(text);
                }
                Err(_) => not_text = true,
            }
        }
        let (ctx, mut report) = self.decode(parent, &combined);
        if not_text {
            let not_text = BaggageReport::not_text().rejected.remove(0);
            report.reject(&not_text.key, || not_text.reason);
        }
        Some((ctx, report))
    }

    /// `parent` with the values of the trusted entries of `header`, and what was done with
    /// each entry.
    pub fn decode(&self, parent: &Context, header: &str) -> (Context, BaggageReport) {
        let mut ctx = parent.clone();
        let mut report = BaggageReport::default();
        if header.len() > MAX_BYTES {
            report.reject("", || {
                format!(
                    "the header is {} bytes, over the limit of {MAX_BYTES}",
                    header.len()
                )
            });
            return (ctx, report);
        }
        let mut entries = 0;
        for member in header.split(',') {
            let member = member.trim_matches(is_ows);
            if member.is_empty() {
                continue; // empty list members are allowed and ignored
            }
            entries += 1;
            let (key, value) = match parse_member(member) {
                Ok(parsed) => parsed,
                Err((key, reason)) => {
                    report.reject(key, || reason);
                    continue;
                }
            };
            if entries > MAX_ENTRIES {
                report.reject(key, || format!("over the limit of {MAX_ENTRIES} entries"));
                continue;
            }
            let Some((name, _, write)) = self.keys.iter().find(|(name, _, _)| *name == key) else {
                report.reject(key, || "no trusted key of that name".into());
                continue;
            };
            if report.accepted.contains(name) {
                report.reject(key, || "a repeated key (the first one stands)".into());
                continue;
            }
            match write(&ctx, &value) {
                Ok(with_value) => {
                    ctx = with_value;
                    report.accepted.push(name);
                }
                Err(reason) => report.reject(key, || format!("its value was refused: {reason}")),
            }
        }
        (ctx, report)
    }
}

/// A `baggage` list being built within the W3C limits.
#[derive(Default)]
struct List {
    header: String,
    entries: usize,
}

impl List {
    /// Appends `entry` if it fits in [`MAX_ENTRIES`] and [`MAX_BYTES`] with `reserved`
    /// bytes and entries kept free; whether it did.
    fn push_within(&mut self, entry: &str, reserved: (usize, usize)) -> bool {
        let separator = usize::from(!self.header.is_empty());
        let (bytes, entries) = reserved;
        if self.entries + 1 + entries > MAX_ENTRIES
            || self.header.len() + separator + entry.len() + bytes > MAX_BYTES
        {
            return false;
        }
        if separator == 1 {
            self.header.push(',');
        }
        self.header.push_str(entry);
        self.entries += 1;
        true
    }

    fn push(&mut self, entry: &str) -> bool {
        self.push_within(entry, (0, 0))
    }
}

/// The key of a list member as sent (`key OWS "=" ...`), trimmed.
fn member_key(member: &str) -> &str {
    let key = member.split(['=', ';']).next().unwrap_or("");
    key.trim_matches(is_ows)
}

/// Sets `headers`' `baggage` to the request's own entries (every `baggage` header, combined)
/// followed by `ctx`'s values of `keys`, as every client layer does: a forwarded entry with
/// a key of ours is dropped (ours wins), and forwarded entries are left out, from the last,
/// until the whole fits in [`MAX_BYTES`] and [`MAX_ENTRIES`]: ours always fit, since
/// [`BaggageKeys::encode`] keeps within both.
pub(super) fn inject(keys: &BaggageKeys, ctx: &Context, headers: &mut http::HeaderMap) {
    let Some(ours) = keys.encode(ctx) else {
        return;
    };
    let own_keys: Vec<&str> = ours.split(',').map(member_key).collect();
    // What ours take, with the comma that joins them to the forwarded entries.
    let reserved = (ours.len() + 1, own_keys.len());
    let mut list = List::default();
    for value in headers.get_all(BAGGAGE_NAME) {
        // A header that is not visible ASCII cannot be forwarded as part of a list.
        let Ok(text) = value.to_str() else { continue };
        for member in text.split(',') {
            let member = member.trim_matches(is_ows);
            if member.is_empty() || own_keys.contains(&member_key(member)) {
                continue;
            }
            // Entries keep their order; one that does not fit is left out, a shorter
            // later one may still fit.
            list.push_within(member, reserved);
        }
    }
    if list.header.is_empty() {
        list.header = ours;
    } else {
        list.header.push(',');
        list.header.push_str(&ours);
    }
    // Tokens, percent-encoded values and forwarded visible ASCII: a valid header value.
    if let Ok(value) = http::HeaderValue::from_str(&list.header) {
        headers.insert(BAGGAGE_NAME, value);
    }
}

/// Splits `key OWS "=" OWS value *( OWS ";" OWS property )`; properties are ignored.
fn parse_member(member: &str) -> Result<(&str, String), (&str, String)> {
    let value_and_properties = member.split_once('=');
    let Some((key, rest)) = value_and_properties else {
        return Err((member, "no `=` between key and value".into()));
    };
    let key = key.trim_end_matches(is_ows);
    if !is_token(key) {
        return Err((key, "the key is not an HTTP token".into()));
    }
    let value = rest.split(';').next().unwrap_or("").trim_matches(is_ows);
    if let Some(bad) = value.chars().find(|c| !is_baggage_octet(*c) && *c != '%') {
        return Err((
            key,
            format!("the value has a character not allowed unencoded: {bad:?}"),
        ));
    }
    match percent_decode(value) {
        Ok(value) => Ok((key, value)),
        Err(reason) => Err((key, reason)),
    }
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

const fn is_token(key: &str) -> bool {
    let bytes = key.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let special = matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        );
        if !(b.is_ascii_alphanumeric() || special) {
            return false;
        }
        i += 1;
    }
    !bytes.is_empty()
}

/// W3C: `%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
fn is_baggage_octet(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x2B' | '\x2D'..='\x3A' | '\x3C'..='\x5B' | '\x5D'..='\x7E')
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        let c = byte as char;
        if byte.is_ascii() && is_baggage_octet(c) && c != '%' {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes: exactly `%` and two hex digits (either case); anything else after
/// a `%` is an error that shows the escape, as is a result that is not UTF-8. The result
/// may hold any character, control characters included.
fn percent_decode(value: &str) -> Result<String, String> {
    fn hex(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let digit = |at: usize| bytes.get(at).copied().and_then(hex);
        let (Some(high), Some(low)) = (digit(i + 1), digit(i + 2)) else {
            // Show the escape as written: `%` and what follows, up to two characters.
            let shown: String = value[i..].chars().take(3).collect();
            return Err(format!(
                "'{shown}' is not a percent-escape: '%' must be followed by two hex digits"
            ));
        };
        out.push(high << 4 | low);
        i += 3;
    }
    String::from_utf8(out)
        .map_err(|_| "the value's percent-encoding is not valid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips_and_rejects_bad_escapes() {
        for value in ["plain", "a b,c;d\\e\"f", "100%", "ünïcødé ✓", "", "\n\0"] {
            assert_eq!(percent_decode(&percent_encode(value)).as_deref(), Ok(value));
        }
        let escape = |text: &str| {
            format!("'{text}' is not a percent-escape: '%' must be followed by two hex digits")
        };
        assert_eq!(percent_decode("%4"), Err(escape("%4")));
        assert_eq!(percent_decode("a%"), Err(escape("%")));
        assert_eq!(percent_decode("%zz"), Err(escape("%zz")));
        assert_eq!(percent_decode("%+A"), Err(escape("%+A")));
        assert_eq!(percent_decode("%-1"), Err(escape("%-1")));
        assert_eq!(percent_decode("% A"), Err(escape("% A")));
        assert!(
            percent_decode("%FF")
                .unwrap_err()
                .contains("not valid UTF-8")
        );
        assert_eq!(percent_decode("%C3%bc"), Ok("ü".into()));
        assert_eq!(percent_decode("%0A"), Ok("\n".into()));
    }

    #[test]
    fn members_parse_with_whitespace_and_properties() {
        assert_eq!(parse_member("k=v"), Ok(("k", "v".into())));
        assert_eq!(parse_member("k \t= v ;prop=1;flag"), Ok(("k", "v".into())));
        assert!(parse_member("no-equals").is_err());
        assert!(parse_member("bad key=v").is_err());
        assert!(parse_member("k=a\"b").is_err());
    }
}
