//! `--selector`: a PromQL series selector (`{job="checkout"}`, `up{job=~"a|b", env!="dev"}`)
//! in, remote-read `LabelMatcher`s out. Strings are quoted with `"`, `'` or backticks (raw),
//! with PromQL's escapes in the first two.

use crate::proto::prometheus::{label_matcher::Type, LabelMatcher};

/// Why a selector does not parse; the message points at the offending byte.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("--selector {input:?}: {message} at byte {at}")]
pub struct SelectorError {
    pub input: String,
    pub at: usize,
    pub message: String,
}

/// Parses a series selector into matchers, in the order written (a metric name first).
pub fn parse(input: &str) -> Result<Vec<LabelMatcher>, SelectorError> {
    let mut p = Parser { s: input, i: 0 };
    let mut out = Vec::new();
    p.ws();
    if p.peek().is_some_and(is_name_start) {
        let name = p.name(true)?;
        out.push(matcher(Type::Eq, "__name__", name.to_string()));
        p.ws();
    }
    if p.peek() == Some('{') {
        p.i += 1;
        loop {
            p.ws();
            if p.eat('}') {
                break;
            }
            let name = p.name(false)?;
            p.ws();
            let ty = p.op()?;
            p.ws();
            let value = p.string()?;
            if matches!(ty, Type::Re | Type::Nre) {
                // Prometheus anchors label regexes; check them the same way here.
                if let Err(e) = regex::Regex::new(&format!("^(?:{value})$")) {
                    return Err(p.err(format!("invalid regex {value:?}: {e}")));
                }
            }
            out.push(matcher(ty, name, value));
            p.ws();
            if p.eat(',') {
                continue;
            }
            if p.eat('}') {
                break;
            }
            return Err(p.err("expected ',' or '}'".into()));
        }
        p.ws();
    }
    if p.i < input.len() {
        return Err(p.err("unexpected text after the selector".into()));
    }
    if out.is_empty() {
        return Err(p.err("expected a selector such as {job=\"checkout\"}".into()));
    }
    // Prometheus refuses a query whose every matcher matches the empty value (it would
    // select every series); say so before asking.
    if out.iter().all(matches_empty) {
        return Err(SelectorError {
            input: input.into(),
            at: 0,
            message: "at least one matcher must not match the empty string (e.g. job=\"checkout\")"
                .into(),
        });
    }
    Ok(out)
}

fn matcher(ty: Type, name: &str, value: String) -> LabelMatcher {
    LabelMatcher {
        r#type: ty as i32,
        name: name.into(),
        value,
    }
}

fn matches_empty(m: &LabelMatcher) -> bool {
    let re = || {
        regex::Regex::new(&format!("^(?:{})$", m.value))
            .map(|r| r.is_match(""))
            .unwrap_or(false)
    };
    match Type::try_from(m.r#type).unwrap_or(Type::Eq) {
        Type::Eq => m.value.is_empty(),
        Type::Neq => !m.value.is_empty(),
        Type::Re => re(),
        Type::Nre => !re(),
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, message: String) -> SelectorError {
        SelectorError {
            input: self.s.into(),
            at: self.i,
            message,
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.i += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    /// A metric name (may contain `:`) or a label name.
    fn name(&mut self, metric: bool) -> Result<&'a str, SelectorError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
            if !ok || (self.i == start && c.is_ascii_digit()) {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err("expected a label name".into()));
        }
        Ok(&self.s[start..self.i])
    }

    fn op(&mut self) -> Result<Type, SelectorError> {
        let rest = &self.s[self.i..];
        let (ty, n) = if rest.starts_with("=~") {
            (Type::Re, 2)
        } else if rest.starts_with("!~") {
            (Type::Nre, 2)
        } else if rest.starts_with("!=") {
            (Type::Neq, 2)
        } else if rest.starts_with('=') {
            (Type::Eq, 1)
        } else {
            return Err(self.err("expected one of =, !=, =~, !~".into()));
        };
        self.i += n;
        Ok(ty)
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let start = self.i;
        let Some(q) = self.peek().filter(|c| matches!(c, '"' | '\'' | '`')) else {
            return Err(self.err("expected a quoted label value".into()));
        };
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                self.i = start;
                return Err(self.err("unterminated string".into()));
            };
            self.i += c.len_utf8();
            if c == q {
                return Ok(out);
            }
            if c == '\\' && q != '`' {
                let Some(e) = self.peek() else {
                    self.i = start;
                    return Err(self.err("unterminated string".into()));
                };
                self.i += e.len_utf8();
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '\\' | '"' | '\'' => e,
                    other => {
                        self.i -= other.len_utf8() + 1;
                        return Err(self.err(format!("unknown escape \\{other}")));
                    }
                });
            } else {
                out.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(input: &str) -> Vec<(i32, String, String)> {
        parse(input)
            .unwrap()
            .into_iter()
            .map(|m| (m.r#type, m.name, m.value))
            .collect()
    }

    #[test]
    fn parses_the_four_operators_names_and_quotes() {
        assert_eq!(
            show(r#" up{ job="check\"out", env!='dev', version=~`v1\..*`, pod!~"x|y" ,} "#),
            vec![
                (0, "__name__".into(), "up".into()),
                (0, "job".into(), "check\"out".into()),
                (1, "env".into(), "dev".into()),
                (2, "version".into(), r"v1\..*".into()),
                (3, "pod".into(), "x|y".into()),
            ]
        );
        assert_eq!(
            show("node:cpu:rate5m"),
            vec![(0, "__name__".into(), "node:cpu:rate5m".into())]
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = parse(r#"{job="a" version="b"}"#).unwrap_err();
        assert_eq!(e.at, 9);
        assert!(e.message.contains("expected ',' or '}'"), "{e}");
        assert!(parse(r#"{job=="a"}"#)
            .unwrap_err()
            .message
            .contains("quoted"));
        assert!(parse(r#"{job="a}"#)
            .unwrap_err()
            .message
            .contains("unterminated"));
        assert!(parse(r#"{job~"a"}"#).unwrap_err().message.contains("=~"));
        assert!(parse(r#"{1job="a"}"#)
            .unwrap_err()
            .message
            .contains("label name"));
        assert!(parse(r#"{job="a"} x"#)
            .unwrap_err()
            .message
            .contains("after"));
        assert!(parse(r#"{job=~"("}"#)
            .unwrap_err()
            .message
            .contains("invalid regex"));
        assert!(parse(r#"{job="a\q"}"#)
            .unwrap_err()
            .message
            .contains("escape"));
        assert!(parse("")
            .unwrap_err()
            .message
            .contains("expected a selector"));
        assert!(parse("{}")
            .unwrap_err()
            .message
            .contains("expected a selector"));
        // Every matcher matches the empty value: Prometheus would refuse it.
        assert!(parse(r#"{job=~".*"}"#)
            .unwrap_err()
            .message
            .contains("must not match"));
        assert!(parse(r#"{job!="a"}"#).is_err());
        assert!(parse(r#"{job!="a", env="prod"}"#).is_ok());
    }
}
