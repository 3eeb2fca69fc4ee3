//! W3C Trace Context across the Kafka hop of request-reply, so one trace
//! spans caller → gateway → request record → processor → backend → reply.
//!
//! `traceparent` is `{version}-{trace-id}-{parent-id}-{flags}`: version
//! `00`, a 32-hex-digit trace id and a 16-hex-digit parent (span) id, neither
//! all zeros, and 2 hex digits of flags (bit 0: sampled), all lower case. A
//! later version is read by its first four fields when they keep that shape;
//! version `ff` is invalid. An invalid header is treated as absent, and its
//! `tracestate` dropped with it (W3C Trace Context §3.3, §4.3).
//!
//! Each hop that forwards the context is a span of its own: it keeps the
//! trace id and flags and sends its own parent id (`child`). Where a caller
//! sends none, the gateway starts a trace (not sampled: the proxy records
//! no spans itself, it only carries the context and logs the trace id).
//! `tracestate` is vendor data carried unchanged.

use std::fmt;

use bytes::Bytes;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent` value; `None` when it is not a valid one.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
        let version = text.get(0..2)?;
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        // Version 00 is exactly 55 characters; a later one may append
        // fields after a '-'.
        match text.len() {
            55 => {}
            n if n > 55 && version != "00" && text.as_bytes()[55] == b'-' => {}
            _ => return None,
        }
        let bytes = text.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace, parent, flags) = (&text[3..35], &text[36..52], &text[53..55]);
        if ![trace, parent, flags].iter().all(|f| is_lower_hex(f)) {
            return None;
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        hex::decode_to_slice(trace, &mut tp.trace_id).ok()?;
        hex::decode_to_slice(parent, &mut tp.parent_id).ok()?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).ok()?;
        tp.flags = f[0];
        if tp.trace_id == [0; 16] || tp.parent_id == [0; 8] {
            return None;
        }
        Some(tp)
    }

    /// A new trace, not sampled.
    pub fn new_root() -> Self {
        let random = uuid::Uuid::new_v4();
        let mut trace_id = *random.as_bytes();
        // A v4 UUID's version and variant bits are fixed: mix in a second
        // one so every bit of the trace id is random.
        trace_id[6] ^= uuid::Uuid::new_v4().as_bytes()[6];
        trace_id[8] ^= uuid::Uuid::new_v4().as_bytes()[8];
        TraceParent {
            trace_id,
            parent_id: new_span_id(),
            flags: 0,
        }
    }

    /// The context this hop sends on: same trace and flags, its own span id.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 hex digits (for log fields).
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    /// Always written as version 00, the version this hop speaks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let mut id = [0u8; 8];
        id.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        if id != [0; 8] {
            return id;
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The trace context one hop sends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: TraceParent,
    pub state: Option<Bytes>,
}

impl TraceContext {
    /// From the `traceparent` and `tracestate` a hop received (`None` when
    /// absent): a child of a valid parent with its `tracestate`, else a new
    /// trace and no `tracestate`.
    pub fn forward(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Self {
        match traceparent.and_then(TraceParent::parse) {
            Some(parent) => TraceContext {
                parent: parent.child(),
                state: tracestate.map(Bytes::copy_from_slice),
            },
            None => TraceContext {
                parent: TraceParent::new_root(),
                state: None,
            },
        }
    }

    /// From an HTTP request's headers; several `tracestate` lines are one
    /// list (joined with `,`). Several `traceparent` lines are invalid.
    pub fn from_http(headers: &http::HeaderMap) -> Self {
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let parent = match (parents.next(), parents.next()) {
            (Some(one), None) => Some(one.as_bytes()),
            _ => None,
        };
        let states: Vec<&[u8]> = headers
            .get_all(TRACESTATE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let state = (!states.is_empty()).then(|| states.join(&b","[..]));
        Self::forward(parent, state.as_deref())
    }

    /// As record headers: `traceparent`, and `tracestate` when there is one.
    pub fn headers(&self) -> Vec<(String, Bytes)> {
        let mut out = vec![(TRACEPARENT.to_owned(), Bytes::from(self.parent.to_string()))];
        if let Some(state) = &self.state {
            out.push((TRACESTATE.to_owned(), state.clone()));
        }
        out
    }

    /// As HTTP headers (for a response or a backend call); a value that is
    /// not a valid header value is left out.
    pub fn http_headers(&self) -> http::HeaderMap {
        let mut out = http::HeaderMap::new();
        if let Ok(parent) = http::HeaderValue::from_str(&self.parent.to_string()) {
            out.insert(TRACEPARENT, parent);
        }
        if let Some(state) = self
            .state
            .clone()
            .and_then(|s| http::HeaderValue::from_maybe_shared(s).ok())
        {
            out.insert(TRACESTATE, state);
        }
        out
    }

    /// Whether `name` (lower case) is one of the two trace-context headers.
    pub fn is_trace_header(name: &str) -> bool {
        name == TRACEPARENT || name == TRACESTATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_the_spec_example() {
        let tp = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(tp.to_string(), EXAMPLE);
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn child_keeps_trace_and_flags_with_a_new_span() {
        let tp = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        let child = tp.child().to_string();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, EXAMPLE);
        assert!(TraceParent::parse(child.as_bytes()).is_some());
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn reads_a_later_version_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next";
        let tp = TraceParent::parse(later.as_bytes()).unwrap();
        assert_eq!(tp.to_string(), EXAMPLE);
    }

    #[test]
    fn forward_starts_a_trace_and_drops_state_without_a_valid_parent() {
        let ctx = TraceContext::forward(Some(b"garbage"), Some(b"vendor=1"));
        assert_eq!(ctx.state, None);
        assert!(ctx.parent.to_string().ends_with("-00"));
        let ctx = TraceContext::forward(Some(EXAMPLE.as_bytes()), Some(b"vendor=1"));
        assert_eq!(ctx.state.as_deref(), Some(&b"vendor=1"[..]));
        assert_eq!(ctx.parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn from_http_joins_tracestate_and_refuses_two_parents() {
        let mut h = http::HeaderMap::new();
        h.append(TRACEPARENT, EXAMPLE.parse().unwrap());
        h.append(TRACESTATE, "a=1".parse().unwrap());
        h.append(TRACESTATE, "b=2".parse().unwrap());
        let ctx = TraceContext::from_http(&h);
        assert_eq!(ctx.parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.state.as_deref(), Some(&b"a=1,b=2"[..]));
        let headers = ctx.headers();
        assert_eq!(headers[0].0, TRACEPARENT);
        assert_eq!(
            headers[1],
            (TRACESTATE.to_owned(), Bytes::from_static(b"a=1,b=2"))
        );
        let http = ctx.http_headers();
        assert_eq!(http[TRACEPARENT].as_bytes(), headers[0].1.as_ref());
        assert_eq!(http[TRACESTATE], "a=1,b=2");
        h.append(TRACEPARENT, EXAMPLE.parse().unwrap());
        let ctx = TraceContext::from_http(&h);
        assert_ne!(ctx.parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.state, None);
    }
}
