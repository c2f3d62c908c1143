//! Compact JWS parsing and signature checking (RFC 7515, RFC 8725).
//!
//! Everything here runs before a key is chosen, on attacker-controlled bytes,
//! so it is strict and bounded: the size is checked before anything else, every
//! segment must be canonical unpadded base64url, the header and payload must be
//! JSON objects without duplicate members, and the header may not carry a key
//! (`jwk`), point at one (`jku`, `x5u`, `x5c`) or demand extensions (`crit`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::JwtError;
use super::algorithm::Algorithm;
use super::jwks::{KeySet, VerifyKey};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Longest `kid` accepted; longer ones are refused (they would only bloat caches).
pub(crate) const MAX_KID_LEN: usize = 256;

/// The reason given when no key carries the token's `kid` (a refetch may help).
pub(crate) const UNKNOWN_KID: &str = "unknown kid";

/// At most this many keys are tried for one token (keys without `kid`).
const MAX_CANDIDATES: usize = 8;

/// Header members that carry or locate a key; refused and never fetched.
const KEY_BEARING_HEADERS: &[(&str, &str)] = &[
    ("jwk", "embedded jwk header refused"),
    ("jku", "jku header refused"),
    ("x5u", "x5u header refused"),
    ("x5c", "x5c header refused"),
];

/// A compact JWS split and decoded, not yet verified.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    /// The header's `alg`, already known to be a supported algorithm.
    pub alg: Algorithm,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`.
    signing_input: &'a str,
    /// The signature segment, as sent.
    signature_b64: &'a str,
}

/// Cheap structural test: three base64url segments and a header that is a JSON
/// object with an `alg` member.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return false;
    }
    if !token.bytes().all(|b| is_b64url(b) || b == b'.') {
        return false;
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(bytes) = b64(header) else {
        return false;
    };
    matches!(
        serde_json::from_slice::<Value>(&bytes),
        Ok(Value::Object(m)) if m.contains_key("alg")
    )
}

/// Splits a compact JWS, decodes its parts and checks its header against
/// `allowed` (the configured algorithms, never the token's choice).
pub(crate) fn parse<'a>(token: &'a str, allowed: &[Algorithm]) -> Result<Compact<'a>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Invalid("token too large"));
    }
    if token.is_empty() {
        return Err(JwtError::Invalid("empty token"));
    }
    // Only the base64url alphabet and the separators: this refuses the JSON
    // serialization, whitespace, padding and any other stray byte up front.
    if !token.bytes().all(|b| is_b64url(b) || b == b'.') {
        return Err(JwtError::Invalid("malformed token"));
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Invalid("malformed token"));
    };
    if h.is_empty() {
        return Err(JwtError::Invalid("missing header"));
    }
    let header_bytes = b64(h).ok_or(JwtError::Invalid("malformed header"))?;
    let header = strict_object(&header_bytes).ok_or(JwtError::Invalid("malformed header"))?;
    let (alg, kid) = check_header(&header, allowed)?;
    if s.is_empty() {
        return Err(JwtError::Invalid("missing signature"));
    }
    let payload = b64(p).ok_or(JwtError::Invalid("malformed payload"))?;
    if b64(s).is_none() {
        return Err(JwtError::Invalid("malformed signature"));
    }
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(Compact {
        alg,
        kid,
        payload,
        signing_input,
        signature_b64: s,
    })
}

fn check_header(
    header: &Map<String, Value>,
    allowed: &[Algorithm],
) -> Result<(Algorithm, Option<String>), JwtError> {
    let alg = match header.get("alg") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(JwtError::Invalid("alg not a string")),
        None => return Err(JwtError::Invalid("missing alg")),
    };
    if alg.trim().eq_ignore_ascii_case("none") {
        return Err(JwtError::Invalid("alg none refused"));
    }
    for (name, reason) in KEY_BEARING_HEADERS {
        if header.contains_key(*name) {
            return Err(JwtError::Invalid(reason));
        }
    }
    if header.contains_key("crit") {
        return Err(JwtError::Invalid("crit header refused"));
    }
    let alg = Algorithm::parse(alg).ok_or(JwtError::Invalid("unsupported alg"))?;
    if !allowed.contains(&alg) {
        return Err(JwtError::Invalid("alg not allowed for this issuer"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KID_LEN => Some(k.clone()),
        Some(_) => return Err(JwtError::Invalid("malformed kid")),
    };
    Ok((alg, kid))
}

impl Compact<'_> {
    /// Verifies the signature with the keys of `set` that fit the algorithm and
    /// `kid`. `Err(Invalid("unknown kid"))` means no key matched the token's `kid`.
    pub(crate) fn verify(&self, set: &KeySet) -> Result<(), JwtError> {
        let mut tried = 0usize;
        for key in set
            .candidates(self.alg, self.kid.as_deref())
            .take(MAX_CANDIDATES)
        {
            tried += 1;
            if self.check(key) {
                return Ok(());
            }
        }
        let kid_in_set = set.has_kid(self.kid.as_deref());
        Err(JwtError::Invalid(match (&self.kid, kid_in_set) {
            // No key carries the kid (keys without one may have been tried).
            (Some(_), false) => UNKNOWN_KID,
            (Some(_), true) if tried == 0 => "kid names a key of another type or alg",
            (None, _) if tried == 0 => "no key for alg",
            _ => "bad signature",
        }))
    }

    fn check(&self, key: &VerifyKey) -> bool {
        matches!(
            jsonwebtoken::crypto::verify(
                self.signature_b64,
                self.signing_input.as_bytes(),
                &key.key,
                self.alg.to_jsonwebtoken(),
            ),
            Ok(true)
        )
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Canonical unpadded base64url (non-zero trailing bits are refused).
pub(crate) fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Parses a JSON object, refusing duplicate member names at every depth.
pub(crate) fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<StrictValue>(bytes).ok()?.0 {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A JSON value whose objects had no duplicate member names.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                return Err(de::Error::custom("duplicate member"));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn strict_json_refuses_duplicates_at_any_depth() {
        assert!(strict_object(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_some());
        assert!(strict_object(br#"{"a":1,"a":2}"#).is_none());
        assert!(strict_object(br#"{"a":{"b":1,"b":1}}"#).is_none());
        assert!(strict_object(br#"[1]"#).is_none());
        assert!(strict_object(br#"{"a":1} x"#).is_none());
    }

    #[test]
    fn base64_is_canonical_and_unpadded() {
        assert_eq!(b64("Zm9v"), Some(b"foo".to_vec()));
        assert!(b64("Zm8=").is_none());
        assert!(b64("AB").is_none(), "non-zero trailing bits");
        assert!(b64("Zm 9v").is_none());
    }

    #[test]
    fn looks_like_jwt_is_structural() {
        let h = enc(r#"{"alg":"RS256"}"#);
        assert!(looks_like_jwt(&format!("{h}.e30.c2ln")));
        assert!(looks_like_jwt(&format!("{h}..")));
        assert!(!looks_like_jwt(&format!("{h}.e30")));
        assert!(!looks_like_jwt(&format!("{h}.e30.c2ln.eA")));
        assert!(!looks_like_jwt(&format!(
            "{}.e30.c2ln",
            enc(r#"{"typ":"JWT"}"#)
        )));
        assert!(!looks_like_jwt("pcs_abc_def"));
        assert!(!looks_like_jwt(&"a".repeat(MAX_TOKEN_BYTES + 1)));
    }

    #[test]
    fn header_rules() {
        let all = Algorithm::ALL;
        let tok = |h: &str| format!("{}.e30.c2ln", enc(h));
        let reason = |h: &str| match parse(&tok(h), &all) {
            Err(JwtError::Invalid(r)) => r,
            Err(e) => panic!("{e}"),
            Ok(_) => "ok",
        };
        assert_eq!(reason(r#"{"alg":"RS256","kid":"k"}"#), "ok");
        assert_eq!(reason(r#"{"alg":"nOnE"}"#), "alg none refused");
        assert_eq!(
            reason(r#"{"alg":"RS256","jwk":{}}"#),
            "embedded jwk header refused"
        );
        assert_eq!(reason(r#"{"alg":"RS256","jku":"x"}"#), "jku header refused");
        assert_eq!(reason(r#"{"alg":"RS256","x5u":"x"}"#), "x5u header refused");
        assert_eq!(reason(r#"{"alg":"RS256","x5c":[]}"#), "x5c header refused");
        assert_eq!(
            reason(r#"{"alg":"RS256","crit":["exp"]}"#),
            "crit header refused"
        );
        assert_eq!(reason(r#"{"alg":"rs256"}"#), "unsupported alg");
        assert_eq!(reason(r#"{"alg":7}"#), "alg not a string");
        assert_eq!(reason(r#"{"kid":"k"}"#), "missing alg");
        assert_eq!(reason(r#"{"alg":"RS256","kid":5}"#), "malformed kid");
        assert_eq!(
            reason(r#"{"alg":"RS256","alg":"HS256"}"#),
            "malformed header"
        );
        assert!(matches!(
            parse(&tok(r#"{"alg":"HS256"}"#), &[Algorithm::RS256]),
            Err(JwtError::Invalid("alg not allowed for this issuer"))
        ));
    }
}
