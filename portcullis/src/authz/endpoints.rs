//! Endpoint groups, per-provider-kind allowlists, and request-path normalisation.
//!
//! A group is the first path segment after the API version (`/v1/chat/completions`
//! is `chat`). Each provider kind has a default allowlist; `allowed_endpoints`
//! replaces it; some groups can never be reached because they administer the
//! provider account.

use serde::Deserialize;

use crate::error::ApiError;

/// A provider's API family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI itself.
    Openai,
    /// Any server speaking OpenAI's API (vLLM, Ollama, LM Studio, Together, ...).
    OpenaiCompatible,
}

/// Allowed for `openai` unless `allowed_endpoints` says otherwise.
pub const OPENAI_DEFAULT: &[&str] = &[
    "chat",
    "completions",
    "embeddings",
    "responses",
    "models",
    "moderations",
    "images",
    "audio",
    "files",
    "uploads",
    "assistants",
    "threads",
    "vector_stores",
    "conversations",
];

/// Reachable on `openai` only when listed in `allowed_endpoints`.
pub const OPENAI_OPT_IN: &[&str] = &[
    "batches",
    "fine_tuning",
    "evals",
    "containers",
    "videos",
    "realtime",
    "chatkit",
    "skills",
    "content_provenance_checks",
];

/// Allowed for `openai_compatible` unless `allowed_endpoints` says otherwise.
pub const COMPATIBLE_DEFAULT: &[&str] = &[
    "chat",
    "completions",
    "embeddings",
    "responses",
    "models",
    "moderations",
    "images",
    "audio",
];

/// Never reachable: these administer the provider account (OpenAI's
/// `AdminApiKeyAuth` operations live under them).
pub const NEVER: &[&str] = &["organization", "projects"];

/// Groups whose requests pick a model (the provider applies a default when
/// none is named): a key limited to some models must name one there.
pub const MODEL_GROUPS: &[&str] = &[
    "chat",
    "completions",
    "embeddings",
    "responses",
    "moderations",
    "images",
    "audio",
];

/// The default allowlist of a kind.
pub fn default_allowlist(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Openai => OPENAI_DEFAULT,
        ProviderKind::OpenaiCompatible => COMPATIBLE_DEFAULT,
    }
}

/// Whether `group` may appear in `allowed_endpoints` of a provider of `kind`.
pub fn check_configurable(kind: ProviderKind, group: &str) -> Result<(), String> {
    if NEVER.contains(&group) {
        return Err(format!(
            "`{group}` administers the provider account and can never be allowed"
        ));
    }
    match kind {
        ProviderKind::Openai => {
            if OPENAI_DEFAULT.contains(&group) || OPENAI_OPT_IN.contains(&group) {
                Ok(())
            } else {
                Err(format!(
                    "`{group}` is not an OpenAI endpoint group; known: {}, {}",
                    OPENAI_DEFAULT.join(", "),
                    OPENAI_OPT_IN.join(", ")
                ))
            }
        }
        ProviderKind::OpenaiCompatible => {
            if is_segment_name(group) {
                Ok(())
            } else {
                Err(format!("`{group}` is not an endpoint group name"))
            }
        }
    }
}

fn is_segment_name(g: &str) -> bool {
    !g.is_empty()
        && g.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks a raw (still percent-encoded) request path below the API prefix and
/// returns its first segment, the endpoint group.
///
/// Refused with 400: percent-encoded `/`, `\`, `.`, `%` or NUL; a raw `\`;
/// empty segments (`//`, trailing `/`); `.` and `..` segments; control bytes.
/// Nothing here decodes, so what is checked is exactly what is forwarded.
pub fn check_path(rest: &str) -> Result<&str, ApiError> {
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(ApiError::NotFound);
    }
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b < 0x20 || b == 0x7f || b == b'\\' {
            return Err(ApiError::InvalidPath("control character or backslash"));
        }
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
            let decoded = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match decoded {
                None => return Err(ApiError::InvalidPath("malformed percent-encoding")),
                Some(b'/' | b'\\' | b'.' | b'%' | 0) => {
                    return Err(ApiError::InvalidPath("encoded slash, dot or percent"));
                }
                Some(d) if d < 0x20 || d == 0x7f => {
                    return Err(ApiError::InvalidPath("encoded control character"));
                }
                Some(_) => {}
            }
        }
    }
    for seg in rest.split('/') {
        match seg {
            "" => return Err(ApiError::InvalidPath("empty path segment")),
            "." | ".." => return Err(ApiError::InvalidPath("dot segment")),
            _ => {}
        }
    }
    Ok(rest.split('/').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "/files/..%2F..%2Forganization/users",
            "/files/%2e%2e/organization",
            "/./organization",
            "/files/../organization",
            "//organization/users",
            "/files/",
            "/files%5corganization",
            "/files\\..\\organization",
            "/files/%00",
            "/files/%252e%252e/organization",
            "/files/%zz",
        ] {
            assert!(check_path(p).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn normal_paths_give_their_group() {
        assert_eq!(check_path("/chat/completions").unwrap(), "chat");
        assert_eq!(
            check_path("/threads/t_1/runs/r_2/steps").unwrap(),
            "threads"
        );
        assert_eq!(check_path("/files/file-abc%20x").unwrap(), "files");
    }
}
