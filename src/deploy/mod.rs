//! Know what is deployed: deploy registrations (API) and new versions seen in the data in;
//! [`Deploy`] records with their phase, verdict and timeline out. The judging itself is
//! `rules::judge`; this module owns identity, lifecycle and the contract's JSON.

pub mod journal;
pub mod tracker;

use serde::{Deserialize, Serialize};

use crate::rules::Tier;

/// Why a deploy registration was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeployError {
    #[error("invalid deploy: {0}")]
    Invalid(String),
    #[error("no deploy with id {0:?}")]
    NotFound(String),
    /// The registration could not be made durable; nothing was registered.
    #[error("cannot record the deploy durably: {0}")]
    Journal(String),
    /// A finished deploy's stored report could not be read back.
    #[error("cannot read the deploy history: {0}")]
    History(String),
}

/// How the new version is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Old and new versions serve side by side: compare them in the same window.
    Canary,
    /// The service after the rollout against the service before it.
    Rolling,
    BlueGreen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    Detected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Warmup,
    Observing,
    Done,
}

/// A verdict, in order of severity. The numeric codes are those of the exported metrics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Pending = 0,
    Pass = 1,
    Warn = 2,
    Pause = 3,
    Rollback = 4,
}

impl Verdict {
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pending => "pending",
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Pause => "pause",
            Verdict::Rollback => "rollback",
        }
    }
    pub fn from_tier(t: Tier) -> Verdict {
        match t {
            Tier::Warn => Verdict::Warn,
            Tier::Pause => Verdict::Pause,
            Tier::Rollback => Verdict::Rollback,
        }
    }
    /// Whether this verdict is a regression (warn or worse).
    pub fn is_regression(self) -> bool {
        self >= Verdict::Warn
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change shipped by the deploy (from CI), matched against suspects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Change {
    #[serde(default)]
    pub component: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub files: Vec<String>,
}

/// `POST /api/v1/deploys` body.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub service: Option<String>,
    pub version: Option<String>,
    pub baseline_version: Option<String>,
    /// `canary`, `rolling` or `blue-green` (checked after parsing, to name the field).
    pub strategy: Option<String>,
    /// Unix milliseconds, event time; default: the service's "now".
    pub at: Option<i64>,
    pub commit: Option<String>,
    pub author: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub service: String,
    pub version: String,
    pub baseline_version: Option<String>,
    pub strategy: Option<Strategy>,
    pub at: Option<i64>,
    pub commit: String,
    pub author: String,
    pub url: String,
    pub changes: Vec<Change>,
}

impl DeployRequest {
    /// Parses and validates a JSON body; errors name the field.
    pub fn parse(body: &[u8]) -> Result<Registration, DeployError> {
        let r: DeployRequest =
            serde_json::from_slice(body).map_err(|e| DeployError::Invalid(format!("body: {e}")))?;
        let required = |name: &str, v: Option<String>| -> Result<String, DeployError> {
            match v {
                Some(s) if !s.trim().is_empty() => {
                    if s.len() > 256 {
                        Err(DeployError::Invalid(format!(
                            "{name}: longer than 256 bytes"
                        )))
                    } else {
                        Ok(s)
                    }
                }
                Some(_) => Err(DeployError::Invalid(format!("{name}: must not be empty"))),
                None => Err(DeployError::Invalid(format!("{name}: required"))),
            }
        };
        let strategy = match r.strategy.as_deref() {
            None => None,
            Some("canary") => Some(Strategy::Canary),
            Some("rolling") => Some(Strategy::Rolling),
            Some("blue-green") => Some(Strategy::BlueGreen),
            Some(other) => {
                return Err(DeployError::Invalid(format!(
                    "strategy: expected canary, rolling or blue-green, got {other:?}"
                )))
            }
        };
        let service = required("service", r.service)?;
        let version = required("version", r.version)?;
        if r.baseline_version.as_deref() == Some(version.as_str()) {
            return Err(DeployError::Invalid(
                "baseline_version: must differ from version".into(),
            ));
        }
        if let Some(at) = r.at {
            // Milliseconds between 2001 and 2286: seconds or nanoseconds are a mistake.
            if !(1_000_000_000_000..10_000_000_000_000).contains(&at) {
                return Err(DeployError::Invalid(format!(
                    "at: {at} is not Unix milliseconds"
                )));
            }
        }
        if r.changes.len() > 1000 {
            return Err(DeployError::Invalid(
                "changes: more than 1000 entries".into(),
            ));
        }
        Ok(Registration {
            service,
            version,
            baseline_version: r.baseline_version.filter(|b| !b.is_empty()),
            strategy,
            at: r.at,
            commit: r.commit.unwrap_or_default(),
            author: r.author.unwrap_or_default(),
            url: r.url.unwrap_or_default(),
            changes: r.changes,
        })
    }
}

/// A deploy's identity: stable across restarts and equal on two replicas fed the same data.
pub fn deploy_id(service: &str, version: &str, started_at: i64) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect()
    };
    format!(
        "{}-{}-{}",
        clean(service),
        clean(version),
        started_at / 1000
    )
}

/// One comparison side in the JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SideJson {
    pub value: Option<f64>,
    #[serde(deserialize_with = "crate::jsonl::number_or_null")]
    pub samples: f64,
}

/// A rule's state in the JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleJson {
    pub rule: String,
    pub verdict: Verdict,
    pub canary: SideJson,
    pub baseline: SideJson,
    /// Canary over baseline (the compared statistic's ratio).
    pub effect: Option<f64>,
    /// Confidence that the effect is real (1 − the smallest alpha whose test rejects).
    #[serde(deserialize_with = "crate::jsonl::number_or_null")]
    pub confidence: f64,
    pub reason: String,
    pub matched_series: usize,
    /// Quantile rules: the histogram form it judged: `classic` (`_bucket` series), `native`
    /// (native histograms, on schema 3's bucket edges) or `classic+native` (a mixed fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
}

/// A timeline event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub at: i64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub detail: String,
}

/// A suspect: a label value that explains the regression (`rca`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Suspect {
    /// The label, e.g. `route`, `pod`, `db`.
    pub dimension: String,
    pub value: String,
    /// Share of the excess (bad events beyond the expected) this value carries.
    #[serde(deserialize_with = "crate::jsonl::number_or_null")]
    pub share: f64,
    /// The registered change it maps to; `null` with a `note` when none matches.
    pub change: Option<String>,
    #[serde(default)]
    pub scope: Scope,
    /// How unexpected the shift along this label is (Jensen–Shannon term, nats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surprise: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The rule whose excess it explains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// What a suspect implicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The new version (on this label value).
    #[default]
    Version,
    /// One instance (pod) of the new version, not the version.
    Instance,
    /// Both versions degraded: not the deploy.
    BothVersions,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Version => "version",
            Scope::Instance => "instance",
            Scope::BothVersions => "both_versions",
        }
    }
}

/// The contract's DEPLOY JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployJson {
    pub id: String,
    pub service: String,
    pub version: String,
    pub baseline_version: Option<String>,
    pub strategy: Strategy,
    pub source: Source,
    pub started_at: i64,
    pub phase: Phase,
    pub verdict: Verdict,
    pub verdict_at: Option<i64>,
    pub commit: String,
    pub author: String,
    pub url: String,
    pub changes: Vec<Change>,
    pub rules: Vec<RuleJson>,
    pub suspects: Vec<Suspect>,
    pub timeline: Vec<Event>,
    /// How the deploy is compared now: `side-by-side` or `before-after`.
    pub comparison: String,
    /// One line on why the verdict is what it is.
    pub reason: String,
    pub report_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_names_the_bad_field() {
        let e = DeployRequest::parse(br#"{"version":"v2"}"#).unwrap_err();
        assert_eq!(e.to_string(), "invalid deploy: service: required");
        let e =
            DeployRequest::parse(br#"{"service":"a","version":"v2","at":1764000000}"#).unwrap_err();
        assert!(e.to_string().contains("at:"), "{e}");
        let e = DeployRequest::parse(br#"{"service":"a","version":"v2","strategy":"yolo"}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("strategy") || e.to_string().contains("yolo"),
            "{e}"
        );
        let e =
            DeployRequest::parse(br#"{"service":"a","version":"v2","colour":"red"}"#).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let r = DeployRequest::parse(br#"{"service":"a","version":"v2","strategy":"blue-green","changes":[{"component":"db","files":["x.rs"]}]}"#).unwrap();
        assert_eq!(r.strategy, Some(Strategy::BlueGreen));
        assert_eq!(r.changes[0].component, "db");
    }

    #[test]
    fn ids_are_stable_and_clean() {
        assert_eq!(
            deploy_id("check out", "v2/1", 1_764_000_000_123),
            "check-out-v2-1-1764000000"
        );
    }
}
