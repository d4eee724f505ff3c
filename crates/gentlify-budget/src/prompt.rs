//! Reads what the JSON estimator needs from a request body in one streaming pass: the prompt text
//! and the output maximum, without building a `serde_json::Value` tree (which allocated every key
//! and string of the body and was most of the estimator's cost: 7 800 of a budgeted full stack's
//! 28 000 instructions per request on a 90-byte body).
//!
//! The default estimator, which counts characters, first tries [`Fast`], a checked pass over the
//! bytes for the common shape of a body, and falls back on serde_json's visitor (the only reading
//! of a custom counter, such as the tokenizer's): on the benchmark's 75-byte body the estimate
//! went from about 3 000 instructions (serde_json) to about 1 500.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Top-level keys whose text is prompt.
pub(crate) const PROMPT_KEYS: [&str; 6] = [
    "messages",
    "system",
    "prompt",
    "input",
    "instructions",
    "tools",
];

/// Top-level keys naming the output maximum, in order of preference.
pub(crate) const MAX_KEYS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// Keys of nested objects whose values hold prompt text (image and audio data do not).
pub(crate) const TEXT_KEYS: [&str; 9] = [
    "content",
    "text",
    "description",
    "parameters",
    "input_schema",
    "function",
    "arguments",
    "name",
    "properties",
];

/// The index of `key` in [`PROMPT_KEYS`] (a `match`, which compiles to a few compares where a
/// search of the array calls `memcmp` for each key of the same length).
fn prompt_key(key: &[u8]) -> Option<usize> {
    match key {
        b"messages" => Some(0),
        b"system" => Some(1),
        b"prompt" => Some(2),
        b"input" => Some(3),
        b"instructions" => Some(4),
        b"tools" => Some(5),
        _ => None,
    }
}

/// The index of `key` in [`MAX_KEYS`].
fn max_key(key: &[u8]) -> Option<usize> {
    match key {
        b"max_tokens" => Some(0),
        b"max_completion_tokens" => Some(1),
        b"max_output_tokens" => Some(2),
        _ => None,
    }
}

/// The index of `key` in [`TEXT_KEYS`].
fn text_key(key: &[u8]) -> Option<usize> {
    match key {
        b"content" => Some(0),
        b"text" => Some(1),
        b"description" => Some(2),
        b"parameters" => Some(3),
        b"input_schema" => Some(4),
        b"function" => Some(5),
        b"arguments" => Some(6),
        b"name" => Some(7),
        b"properties" => Some(8),
        _ => None,
    }
}

/// What the estimator reads from a JSON object body.
#[derive(Debug, Default)]
pub(crate) struct Prompt {
    /// Counted units of prompt text per prompt key (a repeated key counts once, its last value,
    /// as a JSON object keeps it).
    pub(crate) units: [u64; PROMPT_KEYS.len()],
    /// The output maximum per key, when it is a non-negative integer.
    pub(crate) max: [Option<u64>; MAX_KEYS.len()],
}

impl Prompt {
    /// Reads `body`; `None` when it is not a JSON object.
    pub(crate) fn read(body: &[u8], count: &dyn Fn(&str) -> u64) -> Option<Prompt> {
        // A body checked as UTF-8 once, whole, is read as a `str`: serde_json then skips the
        // check of each string (a call per key and value, most of a small body's reading).
        // Anything else is read as bytes, exactly as before.
        match std::str::from_utf8(body) {
            Ok(text) => Self::read_from(serde_json::Deserializer::from_str(text), count),
            Err(_) => Self::read_from(serde_json::Deserializer::from_slice(body), count),
        }
    }

    /// [`read`](Prompt::read) counting each piece of prompt text in characters, the default
    /// estimator's unit: the common shape of a body (no `\u` escape, no exponent, nothing deeply
    /// nested) is read by [`Fast`], a single pass over the bytes that checks the JSON grammar as
    /// it goes; anything it is not sure of is read by serde_json, as before. The two readings
    /// agree on every body `Fast` accepts (property tests below).
    pub(crate) fn read_chars(body: &[u8]) -> Option<Prompt> {
        if let Ok(prompt) = (Fast {
            bytes: body,
            at: 0,
            depth: 0,
        })
        .top()
        {
            return Some(prompt);
        }
        Self::read(body, &|text: &str| text.chars().count() as u64)
    }

    fn read_from<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        count: &dyn Fn(&str) -> u64,
    ) -> Option<Prompt> {
        let prompt = de.deserialize_any(TopLevel { count }).ok()??;
        de.end().ok()?;
        Some(prompt)
    }

    /// Prompt units over all keys.
    pub(crate) fn total_units(&self) -> u64 {
        self.units.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// The first output maximum present, in [`MAX_KEYS`] order.
    pub(crate) fn max_tokens(&self) -> Option<u64> {
        self.max.iter().find_map(|m| *m)
    }
}

/// The bytes a string's plain run is made of: printable ASCII but the quote and the backslash.
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// [`Fast`] met something it leaves to serde_json (which may find it valid or not).
struct Unsure;

/// Nesting beyond this is left to serde_json (whose own limit is 128).
const MAX_FAST_DEPTH: u32 = 64;
/// Numbers longer than this are left to serde_json (no question of range then).
const MAX_FAST_NUMBER: usize = 19;

/// The fast reading of [`Prompt::read_chars`]: one JSON object, read in one pass (its UTF-8
/// checked along: only ASCII outside strings, and each string with other bytes checked whole).
/// Strings with `\u` escapes, keys with any escape, numbers with an exponent or more than 19
/// characters, nesting deeper than 64, and every syntax error are [`Unsure`].
struct Fast<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

// The small steps are inlined by hand: a body's strings are short, and a call per key and value
// cost more than the bytes it read (full_with_budget, callgrind: 17 160 -> 16 792 instructions
// per request).
impl<'a> Fast<'a> {
    fn top(mut self) -> Result<Prompt, Unsure> {
        let mut prompt = Prompt::default();
        self.space();
        self.open(b'{')?;
        if !self.close(b'}')? {
            loop {
                let key = self.key()?;
                if let Some(i) = prompt_key(key) {
                    prompt.units[i] = self.text()?;
                } else if let Some(i) = max_key(key) {
                    prompt.max[i] = self.max()?;
                } else {
                    self.text()?;
                }
                if self.next(b'}')? {
                    break;
                }
            }
        }
        self.space();
        if self.at == self.bytes.len() {
            Ok(prompt)
        } else {
            Err(Unsure)
        }
    }

    #[inline(always)]
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    #[inline(always)]
    fn peek(&mut self) -> Result<u8, Unsure> {
        self.space();
        self.bytes.get(self.at).copied().ok_or(Unsure)
    }

    /// Enters an object or array opened by `bracket`.
    fn open(&mut self, bracket: u8) -> Result<(), Unsure> {
        if self.peek()? != bracket || self.depth >= MAX_FAST_DEPTH {
            return Err(Unsure);
        }
        self.at += 1;
        self.depth += 1;
        Ok(())
    }

    /// Leaves the object or array when `bracket` closes it at once (it is empty).
    fn close(&mut self, bracket: u8) -> Result<bool, Unsure> {
        if self.peek()? == bracket {
            self.at += 1;
            self.depth -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// After a member or element: `,` (false, another follows) or `bracket` (true, left).
    #[inline(always)]
    fn next(&mut self, bracket: u8) -> Result<bool, Unsure> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Ok(false)
            }
            b if b == bracket => {
                self.at += 1;
                self.depth -= 1;
                Ok(true)
            }
            _ => Err(Unsure),
        }
    }

    /// A member's key, without escapes, and its colon.
    #[inline(always)]
    fn key(&mut self) -> Result<&'a [u8], Unsure> {
        if self.peek()? != b'"' {
            return Err(Unsure);
        }
        let (key, _, escaped) = self.string()?;
        if escaped || self.peek()? != b':' {
            return Err(Unsure);
        }
        self.at += 1;
        Ok(key)
    }

    /// A string (the cursor on its quote): its raw bytes, its characters, whether it had an
    /// escape (each of `\" \\ \/ \b \f \n \r \t` is one character; `\u` is unsure).
    #[inline(always)]
    fn string(&mut self) -> Result<(&'a [u8], u64, bool), Unsure> {
        let bytes = self.bytes;
        let start = self.at + 1;
        let mut at = start;
        // Bytes that are not characters of their own: continuations, and escapes' backslashes.
        let mut not_chars = 0usize;
        let mut escaped = false;
        let mut non_ascii = false;
        loop {
            at += bytes
                .get(at..)
                .ok_or(Unsure)?
                .iter()
                .take_while(|&&b| PLAIN[usize::from(b)])
                .count();
            match *bytes.get(at).ok_or(Unsure)? {
                b'"' => {
                    let raw = &bytes[start..at];
                    // Outside strings only ASCII passes: checking the strings that are not
                    // checks the whole body.
                    if non_ascii && std::str::from_utf8(raw).is_err() {
                        return Err(Unsure);
                    }
                    self.at = at + 1;
                    return Ok((raw, (raw.len() - not_chars) as u64, escaped));
                }
                b'\\' => match bytes.get(at + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        escaped = true;
                        not_chars += 1;
                        at += 2;
                    }
                    _ => return Err(Unsure),
                },
                b @ 0x80.. => {
                    non_ascii = true;
                    not_chars += usize::from(b & 0xc0 == 0x80);
                    at += 1;
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// A number (the cursor on its first byte): its value when it is a non-negative integer.
    fn number(&mut self) -> Result<Option<u64>, Unsure> {
        let bytes = self.bytes;
        let start = self.at;
        let negative = bytes[start] == b'-';
        let whole = start + usize::from(negative);
        let mut at = whole;
        let mut value = 0u64;
        while let Some(&d) = bytes.get(at).filter(|d| d.is_ascii_digit()) {
            // Wrapping: a number long enough to wrap is unsure below.
            value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            at += 1;
        }
        if at == whole || (at - whole > 1 && bytes[whole] == b'0') {
            return Err(Unsure);
        }
        let mut integer = !negative;
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            let fraction = at;
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            if at == fraction {
                return Err(Unsure);
            }
            integer = false;
        }
        // At most 19 characters: an integer's value fits in a u64.
        if matches!(bytes.get(at), Some(b'e' | b'E')) || at - start > MAX_FAST_NUMBER {
            return Err(Unsure);
        }
        self.at = at;
        Ok(integer.then_some(value))
    }

    /// `true`, `false` or `null` (the cursor on its first byte).
    fn literal(&mut self) -> Result<(), Unsure> {
        let rest = &self.bytes[self.at..];
        for word in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(word) {
                self.at += word.len();
                return Ok(());
            }
        }
        Err(Unsure)
    }

    /// A value read as prompt text ([`Text`]): its strings' characters, and those of the text
    /// keys of nested objects (a repeated key counts its last value). Also reads through any
    /// value that is not text.
    fn text(&mut self) -> Result<u64, Unsure> {
        match self.peek()? {
            b'"' => Ok(self.string()?.1),
            b'[' => {
                self.open(b'[')?;
                let mut units = 0u64;
                if !self.close(b']')? {
                    loop {
                        units = units.saturating_add(self.text()?);
                        if self.next(b']')? {
                            break;
                        }
                    }
                }
                Ok(units)
            }
            b'{' => {
                self.open(b'{')?;
                let mut units = [0u64; TEXT_KEYS.len()];
                if !self.close(b'}')? {
                    loop {
                        let key = self.key()?;
                        match text_key(key) {
                            Some(i) => units[i] = self.text()?,
                            None => {
                                self.text()?;
                            }
                        }
                        if self.next(b'}')? {
                            break;
                        }
                    }
                }
                Ok(units.iter().fold(0, |a, n| a.saturating_add(*n)))
            }
            b'-' | b'0'..=b'9' => self.number().map(|_| 0),
            _ => self.literal().map(|()| 0),
        }
    }

    /// An output maximum ([`Max`]).
    fn max(&mut self) -> Result<Option<u64>, Unsure> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.text().map(|_| None),
        }
    }
}

struct TopLevel<'c> {
    count: &'c dyn Fn(&str) -> u64,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Option<Prompt>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut prompt = Prompt::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.as_str();
            if let Some(i) = PROMPT_KEYS.iter().position(|k| *k == key) {
                prompt.units[i] = map.next_value_seed(Text { count: self.count })?;
            } else if let Some(i) = MAX_KEYS.iter().position(|k| *k == key) {
                prompt.max[i] = map.next_value_seed(Max)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(prompt))
    }

    // Anything but an object is read through (so that an invalid body is still told apart) and
    // answered with `None`.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A map key, borrowed from the body when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key::Owned(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Counts the prompt text of a value: its strings, and the text keys of nested objects.
#[derive(Clone, Copy)]
struct Text<'c> {
    count: &'c dyn Fn(&str) -> u64,
}

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("prompt text")
    }

    fn visit_str<E>(self, v: &str) -> Result<u64, E> {
        Ok((self.count)(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut units = 0u64;
        while let Some(n) = seq.next_element_seed(self)? {
            units = units.saturating_add(n);
        }
        Ok(units)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        // A repeated key counts once (its last value), as in a JSON object.
        let mut units = [0u64; TEXT_KEYS.len()];
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match TEXT_KEYS.iter().position(|k| *k == key.as_str()) {
                Some(i) => units[i] = map.next_value_seed(self)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(units.iter().fold(0, |a, n| a.saturating_add(*n)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_unit<E>(self) -> Result<u64, E> {
        Ok(0)
    }
}

/// An output maximum: a non-negative integer, anything else none.
struct Max;

impl<'de> DeserializeSeed<'de> for Max {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Max {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Option<u64>, E> {
        Ok(Some(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<u64>, E> {
        Ok(u64::try_from(v).ok())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The estimator's reading before the streaming pass (a `Value` tree), kept as the reference.
    fn reference(body: &[u8]) -> Option<(u64, Option<u64>)> {
        fn visit_text(value: &Value, f: &mut dyn FnMut(&str)) {
            match value {
                Value::String(s) => f(s),
                Value::Array(items) => items.iter().for_each(|v| visit_text(v, f)),
                Value::Object(map) => {
                    for (k, v) in map {
                        if TEXT_KEYS.contains(&k.as_str()) {
                            visit_text(v, f);
                        }
                    }
                }
                _ => {}
            }
        }
        let json = match serde_json::from_slice::<Value>(body) {
            Ok(json @ Value::Object(_)) => json,
            _ => return None,
        };
        let mut units = 0u64;
        for key in PROMPT_KEYS {
            if let Some(v) = json.get(key) {
                visit_text(v, &mut |text| units += text.chars().count() as u64);
            }
        }
        let max = MAX_KEYS
            .iter()
            .find_map(|k| json.get(*k).and_then(Value::as_u64));
        Some((units, max))
    }

    fn streamed(body: &[u8]) -> Option<(u64, Option<u64>)> {
        Prompt::read(body, &|t| t.chars().count() as u64).map(|p| (p.total_units(), p.max_tokens()))
    }

    /// The reading of a body as bytes, whatever its encoding (what `read` did for every body).
    fn streamed_as_bytes(body: &[u8]) -> Option<(u64, Option<u64>)> {
        Prompt::read_from(serde_json::Deserializer::from_slice(body), &|t| {
            t.chars().count() as u64
        })
        .map(|p| (p.total_units(), p.max_tokens()))
    }

    /// The default estimator's reading: [`Fast`] when it is sure, else serde_json.
    fn fast(body: &[u8]) -> Option<(u64, Option<u64>)> {
        Prompt::read_chars(body).map(|p| (p.total_units(), p.max_tokens()))
    }

    /// Whether [`Fast`] reads `body` itself.
    fn fast_is_sure(body: &[u8]) -> bool {
        (Fast {
            bytes: body,
            at: 0,
            depth: 0,
        })
        .top()
        .is_ok()
    }

    fn key() -> impl Strategy<Value = String> {
        let known: Vec<&'static str> = PROMPT_KEYS
            .iter()
            .chain(MAX_KEYS.iter())
            .chain(TEXT_KEYS.iter())
            .chain(["role", "model", "image_url", "data"].iter())
            .copied()
            .collect();
        prop_oneof![
            4 => proptest::sample::select(known).prop_map(str::to_owned),
            1 => "[a-z_\\\\\"é]{0,6}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-zé\\\\\"\\n 日本]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_streaming_reading_equals_the_value_tree_reading(
            fields in proptest::collection::vec((key(), value()), 0..8)
        ) {
            let body = serde_json::to_vec(&Value::Object(fields.into_iter().collect())).unwrap();
            prop_assert_eq!(streamed(&body), reference(&body));
            prop_assert_eq!(streamed(&body), streamed_as_bytes(&body));
            prop_assert_eq!(fast(&body), streamed(&body));
        }

        #[test]
        fn a_body_one_byte_off_reads_alike_fast_or_not(
            fields in proptest::collection::vec((key(), value()), 0..6),
            at in any::<usize>(),
            edit in 0u8..3,
            byte in proptest::sample::select(
                b"0123456789-.eE+\"\\/{}[],: \n\tutfnlabr\x01\x7f\xc3\xa9".to_vec()
            ),
        ) {
            let mut body =
                serde_json::to_vec(&Value::Object(fields.into_iter().collect())).unwrap();
            let at = at % (body.len() + 1);
            match edit {
                0 => body.insert(at, byte),
                1 if at < body.len() => body[at] = byte,
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => body.push(byte),
            }
            prop_assert_eq!(fast(&body), streamed(&body));
        }

        #[test]
        fn any_bytes_read_alike(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(streamed(&body), reference(&body));
            prop_assert_eq!(streamed(&body), streamed_as_bytes(&body));
            prop_assert_eq!(fast(&body), streamed(&body));
        }

        #[test]
        fn odd_values_read_alike(
            max in proptest::sample::select(vec![
                "0", "00", "-0", "01", "1.", ".5", "1.5", "-5", "1e3", "1E+3", "-", "+1",
                "18446744073709551615", "18446744073709551616", "9999999999999999999",
                "1234567890123456789", "0.0000000000000000001", "true", "nul", "null ",
                "\"5\"", "[1,]", "[1]", "{}", "{\"a\":1,}", " 2", "2 3", "\"\\u0041\"",
            ]),
            text in proptest::sample::select(vec![
                "\"a\\nb\"", "\"\\u00e9\"", "\"\\x\"", "\"\t\"", "\"é日\"", "\"\\/\\\\\\\"\"",
                "[\"ab\",{\"text\":\"cd\",\"te\\u0078t\":\"ef\"}]", "[[[[\"x\"]]]]", "1e400",
                "[1.5,-2,true,false,null,{}]", "{\"content\":\"a\",\"content\":\"bcd\"}",
            ]),
        ) {
            for body in [
                format!("{{\"max_tokens\":{max},\"prompt\":{text}}}"),
                format!(" {{ \"prompt\" : {text} , \"max_completion_tokens\" : {max} }} "),
                format!("{{\"messages\":[{{\"content\":{text}}}],\"n\":{max}}}"),
            ] {
                prop_assert_eq!(fast(body.as_bytes()), streamed(body.as_bytes()), "{}", body);
            }
        }
    }

    #[test]
    fn the_key_matches_are_the_key_lists() {
        let others = [
            "",
            "message",
            "messagesx",
            "Messages",
            "max_token",
            "role",
            "type",
        ];
        for key in PROMPT_KEYS
            .iter()
            .chain(&MAX_KEYS)
            .chain(&TEXT_KEYS)
            .chain(&others)
        {
            let key = key.as_bytes();
            let position = |keys: &[&str]| keys.iter().position(|k| k.as_bytes() == key);
            assert_eq!(prompt_key(key), position(&PROMPT_KEYS));
            assert_eq!(max_key(key), position(&MAX_KEYS));
            assert_eq!(text_key(key), position(&TEXT_KEYS));
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        for depth in [60, 64, 127, 128, 200] {
            let body = format!(
                "{{\"prompt\":{}\"ab\"{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(fast(body.as_bytes()), streamed(body.as_bytes()), "{depth}");
        }
    }

    #[test]
    fn common_bodies_are_read_by_the_fast_pass() {
        for body in [
            &br#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#[..],
            r#"{"model":"gpt-4o","temperature":0.7,"stream":true,"messages":[{"role":"system","content":"Be brief.\nNo lists."},{"role":"user","content":[{"type":"text","text":"café"}]}],"max_completion_tokens":512}"#.as_bytes(),
            br#"{"model":"claude","system":"s","max_tokens":1024,"messages":[{"role":"user","content":"a \"quoted\" word"}],"metadata":null}"#,
        ] {
            assert!(fast_is_sure(body), "{}", String::from_utf8_lossy(body));
            assert_eq!(fast(body), streamed(body));
        }
        assert_eq!(
            fast(br#"{"max_tokens":16,"messages":[{"role":"user","content":"caf\u00e9"}]}"#),
            Some((4, Some(16)))
        );
    }

    #[test]
    fn a_body_that_is_not_utf8_is_read_as_bytes_as_before() {
        // Not UTF-8 in a string the estimator skips: serde_json reads it as bytes without
        // checking, as it always did; the check of the whole body must not change that.
        let body = b"{\"model\":\"\xff\",\"max_tokens\":3,\"prompt\":\"abcd\"}";
        assert_eq!(streamed(body), Some((4, Some(3))));
        assert_eq!(streamed_as_bytes(body), Some((4, Some(3))));
        // Not UTF-8 in prompt text: not read, either way.
        let body = b"{\"prompt\":\"\xff\"}";
        assert_eq!(streamed(body), None);
        assert_eq!(streamed_as_bytes(body), None);
    }

    #[test]
    fn what_is_not_one_json_object_is_not_read() {
        for body in [
            &b"[1,2]"[..],
            b"\"text\"",
            b"12",
            b"{\"a\":1} x",
            b"{\"a\":",
            b"",
        ] {
            assert_eq!(streamed(body), None, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(reference(body), None);
        }
    }

    #[test]
    fn only_a_non_negative_integer_is_a_maximum() {
        for (body, max) in [
            (&br#"{"max_tokens":-5,"max_output_tokens":3}"#[..], Some(3)),
            (br#"{"max_tokens":2.5}"#, None),
            (br#"{"max_tokens":"100"}"#, None),
            (
                br#"{"max_tokens":[1],"max_completion_tokens":{"a":1}}"#,
                None,
            ),
            (
                br#"{"max_completion_tokens":4,"max_tokens":18446744073709551615}"#,
                Some(u64::MAX),
            ),
        ] {
            assert_eq!(
                streamed(body),
                Some((0, max)),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(reference(body), Some((0, max)));
        }
    }

    #[test]
    fn a_repeated_key_counts_its_last_value() {
        let body = br#"{"messages":[{"content":"aaaa","content":"bb"}],"max_tokens":7,"max_tokens":9,"system":"x","system":"yyy"}"#;
        assert_eq!(streamed(body), Some((5, Some(9))));
        assert_eq!(reference(body), Some((5, Some(9))));
    }
}
