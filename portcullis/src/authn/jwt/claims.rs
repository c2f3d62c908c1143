//! JWT claim checks (RFC 7519 §4.1, RFC 8725 §3.8–3.10), done here rather than
//! by the signature library so they run against the movable
//! [`crate::clock::Clock`] and type-check every claim.
//!
//! - `iss` must be a string equal to the issuer's; `aud` a string or an array of
//!   strings containing one of the configured audiences; `exp` is required.
//! - `exp`, `nbf`, `iat` are NumericDates: a JSON number of seconds, integer or
//!   not, from 0 to 9999-12-31T23:59:59Z; anything else (a string, a negative,
//!   a non-integer huge value) is refused without overflow.
//! - With leeway `L`: valid while `now < exp + L`, from `now >= nbf - L`, and
//!   only if `iat <= now + L`.

use serde_json::{Map, Value};

use super::{JwtError, JwtIdentity, JwtIssuer};

/// 9999-12-31T23:59:59Z in Unix seconds: the largest NumericDate accepted.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;
/// Longest user, team or role value accepted (bytes).
const MAX_VALUE_LEN: usize = 256;
/// Most roles accepted from one token.
const MAX_ROLES: usize = 64;

/// A NumericDate claim in epoch milliseconds. `Ok(None)` when absent.
pub(crate) fn numeric_date_ms(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, &'static str> {
    let (not_a_number, out_of_range) = match name {
        "exp" => ("exp not a number", "exp out of range"),
        "nbf" => ("nbf not a number", "nbf out of range"),
        _ => ("iat not a number", "iat out of range"),
    };
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(not_a_number);
    };
    if let Some(i) = n.as_i64() {
        if !(0..=MAX_NUMERIC_DATE).contains(&i) {
            return Err(out_of_range);
        }
        return Ok(Some(i * 1000));
    }
    if n.is_u64() {
        return Err(out_of_range);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&f) => {
            // In range, so the cast neither saturates nor loses the integer part.
            Ok(Some((f * 1000.0).floor() as i64))
        }
        _ => Err(out_of_range),
    }
}

/// Resolves a claim path. A member whose whole name matches wins (so namespaced
/// claims such as `https://example.com/roles` work); otherwise the path is split
/// at a dot and the left part must be an object (`app_metadata.team`).
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    for (i, _) in path.match_indices('.') {
        if let Some(Value::Object(inner)) = claims.get(&path[..i])
            && let Some(v) = lookup(inner, &path[i + 1..])
        {
            return Some(v);
        }
    }
    None
}

/// The token's `iss` as a string (it selects the issuer before verification).
pub(crate) fn issuer_of(claims: &Map<String, Value>) -> Result<&str, JwtError> {
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JwtError::Invalid("iss not a string")),
        None => Err(JwtError::Invalid("iss missing")),
    }
}

/// Checks the registered claims and `required_claims`, and extracts the identity.
pub(crate) fn check(
    issuer: &JwtIssuer,
    claims: &Map<String, Value>,
    now_ms: i64,
) -> Result<JwtIdentity, JwtError> {
    if issuer_of(claims)? != issuer.issuer {
        return Err(JwtError::Invalid("iss mismatch"));
    }
    check_audience(claims, &issuer.audiences)?;
    check_times(claims, now_ms, leeway_ms(issuer))?;
    for (path, expected) in &issuer.required_claims {
        if lookup(claims, path) != Some(expected) {
            return Err(JwtError::Invalid("required claim mismatch"));
        }
    }
    let subject = match lookup(claims, &issuer.user_claim) {
        None | Some(Value::Null) => return Err(JwtError::Invalid("user claim missing")),
        Some(v) => scalar(v).ok_or(JwtError::Invalid("user claim malformed"))?,
    };
    let team = match issuer.team_claim.as_deref().and_then(|p| lookup(claims, p)) {
        None | Some(Value::Null) => None,
        Some(v) => Some(scalar(v).ok_or(JwtError::Invalid("team claim malformed"))?),
    };
    let roles = match issuer
        .roles_claim
        .as_deref()
        .and_then(|p| lookup(claims, p))
    {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(v @ (Value::String(_) | Value::Number(_))) => {
            vec![scalar(v).ok_or(JwtError::Invalid("roles claim malformed"))?]
        }
        Some(Value::Array(items)) => {
            if items.len() > MAX_ROLES {
                return Err(JwtError::Invalid("too many roles"));
            }
            let mut roles = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(_) => {
                        roles.push(scalar(item).ok_or(JwtError::Invalid("roles claim malformed"))?)
                    }
                    _ => return Err(JwtError::Invalid("roles claim malformed")),
                }
            }
            roles
        }
        Some(_) => return Err(JwtError::Invalid("roles claim malformed")),
    };
    Ok(JwtIdentity {
        issuer_name: issuer.name.clone(),
        user: format!("{}:{subject}", issuer.name),
        team,
        roles,
        subject,
    })
}

fn leeway_ms(issuer: &JwtIssuer) -> i64 {
    i64::try_from(issuer.leeway.as_millis()).unwrap_or(i64::MAX)
}

/// A non-empty string (bounded, without control characters) or an integer,
/// as a string.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s)
            if !s.is_empty() && s.len() <= MAX_VALUE_LEN && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn check_audience(claims: &Map<String, Value>, audiences: &[String]) -> Result<(), JwtError> {
    let accepted = |a: &str| audiences.iter().any(|x| x == a);
    match claims.get("aud") {
        None => Err(JwtError::Invalid("aud missing")),
        Some(Value::String(a)) if accepted(a) => Ok(()),
        Some(Value::String(_)) => Err(JwtError::Invalid("aud mismatch")),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(JwtError::Invalid("aud empty"));
            }
            let mut ok = false;
            for item in items {
                match item {
                    Value::String(a) => ok |= accepted(a),
                    _ => return Err(JwtError::Invalid("aud malformed")),
                }
            }
            if ok {
                Ok(())
            } else {
                Err(JwtError::Invalid("aud mismatch"))
            }
        }
        Some(_) => Err(JwtError::Invalid("aud malformed")),
    }
}

fn check_times(claims: &Map<String, Value>, now: i64, leeway: i64) -> Result<(), JwtError> {
    let exp = numeric_date_ms(claims, "exp")
        .map_err(JwtError::Invalid)?
        .ok_or(JwtError::Invalid("exp missing"))?;
    let nbf = numeric_date_ms(claims, "nbf").map_err(JwtError::Invalid)?;
    let iat = numeric_date_ms(claims, "iat").map_err(JwtError::Invalid)?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Invalid("token expired"));
    }
    if nbf.is_some_and(|nbf| now < nbf.saturating_sub(leeway)) {
        return Err(JwtError::Invalid("token not yet valid (nbf)"));
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(JwtError::Invalid("iat in the future"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn numeric_dates_are_bounded() {
        let d = |v: Value| numeric_date_ms(&obj(json!({ "exp": v })), "exp");
        assert_eq!(d(json!(1)), Ok(Some(1000)));
        assert_eq!(d(json!(1.5)), Ok(Some(1500)));
        assert_eq!(
            d(json!(MAX_NUMERIC_DATE)),
            Ok(Some(MAX_NUMERIC_DATE * 1000))
        );
        assert_eq!(d(json!(MAX_NUMERIC_DATE + 1)), Err("exp out of range"));
        assert_eq!(d(json!(-1)), Err("exp out of range"));
        assert_eq!(d(json!(-0.5)), Err("exp out of range"));
        assert_eq!(d(json!(u64::MAX)), Err("exp out of range"));
        assert_eq!(d(json!(1e300)), Err("exp out of range"));
        assert_eq!(d(json!("1700000000")), Err("exp not a number"));
        assert_eq!(d(json!(null)), Err("exp not a number"));
        assert_eq!(numeric_date_ms(&obj(json!({})), "exp"), Ok(None));
    }

    #[test]
    fn dotted_paths_and_namespaced_claims() {
        let c = obj(json!({
            "app_metadata": {"team": "red", "deep": {"x": 1}},
            "https://example.com/roles": ["a"],
            "a.b": "literal"
        }));
        assert_eq!(lookup(&c, "app_metadata.team"), Some(&json!("red")));
        assert_eq!(lookup(&c, "app_metadata.deep.x"), Some(&json!(1)));
        assert_eq!(lookup(&c, "https://example.com/roles"), Some(&json!(["a"])));
        assert_eq!(lookup(&c, "a.b"), Some(&json!("literal")));
        assert_eq!(lookup(&c, "app_metadata.nope"), None);
        assert_eq!(lookup(&c, "app_metadata.team.x"), None);
    }
}
