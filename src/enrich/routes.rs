//! `http_route` from `/users/{id}`-style patterns. Pure.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("route pattern {0:?} must start with '/'")]
    NoLeadingSlash(String),
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// `{name}` or `:name`: any one segment.
    Param,
    /// `*` at the end: the rest of the path.
    Rest,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

/// Matches paths against the configured patterns; the first matching pattern wins.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    patterns: Vec<Pattern>,
    unmatched: String,
}

impl RouteMatcher {
    pub fn new(patterns: &[String], unmatched: &str) -> Result<Self, RouteError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                if !p.starts_with('/') {
                    return Err(RouteError::NoLeadingSlash(p.clone()));
                }
                let segments = p
                    .split('/')
                    .skip(1)
                    .map(|s| {
                        if (s.starts_with('{') && s.ends_with('}')) || s.starts_with(':') {
                            Segment::Param
                        } else if s == "*" {
                            Segment::Rest
                        } else {
                            Segment::Literal(s.to_string())
                        }
                    })
                    .collect();
                Ok(Pattern {
                    text: p.clone(),
                    segments,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RouteMatcher {
            patterns,
            unmatched: unmatched.to_string(),
        })
    }

    pub fn route(&self, path: &str) -> String {
        for p in &self.patterns {
            if matches(&p.segments, path) {
                return p.text.clone();
            }
        }
        self.unmatched.clone()
    }
}

fn matches(segments: &[Segment], path: &str) -> bool {
    let mut parts = path.split('/').skip(1);
    for seg in segments {
        match seg {
            Segment::Rest => return true,
            Segment::Param => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            Segment::Literal(l) => {
                if parts.next() != Some(l.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[&str]) -> RouteMatcher {
        RouteMatcher::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "/**").unwrap()
    }

    #[test]
    fn params_match_one_segment() {
        let r = m(&["/users/{id}", "/users/:id/orders", "/static/*"]);
        assert_eq!(r.route("/users/7"), "/users/{id}");
        assert_eq!(r.route("/users/7/orders"), "/users/:id/orders");
        assert_eq!(r.route("/users/"), "/**");
        assert_eq!(r.route("/static/a/b.css"), "/static/*");
        assert_eq!(r.route("/other"), "/**");
    }

    #[test]
    fn rejects_relative_patterns() {
        assert!(RouteMatcher::new(&["users".into()], "/**").is_err());
    }
}
