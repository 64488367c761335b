//! Task input templates: `{{task_id}}` is replaced by that upstream task's output.

/// The task ids a template references, in order. Errors on an unclosed `{{` or an empty name.
pub fn references(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("input has `{{` without a closing `}}`".into());
        };
        let name = after[..end].trim();
        if name.is_empty() {
            return Err("input has an empty `{{}}` reference".into());
        }
        out.push(name);
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Replaces every `{{id}}` with `lookup(id)`; unknown ids are left as they are.
pub fn render(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_renders_references() {
        let t = "fix {{plan}} using {{ analyse }} {{plan}}";
        assert_eq!(references(t).unwrap(), ["plan", "analyse", "plan"]);
        let r = render(t, |id| (id == "plan").then(|| "P".to_string()));
        assert_eq!(r, "fix P using {{ analyse }} P");
    }

    #[test]
    fn rejects_unclosed_and_empty() {
        assert!(references("a {{b").is_err());
        assert!(references("a {{ }}").is_err());
        assert_eq!(render("a {{b", |_| None), "a {{b");
    }
}
