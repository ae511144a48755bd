//! Query parameters of the API: the query string in; the values an endpoint takes out, or a
//! `400` naming the parameter. A parameter an endpoint does not take is refused, never
//! ignored: `?verdcit=rollback` must not quietly answer as if no filter were given.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;

use super::error::ApiError;

/// The query string's parameters, in order.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, ApiError> {
        let Query(pairs) =
            Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(|_| {
                ApiError::BadRequest("the query string is not valid URL encoding".into())
            })?;
        Ok(Params { pairs })
    }
}

impl Params {
    /// Refuses parameters other than `allowed`, and any given twice; `endpoint` (`GET
    /// /api/v1/deploys`) names what takes them.
    pub fn only(&self, endpoint: &str, allowed: &[&str]) -> Result<&Params, ApiError> {
        for (i, (name, _)) in self.pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let takes = match allowed {
                    [] => "no query parameters".to_string(),
                    [one] => format!("only {one}"),
                    _ => format!("only {}", allowed.join(", ")),
                };
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {name:?}: {endpoint} takes {takes}"
                )));
            }
            if self.pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {name:?} given twice"
                )));
            }
        }
        Ok(self)
    }

    /// A parameter's value; given empty (`?service=`) it is a `400`, not "absent".
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.pairs.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, v)) if v.trim().is_empty() => {
                Err(ApiError::BadRequest(format!("{name}: must not be empty")))
            }
            Some((_, v)) => Ok(Some(v)),
        }
    }

    /// A parameter that must be given.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)?
            .ok_or_else(|| ApiError::BadRequest(format!("{name}: required")))
    }

    /// A parameter whose value must be one of `values`.
    pub fn one_of(&self, name: &str, values: &[&str]) -> Result<Option<&str>, ApiError> {
        match self.get(name)? {
            Some(v) if !values.contains(&v) => Err(ApiError::BadRequest(format!(
                "{name}: expected {}, got {v:?}",
                match values {
                    [one] => one.to_string(),
                    [init @ .., last] => format!("{} or {last}", init.join(", ")),
                    [] => "nothing".to_string(),
                }
            ))),
            v => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        let uri: axum::http::Uri = format!("/x?{q}").parse().unwrap();
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri).unwrap();
        Params { pairs }
    }

    #[test]
    fn unknown_repeated_empty_and_invalid_parameters_are_refused() {
        let p = params("service=checkout&version=v%202");
        p.only("GET /x", &["service", "version"]).unwrap();
        assert_eq!(p.get("version").unwrap(), Some("v 2"));
        assert_eq!(p.required("service").unwrap(), "checkout");
        let e = params("servce=checkout")
            .only("GET /x", &["service"])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown query parameter \"servce\": GET /x takes only service"
        );
        let e = params("a=1").only("POST /y", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown query parameter \"a\": POST /y takes no query parameters"
        );
        let e = params("service=a&service=b")
            .only("GET /x", &["service"])
            .unwrap_err();
        assert_eq!(e.to_string(), "query parameter \"service\" given twice");
        assert_eq!(
            params("service=").get("service").unwrap_err().to_string(),
            "service: must not be empty"
        );
        assert_eq!(
            params("").required("service").unwrap_err().to_string(),
            "service: required"
        );
        assert_eq!(
            params("format=xml")
                .one_of("format", &["json", "markdown", "md"])
                .unwrap_err()
                .to_string(),
            "format: expected json, markdown or md, got \"xml\""
        );
        assert_eq!(
            params("require=all")
                .one_of("require", &["pass"])
                .unwrap_err()
                .to_string(),
            "require: expected pass, got \"all\""
        );
    }
}
