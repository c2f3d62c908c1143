//! Model-name globs: `*` matches any run of characters, `?` exactly one.

/// True if `name` matches `pattern`. Iterative, no backtracking blow-up.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<usize> = None;
    let mut mark = 0usize;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// A model-list entry matches a model when a glob with `/` matches the qualified
/// `provider/model` name, or a glob without `/` matches the bare model name.
pub fn model_allowed(globs: &[String], provider: &str, model: &str) -> bool {
    globs.iter().any(|g| {
        if g.contains('/') {
            let (gp, gm) = g.split_once('/').unwrap_or((g, ""));
            matches(gp, provider) && matches(gm, model)
        } else {
            matches(g, model)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("gpt-4o*", "gpt-4o-mini"));
        assert!(matches("gpt-4o*", "gpt-4o"));
        assert!(!matches("gpt-4o*", "gpt-4"));
        assert!(matches("*", ""));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*-mini", "gpt-4o-mini"));
        let g = vec!["openai/*".to_owned(), "claude-*".to_owned()];
        assert!(model_allowed(&g, "openai", "gpt-4o"));
        assert!(!model_allowed(&g, "other", "gpt-4o"));
        assert!(model_allowed(&g, "anthropic", "claude-3"));
    }
}
