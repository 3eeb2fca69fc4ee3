//! Path patterns of the routes file and the templates filled from them.
//!
//! A pattern is `/`-separated segments: a literal, `{name}` (one
//! non-empty segment) or, last, `{*name}` (the rest of the path, possibly
//! empty). Parameter values are percent-decoded. A template (`"order-{id}"`)
//! names parameters of its route's pattern; filling replaces each
//! `{name}` (or `{*name}`) with the value matched.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
    names: BTreeSet<String>,
}

/// The parameters a path matched, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl PathPattern {
    pub fn parse(path: &str) -> Result<PathPattern, String> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(format!("path {path:?} must start with /"));
        };
        let mut segments = Vec::new();
        let mut names = BTreeSet::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.starts_with('*') => {
                    if i + 1 != parts.len() {
                        return Err(format!("{{{name}}} must be the last segment"));
                    }
                    Segment::Rest(name[1..].to_owned())
                }
                Some(name) => Segment::Param(name.to_owned()),
                None if part.contains(['{', '}']) => {
                    return Err(format!(
                        "segment {part:?}: a parameter must be a whole segment"
                    ))
                }
                None => Segment::Literal((*part).to_owned()),
            };
            if let Segment::Param(n) | Segment::Rest(n) = &segment {
                if n.is_empty() || !names.insert(n.clone()) {
                    return Err(format!("parameter {n:?} is empty or repeated"));
                }
            }
            segments.push(segment);
        }
        Ok(PathPattern {
            text: path.to_owned(),
            segments,
            names,
        })
    }

    /// The pattern as written (a bounded metrics label).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parameters of `path`, when it matches.
    pub fn matches(&self, path: &str) -> Option<PathParams> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut params = Vec::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(n) => {
                    let value = parts.get(i).filter(|v| !v.is_empty())?;
                    params.push((n.clone(), decode_segment(value)));
                }
                Segment::Rest(n) => {
                    let rest = parts[i.min(parts.len())..].join("/");
                    params.push((n.clone(), decode_segment(&rest)));
                    i = parts.len();
                    break;
                }
            }
            i += 1;
        }
        (i == parts.len()).then_some(PathParams(params))
    }
}

/// A string with `{name}` placeholders for path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

impl Template {
    /// Checks that every placeholder names a parameter of `pattern`;
    /// `what` names the template in the error ("key template").
    pub fn parse(text: &str, pattern: &PathPattern, what: &str) -> Result<Template, String> {
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("{what} {text:?} has an unclosed {{"))?;
            let name = rest[start + 1..start + end].trim_start_matches('*');
            if !pattern.names.contains(name) {
                return Err(format!("{what} names {{{name}}}, not in the path"));
            }
            rest = &rest[start + end + 1..];
        }
        Ok(Template(text.to_owned()))
    }

    pub fn fill(&self, params: &PathParams) -> String {
        let mut out = self.0.clone();
        for (name, value) in &params.0 {
            out = out
                .replace(&format!("{{{name}}}"), value)
                .replace(&format!("{{*{name}}}"), value);
        }
        out
    }
}

/// Percent-decodes one path piece (invalid escapes stay as written).
fn decode_segment(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_and_rest_takes_the_tail() {
        let p = PathPattern::parse("/orders/{id}/items/{*rest}").unwrap();
        let got = p.matches("/orders/4%2F2/items/a/b").unwrap();
        assert_eq!(got.get("id"), Some("4/2"));
        assert_eq!(got.get("rest"), Some("a/b"));
        assert!(p.matches("/orders/4").is_none());
        assert!(p.matches("/orders//items/x").is_none());
        let t = Template::parse("o-{id}", &p, "key template").unwrap();
        assert_eq!(t.fill(&got), "o-4/2");
    }

    #[test]
    fn bad_patterns_and_templates_are_refused() {
        assert!(PathPattern::parse("no-slash").is_err());
        assert!(PathPattern::parse("/a/{*r}/b").is_err());
        assert!(PathPattern::parse("/a/x{y}").is_err());
        assert!(PathPattern::parse("/a/{y}/{y}").is_err());
        let p = PathPattern::parse("/a/{y}").unwrap();
        let err = Template::parse("{z}", &p, "key template").unwrap_err();
        assert!(err.contains("{z}"), "{err}");
        assert!(Template::parse("{y", &p, "key template").is_err());
    }
}
