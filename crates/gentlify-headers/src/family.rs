//! One pass over a response's header names deciding which built-in parser families could match,
//! so the layer skips the parsers (and their hash lookups) whose family is absent.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use crate::parse::{AnthropicHeaders, GitHubHeaders, IetfHeaders, OpenAiHeaders, ParseHeaders};

/// A set of header families, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Families(u8);

impl Families {
    /// `x-ratelimit-` followed by anything but GitHub's five suffixes (OpenAI, Azure, Groq).
    pub(crate) const OPENAI: Families = Families(1);
    /// Exactly `x-ratelimit-{limit,remaining,reset,used,resource}`.
    pub(crate) const GITHUB: Families = Families(1 << 1);
    /// `anthropic-ratelimit-*`.
    pub(crate) const ANTHROPIC: Families = Families(1 << 2);
    /// `ratelimit*` (`RateLimit`, `RateLimit-Policy`, the older `RateLimit-Limit`...).
    pub(crate) const IETF: Families = Families(1 << 3);
    /// `retry-after*`, `x-should-retry`, `grpc-retry-pushback-ms`: what [`ServerDelay`] reads.
    ///
    /// [`ServerDelay`]: crate::ServerDelay
    pub(crate) const DELAY: Families = Families(1 << 4);

    /// The families whose headers `headers` carries: one pass over its names, no allocation.
    pub(crate) fn of(headers: &HeaderMap) -> Families {
        headers.keys().fold(Families::default(), |found, name| {
            Families(found.0 | family_of(name.as_str()).0)
        })
    }

    /// Whether any family of `other` is in `self`.
    pub(crate) fn intersects(self, other: Families) -> bool {
        self.0 & other.0 != 0
    }
}

/// The family of one (lowercase, as `HeaderMap` keeps them) header name.
fn family_of(name: &str) -> Families {
    match name.as_bytes().first() {
        Some(b'x') => {
            if let Some(rest) = name.strip_prefix("x-ratelimit-") {
                match rest {
                    "limit" | "remaining" | "reset" | "used" | "resource" => Families::GITHUB,
                    _ => Families::OPENAI,
                }
            } else if name == "x-should-retry" {
                Families::DELAY
            } else {
                Families::default()
            }
        }
        Some(b'a') if name.starts_with("anthropic-ratelimit-") => Families::ANTHROPIC,
        Some(b'r') if name.starts_with("ratelimit") => Families::IETF,
        Some(b'r') if name.starts_with("retry-after") => Families::DELAY,
        Some(b'g') if name == "grpc-retry-pushback-ms" => Families::DELAY,
        _ => Families::default(),
    }
}

/// A parser and the family it needs present to possibly match: `None` (the user's own parsers,
/// which may read any header) always runs.
#[derive(Clone)]
pub(crate) struct Gated {
    pub(crate) parser: Arc<dyn ParseHeaders>,
    needs: Option<Families>,
}

impl Gated {
    /// Tags a built-in parser with its family; any other type always runs.
    pub(crate) fn new<P: ParseHeaders>(parser: P) -> Gated {
        let id = TypeId::of::<P>();
        let needs = if id == TypeId::of::<OpenAiHeaders>() {
            Some(Families::OPENAI)
        } else if id == TypeId::of::<GitHubHeaders>() {
            Some(Families::GITHUB)
        } else if id == TypeId::of::<AnthropicHeaders>() {
            Some(Families::ANTHROPIC)
        } else if id == TypeId::of::<IetfHeaders>() {
            Some(Families::IETF)
        } else {
            None
        };
        Gated {
            parser: Arc::new(parser),
            needs,
        }
    }

    /// Whether the parser could find anything in a response carrying `present`.
    pub(crate) fn may_match(&self, present: Families) -> bool {
        self.needs.is_none_or(|needs| present.intersects(needs))
    }
}

impl fmt::Debug for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.parser, f)
    }
}

/// The built-in parsers of [`default_parsers`](crate::default_parsers), tagged, in its order.
pub(crate) fn default_gated() -> Vec<Gated> {
    vec![
        Gated::new(OpenAiHeaders::new()),
        Gated::new(AnthropicHeaders::new()),
        Gated::new(IetfHeaders::new()),
        Gated::new(GitHubHeaders::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_falls_in_its_family() {
        let cases = [
            ("x-ratelimit-limit-requests", Families::OPENAI),
            ("x-ratelimit-reset-tokens", Families::OPENAI),
            ("x-ratelimit-limit", Families::GITHUB),
            ("x-ratelimit-resource", Families::GITHUB),
            ("anthropic-ratelimit-tokens-reset", Families::ANTHROPIC),
            ("ratelimit", Families::IETF),
            ("ratelimit-policy", Families::IETF),
            ("ratelimit-reset", Families::IETF),
            ("retry-after", Families::DELAY),
            ("retry-after-ms", Families::DELAY),
            ("x-should-retry", Families::DELAY),
            ("grpc-retry-pushback-ms", Families::DELAY),
            ("content-type", Families::default()),
            ("x-request-id", Families::default()),
            ("anthropic-organization-id", Families::default()),
            ("x-ratelimit", Families::default()),
        ];
        for (name, family) in cases {
            assert_eq!(family_of(name), family, "{name}");
        }
    }
}
