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
//! and the server layer says why in the request's [`BaggageReport`] extension.
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaggageReport {
    /// Keys accepted into the request's context.
    pub accepted: Vec<&'static str>,
    /// Entries dropped, with the reason.
    pub rejected: Vec<Rejected>,
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
        let mut header = String::new();
        let mut entries = 0;
        for (key, read, _) in &self.keys {
            let Some(value) = read(ctx) else { continue };
            let entry = format!("{key}={}", percent_encode(&value));
            let separator = usize::from(!header.is_empty());
            if entries == MAX_ENTRIES || header.len() + separator + entry.len() > MAX_BYTES {
                continue;
            }
            if separator == 1 {
                header.push(',');
            }
            header.push_str(&entry);
            entries += 1;
        }
        (!header.is_empty()).then_some(header)
    }

    /// `parent` with the values of the trusted entries of `header`, and what was done with
    /// each entry.
    pub fn decode(&self, parent: &Context, header: &str) -> (Context, BaggageReport) {
        let mut ctx = parent.clone();
        let mut report = BaggageReport::default();
        let reject = |report: &mut BaggageReport, key: &str, reason: String| {
            report.rejected.push(Rejected {
                key: key.chars().take(64).collect(),
                reason,
            })
        };
        if header.len() > MAX_BYTES {
            reject(
                &mut report,
                "",
                format!(
                    "the header is {} bytes, over the limit of {MAX_BYTES}",
                    header.len()
                ),
            );
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
                    reject(&mut report, key, reason);
                    continue;
                }
            };
            if entries > MAX_ENTRIES {
                reject(
                    &mut report,
                    key,
                    format!("over the limit of {MAX_ENTRIES} entries"),
                );
                continue;
            }
            let Some((name, _, write)) = self.keys.iter().find(|(name, _, _)| *name == key) else {
                reject(&mut report, key, "no trusted key of that name".into());
                continue;
            };
            if report.accepted.contains(name) {
                reject(
                    &mut report,
                    key,
                    "a repeated key (the first one stands)".into(),
                );
                continue;
            }
            match write(&ctx, &value) {
                Ok(with_value) => {
                    ctx = with_value;
                    report.accepted.push(name);
                }
                Err(reason) => reject(&mut report, key, format!("its value was refused: {reason}")),
            }
        }
        (ctx, report)
    }
}

/// Adds `ctx`'s values of `keys` to `headers`' `baggage`, after any entries already there
/// (what every client layer does).
pub(super) fn inject(keys: &BaggageKeys, ctx: &Context, headers: &mut http::HeaderMap) {
    let Some(entries) = keys.encode(ctx) else {
        return;
    };
    let header = match headers.get(BAGGAGE_NAME).map(http::HeaderValue::to_str) {
        Some(Ok(theirs)) if !theirs.is_empty() => format!("{theirs},{entries}"),
        _ => entries,
    };
    // Tokens and percent-encoded values: visible ASCII.
    if let Ok(value) = http::HeaderValue::from_str(&header) {
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
        Some(value) => Ok((key, value)),
        None => Err((
            key,
            "the value's percent-encoding is not valid UTF-8".into(),
        )),
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

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips_and_rejects_bad_escapes() {
        for value in ["plain", "a b,c;d\\e\"f", "100%", "ünïcødé ✓", ""] {
            assert_eq!(
                percent_decode(&percent_encode(value)).as_deref(),
                Some(value)
            );
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
        assert_eq!(percent_decode("%C3%BC"), Some("ü".into()));
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
