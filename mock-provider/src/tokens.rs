//! Deterministic token accounting (see the crate docs for the formula).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Tokens of one message with `chars` characters of text.
pub(crate) fn message_tokens(chars: usize) -> u64 {
    3 + text_tokens(chars)
}

/// Tokens of a bare text with `chars` characters: `(chars + 3) / 4`.
pub(crate) fn text_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Characters of text in a message `content`, counted while deserialising:
/// a string counts its chars, an array of parts the chars of every part's
/// `text` string, anything else 0.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ContentChars(pub usize);

impl<'de> Deserialize<'de> for ContentChars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = ContentChars;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message content")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ContentChars(v.chars().count()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ContentChars(0))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ContentChars(0))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ContentChars(0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ContentChars(0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ContentChars(0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ContentChars(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut total = 0;
        while let Some(part) = seq.next_element::<Part>()? {
            total += part.0;
        }
        Ok(ContentChars(total))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ContentChars(0))
    }
}

/// One content part: only a string `text` field counts.
struct Part(usize);

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PartVisitor;
        impl<'de> Visitor<'de> for PartVisitor {
            type Value = Part;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("content part")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Part, A::Error> {
                let mut chars = 0;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "text" {
                        chars += map.next_value_seed(TextSeed)?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Part(chars))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Part, E> {
                // A bare string inside a content array (legacy prompts).
                Ok(Part(v.chars().count()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Part, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Part, E> {
                Ok(Part(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Part, E> {
                Ok(Part(0))
            }
        }
        d.deserialize_any(PartVisitor)
    }
}

/// Counts chars of a `text` value when it is a string (the Assistants API
/// nests `{"text":{"value":…}}`, which is handled too).
struct TextSeed;

impl<'de> de::DeserializeSeed<'de> for TextSeed {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
                Ok(v.chars().count())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
                let mut chars = 0;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "value" {
                        chars += map.next_value_seed(TextSeed)?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(chars)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(0)
            }
            fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
                Ok(0)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<usize, E> {
                Ok(0)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<usize, E> {
                Ok(0)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<usize, E> {
                Ok(0)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<usize, E> {
                Ok(0)
            }
        }
        d.deserialize_any(V)
    }
}

/// Characters of a JSON `content` value (same rules as [`ContentChars`]).
pub(crate) fn value_chars(content: Option<&serde_json::Value>) -> usize {
    use serde_json::Value;
    fn text_chars(v: &Value) -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Object(o) => o.get("value").map_or(0, text_chars),
            _ => 0,
        }
    }
    match content {
        Some(Value::String(s)) => s.chars().count(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::Object(o) => o.get("text").map_or(0, text_chars),
                Value::String(s) => s.chars().count(),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Tokens of a list of JSON messages.
pub(crate) fn value_messages_tokens<'a>(
    msgs: impl IntoIterator<Item = &'a serde_json::Value>,
) -> u64 {
    msgs.into_iter()
        .map(|m| message_tokens(value_chars(m.get("content"))))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Msg {
        #[serde(default)]
        content: ContentChars,
    }

    fn chars(json: &str) -> usize {
        serde_json::from_str::<Msg>(json).unwrap().content.0
    }

    #[test]
    fn counts_content() {
        assert_eq!(chars(r#"{"content":"héllo"}"#), 5);
        assert_eq!(chars(r#"{"content":null}"#), 0);
        assert_eq!(chars(r#"{}"#), 0);
        assert_eq!(
            chars(
                r#"{"content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"x"}},{"text":"cde","type":"text"}]}"#
            ),
            5
        );
        assert_eq!(message_tokens(0), 3);
        assert_eq!(message_tokens(1), 4);
        assert_eq!(message_tokens(4), 4);
        assert_eq!(message_tokens(5), 5);
    }

    #[test]
    fn value_counting_matches() {
        let v: serde_json::Value = serde_json::from_str(
            r#"[{"content":"hello"},{"content":[{"type":"text","text":{"value":"abc","annotations":[]}}]}]"#,
        )
        .unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(value_messages_tokens(arr), (3 + 2) + (3 + 1));
    }
}
