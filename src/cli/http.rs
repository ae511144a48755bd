//! A small HTTP/1.1 client for the subcommands (plain http): a request in (JSON for
//! `deploy`, raw bytes for the demo's pushes and `backtest`'s remote read), the status and
//! body out, within a timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Answer, HttpError> {
        match json {
            Some(v) => {
                let body = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
                self.send_bytes(method, url, &[("content-type", "application/json")], body)
                    .await
            }
            None => self.send_bytes(method, url, &[], Bytes::new()).await,
        }
    }

    /// One exchange with a body of any kind and the given headers.
    pub async fn send_bytes(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let uri: hyper::Uri = url.parse().map_err(|_| HttpError::Url(url.to_string()))?;
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = Full::new(body);
        let req = req
            .header(
                "user-agent",
                concat!("deploywatch/", env!("CARGO_PKG_VERSION")),
            )
            .body(body)
            .map_err(|_| HttpError::Url(url.to_string()))?;
        self.exchange(url, req).await
    }

    /// POSTs `body` as it is with the given headers (e.g. a snappy-compressed protobuf).
    pub async fn post_bytes(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let uri: hyper::Uri = url.parse().map_err(|_| HttpError::Url(url.to_string()))?;
        let mut req = Request::builder().method(Method::POST).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .header(
                "user-agent",
                concat!("deploywatch/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|_| HttpError::Url(url.to_string()))?;
        self.exchange(url, req).await
    }

    async fn exchange(&self, url: &str, req: Request<Full<Bytes>>) -> Result<Answer, HttpError> {
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Unreachable {
                    url: url.to_string(),
                    reason: root_cause(&e),
                })?;
            let status = res.status().as_u16();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            })?
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
