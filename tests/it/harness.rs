//! The processes and servers a test talks to, each on 127.0.0.1 with a port of its own:
//! [`Deploywatch`] (the binary under test), [`Prometheus`] (Debian's 2.42),
//! [`Alertmanager`] (Debian's 0.25) and a [`MetricsTarget`] for Prometheus to scrape. All are stopped on drop; a failing test prints
//! their logs. Every wait is bounded and panics with what it was waiting for.
//!
//! Tests are plain `#[test]` functions; the HTTP client and the target server run on one
//! shared tokio runtime, which the synchronous helpers below block on.

#![allow(dead_code)] // Not every test module uses every helper.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use prost::Message;
use serde_json::Value;

use deploywatch::proto::{prometheus as rw1, write_v2 as rw2};

/// Where Debian's prometheus package puts the server.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// The flag with which Prometheus 2.42 scrapes (asking for the protobuf exposition first)
/// and stores native histograms.
pub const PROMETHEUS_NATIVE_HISTOGRAMS: &str = "--enable-feature=native-histograms";

/// Content types of the two remote-write protocols.
pub const RW1_CONTENT_TYPE: &str = "application/x-protobuf";
pub const RW2_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// Bound on a single HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// Polls `check` every `every` until it returns `Ok`, for at most `timeout`. On timeout,
/// returns the last `Err` reason.
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(why) if Instant::now() >= deadline => {
                return Err(format!("gave up after {timeout:?}; last state: {why}"))
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Like [`poll`], but panics naming `what` on timeout (the owners' Drop prints their logs).
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    match poll(timeout, Duration::from_millis(100), check) {
        Ok(v) => v,
        Err(why) => panic!("timed out waiting for {what}: {why}"),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// The runtime the HTTP client and the metrics target run on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("it-runtime")
            .enable_all()
            .build()
            .expect("building the test runtime")
    })
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    // No pooled connections: a test never trips over a connection the server already closed.
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http()
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP exchange; `Err` if the server could not be reached or did not answer in time.
pub fn try_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, String> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    runtime().block_on(async {
        let exchange = async {
            let res = client()
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e:?}"))?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the body: {e}"))?
                .to_bytes();
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.to_vec(),
            })
        };
        tokio::time::timeout(HTTP_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {HTTP_TIMEOUT:?}"))?
    })
}

/// One HTTP exchange that must succeed at the transport level.
pub fn request(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Response {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("HTTP request failed: {e}"))
}

/// GETs a URL and parses its text exposition.
pub fn scrape(url: &str) -> prometheus_parse::Scrape {
    let res = request(Method::GET, url, &[], Vec::new());
    assert_eq!(res.status, 200, "GET {url}: {}", res.text());
    parse_exposition(&res.text())
}

pub fn parse_exposition(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("parsing the text exposition")
}

/// The value of the sample named `name` whose labels include all of `labels`; if several
/// match, their sum (so a label left out aggregates over it). `None` if none matches.
pub fn sample_value(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let mut found = None;
    for s in &scrape.samples {
        if s.metric != name || !labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
            continue;
        }
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        *found.get_or_insert(0.0) += v;
    }
    found
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A port that was free a moment ago. The child may lose a race for it; starters retry.
/// The `remote_write` section of a test Prometheus sending to `deploywatch` (its base URL):
/// a batch at least every second and quick retries, so tests wait seconds, not minutes.
pub fn remote_write_to(deploywatch: &str) -> String {
    format!(
        r#"remote_write:
  - url: {deploywatch}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"#
    )
}

/// [`remote_write_to`], also sending native histograms (`send_native_histograms`, a
/// remote-write option since Prometheus 2.40; they are only scraped with
/// [`PROMETHEUS_NATIVE_HISTOGRAMS`]).
pub fn remote_write_native_histograms_to(deploywatch: &str) -> String {
    remote_write_to(deploywatch) + "    send_native_histograms: true\n"
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A child process with its output going to a log file; killed on drop.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("creating a log file");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("cloning a file handle"))
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc { name, child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `ready_url` until it answers 200; `Err` if the process exits first or time runs out.
    fn wait_ready(&mut self, ready_url: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited with {status} before it was ready",
                    self.name
                ));
            }
            match try_request(Method::GET, ready_url, &[], Vec::new()) {
                Ok(r) if r.status == 200 => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "{} not ready at {ready_url} within {timeout:?}",
                        self.name
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn stop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                self.logs(),
                self.name
            );
        }
    }
}

/// Starts a server on a fresh port, retrying a few times when another process took the
/// port between our probe and the child's bind.
pub fn start_on_free_port(
    name: &'static str,
    dir: &Path,
    ready_path: &str,
    timeout: Duration,
    command: impl Fn(u16) -> Command,
) -> (Proc, u16) {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let port = free_port();
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut proc = Proc::spawn(name, command(port), log);
        match proc.wait_ready(&format!("http://127.0.0.1:{port}{ready_path}"), timeout) {
            Ok(()) => return (proc, port),
            Err(why) => {
                let logs = proc.logs();
                let port_taken = logs.contains("address already in use")
                    || logs.contains("Address already in use");
                if port_taken && attempt < ATTEMPTS {
                    // Dropping `proc` outside a panic: no log dump, just a retry.
                    continue;
                }
                panic!("{why}");
            }
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------------------------
// deploywatch
// ---------------------------------------------------------------------------------------

/// A running `deploywatch` with a temporary `--storage.path`, logging at debug level.
pub struct Deploywatch {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
    config_path: Option<PathBuf>,
    args: Vec<String>,
}

impl Deploywatch {
    /// Starts deploywatch on its embedded default config.
    pub fn start() -> Deploywatch {
        Self::spawn(None, &[], &[])
    }

    /// Starts deploywatch with an optional config file and extra flags (e.g.
    /// `--alertmanager.url=…`).
    pub fn start_with_args(yaml: Option<&str>, args: &[String]) -> Deploywatch {
        Self::spawn(yaml, &[], args)
    }

    /// Starts deploywatch with `yaml` as its `--config.file`.
    pub fn start_with_config(yaml: &str) -> Deploywatch {
        Self::spawn(Some(yaml), &[], &[])
    }

    /// Starts deploywatch with a config file and other files (rule files) beside it, given
    /// by paths relative to the config file's directory.
    pub fn start_with_files(yaml: &str, files: &[(&str, &str)]) -> Deploywatch {
        Self::spawn(Some(yaml), files, &[])
    }

    fn spawn(config: Option<&str>, files: &[(&str, &str)], args: &[String]) -> Deploywatch {
        let dir = tempfile::Builder::new()
            .prefix("deploywatch-it-")
            .tempdir()
            .expect("creating a temporary directory");
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("a file has a parent"))
                .expect("creating a directory");
            std::fs::write(&p, text).expect("writing a file");
        }
        let config_path = config.map(|yaml| {
            let p = dir.path().join("deploywatch.yml");
            std::fs::write(&p, yaml).expect("writing the config file");
            p
        });
        let (proc, port) = Self::launch(dir.path(), config_path.as_deref(), args, None);
        Deploywatch {
            proc,
            port,
            dir,
            config_path,
            args: args.to_vec(),
        }
    }

    /// Starts the process on `port` (or a free one) with `dir/data` as its storage.
    fn launch(
        dir: &Path,
        config_path: Option<&Path>,
        args: &[String],
        port: Option<u16>,
    ) -> (Proc, u16) {
        let storage = dir.join("data");
        let command = |port: u16| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploywatch"));
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--storage.path={}", storage.display()))
                .arg("--log.level=debug");
            if let Some(p) = config_path {
                cmd.arg(format!("--config.file={}", p.display()));
            }
            cmd.args(args);
            cmd
        };
        match port {
            None => start_on_free_port(
                "deploywatch",
                dir,
                "/-/ready",
                Duration::from_secs(20),
                command,
            ),
            Some(port) => {
                let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
                let log = dir.join(format!("deploywatch-restart-{n}.log"));
                let mut proc = Proc::spawn("deploywatch", command(port), log);
                proc.wait_ready(
                    &format!("http://127.0.0.1:{port}/-/ready"),
                    Duration::from_secs(60),
                )
                .unwrap_or_else(|why| panic!("{why}\n{}", proc.logs()));
                (proc, port)
            }
        }
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed).
    pub fn kill9(&mut self) {
        let ok = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(ok.success(), "kill -KILL {}", self.pid());
        wait_for("deploywatch to die", Duration::from_secs(10), || {
            self.proc
                .exited()
                .ok_or_else(|| "still running".to_string())
        });
    }

    /// Starts the process again, with the same port, config, flags and storage.
    pub fn restart(&mut self) {
        assert!(self.proc.exited().is_some(), "restart: still running");
        let (proc, _) = Self::launch(
            self.dir.path(),
            self.config_path.as_deref(),
            &self.args,
            Some(self.port),
        );
        self.proc = proc;
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status and how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(ok.success(), "kill -TERM {}", self.pid());
        let status = wait_for("deploywatch to exit after SIGTERM", timeout, || {
            self.proc
                .exited()
                .ok_or_else(|| "still running".to_string())
        });
        (status, started.elapsed())
    }

    /// The temporary directory holding the config file and `--storage.path`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// POSTs a JSON body to `path`.
    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        request(
            Method::POST,
            &format!("{}{path}", self.url()),
            &[("content-type", "application/json")],
            serde_json::to_vec(body).expect("serialising JSON"),
        )
    }

    /// Base URL, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What the process has logged so far.
    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// POSTs `body` to `path` with the given Content-Type and Content-Encoding headers
    /// (omitted when `None`).
    pub fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, HeaderMap, String) {
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        if let Some(ce) = content_encoding {
            headers.push(("Content-Encoding", ce));
        }
        let res = request(
            Method::POST,
            &format!("{}{path}", self.url()),
            &headers,
            body,
        );
        let text = res.text();
        (res.status, res.headers, text)
    }

    /// Sends a Remote-Write 1.0 request as Prometheus does: protobuf, snappy block, headers.
    pub fn push_v1(&self, req: &rw1::WriteRequest) -> (u16, String) {
        let (status, _, body) = self.push_v1_bytes(&req.encode_to_vec());
        (status, body)
    }

    /// Sends an already encoded (possibly deliberately broken) `WriteRequest`, snappy-compressed.
    pub fn push_v1_bytes(&self, encoded: &[u8]) -> (u16, HeaderMap, String) {
        let headers = [
            ("Content-Type", RW1_CONTENT_TYPE),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ("User-Agent", "Prometheus/2.42.0+ds"),
        ];
        let res = request(
            Method::POST,
            &format!("{}/api/v1/write", self.url()),
            &headers,
            snappy(encoded),
        );
        let text = res.text();
        (res.status, res.headers, text)
    }

    /// Sends a Remote-Write 2.0 request.
    pub fn push_v2(&self, req: &rw2::Request) -> (u16, HeaderMap, String) {
        self.push_v2_bytes(&req.encode_to_vec())
    }

    /// Sends an already encoded (possibly deliberately broken) v2 `Request`, snappy-compressed.
    pub fn push_v2_bytes(&self, encoded: &[u8]) -> (u16, HeaderMap, String) {
        let headers = [
            ("Content-Type", RW2_CONTENT_TYPE),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ];
        let res = request(
            Method::POST,
            &format!("{}/api/v1/write", self.url()),
            &headers,
            snappy(encoded),
        );
        let text = res.text();
        (res.status, res.headers, text)
    }

    /// GETs `path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let res = request(
            Method::GET,
            &format!("{}{path}", self.url()),
            &[],
            Vec::new(),
        );
        assert_eq!(res.status, 200, "GET {path}: {}", res.text());
        serde_json::from_slice(&res.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", res.text()))
    }

    /// `GET /api/v1/services`.
    pub fn services(&self) -> Value {
        self.get_json("/api/v1/services")
    }

    /// `GET /metrics` as text; checks the exposition content type.
    pub fn metrics_text(&self) -> String {
        let res = request(
            Method::GET,
            &format!("{}/metrics", self.url()),
            &[],
            Vec::new(),
        );
        assert_eq!(res.status, 200, "GET /metrics: {}", res.text());
        let ct = res
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("text/plain; version=0.0.4"),
            "GET /metrics content type {ct:?}"
        );
        res.text()
    }

    /// One sample of `/metrics` (summed if `labels` leave several matching).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample_value(&parse_exposition(&self.metrics_text()), name, labels)
    }

    /// `deploywatch_ingest_samples_total{outcome}`; a missing sample is a test failure.
    pub fn samples_total(&self, outcome: &str) -> f64 {
        self.metric("deploywatch_ingest_samples_total", &[("outcome", outcome)])
            .unwrap_or_else(|| panic!("no deploywatch_ingest_samples_total{{outcome={outcome:?}}}"))
    }

    /// A metric that must be present.
    pub fn must_metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metric(name, labels)
            .unwrap_or_else(|| panic!("/metrics has no {name} with labels {labels:?}"))
    }
}

// ---------------------------------------------------------------------------------------
// Reading /api/v1/services
// ---------------------------------------------------------------------------------------

/// The entry of `service` in a `/api/v1/services` answer.
pub fn service<'a>(services: &'a Value, name: &str) -> Option<&'a Value> {
    services["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == name)
}

/// The entry of `version` of `service`.
pub fn version<'a>(services: &'a Value, svc: &str, ver: &str) -> Option<&'a Value> {
    service(services, svc)?["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == ver)
}

/// Series per version of `service`, as `{version: series}`.
pub fn series_by_version(services: &Value, svc: &str) -> BTreeMap<String, u64> {
    service(services, svc)
        .and_then(|s| s["versions"].as_array())
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["version"].as_str().unwrap_or("?").to_string(),
                        v["series"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the services, in answer order.
pub fn service_names(services: &Value) -> Vec<String> {
    services["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["service"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------------------------

/// Snappy block format, as Prometheus compresses remote-write bodies.
pub fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy-compressing")
}

/// Prometheus' stale marker and RW 1.0 labels sorted as Prometheus sends them: the demo's
/// simulator builds its pushes with the same two.
pub use deploywatch::demo::sim::{labels, stale_nan};

/// An RW 1.0 series with float samples `(timestamp ms, value)`.
pub fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> rw1::TimeSeries {
    rw1::TimeSeries {
        labels: labels(pairs),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| rw1::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

pub fn write_request(timeseries: Vec<rw1::TimeSeries>) -> rw1::WriteRequest {
    rw1::WriteRequest {
        timeseries,
        ..Default::default()
    }
}

/// A Remote-Write 2.0 symbol table under construction; symbol 0 is "".
pub struct Symbols {
    symbols: Vec<String>,
    index: HashMap<String, u32>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            symbols: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Symbols {
    pub fn sym(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.symbols.len() as u32;
        self.symbols.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    /// `labels_refs` for a label set, sorted by label name.
    pub fn refs(&mut self, pairs: &[(&str, &str)]) -> Vec<u32> {
        let mut sorted = pairs.to_vec();
        sorted.sort();
        sorted
            .iter()
            .flat_map(|(n, v)| [self.sym(n), self.sym(v)])
            .collect()
    }

    /// A v2 series with float samples.
    pub fn series(&mut self, pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> rw2::TimeSeries {
        rw2::TimeSeries {
            labels_refs: self.refs(pairs),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| rw2::Sample {
                    value,
                    timestamp,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn request(self, timeseries: Vec<rw2::TimeSeries>) -> rw2::Request {
        rw2::Request {
            symbols: self.symbols,
            timeseries,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------

/// A running Prometheus (Debian's 2.42) with a temporary TSDB and the given config.
pub struct Prometheus {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `/usr/bin/prometheus` with `config_yaml` as its `--config.file`. Fails (never
    /// skips) when Prometheus is not installed.
    pub fn start(config_yaml: &str) -> Prometheus {
        Self::start_with_args(config_yaml, &[])
    }

    /// Starts it with extra flags (e.g. `--web.enable-remote-write-receiver`).
    pub fn start_with_args(config_yaml: &str, args: &[&str]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS_BIN).exists(),
            "{PROMETHEUS_BIN} is missing: the end-to-end tests need Debian's prometheus 2.42. \
             Run the README's test command, `bash tests/run`, which installs it with apt-get."
        );
        let dir = tempfile::Builder::new()
            .prefix("deploywatch-it-prometheus-")
            .tempdir()
            .expect("creating a temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml).expect("writing prometheus.yml");
        let tsdb = dir.path().join("tsdb");
        let (proc, port) = start_on_free_port(
            "prometheus",
            dir.path(),
            "/-/ready",
            Duration::from_secs(60),
            |port| {
                let mut cmd = Command::new(PROMETHEUS_BIN);
                cmd.arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--log.level=debug")
                    .args(args);
                cmd
            },
        );
        Prometheus { proc, port, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// One sample of Prometheus' own `/metrics` (summed over unnamed labels).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample_value(&scrape(&format!("{}/metrics", self.url())), name, labels)
    }

    /// `GET` on the HTTP API; the `data` of a successful answer.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let r = try_request(
            Method::GET,
            &format!("{}{path_and_query}", self.url()),
            &[],
            vec![],
        )?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{path_and_query}: not JSON ({e}): {}", r.text()))?;
        if r.status != 200 || v["status"] != "success" {
            return Err(format!("{path_and_query}: {} {v}", r.status));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's series.
    pub fn instant(&self, q: &str) -> Vec<Value> {
        self.api(&format!("/api/v1/query?query={}", percent_encode(q)))
            .unwrap_or_else(|e| panic!("{e}"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Percent-encodes a query parameter.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Alertmanager
// ---------------------------------------------------------------------------------------

/// Where Debian's prometheus-alertmanager package puts the server and its CLI.
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";
pub const AMTOOL_BIN: &str = "/usr/bin/amtool";

/// A config that accepts every alert and notifies no one.
pub const ALERTMANAGER_CONFIG: &str =
    "route:\n  receiver: blackhole\n  group_by: [deploy_id]\nreceivers:\n  - name: blackhole\n";

/// Fails (never skips) when Alertmanager is not installed.
pub fn require_alertmanager() {
    for bin in [ALERTMANAGER_BIN, AMTOOL_BIN] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the alert tests need Debian's prometheus-alertmanager 0.25. \
             Run the README's test command, `bash tests/run`, which installs it with apt-get."
        );
    }
}

/// A running Alertmanager (Debian's 0.25) on loopback, gossip disabled, with a temporary
/// storage directory. Can be stopped and started again on the same port.
pub struct Alertmanager {
    proc: Option<Proc>,
    port: u16,
    dir: tempfile::TempDir,
    starts: usize,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        require_alertmanager();
        let dir = tempfile::Builder::new()
            .prefix("deploywatch-it-alertmanager-")
            .tempdir()
            .expect("creating a temporary directory");
        std::fs::write(dir.path().join("alertmanager.yml"), ALERTMANAGER_CONFIG)
            .expect("writing alertmanager.yml");
        let (proc, port) = start_on_free_port(
            "alertmanager",
            dir.path(),
            "/-/ready",
            Duration::from_secs(30),
            |port| Self::command(dir.path(), port),
        );
        Alertmanager {
            proc: Some(proc),
            port,
            dir,
            starts: 1,
        }
    }

    fn command(dir: &Path, port: u16) -> Command {
        let mut cmd = Command::new(ALERTMANAGER_BIN);
        cmd.arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip: each test's Alertmanager is alone.
        .arg("--cluster.listen-address=")
        .arg("--log.level=debug");
        cmd
    }

    /// Kills the process (as a crash or a node loss would).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("alertmanager-restart-{}.log", self.starts));
        let mut proc = Proc::spawn(
            "alertmanager",
            Self::command(self.dir.path(), self.port),
            log,
        );
        proc.wait_ready(&format!("{}/-/ready", self.url()), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("restarting Alertmanager on port {}: {e}", self.port));
        self.proc = Some(proc);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(|p| p.logs()).unwrap_or_default()
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds as active (not resolved).
    pub fn alerts(&self) -> Result<Vec<Value>, String> {
        let res = try_request(
            Method::GET,
            &format!("{}/api/v2/alerts", self.url()),
            &[],
            Vec::new(),
        )?;
        if res.status != 200 {
            return Err(format!("GET /api/v2/alerts: {} {}", res.status, res.text()));
        }
        serde_json::from_slice::<Vec<Value>>(&res.body)
            .map_err(|e| format!("GET /api/v2/alerts: not a JSON array ({e}): {}", res.text()))
    }
}

// ---------------------------------------------------------------------------------------
// A metrics target
// ---------------------------------------------------------------------------------------

/// A tiny HTTP server answering `GET /metrics` with text exposition the test can change
/// while it runs. Built on axum, deploywatch's own hyper-based server, so no new dependency.
pub struct MetricsTarget {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    scrapes: Arc<std::sync::atomic::AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MetricsTarget {
    pub fn start(exposition: &str) -> MetricsTarget {
        use axum::http::header;
        use std::sync::atomic::Ordering;

        let body = Arc::new(Mutex::new(exposition.to_string()));
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = runtime()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the metrics target");
        let addr = listener.local_addr().expect("target address");
        let app = {
            let body = body.clone();
            let scrapes = scrapes.clone();
            axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let text = body.lock().clone();
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                    }
                }),
            )
        };
        runtime().spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        MetricsTarget {
            addr,
            body,
            scrapes,
            shutdown: Some(tx),
        }
    }

    /// `host:port`, as a Prometheus static target.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces what the next scrapes see.
    pub fn set(&self, exposition: &str) {
        *self.body.lock() = exposition.to_string();
    }

    /// How many times `/metrics` was fetched.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for MetricsTarget {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}
