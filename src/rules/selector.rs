//! PromQL-style series selectors (`http_requests_total{code=~"5..", route!="/health"}`):
//! text in, a matcher over a series' labels out. Regexes are anchored, as in Prometheus.

use std::fmt;

use regex::Regex;

use crate::store::LabelSet;

/// How one label is matched.
#[derive(Debug, Clone)]
pub enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

/// One `label op "value"` clause.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

impl Matcher {
    fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Eq(v) => value == v,
            MatchOp::Ne(v) => value != v,
            MatchOp::Re(r) => r.is_match(value),
            MatchOp::NotRe(r) => !r.is_match(value),
        }
    }
}

/// A parsed selector: an optional metric name and label matchers.
#[derive(Debug, Clone)]
pub struct Selector {
    pub text: String,
    pub metric: Option<String>,
    pub matchers: Vec<Matcher>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Whether a series with these labels is selected. A missing label matches as "".
    pub fn matches(&self, labels: &LabelSet) -> bool {
        if let Some(m) = &self.metric {
            if labels.metric_name() != m {
                return false;
            }
        }
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
    }

    /// Whether a native histogram series with these labels is selected: a selector naming
    /// `x_bucket` (a classic histogram's buckets) or `x` selects the native histogram `x`.
    pub fn matches_native(&self, labels: &LabelSet) -> bool {
        if let Some(m) = &self.metric {
            let name = labels.metric_name();
            if m != name && m.strip_suffix("_bucket") != Some(name) {
                return false;
            }
        }
        self.matchers.iter().filter(|m| m.name != "le").all(|m| {
            if m.name == "__name__" {
                let name = labels.metric_name();
                m.matches(name) || m.matches(&format!("{name}_bucket"))
            } else {
                m.matches(labels.get(&m.name).unwrap_or(""))
            }
        })
    }

    /// Parses `name{label="v", other=~"re"}`, `name`, or `{__name__="x"}`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let s = text.trim();
        let name_end = s.find('{').unwrap_or(s.len());
        let name = s[..name_end].trim();
        let metric = if name.is_empty() {
            None
        } else {
            if !is_metric_name(name) {
                return Err(format!("invalid metric name {name:?}"));
            }
            Some(name.to_string())
        };
        let mut matchers = Vec::new();
        if name_end < s.len() {
            let body = s[name_end + 1..]
                .strip_suffix('}')
                .ok_or_else(|| format!("selector {s:?} lacks a closing '}}'"))?;
            let mut rest = body.trim();
            while !rest.is_empty() {
                let n_end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or_else(|| format!("label matcher {rest:?} lacks an operator"))?;
                let lname = &rest[..n_end];
                if lname.is_empty() || lname.as_bytes()[0].is_ascii_digit() {
                    return Err(format!("invalid label name in {rest:?}"));
                }
                rest = rest[n_end..].trim_start();
                let (op, after) = ["=~", "!~", "!=", "="]
                    .iter()
                    .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r)))
                    .ok_or_else(|| format!("expected =, !=, =~ or !~ after {lname:?}"))?;
                let (value, after) = parse_string(after.trim_start())?;
                let anchored = || {
                    Regex::new(&format!("^(?:{value})$"))
                        .map_err(|e| format!("invalid regex {value:?}: {e}"))
                };
                let op = match op {
                    "=" => MatchOp::Eq(value.clone()),
                    "!=" => MatchOp::Ne(value.clone()),
                    "=~" => MatchOp::Re(anchored()?),
                    _ => MatchOp::NotRe(anchored()?),
                };
                if lname == "__name__" {
                    if let MatchOp::Eq(v) = &op {
                        if metric.is_some() {
                            return Err("metric name given twice".into());
                        }
                        matchers.push(Matcher {
                            name: lname.into(),
                            op: MatchOp::Eq(v.clone()),
                        });
                        rest = after.trim_start();
                        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
                        continue;
                    }
                }
                matchers.push(Matcher {
                    name: lname.into(),
                    op,
                });
                rest = after.trim_start();
                match rest.strip_prefix(',') {
                    Some(r) => rest = r.trim_start(),
                    None if rest.is_empty() => {}
                    None => return Err(format!("expected ',' or '}}' before {rest:?}")),
                }
            }
        }
        if metric.is_none() && matchers.is_empty() {
            return Err("empty selector".into());
        }
        Ok(Selector {
            text: s.to_string(),
            metric,
            matchers,
        })
    }

    /// The metric name this selector requires, if any (used to skip series cheaply).
    pub fn metric_name(&self) -> Option<&str> {
        self.metric.as_deref().or_else(|| {
            self.matchers
                .iter()
                .find_map(|m| match (&m.op, m.name.as_str()) {
                    (MatchOp::Eq(v), "__name__") => Some(v.as_str()),
                    _ => None,
                })
        })
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Parses a double- or single-quoted string with `\\`, `\"`, `\'`, `\n` escapes.
fn parse_string(s: &str) -> Result<(String, &str), String> {
    let quote = s
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'')
        .ok_or_else(|| format!("expected a quoted value at {s:?}"))?;
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, c)) => out.push(c),
                None => break,
            },
            c if c == quote => return Ok((out, &s[1 + i + 1..])),
            c => out.push(c),
        }
    }
    Err(format!("unterminated string {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = Selector::parse(r#"http_requests_total{code=~"5..", route!="/health"}"#).unwrap();
        let l = |code: &str, route: &str| {
            LabelSet::from_strs(&[
                ("__name__", "http_requests_total"),
                ("code", code),
                ("route", route),
            ])
        };
        assert!(s.matches(&l("503", "/a")));
        assert!(!s.matches(&l("200", "/a")));
        assert!(!s.matches(&l("500", "/health")));
        assert!(!s.matches(&LabelSet::from_strs(&[
            ("__name__", "other"),
            ("code", "500")
        ])));
        assert_eq!(s.metric_name(), Some("http_requests_total"));
        let any = Selector::parse("{__name__=\"up\"}").unwrap();
        assert_eq!(any.metric_name(), Some("up"));
        // A missing label matches as "".
        let s = Selector::parse(r#"x{status=""}"#).unwrap();
        assert!(s.matches(&LabelSet::from_strs(&[("__name__", "x")])));
    }

    #[test]
    fn rejects_bad_selectors() {
        for bad in [
            "",
            "{}",
            "x{a=b}",
            "x{a=\"b\"",
            "x{a~\"b\"}",
            "1x",
            "x{a=~\"(\"}",
            "x{a=\"1\" b=\"2\"}",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
