//! The `text/event-stream` format (WHATWG HTML, "Server-sent events"):
//! an event is `field: value` lines ended by a blank line. `data` may hold
//! no line break, so a multi-line payload is sent as one `data:` line per
//! line (the browser joins them with `\n`). A line starting with `:` is a
//! comment (keep-alive). An `id:` line with no data sets the client's
//! last event id without firing an event, which is how the stream reports
//! progress over records a filter skipped.

use bytes::{BufMut, Bytes, BytesMut};

/// A comment the client ignores; keeps proxies and load balancers from
/// timing the connection out.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// One event: `id`, `event` type, and `data` split into lines.
pub fn event(id: &str, event_type: &str, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + id.len() + event_type.len() + 32);
    out.put_slice(b"id: ");
    out.put_slice(id.as_bytes());
    out.put_slice(b"\nevent: ");
    out.put_slice(event_type.as_bytes());
    out.put_u8(b'\n');
    // CRLF, LF and CR all end a line in the format.
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']);
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end.unwrap_or(rest.len())]);
        out.put_u8(b'\n');
        match end {
            None => break,
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Sets the client's last event id without an event.
pub fn progress(id: &str) -> Bytes {
    Bytes::from(format!("id: {id}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_data_become_data_fields() {
        assert_eq!(
            &event("3,4", "message", "a\nb\r\nc\rd")[..],
            b"id: 3,4\nevent: message\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(
            &event("1", "delete", "")[..],
            b"id: 1\nevent: delete\ndata: \n\n"
        );
        assert_eq!(&progress("5")[..], b"id: 5\n\n");
    }
}
