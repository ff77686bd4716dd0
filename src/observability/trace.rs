//! W3C Trace Context (level 1) through the gateway. [`TraceLayer`] reads the
//! caller's `traceparent` and `tracestate`, gives the request a span id of
//! the gateway's own and leaves a [`TraceContext`] in the request's
//! extensions. Every call the gateway makes to a host for the request
//! carries `traceparent: 00-<trace id>-<gateway span id>-<flags>` from it
//! ([`TraceContext::apply`]), so the gateway's span is the parent of what
//! the host records; the access log and the OTLP export (`super::otlp`) name
//! the same ids.
//!
//! A caller's `traceparent` is taken only in the exact form version 00
//! defines: 55 bytes, lowercase hex, neither id all zeros, sent once. Any
//! other (another version, a second field line, uppercase, spaces) starts a
//! new trace, as the spec asks of a `traceparent` that cannot be parsed; its
//! bytes never reach a host. `tracestate` is passed on unchanged when the
//! `traceparent` was taken and it is within the spec's limits (32 members,
//! 512 bytes, well-formed members); otherwise it is dropped.
//!
//! Parsed here rather than with opentelemetry's `TraceContextPropagator`:
//! that one trims spaces, accepts ids of any length (it reads them with
//! `u128::from_str_radix`, so also a `+` sign) and one-digit flags, rebuilds
//! `tracestate` instead of passing it on, and allocates a `Context` per
//! request. This parser allocates nothing.

use std::task::{Context, Poll};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tower::{Layer, Service};

/// The W3C `traceparent` field.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The W3C `tracestate` field.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version 00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;
/// Most `tracestate` list members passed on (the spec's limit).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `tracestate` passed on, in bytes (the spec's guidance).
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;
/// The flags level 1 and 2 define (sampled, random trace id); the rest are
/// reserved and set to zero, as the spec asks.
const KNOWN_FLAGS: u8 = 0x03;

/// The ids of one request's span: fixed-size and `Copy`, so the access
/// record carries them for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace: the caller's, or a new one.
    pub trace_id: [u8; 16],
    /// The gateway's own span for this request, the host's parent.
    pub span_id: [u8; 8],
    /// The caller's span, when the caller sent a valid `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// The trace flags passed on (the caller's, or the sampling decision).
    pub flags: u8,
}

impl TraceIds {
    /// Whether the trace is sampled (recorded by those who trace).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> Hex<32> {
        Hex::of(&self.trace_id)
    }

    /// The gateway's span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> Hex<16> {
        Hex::of(&self.span_id)
    }

    /// `00-<trace id>-<span id>-<flags>`, formatted in a fixed buffer.
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        encode_hex(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        encode_hex(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        encode_hex(&[self.flags], &mut out[53..55]);
        // Hex digits and dashes only: always a valid field value.
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// One request's trace context: its ids and the caller's `tracestate`,
/// when it is passed on.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub ids: TraceIds,
    /// The caller's `tracestate` (its field lines joined, if several).
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The context for a request with `headers`: the caller's trace, when
    /// its `traceparent` is valid, else a new one, sampled at `sample_ratio`.
    pub fn from_headers(headers: &HeaderMap, sample_ratio: f64) -> TraceContext {
        let span_id = fastrand::u64(1..).to_be_bytes();
        let mut lines = headers.get_all(TRACEPARENT).iter();
        let caller = match (lines.next(), lines.next()) {
            (Some(value), None) => parse_traceparent(value.as_bytes()),
            _ => None,
        };
        match caller {
            Some((trace_id, parent_id, flags)) => TraceContext {
                ids: TraceIds {
                    trace_id,
                    span_id,
                    parent_id: Some(parent_id),
                    flags: flags & KNOWN_FLAGS,
                },
                tracestate: tracestate(headers),
            },
            None => TraceContext::new_trace(span_id, sample_ratio),
        }
    }

    /// A new trace with a random id: the gateway's span is its root.
    fn new_trace(span_id: [u8; 8], sample_ratio: f64) -> TraceContext {
        let trace_id = fastrand::u128(1..).to_be_bytes();
        let sampled = sampled_at(&trace_id, sample_ratio);
        TraceContext {
            ids: TraceIds {
                trace_id,
                span_id,
                parent_id: None,
                flags: if sampled { SAMPLED } else { 0 },
            },
            tracestate: None,
        }
    }

    /// The `tracestate` passed on, if any.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// Sets the gateway's `traceparent` and the kept `tracestate` in the
    /// head of a call to a host, replacing whatever the caller sent.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.ids.traceparent());
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

/// The trace id, parent id and flags of a version 00 `traceparent`, if
/// `value` is exactly one.
pub fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() != TRACEPARENT_LEN
        || !value.starts_with(b"00-")
        || value[35] != b'-'
        || value[52] != b'-'
    {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    let mut flags = [0u8; 1];
    decode_hex(&value[3..35], &mut trace_id)?;
    decode_hex(&value[36..52], &mut parent_id)?;
    decode_hex(&value[53..55], &mut flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags[0]))
}

/// The caller's `tracestate`, if it is well-formed and within the limits;
/// several field lines are one list, joined with commas.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut lines = headers.get_all(TRACESTATE).iter();
    let first = lines.next()?;
    let rest = lines.next();
    let value = match rest {
        None => first.clone(),
        Some(second) => {
            // Rare: join the lines, once, for the checks below.
            let mut joined = first.as_bytes().to_vec();
            for line in std::iter::once(second).chain(lines) {
                joined.push(b',');
                joined.extend_from_slice(line.as_bytes());
            }
            HeaderValue::from_bytes(&joined).ok()?
        }
    };
    tracestate_ok(value.as_bytes()).then_some(value)
}

/// Whether `value` is a `tracestate` the gateway passes on: at most
/// [`MAX_TRACESTATE_BYTES`], at most [`MAX_TRACESTATE_MEMBERS`] members, and
/// each member `key=value` as the spec defines them. Empty list members
/// (`a=1,,b=2`) are allowed, as the spec allows them.
pub fn tracestate_ok(value: &[u8]) -> bool {
    if value.len() > MAX_TRACESTATE_BYTES {
        return false;
    }
    let mut members = 0;
    for member in value.split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        members += 1;
        if members > MAX_TRACESTATE_MEMBERS || !member_ok(member) {
            return false;
        }
    }
    members > 0
}

/// One `tracestate` list member: `key=value`.
fn member_ok(member: &[u8]) -> bool {
    let Some(eq) = member.iter().position(|&b| b == b'=') else {
        return false;
    };
    key_ok(&member[..eq]) && value_ok(&member[eq + 1..])
}

/// A key: `simple-key` or `tenant-id@system-id`.
fn key_ok(key: &[u8]) -> bool {
    let part = |p: &[u8], max: usize, first_digit: bool| {
        !p.is_empty()
            && p.len() <= max
            && (p[0].is_ascii_lowercase() || (first_digit && p[0].is_ascii_digit()))
            && p.iter().all(|&b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.iter().position(|&b| b == b'@') {
        None => part(key, 256, false),
        Some(at) => part(&key[..at], 241, true) && part(&key[at + 1..], 14, false),
    }
}

/// A value: 1 to 256 printable characters but `,` and `=`, not ending in a
/// space.
fn value_ok(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// Whether a new trace is sampled: as OpenTelemetry's trace-id ratio
/// sampler decides, from the id's low 63 bits, so every party that samples
/// by ratio agrees.
fn sampled_at(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let threshold = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < threshold
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// Lowercase hex only: the spec's `HEXDIGLC`.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for (pair, byte) in hex.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

/// Lowercase hex digits in a fixed buffer, for log fields.
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Hex<N> {
        let mut out = [0u8; N];
        encode_hex(bytes, &mut out);
        Hex(out)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits only.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Leaves a [`TraceContext`] in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    sample_ratio: f64,
}

impl TraceLayer {
    /// New traces are sampled at `sample_ratio` (`[tracing] sample_ratio`).
    pub fn new(sample_ratio: f64) -> TraceLayer {
        TraceLayer { sample_ratio }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            sample_ratio: self.sample_ratio,
        }
    }
}

/// The service [`TraceLayer`] builds.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    sample_ratio: f64,
}

impl<S, B> Service<http::Request<B>> for Trace<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let context = TraceContext::from_headers(request.headers(), self.sample_ratio);
        request.extensions_mut().insert(context);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_span_of_our_own() {
        let cx = TraceContext::from_headers(&headers(&[("traceparent", VALID)]), 1.0);
        assert_eq!(
            cx.ids.trace_id_hex().as_str(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(cx.ids.parent_id, Some(0xb7ad6b7169203331u64.to_be_bytes()));
        assert_ne!(cx.ids.span_id, [0; 8]);
        let forwarded = cx.ids.traceparent();
        let forwarded = forwarded.to_str().unwrap();
        assert_eq!(forwarded.len(), 55);
        assert!(forwarded.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(forwarded.ends_with("-01"));
        assert_ne!(forwarded, VALID);
    }

    #[test]
    fn invalid_forms_start_a_new_trace() {
        for bad in [
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-00",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
            let cx = TraceContext::from_headers(
                &headers(&[("traceparent", bad), ("tracestate", "a=1")]),
                1.0,
            );
            assert_eq!(cx.ids.parent_id, None, "{bad}");
            assert!(cx.tracestate().is_none(), "{bad}");
        }
        let twice = headers(&[("traceparent", VALID), ("traceparent", VALID)]);
        assert_eq!(TraceContext::from_headers(&twice, 1.0).ids.parent_id, None);
    }

    #[test]
    fn tracestate_within_the_limits_is_kept_as_is() {
        let cx = TraceContext::from_headers(
            &headers(&[
                ("traceparent", VALID),
                ("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
            ]),
            1.0,
        );
        assert_eq!(
            cx.tracestate().unwrap(),
            "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"
        );
        let two_lines = headers(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("tracestate", "b@x=2"),
        ]);
        let cx = TraceContext::from_headers(&two_lines, 1.0);
        assert_eq!(cx.tracestate().unwrap(), "a=1,b@x=2");
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(!tracestate_ok(many.as_bytes()), "33 members");
        let long = format!("k={}", "v".repeat(255)) + "," + &format!("j={}", "v".repeat(255));
        assert!(!tracestate_ok(long.as_bytes()), "over 512 bytes");
        for bad in ["novalue", "=v", "K=v", "k=v=w", "k=v\tx", "1k=v", "k@=v"] {
            assert!(!tracestate_ok(bad.as_bytes()), "{bad}");
        }
        assert!(tracestate_ok(b"a=1,,b=2"));
    }

    #[test]
    fn new_traces_are_sampled_at_the_ratio() {
        let none = HeaderMap::new();
        assert!(TraceContext::from_headers(&none, 1.0).ids.sampled());
        assert!(!TraceContext::from_headers(&none, 0.0).ids.sampled());
        let sampled = (0..2000)
            .filter(|_| TraceContext::from_headers(&none, 0.25).ids.sampled())
            .count();
        assert!((300..700).contains(&sampled), "{sampled} of 2000 at 0.25");
    }

    #[test]
    fn reserved_flags_are_zeroed() {
        let v = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff";
        let cx = TraceContext::from_headers(&headers(&[("traceparent", v)]), 1.0);
        assert_eq!(cx.ids.flags, 0x03);
    }
}
