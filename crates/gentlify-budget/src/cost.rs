//! What a request is expected to cost, and how the budget estimates it.

use std::fmt;

use crate::prompt::Prompt;
use bytes::Bytes;
use gentlify_core::Usage;

/// The tokens a request is expected to use: put it in the request's extensions to tell the budget
/// exactly, or let an [`Estimate`] work it out. Every request also costs one request.
///
/// ```
/// use gentlify_budget::TokenCost;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(TokenCost::new(1_200, 300));
/// assert_eq!(request.extensions().get::<TokenCost>().unwrap().total(), 1_500);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenCost {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens, usually the request's `max_tokens`.
    pub output_tokens: u64,
}

impl TokenCost {
    /// A cost of `input_tokens` in and `output_tokens` out.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        TokenCost {
            input_tokens,
            output_tokens,
        }
    }

    /// Input and output together.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

impl From<Usage> for TokenCost {
    fn from(usage: Usage) -> Self {
        TokenCost::new(usage.input_tokens, usage.output_tokens)
    }
}

/// Estimates a request's [`TokenCost`] before it is sent, when the request carries no
/// `TokenCost` extension.
///
/// Closures `Fn(&http::Request<B>) -> TokenCost` are estimators, for request bodies the built-in
/// [`JsonEstimate`] cannot read.
pub trait Estimate<B> {
    /// The expected cost of `request`.
    fn estimate(&self, request: &http::Request<B>) -> TokenCost;
}

impl<B, F> Estimate<B> for F
where
    F: Fn(&http::Request<B>) -> TokenCost,
{
    fn estimate(&self, request: &http::Request<B>) -> TokenCost {
        self(request)
    }
}

/// Request bodies whose bytes can be read without consuming them, so that [`JsonEstimate`] can
/// look at the JSON before it is sent.
pub trait RequestBytes {
    /// The whole body, if it is at hand.
    fn request_bytes(&self) -> Option<&[u8]>;
}

impl RequestBytes for () {
    fn request_bytes(&self) -> Option<&[u8]> {
        None
    }
}
impl RequestBytes for String {
    fn request_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}
impl RequestBytes for &'static str {
    fn request_bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}
impl RequestBytes for Vec<u8> {
    fn request_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}
impl RequestBytes for Bytes {
    fn request_bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

/// Bodies larger than this are not parsed; their cost is estimated from their length alone.
/// 8 MiB covers long chat histories; image-laden bodies above it are mostly base64 that the
/// provider does not bill per character anyway.
const MAX_PARSED_BODY: usize = 8 << 20;

/// The built-in estimator for OpenAI- and Anthropic-style JSON request bodies.
///
/// - **Input**: the characters of the prompt text (`messages[].content` as a string or as text
///   parts, `system`, `prompt`, `input`, `instructions`, tool definitions) divided by 4, rounded
///   up. Four characters per token is OpenAI's published rule of thumb for English text and the
///   figure its own admission check uses; it over-counts code-free prose slightly and under-counts
///   CJK text, which is why the budget reconciles with the real usage afterwards.
/// - **Output**: `max_tokens`, `max_completion_tokens` or `max_output_tokens` when the body has
///   one (OpenAI counts this ceiling against the TPM at admission), else
///   [`default_output_tokens`](JsonEstimate::default_output_tokens) (1 024 unless set), and 0
///   for embeddings (a path ending in `/embeddings`).
/// - A body that is not JSON counts its length / 4 as input.
///
/// ```
/// use gentlify_budget::{Estimate, JsonEstimate, TokenCost};
///
/// let body = r#"{"model":"gpt-4o","max_tokens":100,
///     "messages":[{"role":"user","content":"Say hello to the world, politely."}]}"#;
/// let request = http::Request::post("/v1/chat/completions").body(body.to_string()).unwrap();
/// assert_eq!(JsonEstimate::new().estimate(&request), TokenCost::new(9, 100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonEstimate {
    default_output_tokens: u64,
}

impl Default for JsonEstimate {
    fn default() -> Self {
        JsonEstimate::new()
    }
}

impl JsonEstimate {
    /// The estimator with a default output of 1 024 tokens.
    pub fn new() -> Self {
        JsonEstimate {
            default_output_tokens: 1024,
        }
    }

    /// The output tokens assumed when the body names no maximum.
    pub fn default_output_tokens(mut self, tokens: u64) -> Self {
        self.default_output_tokens = tokens;
        self
    }

    /// The estimate for a body, given whether the request is for embeddings.
    pub fn estimate_bytes(&self, body: &[u8], embeddings: bool) -> TokenCost {
        self.estimate_counting(body, embeddings, &Prompt::read_chars, chars_to_tokens)
    }

    /// The estimate for a body, reading it with `read` (which counts each piece of prompt text
    /// in some unit) and turning the sum into tokens with `to_tokens`.
    pub(crate) fn estimate_counting(
        &self,
        body: &[u8],
        embeddings: bool,
        read: &dyn Fn(&[u8]) -> Option<Prompt>,
        to_tokens: fn(u64) -> u64,
    ) -> TokenCost {
        let default_output = if embeddings {
            0
        } else {
            self.default_output_tokens
        };
        if body.len() > MAX_PARSED_BODY {
            return TokenCost::new(chars_to_tokens(body.len() as u64), default_output);
        }
        let Some(prompt) = read(body) else {
            return TokenCost::new(chars_to_tokens(body.len() as u64), default_output);
        };
        let units = prompt.total_units();
        let output = prompt.max_tokens().unwrap_or(default_output);
        TokenCost::new(to_tokens(units), output)
    }

    fn output_without_body(&self, embeddings: bool) -> TokenCost {
        TokenCost::new(
            0,
            if embeddings {
                0
            } else {
                self.default_output_tokens
            },
        )
    }
}

impl<B: RequestBytes> Estimate<B> for JsonEstimate {
    fn estimate(&self, request: &http::Request<B>) -> TokenCost {
        let embeddings = request.uri().path().ends_with("/embeddings");
        match request.body().request_bytes() {
            Some(bytes) => self.estimate_bytes(bytes, embeddings),
            None => self.output_without_body(embeddings),
        }
    }
}

fn chars_to_tokens(chars: u64) -> u64 {
    chars.div_ceil(4)
}

#[cfg(feature = "tiktoken")]
mod tiktoken {
    use super::{Estimate, JsonEstimate, RequestBytes, TokenCost};
    use crate::prompt::Prompt;

    /// OpenAI's byte-pair encodings.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum Encoding {
        /// `o200k_base`: GPT-4o, GPT-4.1, o-series.
        O200kBase,
        /// `cl100k_base`: GPT-4, GPT-3.5-turbo, text-embedding-3.
        Cl100kBase,
    }

    /// Like [`JsonEstimate`], but counts the prompt's tokens exactly with OpenAI's tokenizer
    /// (feature `tiktoken`). Message framing (a few tokens per message) is not counted; the
    /// output side is the same as [`JsonEstimate`]'s. The tokenizer is loaded once per process,
    /// on first use (tens of milliseconds).
    ///
    /// ```
    /// use gentlify_budget::{Encoding, Estimate, TiktokenEstimate, TokenCost};
    ///
    /// let body = r#"{"max_tokens":5,"messages":[{"role":"user","content":"hello world"}]}"#;
    /// let request = http::Request::new(body.to_string());
    /// let estimate = TiktokenEstimate::new(Encoding::O200kBase);
    /// assert_eq!(estimate.estimate(&request), TokenCost::new(2, 5));
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TiktokenEstimate {
        encoding: Encoding,
        json: JsonEstimate,
    }

    impl TiktokenEstimate {
        /// An estimator with `encoding` and [`JsonEstimate`]'s default output.
        pub fn new(encoding: Encoding) -> Self {
            TiktokenEstimate {
                encoding,
                json: JsonEstimate::new(),
            }
        }

        /// The output tokens assumed when the body names no maximum.
        pub fn default_output_tokens(mut self, tokens: u64) -> Self {
            self.json = self.json.default_output_tokens(tokens);
            self
        }

        /// The estimate for a body, given whether the request is for embeddings.
        pub fn estimate_bytes(&self, body: &[u8], embeddings: bool) -> TokenCost {
            let bpe = match self.encoding {
                Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
                Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            };
            self.json.estimate_counting(
                body,
                embeddings,
                &|body| Prompt::read(body, &|text| bpe.encode_ordinary(text).len() as u64),
                |tokens| tokens,
            )
        }
    }

    impl<B: RequestBytes> Estimate<B> for TiktokenEstimate {
        fn estimate(&self, request: &http::Request<B>) -> TokenCost {
            let embeddings = request.uri().path().ends_with("/embeddings");
            match request.body().request_bytes() {
                Some(bytes) => self.estimate_bytes(bytes, embeddings),
                None => self.json.output_without_body(embeddings),
            }
        }
    }
}

#[cfg(feature = "tiktoken")]
pub use tiktoken::{Encoding, TiktokenEstimate};

/// An estimator that reads nothing: every request without a [`TokenCost`] extension costs the
/// same, fixed amount. For request bodies the [`JsonEstimate`] cannot read when a closure is not
/// worth writing.
///
/// ```
/// use gentlify_budget::{Estimate, FixedEstimate, TokenCost};
///
/// let estimate = FixedEstimate(TokenCost::new(500, 500));
/// assert_eq!(estimate.estimate(&http::Request::new(())), TokenCost::new(500, 500));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedEstimate(pub TokenCost);

impl<B> Estimate<B> for FixedEstimate {
    fn estimate(&self, _request: &http::Request<B>) -> TokenCost {
        self.0
    }
}

impl fmt::Debug for FixedEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FixedEstimate").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_body_counts_system_and_text_parts() {
        let body = br#"{"model":"claude","max_tokens":50,"system":"abcd",
            "messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"}]}]}"#;
        assert_eq!(
            JsonEstimate::new().estimate_bytes(body, false),
            TokenCost::new(3, 50)
        );
    }

    #[test]
    fn responses_api_uses_max_output_tokens_and_input() {
        let body = br#"{"model":"o","input":"abcdefgh","max_output_tokens":7}"#;
        assert_eq!(
            JsonEstimate::new().estimate_bytes(body, false),
            TokenCost::new(2, 7)
        );
    }

    #[test]
    fn missing_maximum_uses_the_default_and_embeddings_none() {
        let body = br#"{"input":"abcd"}"#;
        let e = JsonEstimate::new().default_output_tokens(77);
        assert_eq!(e.estimate_bytes(body, false), TokenCost::new(1, 77));
        assert_eq!(e.estimate_bytes(body, true), TokenCost::new(1, 0));
    }

    #[test]
    fn non_json_counts_its_length() {
        assert_eq!(
            JsonEstimate::new().estimate_bytes(b"12345678", false),
            TokenCost::new(2, 1024)
        );
    }
}
