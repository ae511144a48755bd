//! Configuration: YAML text in, a validated [`Config`] out. Raw serde structs mirror the file
//! (unknown fields are errors); parsing values such as durations happens during
//! deserialisation so that every error carries the file, line and field it came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The configuration in force when no `--config.file` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../examples/deploywatch.yml");

/// Why a configuration could not be loaded. The old configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: u32,
        column: u32,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The validated configuration. Cheap to clone behind an `Arc`; swapped whole on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the configuration came from (a path, or `<embedded>`), for messages.
    pub source: String,
    pub global: GlobalConfig,
    /// Rule file globs, resolved relative to the config file's directory.
    pub rule_files: Vec<String>,
    pub alerting: AlertingConfig,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub gates: GatesConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfig {
    pub service_label: String,
    pub version_label: String,
    pub retention: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    pub alertmanagers: Vec<String>,
    pub resend_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_series_per_request: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_active_series: usize,
    pub max_series_per_service: usize,
    pub max_samples_per_series: usize,
    pub max_inflight_requests: usize,
    /// How far a sample's timestamp may be ahead of the wall clock; later ones are refused.
    pub max_time_ahead: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub snapshot_interval: Duration,
    /// How long finished deploys stay in the deploy history (event time).
    pub history_retention: Duration,
}

/// How the rollout gates (`/api/v1/verdict`, `/api/v1/gate`, `/api/v1/rollback-hook`)
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GatesConfig {
    pub unknown_service: UnknownService,
}

/// What a gate answers for a service deploywatch has never seen (no series, no deploy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownService {
    /// `pending`, as for a version whose pods have not reported yet.
    #[default]
    Pending,
    /// `404` naming the service and the known ones: a typo in a rollout's gate URL must
    /// not let every rollout through.
    Refuse,
}

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Labels that identify services and versions, and how long samples are kept.
    #[serde(default)]
    global: RawGlobal,
    /// Globs of rule files, relative to this file's directory.
    #[serde(default)]
    rule_files: Vec<String>,
    /// Where verdict alerts go.
    #[serde(default)]
    alerting: RawAlerting,
    /// Bounds on what one client can make deploywatch hold.
    #[serde(default)]
    limits: RawLimits,
    /// Snapshots of state under `--storage.path`.
    #[serde(default)]
    storage: RawStorage,
    /// How the rollout gates answer.
    #[serde(default)]
    gates: RawGates,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGates {
    /// What the gates answer for a service never seen (no series and no deploy of it):
    /// `pending` (default), or `refuse` (`404` naming the known services).
    unknown_service: UnknownService,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGlobal {
    /// The label whose value names a service (Prometheus' `job` by default).
    service_label: LabelName,
    /// The label whose value names the running version of a service.
    version_label: LabelName,
    /// How long samples are kept per series: the pre-deploy baseline plus the observation.
    retention: PromDuration,
}

impl Default for RawGlobal {
    fn default() -> Self {
        RawGlobal {
            service_label: LabelName("job".into()),
            version_label: LabelName("version".into()),
            retention: PromDuration(Duration::from_secs(2 * 3600)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAlerting {
    /// Alertmanager base URLs; every one receives every alert.
    alertmanagers: Vec<RawAlertmanager>,
    /// How often firing alerts are re-sent.
    resend_interval: PromDuration,
}

impl Default for RawAlerting {
    fn default() -> Self {
        RawAlerting {
            alertmanagers: Vec::new(),
            resend_interval: PromDuration(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    /// Base URL, e.g. `http://alertmanager:9093`.
    url: HttpUrl,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    /// Largest accepted request body, compressed or decompressed.
    max_body_bytes: ByteSize,
    /// Most `TimeSeries` entries in one remote-write request.
    max_series_per_request: usize,
    /// Most labels on one series.
    max_labels_per_series: usize,
    /// Longest label name, in bytes.
    max_label_name_length: usize,
    /// Longest label value, in bytes.
    max_label_value_length: usize,
    /// Most series held in all.
    max_active_series: usize,
    /// Most series held for one service, so one service's cardinality explosion cannot
    /// starve the others.
    max_series_per_service: usize,
    /// Most samples held per series whatever the retention (the oldest go first): bounds
    /// the memory of a series written far more often than it is scraped.
    max_samples_per_series: usize,
    /// Remote-write requests decoded at once; beyond it a push gets 503 and Retry-After.
    max_inflight_requests: usize,
    /// How far a sample's timestamp may be ahead of the wall clock (clock skew between the
    /// sender and deploywatch). Later samples are refused: a timestamp in micro- or
    /// nanoseconds, or a far-future one, would move its service's "now" and end its deploys.
    max_time_ahead: PromDuration,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_body_bytes: ByteSize(32 << 20),
            max_series_per_request: 50_000,
            max_labels_per_series: 64,
            max_label_name_length: 1024,
            max_label_value_length: 4096,
            max_active_series: 2_000_000,
            max_series_per_service: 500_000,
            max_samples_per_series: 16_384,
            max_inflight_requests: 32,
            max_time_ahead: PromDuration(Duration::from_secs(600)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    /// How often state is written to `--storage.path`.
    snapshot_interval: PromDuration,
    /// How long finished deploys and their reports stay in the deploy history
    /// (`deploys.jsonl` under `--storage.path`), counted in event time back from the newest
    /// finished deploy; older ones are compacted away.
    history_retention: PromDuration,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            snapshot_interval: PromDuration(Duration::from_secs(30)),
            history_retention: PromDuration(Duration::from_secs(30 * 86_400)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Values parsed as they are read, so that errors point at the line.

/// A Prometheus duration: `90s`, `5m`, `1h30m`, `2d`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromDuration(pub Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(de::Error::custom)
    }
}

/// Parses a Prometheus-style duration (units ms, s, m, h, d, w, y; concatenated, largest first).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h30m, 2d");
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    let mut last_unit_ms = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        if unit_ms >= last_unit_ms {
            return Err(bad());
        }
        last_unit_ms = unit_ms;
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way Prometheus does (`1h30m`, `15s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

/// A byte size: a plain integer, or a number with `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ByteSize(usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n as usize),
            Raw::S(s) => parse_size(&s),
        };
        let n = parsed.map_err(de::Error::custom)?;
        if n == 0 {
            return Err(de::Error::custom("size must be positive"));
        }
        Ok(ByteSize(n))
    }
}

/// A size in bytes as config files and flags write it: `1000`, `500KB`, `32MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => u64::MAX,
    };
    match (n.parse::<u64>(), mult) {
        (Ok(n), m) if m != u64::MAX => n
            .checked_mul(m)
            .map(|n| n as usize)
            .ok_or_else(|| format!("size {s:?} too large")),
        _ => Err(format!(
            "invalid size {s:?}: expected bytes or e.g. 32MiB, 500KB"
        )),
    }
}

/// Limits set by flags (`--limits.*`): they override the config file's, at start and on
/// every reload.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct LimitFlags {
    /// Largest accepted remote-write body, compressed or decompressed (e.g. 32MiB). Overrides limits.max_body_bytes.
    #[arg(long = "limits.max-body-bytes", value_name = "SIZE", value_parser = parse_positive_size)]
    pub max_body_bytes: Option<usize>,
    /// Most TimeSeries entries in one remote-write request. Overrides limits.max_series_per_request.
    #[arg(long = "limits.max-series-per-request", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_series_per_request: Option<u64>,
    /// Most labels on one series. Overrides limits.max_labels_per_series.
    #[arg(long = "limits.max-labels-per-series", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_labels_per_series: Option<u64>,
    /// Longest label name in bytes. Overrides limits.max_label_name_length.
    #[arg(long = "limits.max-label-name-length", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_label_name_length: Option<u64>,
    /// Longest label value in bytes. Overrides limits.max_label_value_length.
    #[arg(long = "limits.max-label-value-length", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_label_value_length: Option<u64>,
    /// Most series held in all. Overrides limits.max_active_series.
    #[arg(long = "limits.max-active-series", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_active_series: Option<u64>,
    /// Most series held for one service. Overrides limits.max_series_per_service.
    #[arg(long = "limits.max-series-per-service", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_series_per_service: Option<u64>,
    /// Most samples held per series. Overrides limits.max_samples_per_series.
    #[arg(long = "limits.max-samples-per-series", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_samples_per_series: Option<u64>,
    /// Remote-write requests decoded at once; beyond it 503 with Retry-After. Overrides limits.max_inflight_requests.
    #[arg(long = "limits.max-inflight-requests", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inflight_requests: Option<u64>,
    /// How far a sample's timestamp may be ahead of the wall clock (e.g. 10m); later samples are refused. Overrides limits.max_time_ahead.
    #[arg(long = "limits.max-time-ahead", value_name = "DURATION", value_parser = parse_time_ahead)]
    pub max_time_ahead: Option<Duration>,
}

fn parse_time_ahead(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    check_time_ahead(d)?;
    Ok(d)
}

/// `limits.max_time_ahead` within what event-time arithmetic holds comfortably.
fn check_time_ahead(d: Duration) -> Result<(), String> {
    if d > Duration::from_secs(MAX_RETENTION_DAYS * 86_400) {
        return Err(format!(
            "limits.max_time_ahead {} is too long: at most {MAX_RETENTION_DAYS}d",
            format_duration(d)
        ));
    }
    Ok(())
}

fn parse_positive_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        0 => Err("size must be positive".into()),
        n if n > MAX_BODY_BYTES => Err("size must be at most 1GiB".into()),
        n => Ok(n),
    }
}

/// Bodies are indexed with 32-bit offsets; no remote-write request comes near this.
const MAX_BODY_BYTES: usize = 1 << 30;
/// Event-time windows are milliseconds in an i64; a year of samples is far beyond any use.
const MAX_RETENTION_DAYS: u64 = 366;

impl LimitFlags {
    /// Applies the flags given to `limits`.
    pub fn apply(&self, limits: &mut LimitsConfig) {
        let set = |slot: &mut usize, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v as usize;
            }
        };
        if let Some(v) = self.max_body_bytes {
            limits.max_body_bytes = v;
        }
        set(
            &mut limits.max_series_per_request,
            self.max_series_per_request,
        );
        set(
            &mut limits.max_labels_per_series,
            self.max_labels_per_series,
        );
        set(
            &mut limits.max_label_name_length,
            self.max_label_name_length,
        );
        set(
            &mut limits.max_label_value_length,
            self.max_label_value_length,
        );
        set(&mut limits.max_active_series, self.max_active_series);
        set(
            &mut limits.max_series_per_service,
            self.max_series_per_service,
        );
        set(
            &mut limits.max_samples_per_series,
            self.max_samples_per_series,
        );
        set(
            &mut limits.max_inflight_requests,
            self.max_inflight_requests,
        );
        if let Some(v) = self.max_time_ahead {
            limits.max_time_ahead = v;
        }
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
#[derive(Debug, Clone, PartialEq)]
struct LabelName(String);

impl<'de> Deserialize<'de> for LabelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut bytes = s.bytes();
        let ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(LabelName(s))
        } else {
            Err(de::Error::custom(format!(
                "invalid label name {s:?}: expected [a-zA-Z_][a-zA-Z0-9_]*"
            )))
        }
    }
}

/// An `http://` or `https://` URL with a host, stored without a trailing slash.
#[derive(Debug, Clone, PartialEq)]
struct HttpUrl(String);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_http_url(&s).map(HttpUrl).map_err(de::Error::custom)
    }
}

/// Checks that `s` is an absolute http(s) URL and returns it without a trailing slash.
pub fn check_http_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("invalid URL {s:?}: expected http://host:port"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("invalid URL {s:?}: no host"));
    }
    if s.parse::<hyper::Uri>().is_err() {
        return Err(format!("invalid URL {s:?}"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

// ---------------------------------------------------------------------------------------

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded>").expect("the embedded config is valid")
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            serde_saphyr::from_str("{}")
        } else {
            serde_saphyr::from_str(text)
        }
        .map_err(|e| yaml_error(source, &e))?;
        let invalid = |message: String| ConfigError::Invalid {
            path: source.to_string(),
            message,
        };
        if raw.global.service_label.0 == raw.global.version_label.0 {
            return Err(invalid(
                "global.service_label and global.version_label must differ".into(),
            ));
        }
        if raw.global.retention.0 < Duration::from_secs(60) {
            return Err(invalid(format!(
                "global.retention {} is too short: at least 1m",
                format_duration(raw.global.retention.0)
            )));
        }
        if raw.global.retention.0 > Duration::from_secs(MAX_RETENTION_DAYS * 86_400) {
            return Err(invalid(format!(
                "global.retention {} is too long: at most {MAX_RETENTION_DAYS}d",
                format_duration(raw.global.retention.0)
            )));
        }
        if raw.storage.history_retention.0 > Duration::from_secs(10 * MAX_RETENTION_DAYS * 86_400) {
            return Err(invalid(format!(
                "storage.history_retention {} is too long: at most {}d",
                format_duration(raw.storage.history_retention.0),
                10 * MAX_RETENTION_DAYS
            )));
        }
        if raw.limits.max_body_bytes.0 > MAX_BODY_BYTES {
            return Err(invalid(format!(
                "limits.max_body_bytes {} is too large: at most 1GiB",
                raw.limits.max_body_bytes.0
            )));
        }
        if raw.storage.history_retention.0 < Duration::from_secs(3600) {
            return Err(invalid(format!(
                "storage.history_retention {} is too short: at least 1h",
                format_duration(raw.storage.history_retention.0)
            )));
        }
        if raw.storage.snapshot_interval.0 < Duration::from_secs(1) {
            return Err(invalid(
                "storage.snapshot_interval must be at least 1s".into(),
            ));
        }
        if raw.alerting.resend_interval.0 < Duration::from_secs(1) {
            return Err(invalid(
                "alerting.resend_interval must be at least 1s".into(),
            ));
        }
        let l = &raw.limits;
        check_time_ahead(l.max_time_ahead.0).map_err(invalid)?;
        for (name, v) in [
            ("max_series_per_request", l.max_series_per_request),
            ("max_labels_per_series", l.max_labels_per_series),
            ("max_label_name_length", l.max_label_name_length),
            ("max_label_value_length", l.max_label_value_length),
            ("max_active_series", l.max_active_series),
            ("max_series_per_service", l.max_series_per_service),
            ("max_samples_per_series", l.max_samples_per_series),
            ("max_inflight_requests", l.max_inflight_requests),
        ] {
            if v == 0 {
                return Err(invalid(format!("limits.{name} must be positive")));
            }
        }
        Ok(Config {
            source: source.to_string(),
            global: GlobalConfig {
                service_label: raw.global.service_label.0,
                version_label: raw.global.version_label.0,
                retention: raw.global.retention.0,
            },
            rule_files: raw.rule_files,
            alerting: AlertingConfig {
                alertmanagers: raw
                    .alerting
                    .alertmanagers
                    .into_iter()
                    .map(|a| a.url.0)
                    .collect(),
                resend_interval: raw.alerting.resend_interval.0,
            },
            limits: LimitsConfig {
                max_body_bytes: l.max_body_bytes.0,
                max_series_per_request: l.max_series_per_request,
                max_labels_per_series: l.max_labels_per_series,
                max_label_name_length: l.max_label_name_length,
                max_label_value_length: l.max_label_value_length,
                max_active_series: l.max_active_series,
                max_series_per_service: l.max_series_per_service,
                max_samples_per_series: l.max_samples_per_series,
                max_inflight_requests: l.max_inflight_requests,
                max_time_ahead: l.max_time_ahead.0,
            },
            storage: StorageConfig {
                snapshot_interval: raw.storage.snapshot_interval.0,
                history_retention: raw.storage.history_retention.0,
            },
            gates: GatesConfig {
                unknown_service: raw.gates.unknown_service,
            },
        })
    }
}

pub(crate) fn yaml_error(source: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The library's Display may repeat the position and add a snippet; keep one line.
    let text = e.to_string();
    let mut message = text.lines().next().unwrap_or("invalid YAML").trim();
    message = message.strip_prefix("error:").unwrap_or(message).trim();
    // Drop the library's own "line N column M:" prefix: the position leads our message.
    if let Some(rest) = message.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            message = after;
        }
    }
    let message = message.to_string();
    ConfigError::Parse {
        path: source.to_string(),
        line: line as u32,
        column: column as u32,
        message,
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service_label={} version_label={} retention={} rule_files={} alertmanagers={}",
            self.global.service_label,
            self.global.version_label,
            format_duration(self.global.retention),
            self.rule_files.len(),
            self.alerting.alertmanagers.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_retentions_are_bounded() {
        let err = Config::parse("limits:\n  max_body_bytes: 5GiB\n", "dw.yml").unwrap_err();
        assert!(err.to_string().contains("at most 1GiB"), "{err}");
        let err = Config::parse("global:\n  retention: 400d\n", "dw.yml").unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        assert!(parse_positive_size("2GiB").is_err());
        assert_eq!(parse_positive_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn embedded_config_parses_with_documented_defaults() {
        let c = Config::embedded();
        assert_eq!(c.global.service_label, "job");
        assert_eq!(c.global.version_label, "version");
        assert_eq!(c.global.retention, Duration::from_secs(7200));
        assert_eq!(c.limits.max_body_bytes, 32 << 20);
        assert_eq!(c.limits.max_time_ahead, Duration::from_secs(600));
        assert_eq!(c.alerting.resend_interval, Duration::from_secs(60));
        assert_eq!(
            c.storage.history_retention,
            Duration::from_secs(30 * 86_400)
        );
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", "x.yml").unwrap();
        assert_eq!(c.global.retention, Duration::from_secs(7200));
    }

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        for bad in ["", "h", "5", "5x", "30m1h", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let err = Config::parse("global:\n  retention: 2h\n  retentoin: 3h\n", "dw.yml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dw.yml:3:"), "{err}");
        assert!(err.contains("retentoin"), "{err}");
    }

    #[test]
    fn bad_value_names_line() {
        let err = Config::parse("global:\n  retention: soon\n", "dw.yml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dw.yml:2:"), "{err}");
        assert!(err.contains("invalid duration"), "{err}");
        let err = Config::parse("limits:\n  max_body_bytes: 12 parsecs\n", "dw.yml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dw.yml:2:"), "{err}");
        let err = Config::parse(
            "alerting:\n  alertmanagers:\n    - url: ftp://x\n",
            "dw.yml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("dw.yml:3:"), "{err}");
    }

    #[test]
    fn max_time_ahead_is_a_bounded_duration() {
        let c = Config::parse("limits:\n  max_time_ahead: 1h\n", "x").unwrap();
        assert_eq!(c.limits.max_time_ahead, Duration::from_secs(3600));
        let c = Config::parse("limits:\n  max_time_ahead: 0\n", "x").unwrap();
        assert_eq!(c.limits.max_time_ahead, Duration::ZERO);
        let err = Config::parse("limits:\n  max_time_ahead: 500d\n", "x").unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        let err = Config::parse("limits:\n  max_time_ahead: soon\n", "dw.yml").unwrap_err();
        assert!(err.to_string().starts_with("dw.yml:2:"), "{err}");
        assert!(parse_time_ahead("400d").is_err());
        assert_eq!(parse_time_ahead("10m"), Ok(Duration::from_secs(600)));
    }

    #[test]
    fn gates_refuse_unknown_services_only_when_told() {
        assert_eq!(
            Config::embedded().gates.unknown_service,
            UnknownService::Pending
        );
        let c = Config::parse("gates:\n  unknown_service: refuse\n", "x").unwrap();
        assert_eq!(c.gates.unknown_service, UnknownService::Refuse);
        let err = Config::parse("gates:\n  unknown_service: deny\n", "dw.yml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dw.yml:2:"), "{err}");
        assert!(err.contains("refuse"), "{err}");
    }

    #[test]
    fn sizes_accept_units() {
        let c = Config::parse("limits:\n  max_body_bytes: 8MiB\n", "x").unwrap();
        assert_eq!(c.limits.max_body_bytes, 8 << 20);
        let c = Config::parse("limits:\n  max_body_bytes: 1000\n", "x").unwrap();
        assert_eq!(c.limits.max_body_bytes, 1000);
    }
}
