//! Reads what the JSON estimator needs from a request body in one streaming pass: the prompt text
//! and the output maximum, without building a `serde_json::Value` tree (which allocated every key
//! and string of the body and was most of the estimator's cost: 7 800 of a budgeted full stack's
//! 28 000 instructions per request on a 90-byte body).

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
        }

        #[test]
        fn any_bytes_read_alike(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(streamed(&body), reference(&body));
            prop_assert_eq!(streamed(&body), streamed_as_bytes(&body));
        }
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
