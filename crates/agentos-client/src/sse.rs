//! A Server-Sent-Events decoder: bytes in, [`SseEvent`]s out, following the
//! WHATWG "event stream interpretation" rules.
//!
//! Why a small parser of our own rather than `eventsource-stream` or
//! `sse-stream`: the whole algorithm is ~100 lines; owning it lets us decode
//! per chunk without a nom dependency or a second error type to wrap, and its
//! behaviour at the edges is pinned by the tests below rather than by another
//! crate's release cadence. What it handles, and agno's own line-by-line
//! parser does not: `event:` lines, multi-line `data:`, `data:` without the
//! space, `id:`/`retry:`, CR and CRLF line ends (also split across chunks), a
//! leading BOM, and UTF-8 split across chunks. Comment lines (`:` first) are
//! skipped, as keep-alives are.
//!
//! At the end of the stream an event that was not closed by a blank line is
//! dropped, as the spec says: a host that dies mid-event leaves a truncated
//! line that must not be decoded as if it were whole.

use bytes::{Buf, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `"message"` when the event had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen so far in the stream (it carries over events).
    pub id: Option<String>,
    /// The `retry:` value of this event, in milliseconds, if it had a valid
    /// one.
    pub retry: Option<u64>,
}

/// An incremental SSE decoder.
///
/// ```
/// use agentos_client::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::default();
/// let mut events = decoder.feed(b"event: WorkflowStarted\r\ndata: {\"a\":");
/// assert!(events.is_empty()); // the event is not closed yet
/// events = decoder.feed(b"1}\r\n\r\n: keep-alive\n\n");
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].event, "WorkflowStarted");
/// assert_eq!(events[0].data, "{\"a\":1}");
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of a line whose end has not arrived yet.
    partial: BytesMut,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs
    /// to that line end.
    after_cr: bool,
    /// The start of the stream (and a possible BOM) has been dealt with.
    started: bool,
    data: String,
    /// Whether any `data` field was seen for the event being built.
    has_data: bool,
    event: String,
    last_id: Option<String>,
    retry: Option<u64>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseDecoder {
    /// Feeds the next chunk and returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut chunk = chunk;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.partial.extend_from_slice(chunk);
        if !self.started {
            if self.partial.len() < BOM.len() && BOM.starts_with(&self.partial) {
                // Could still be a BOM split across chunks.
                return events;
            }
            if self.partial.starts_with(BOM) {
                self.partial.advance(BOM.len());
            }
            self.started = true;
        }
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line = self.partial.split_to(end);
            let terminator = self.partial[0];
            self.partial.advance(1);
            if terminator == b'\r' {
                match self.partial.first() {
                    Some(b'\n') => self.partial.advance(1),
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        events
    }

    /// Handles one complete line; returns an event when the line dispatches
    /// one.
    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        // Lines are cut at ASCII bytes only, so decoding per line never
        // splits a UTF-8 sequence that arrived whole.
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let retry = self.retry.take();
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            // A blank line after an event without data dispatches nothing.
            return None;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::default();
        chunks.iter().flat_map(|c| decoder.feed(c)).collect()
    }

    fn one(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
            retry: None,
        }
    }

    #[test]
    fn agentos_framing() {
        let events = all(&[b"event: A\ndata: {\"x\":1}\n\nevent: B\ndata: {}\n\n"]);
        assert_eq!(events, vec![one("A", "{\"x\":1}"), one("B", "{}")]);
    }

    #[test]
    fn every_line_ending_and_splits_between_cr_and_lf() {
        let text = b"event: A\r\ndata: 1\r\n\r\nevent: B\rdata: 2\r\rdata: 3\n\n";
        let whole = all(&[text]);
        assert_eq!(
            whole,
            vec![one("A", "1"), one("B", "2"), one("message", "3")]
        );
        // Cutting the stream at every byte gives the same events.
        let mut bytes: Vec<&[u8]> = Vec::new();
        for byte in text.chunks(1) {
            // Empty chunks in between change nothing either.
            bytes.extend([byte, b""]);
        }
        assert_eq!(all(&bytes), whole);
        for cut in 0..text.len() {
            assert_eq!(all(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn multi_line_data_comments_and_no_space() {
        let events = all(&[b": hello\ndata:a\ndata: b\ndata\n: ping\n\n"]);
        assert_eq!(events, vec![one("message", "a\nb\n")]);
    }

    #[test]
    fn events_without_data_dispatch_nothing_and_reset_the_type() {
        let events = all(&[b"event: A\n\ndata: x\n\n"]);
        assert_eq!(events, vec![one("message", "x")]);
    }

    #[test]
    fn id_carries_over_and_retry_needs_digits() {
        let events = all(&[b"id: 7\nretry: 10\ndata: a\n\nretry: x\ndata: b\n\nid\ndata: c\n\n"]);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].retry, Some(10));
        assert_eq!(events[1].id.as_deref(), Some("7"));
        assert_eq!(events[1].retry, None);
        assert_eq!(events[2].id.as_deref(), Some(""));
    }

    #[test]
    fn bom_split_across_chunks_is_dropped_once() {
        let events = all(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n"]);
        assert_eq!(events[0], one("message", "a"));
        // A BOM later in the stream is part of the field name, so that line
        // is an unknown field and ignored.
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn utf8_split_across_chunks() {
        let text = "data: héllo ✓\n\n".as_bytes();
        for cut in 0..text.len() {
            assert_eq!(
                all(&[&text[..cut], &text[cut..]]),
                vec![one("message", "héllo ✓")]
            );
        }
    }

    #[test]
    fn an_unterminated_event_at_the_end_is_not_dispatched() {
        assert!(all(&[b"event: A\ndata: {\"trunc"]).is_empty());
        assert!(all(&[b"event: A\ndata: {}\n"]).is_empty());
    }

    // A host's bytes, cut anywhere (a `\r\n` split included), decode to the
    // same events as the whole stream at once, and never panic. A stand-in
    // for fuzzing, which needs a nightly toolchain this project lacks.
    mod chunking {
        use proptest::prelude::*;

        use super::all;

        fn stream() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                "((event|data|id|retry|: ?x)(: ?[a-z0-9{}]{0,8})?(\r\n|\n|\r)){0,20}"
                    .prop_map(String::into_bytes),
            ]
        }

        proptest! {
            #[test]
            fn events_do_not_depend_on_the_chunking(
                stream in stream(),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ) {
                let whole = all(&[&stream]);
                let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
                at.sort_unstable();
                at.dedup();
                let mut pieces: Vec<&[u8]> = Vec::new();
                let mut start = 0;
                for cut in at.into_iter().chain([stream.len()]) {
                    pieces.push(&stream[start..cut]);
                    start = cut;
                }
                prop_assert_eq!(whole, all(&pieces));
            }
        }
    }
}
