//! Reading the real usage out of a response body as it streams past.

use std::fmt;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use gentlify_core::{Slot, Usage};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Deserialize;

/// A usage object larger than this is not a usage object; the scanner gives up on it.
const MAX_USAGE_OBJECT: usize = 4096;
/// SSE event names of interest are short (`message_delta`, `response.completed`).
const MAX_EVENT_NAME: usize = 64;

pin_project! {
    /// A response body that reads the provider's token usage as the body streams past and records
    /// it in the request's [`Slot`] ([`Slot::record_usage`]), for the budget to reconcile with
    /// when the slot ends. Frames pass through untouched.
    ///
    /// Understands, in JSON bodies and in server-sent events alike:
    /// - OpenAI chat completions: `usage.{prompt_tokens, completion_tokens}` (in a stream, the
    ///   final chunk sent with `stream_options.include_usage`);
    /// - OpenAI Responses API: `usage.{input_tokens, output_tokens}` (in a stream, inside
    ///   `response.completed`);
    /// - Anthropic messages: `usage.{input_tokens, output_tokens}` plus cache reads and writes; in
    ///   a stream, the input from `message_start` and the **last** cumulative
    ///   `message_delta.usage` (recorded only once a `message_delta` arrives: a stream cut before
    ///   it keeps the estimate).
    ///
    /// Memory is bounded whatever the body's size: the scanner keeps a few bytes of state, the SSE
    /// event name, and the usage object itself while it is read (at most 4 KiB), never the body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use gentlify_budget::UsageBody;
    /// use gentlify_core::{Feedback, Slot, Usage};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (slot, _end) = Slot::new(&Feedback::new());
    /// let json = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
    /// let body = UsageBody::new(Full::new(Bytes::from(json)), slot.clone(), false);
    /// body.collect().await.unwrap();
    /// assert_eq!(slot.usage(), Some(Usage::new(12, 30)));
    /// # }
    /// ```
    pub struct UsageBody<B> {
        #[pin]
        inner: B,
        scanner: Scanner,
        slot: Slot,
    }
}

impl<B> UsageBody<B> {
    /// Wraps `inner`, recording usage in `slot`. `event_stream` is true for a
    /// `text/event-stream` response.
    pub fn new(inner: B, slot: Slot, event_stream: bool) -> Self {
        UsageBody {
            inner,
            scanner: Scanner::new(event_stream),
            slot,
        }
    }

    /// Wraps the body of `response`, telling server-sent events by the `content-type`.
    pub fn wrap(response: http::Response<B>, slot: Slot) -> http::Response<UsageBody<B>> {
        let event_stream = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        response.map(|body| UsageBody::new(body, slot, event_stream))
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for UsageBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let mut slices = [IoSlice::new(&[]); 64];
                let n = data.chunks_vectored(&mut slices);
                for slice in &slices[..n] {
                    if let Some(usage) = this.scanner.feed(slice) {
                        this.slot.record_usage(usage);
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for UsageBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageBody")
            .field("inner", &self.inner)
            .field("event_stream", &self.scanner.sse.is_some())
            .finish()
    }
}

/// The usage object of any of the providers, every field optional.
#[derive(Debug, Default, Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl RawUsage {
    fn input(&self) -> Option<u64> {
        let base = self.input_tokens.or(self.prompt_tokens)?;
        // Anthropic counts cache writes and reads apart from `input_tokens`; OpenAI's
        // `prompt_tokens` already includes its cached tokens.
        Some(
            base + self.cache_creation_input_tokens.unwrap_or(0)
                + self.cache_read_input_tokens.unwrap_or(0),
        )
    }

    fn output(&self) -> Option<u64> {
        self.output_tokens.or(self.completion_tokens)
    }
}

/// Finds `"usage": { ... }` in a byte stream and parses the object, keeping only the object.
#[derive(Debug, Default)]
struct UsageFinder {
    state: FindState,
}

#[derive(Debug, Default)]
enum FindState {
    /// Looking for the key; `matched` bytes of `"usage"` seen.
    #[default]
    Searching,
    Matching(usize),
    /// After the key, before `:`.
    AfterKey,
    /// After `:`, before `{`.
    AfterColon,
    Capturing {
        buf: Vec<u8>,
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
}

const KEY: &[u8] = b"\"usage\"";

impl UsageFinder {
    fn reset(&mut self) {
        self.state = FindState::Searching;
    }

    fn feed_byte(&mut self, b: u8) -> Option<RawUsage> {
        match &mut self.state {
            FindState::Searching => {
                if b == KEY[0] {
                    self.state = FindState::Matching(1);
                }
            }
            FindState::Matching(n) => {
                if b == KEY[*n] {
                    *n += 1;
                    if *n == KEY.len() {
                        self.state = FindState::AfterKey;
                    }
                } else if b == KEY[0] {
                    *n = 1;
                } else {
                    self.state = FindState::Searching;
                }
            }
            FindState::AfterKey => match b {
                b':' => self.state = FindState::AfterColon,
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => self.restart(b),
            },
            FindState::AfterColon => match b {
                b'{' => {
                    self.state = FindState::Capturing {
                        buf: vec![b'{'],
                        depth: 1,
                        in_string: false,
                        escaped: false,
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => self.restart(b),
            },
            FindState::Capturing {
                buf,
                depth,
                in_string,
                escaped,
            } => {
                buf.push(b);
                if *in_string {
                    if *escaped {
                        *escaped = false;
                    } else if b == b'\\' {
                        *escaped = true;
                    } else if b == b'"' {
                        *in_string = false;
                    }
                } else {
                    match b {
                        b'"' => *in_string = true,
                        b'{' => *depth += 1,
                        b'}' => {
                            *depth -= 1;
                            if *depth == 0 {
                                let parsed = serde_json::from_slice::<RawUsage>(buf).ok();
                                self.state = FindState::Searching;
                                return parsed;
                            }
                        }
                        _ => {}
                    }
                }
                if buf.len() > MAX_USAGE_OBJECT {
                    self.state = FindState::Searching;
                }
            }
        }
        None
    }

    fn restart(&mut self, b: u8) {
        self.state = if b == KEY[0] {
            FindState::Matching(1)
        } else {
            FindState::Searching
        };
    }
}

#[derive(Debug, Default)]
struct SseState {
    /// The start of the current line, until its field is known.
    prefix: Vec<u8>,
    line: LineKind,
    event: Vec<u8>,
    line_empty: bool,
    /// Anthropic's `message_start` input tokens, waiting for a `message_delta`.
    pending_input: Option<u64>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum LineKind {
    #[default]
    Unknown,
    Event,
    Data,
    Other,
}

/// The scanner of one body: JSON, or server-sent events.
#[derive(Debug)]
struct Scanner {
    finder: UsageFinder,
    sse: Option<SseState>,
}

impl Scanner {
    fn new(event_stream: bool) -> Self {
        Scanner {
            finder: UsageFinder::default(),
            sse: event_stream.then(|| SseState {
                line_empty: true,
                ..SseState::default()
            }),
        }
    }

    /// Feeds bytes; returns the latest usage to record, if these bytes completed one.
    fn feed(&mut self, bytes: &[u8]) -> Option<Usage> {
        let mut found = None;
        match &mut self.sse {
            None => {
                let mut rest = bytes;
                while let Some((&b, after)) = rest.split_first() {
                    rest = after;
                    if matches!(self.finder.state, FindState::Searching) {
                        // Nothing but a quote can start the key: skip to the next one, and when
                        // the whole key fits in this chunk, compare it at once, without stepping
                        // the state machine through every byte (the byte machine is a search
                        // for the same string; it stays for keys cut between chunks).
                        let after_quote = if b == KEY[0] {
                            rest
                        } else {
                            match rest.iter().position(|&c| c == KEY[0]) {
                                Some(i) => &rest[i + 1..],
                                None => break,
                            }
                        };
                        if after_quote.len() >= KEY.len() - 1 {
                            if after_quote.starts_with(&KEY[1..]) {
                                self.finder.state = FindState::AfterKey;
                                rest = &after_quote[KEY.len() - 1..];
                            } else {
                                rest = after_quote;
                            }
                            continue;
                        }
                        rest = after_quote;
                        self.finder.state = FindState::Matching(1);
                        continue;
                    }
                    if let Some(raw) = self.finder.feed_byte(b) {
                        if raw.input().is_some() || raw.output().is_some() {
                            found = Some(Usage::new(
                                raw.input().unwrap_or(0),
                                raw.output().unwrap_or(0),
                            ));
                        }
                    }
                }
            }
            Some(sse) => {
                for &b in bytes {
                    if let Some(usage) = sse_byte(sse, &mut self.finder, b) {
                        found = Some(usage);
                    }
                }
            }
        }
        found
    }
}

fn sse_byte(sse: &mut SseState, finder: &mut UsageFinder, b: u8) -> Option<Usage> {
    if b == b'\n' {
        if sse.line_empty {
            // A blank line ends the event.
            sse.event.clear();
            finder.reset();
        }
        sse.prefix.clear();
        sse.line = LineKind::Unknown;
        sse.line_empty = true;
        return None;
    }
    if b == b'\r' {
        return None;
    }
    sse.line_empty = false;
    match sse.line {
        LineKind::Unknown => {
            sse.prefix.push(b);
            if sse.prefix == b"data:" {
                sse.line = LineKind::Data;
            } else if sse.prefix == b"event:" {
                sse.line = LineKind::Event;
                sse.event.clear();
            } else if sse.prefix.len() >= 6 {
                sse.line = LineKind::Other;
            }
            None
        }
        LineKind::Event => {
            if b != b' ' && sse.event.len() < MAX_EVENT_NAME {
                sse.event.push(b);
            }
            None
        }
        LineKind::Other => None,
        LineKind::Data => {
            let raw = finder.feed_byte(b)?;
            match sse.event.as_slice() {
                b"message_start" => {
                    sse.pending_input = raw.input();
                    None
                }
                b"message_delta" => Some(Usage::new(
                    raw.input().or(sse.pending_input).unwrap_or(0),
                    raw.output().unwrap_or(0),
                )),
                _ if raw.input().is_some() || raw.output().is_some() => Some(Usage::new(
                    raw.input().unwrap_or(0),
                    raw.output().unwrap_or(0),
                )),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(event_stream: bool, chunks: &[&str]) -> Option<Usage> {
        let mut scanner = Scanner::new(event_stream);
        let mut last = None;
        for c in chunks {
            if let Some(u) = scanner.feed(c.as_bytes()) {
                last = Some(u);
            }
        }
        last
    }

    /// The JSON scanner without its fast search: every byte through the state machine.
    fn byte_by_byte(chunks: &[&[u8]]) -> Option<Usage> {
        let mut finder = UsageFinder::default();
        let mut last = None;
        for &b in chunks.iter().flat_map(|c| c.iter()) {
            if let Some(raw) = finder.feed_byte(b) {
                if raw.input().is_some() || raw.output().is_some() {
                    last = Some(Usage::new(
                        raw.input().unwrap_or(0),
                        raw.output().unwrap_or(0),
                    ));
                }
            }
        }
        last
    }

    proptest::proptest! {
        #[test]
        fn the_fast_search_finds_what_the_byte_machine_finds(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "\"usage\"", "\"usage", "usage\"", "\"usag", "e\"", "\"", ":", " ", "{", "}",
                ",", "\\\"", "x", "null", "\"prompt_tokens\":5", "\"completion_tokens\":7",
                "\"input_tokens\":3", "\"output_tokens\":1",
            ]), 0..16),
            whole in proptest::option::of(0usize..16),
            cuts in proptest::collection::vec(0usize..256, 0..4),
        ) {
            // Most bodies hold a whole usage object somewhere among the fragments.
            let mut parts = parts;
            if let Some(at) = whole {
                let at = at.min(parts.len());
                parts.insert(at, "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}");
            }
            let body = parts.concat().into_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([body.len()]) {
                chunks.push(&body[from..cut]);
                from = cut;
            }
            let mut scanner = Scanner::new(false);
            let mut fast = None;
            for chunk in &chunks {
                if let Some(usage) = scanner.feed(chunk) {
                    fast = Some(usage);
                }
            }
            proptest::prop_assert_eq!(fast, byte_by_byte(&chunks));
        }
    }

    #[test]
    fn usage_split_across_chunks_is_found() {
        let body = r#"{"id":"x","usage":{"prompt_tokens":5,"completion_tokens":7}}"#;
        for cut in 1..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(scan(false, &[a, b]), Some(Usage::new(5, 7)), "cut at {cut}");
        }
    }

    #[test]
    fn null_usage_and_escaped_keys_are_ignored() {
        let body = r#"{"usage":null,"text":"\"usage\": {\"prompt_tokens\":1}"}"#;
        assert_eq!(scan(false, &[body]), None);
    }

    #[test]
    fn anthropic_cache_tokens_count_as_input() {
        let body =
            r#"{"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":3}}"#;
        assert_eq!(scan(false, &[body]), Some(Usage::new(100, 3)));
    }

    #[test]
    fn responses_api_stream_reads_the_completed_event() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n\
            event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":9,\"output_tokens_details\":{\"reasoning_tokens\":0}}}}\n\n";
        assert_eq!(scan(true, &[stream]), Some(Usage::new(4, 9)));
    }

    #[test]
    fn oversized_usage_object_is_abandoned() {
        let big = format!(
            r#"{{"usage":{{"x":"{}","prompt_tokens":1}}}}"#,
            "a".repeat(MAX_USAGE_OBJECT)
        );
        assert_eq!(scan(false, &[&big]), None);
    }
}
