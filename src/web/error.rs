//! The one place where errors become HTTP answers: each module's error type in, a status
//! code and a JSON body `{"error": "one line a user can act on"}` out (contract, "Errors").
//! Messages speak of the request (the field, the parameter, what it must be), never of the
//! program (type names, the JSON parser's words).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::PushError;
use crate::config::ConfigError;
use crate::deploy::DeployError;
use crate::ingest::DecodeError;
use crate::store::{SampleRefused, StoreError};

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("too many remote-write requests in flight; retry later")]
    Overloaded,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A remote-write request whose new series ran into a series limit; the rest was stored.
    #[error("{0}")]
    PartlyStored(String),
    /// A remote-write request with samples outside the time bounds; the rest was stored.
    #[error("{refused}; {detail}")]
    SamplesRefused {
        refused: SampleRefused,
        /// The counts, and the series limit if one refused series too.
        detail: String,
    },
    /// A gate asked about a service deploywatch has never seen, with
    /// `gates.unknown_service: refuse`.
    #[error(
        "service {service:?} is not known to deploywatch (no series and no deploy of it){}",
        known_list(known)
    )]
    UnknownService { service: String, known: Vec<String> },
    /// A request's method that the path does not take.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
}

/// At most this many known services are named in an answer.
const KNOWN_NAMED: usize = 50;

fn known_list(known: &[String]) -> String {
    match known.len() {
        0 => "; it knows no service yet".into(),
        n if n <= KNOWN_NAMED => format!("; the known services: {}", known.join(", ")),
        n => format!(
            "; the known services: {}, and {} more (GET /api/v1/services lists them)",
            known[..KNOWN_NAMED].join(", "),
            n - KNOWN_NAMED
        ),
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::Push(PushError::Decode(e))
    }
}

impl ApiError {
    /// The status code for this error. Data that will stay bad gets a 4xx, never a 5xx,
    /// since Prometheus retries 5xx answers forever.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Push(PushError::Decode(e)) => match e {
                DecodeError::UnsupportedContentType(_) | DecodeError::UnsupportedEncoding(_) => {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                DecodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                DecodeError::Empty
                | DecodeError::Snappy(_)
                | DecodeError::Truncated
                | DecodeError::Malformed(_)
                | DecodeError::WireType { .. }
                | DecodeError::Labels(_)
                | DecodeError::Limit(_)
                | DecodeError::Histogram(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::Push(PushError::Store(e)) => match e {
                StoreError::InvalidUtf8 { .. } | StoreError::Labels(_) => StatusCode::BAD_REQUEST,
            },
            ApiError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Deploy(DeployError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ApiError::Deploy(DeployError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Deploy(DeployError::Journal(_) | DeployError::History(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) | ApiError::UnknownService { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_)
            | ApiError::PartlyStored(_)
            | ApiError::SamplesRefused { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

impl ApiError {
    /// The reason a refused remote-write request is counted under
    /// (`deploywatch_ingest_rejected_requests_total`).
    pub fn reject_reason(&self) -> &'static str {
        match self {
            ApiError::Push(PushError::Decode(e)) => match e {
                DecodeError::UnsupportedContentType(_) | DecodeError::UnsupportedEncoding(_) => {
                    "unsupported_media_type"
                }
                DecodeError::TooLarge { .. } => "too_large",
                DecodeError::Labels(_) => "invalid_labels",
                DecodeError::Limit(_) => "limit",
                DecodeError::Empty
                | DecodeError::Snappy(_)
                | DecodeError::Truncated
                | DecodeError::Malformed(_)
                | DecodeError::WireType { .. }
                | DecodeError::Histogram(_) => "malformed",
            },
            ApiError::Push(PushError::Store(_)) => "invalid_labels",
            ApiError::PartlyStored(_) => "series_limit",
            ApiError::SamplesRefused { .. } => "out_of_bounds",
            ApiError::Overloaded => "overloaded",
            _ => "malformed",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "error": self.to_string() });
        if let ApiError::UnknownService { service, known } = &self {
            body["service"] = json!(service);
            body["known_services"] = json!(known);
        }
        let mut res = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// A JSON body that does not match what an endpoint takes, said in the user's terms: the
/// field as a path (`changes[0].files`, `body` for the whole), what it must be
/// (`expected` of the path with indices as `[]`, e.g. `changes[].files`) and what it was.
pub fn body_error(
    e: &serde_path_to_error::Error<serde_json::Error>,
    expected: impl Fn(&str) -> &'static str,
) -> String {
    use serde_json::error::Category;
    let inner = e.inner();
    match inner.classify() {
        Category::Eof if inner.line() == 1 && inner.column() == 0 => {
            format!("body: empty; expected {}", expected("."))
        }
        Category::Syntax | Category::Eof => format!(
            "body: not valid JSON (line {}, column {})",
            inner.line(),
            inner.column()
        ),
        Category::Io => "body: cannot be read".into(),
        Category::Data => {
            let path = e.path().to_string();
            if path.starts_with('[') {
                // serde reads an object from a list of its fields' values, in order: say
                // that a list is not what the body must be, not which element failed.
                return format!("body: expected {}, got a list", expected("."));
            }
            let field = if path == "." { "body" } else { path.as_str() };
            // The message without the position: " at line 1 column 12".
            let text = inner.to_string();
            let text = text.rsplit_once(" at line ").map_or(&*text, |(t, _)| t);
            let want = expected(&shape(&path));
            if let Some(rest) = text.strip_prefix("unknown field `") {
                let name = rest.split('`').next().unwrap_or(rest);
                // serde lists them as "expected `a`", "expected `a` or `b`" or "expected
                // one of `a`, `b`, `c`".
                let one_of: Vec<&str> = rest
                    .split_once("expected ")
                    .map(|(_, l)| {
                        let l = l.strip_prefix("one of ").unwrap_or(l);
                        l.split(", ")
                            .flat_map(|f| f.split(" or "))
                            .map(|f| f.trim_matches('`'))
                            .collect()
                    })
                    .unwrap_or_default();
                let at = field_at(&path, name);
                return if one_of.is_empty() {
                    format!("{at}: unknown field")
                } else {
                    format!("{at}: unknown field; the fields are {}", one_of.join(", "))
                };
            }
            if let Some(rest) = text.strip_prefix("duplicate field `") {
                let name = rest.split('`').next().unwrap_or(rest);
                return format!("{}: given twice", field_at(&path, name));
            }
            let got = text
                .strip_prefix("invalid type: ")
                .or_else(|| text.strip_prefix("invalid value: "))
                .and_then(|r| r.split_once(", expected"))
                .map(|(unexpected, _)| describe(unexpected))
                .or_else(|| text.starts_with("invalid length ").then(|| "a list".into()));
            match got {
                Some(got) => format!("{field}: expected {want}, got {got}"),
                None => format!("{field}: expected {want}"),
            }
        }
    }
}

/// The path of field `name` of the object at `path` (serde's path may end at the object or
/// at the field).
fn field_at(path: &str, name: &str) -> String {
    if path == "." {
        name.to_string()
    } else if path == name || path.ends_with(&format!(".{name}")) {
        path.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A path with its list indices blanked: `changes[3].files[0]` → `changes[].files[]`.
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// A value serde names (`string "x"`, ``integer `3` ``, `map`, `sequence`) as JSON does.
fn describe(unexpected: &str) -> String {
    let quoted = |s: &str| -> String {
        let v = s.trim_matches('`');
        let mut short: String = v.chars().take(40).collect();
        if short.len() < v.len() {
            short.push('…');
        }
        short
    };
    if let Some(s) = unexpected.strip_prefix("string ") {
        return format!("the string {}", quoted(s));
    }
    for number in ["integer ", "floating point "] {
        if let Some(n) = unexpected.strip_prefix(number) {
            return format!("the number {}", quoted(n));
        }
    }
    if let Some(b) = unexpected.strip_prefix("boolean ") {
        return quoted(b);
    }
    match unexpected {
        "map" => "an object".into(),
        "sequence" => "a list".into(),
        "null" | "unit value" => "null".into(),
        _ => "another kind of value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: Option<String>,
        at: Option<i64>,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        #[serde(default)]
        files: Vec<String>,
    }

    fn error(body: &str) -> String {
        let e = serde_path_to_error::deserialize::<_, Body>(
            &mut serde_json::Deserializer::from_str(body),
        )
        .unwrap_err();
        body_error(&e, |path| match path {
            "." => "an object with name",
            "name" => "a string",
            "at" => "Unix milliseconds (an integer)",
            "items" => "a list of items",
            "items[]" => "an item",
            "items[].files" => "a list of file paths",
            "items[].files[]" => "a file path",
            _ => "something else",
        })
    }

    #[test]
    fn body_errors_name_the_field_in_the_users_terms() {
        assert_eq!(
            error(r#"{"name": 3}"#),
            "name: expected a string, got the number 3"
        );
        assert_eq!(
            error(r#"{"at": "now"}"#),
            "at: expected Unix milliseconds (an integer), got the string \"now\""
        );
        assert_eq!(
            error(r#"{"items": [{"files": "a.rs"}]}"#),
            "items[0].files: expected a list of file paths, got the string \"a.rs\""
        );
        assert_eq!(
            error(r#"{"items": [{}, {"files": [1]}]}"#),
            "items[1].files[0]: expected a file path, got the number 1"
        );
        assert_eq!(
            error(r#"{"items": ["x"]}"#),
            "items[0]: expected an item, got the string \"x\""
        );
        assert_eq!(
            error(r#"["a", "b"]"#),
            "body: expected an object with name, got a list"
        );
        assert_eq!(
            error(r#"{"colour": "red"}"#),
            "colour: unknown field; the fields are name, at, items"
        );
        assert_eq!(
            error(r#"{"items": [{"file": []}]}"#),
            "items[0].file: unknown field; the fields are files"
        );
        assert_eq!(
            error(r#"{"items": [{"files": [], "files": []}]}"#),
            "items[0].files: given twice"
        );
        assert_eq!(error(""), "body: empty; expected an object with name");
        assert_eq!(
            error("{not json"),
            "body: not valid JSON (line 1, column 2)"
        );
        assert_eq!(
            error(r#"{"name": "a""#),
            "body: not valid JSON (line 1, column 12)"
        );
        for e in [
            error(r#"{"name": 3}"#),
            error(r#"["a", "b"]"#),
            error(r#"{"items": {}}"#),
        ] {
            for internal in ["struct", "sequence", "map", "Body", "i64", "elements"] {
                assert!(!e.contains(internal), "{e:?} quotes {internal:?}");
            }
        }
    }

    #[test]
    fn errors_are_json_with_one_message() {
        let res = ApiError::UnknownService {
            service: "chekout".into(),
            known: vec!["checkout".into(), "payments".into()],
        };
        assert_eq!(
            res.to_string(),
            "service \"chekout\" is not known to deploywatch (no series and no deploy of it); the known services: checkout, payments"
        );
        assert_eq!(res.into_response().status(), StatusCode::NOT_FOUND);
    }
}
