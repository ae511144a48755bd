//! The one place where errors become HTTP answers: each module's error type in, a status
//! code and a one-line plain-text reason out.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
                | DecodeError::Limit(_) => StatusCode::BAD_REQUEST,
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
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
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
                | DecodeError::WireType { .. } => "malformed",
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
        let mut res = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
