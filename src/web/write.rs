//! `POST /api/v1/write`: a remote-write request in; 204 (or the RW 2.0 written-counts
//! headers) or an error status with a one-line reason out.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::error::ApiError;
use crate::app::App;
use crate::ingest::{DecodeError, Protocol};

pub async fn write(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let header_str = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    let protocol = Protocol::negotiate(
        header_str(header::CONTENT_TYPE),
        header_str(header::CONTENT_ENCODING),
    );
    let counted_as = protocol.as_ref().ok().copied();
    let result = handle(&app, protocol, &headers, body).await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            app.metrics.write_rejected(e.reject_reason());
            let status = e.status();
            if status.is_server_error() {
                tracing::warn!(error = %e, "Remote-write request refused.");
            } else {
                tracing::debug!(error = %e, "Remote-write request rejected.");
            }
            e.into_response()
        }
    };
    app.metrics
        .write_answered(counted_as, response.status().as_u16(), started.elapsed());
    response
}

async fn handle(
    app: &Arc<App>,
    protocol: Result<Protocol, DecodeError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let protocol = protocol?;
    let _slot = app
        .ingest_slots
        .try_acquire()
        .map_err(|_| ApiError::Overloaded)?;
    let limit = app.config.load().limits.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(DecodeError::TooLarge { size: len, limit }.into());
        }
    }
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::from(DecodeError::TooLarge {
                    size: limit + 1,
                    limit,
                })
            } else {
                ApiError::BadRequest(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    app.metrics.write_bytes.inc_by(bytes.len() as u64);
    // Decoding, storing and judging are CPU work: on the blocking pool, a few at a time, so
    // the runtime's workers keep answering health, readiness and the gates.
    let mut outcome = app.push_off_worker(protocol, bytes).await?;
    if let Some(refused) = outcome.store.refused.take() {
        // The rest of the request is stored; the sender learns of the first refused sample
        // (and does not retry a 4xx: the same samples would be refused again).
        let o = &outcome.store;
        let mut detail = format!(
            "samples refused: {} ({} too far in the future, {} too old); the other {} samples of the request were stored",
            o.too_far_in_future + o.too_old,
            o.too_far_in_future,
            o.too_old,
            o.samples_appended + o.duplicates,
        );
        if let Some(limit) = &o.limited_by {
            detail.push_str(&format!(
                "; also {limit}: {} new series refused",
                o.series_over_limit
            ));
        }
        return Err(ApiError::SamplesRefused { refused, detail });
    }
    if let Some(limit) = &outcome.store.limited_by {
        // The rest of the request is stored; the sender learns of the limit (and does not
        // retry a 4xx: the same series would be refused again).
        return Err(ApiError::PartlyStored(format!(
            "{limit}: {} new series refused, {} of their samples dropped; the other {} samples of the request were stored",
            outcome.store.series_over_limit,
            outcome.store.samples_over_limit,
            outcome.store.samples_appended + outcome.store.duplicates,
        )));
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    if protocol == Protocol::V2 {
        // Accepted samples: a retried one already held, and a non-finite one (accepted as
        // Prometheus does, not kept) count as written; the sender has nothing to resend.
        let written =
            outcome.store.samples_appended + outcome.store.duplicates + outcome.store.non_finite;
        let h = res.headers_mut();
        h.insert(
            "X-Prometheus-Remote-Write-Samples-Written",
            HeaderValue::from(written),
        );
        let histograms = outcome.store.histograms_appended + outcome.store.histogram_duplicates;
        h.insert(
            "X-Prometheus-Remote-Write-Histograms-Written",
            HeaderValue::from(histograms),
        );
        // Exemplars are counted and dropped, never written.
        h.insert(
            "X-Prometheus-Remote-Write-Exemplars-Written",
            HeaderValue::from(0u64),
        );
    }
    Ok(res)
}
