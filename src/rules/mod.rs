//! Judge, what: rule files (YAML) in, a validated [`RuleSet`] out. A rule names the series it
//! selects, the signal computed from them, which direction is bad, and per-tier thresholds.
//! `judge` applies a rule set to running deploys.

pub mod eval;
pub mod groups;
pub mod selector;
pub mod units;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{parse_duration, ConfigError};
pub use selector::Selector;

/// The rules in force when no rule files are configured.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.yml");

/// How a rule's statistic is computed from the selected series.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Increase of `numerator` counters over increase of `denominator` counters
    /// (errors over requests). Judged as counts, so sparse errors still count.
    Ratio {
        numerator: Vec<Selector>,
        denominator: Vec<Selector>,
    },
    /// A quantile of a classic histogram, from its `_bucket` series (`le` label).
    Quantile {
        buckets: Vec<Selector>,
        quantile: f64,
    },
    /// A counter's per-instance rate (CPU seconds per second).
    Rate { series: Vec<Selector> },
    /// A gauge's per-instance level (resident memory).
    Level { series: Vec<Selector> },
    /// A gauge's per-instance growth rate relative to the baseline (a memory leak).
    Trend { series: Vec<Selector> },
    /// A counter's increase per instance (container restarts).
    Increase { series: Vec<Selector> },
    /// A version's per-instance share of traffic, from a request counter.
    Share { series: Vec<Selector> },
}

impl Signal {
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Ratio { .. } => "ratio",
            Signal::Quantile { .. } => "quantile",
            Signal::Rate { .. } => "rate",
            Signal::Level { .. } => "level",
            Signal::Trend { .. } => "trend",
            Signal::Increase { .. } => "increase",
            Signal::Share { .. } => "share",
        }
    }

    /// Every selector of the signal, with the component it feeds.
    pub fn selectors(&self) -> Vec<(Component, &Selector)> {
        match self {
            Signal::Ratio {
                numerator,
                denominator,
            } => numerator
                .iter()
                .map(|s| (Component::Numerator, s))
                .chain(denominator.iter().map(|s| (Component::Denominator, s)))
                .collect(),
            Signal::Quantile { buckets, .. } => {
                buckets.iter().map(|s| (Component::Bucket, s)).collect()
            }
            Signal::Rate { series }
            | Signal::Level { series }
            | Signal::Trend { series }
            | Signal::Increase { series }
            | Signal::Share { series } => series.iter().map(|s| (Component::Value, s)).collect(),
        }
    }

    /// Whether the selected series are counters (judged by their increases).
    pub fn counters(&self) -> bool {
        !matches!(self, Signal::Level { .. } | Signal::Trend { .. })
    }
}

/// Which part of a signal a series feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Numerator,
    Denominator,
    Bucket,
    Value,
}

/// Which direction of change is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bad {
    Up,
    Down,
}

/// A tier's threshold: the canary is as bad as this tier when its statistic is worse than
/// the baseline's by the relative factor AND by the absolute amount.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Canary over baseline (for `bad: up`; baseline over canary for `bad: down`), > 1.
    pub relative: f64,
    /// Smallest difference that matters, in the statistic's unit; 0 for none.
    #[serde(default)]
    pub absolute: f64,
}

/// The verdict tiers, in order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Warn = 0,
    Pause = 1,
    Rollback = 2,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Warn, Tier::Pause, Tier::Rollback];
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub signal: Signal,
    pub bad: Bad,
    /// Thresholds for warn, pause, rollback; a tier may be absent.
    pub tiers: [Option<Threshold>; 3],
    /// Only critical rules can drive a deploy beyond `warn`.
    pub critical: bool,
    /// Event time after the deploy starts before this rule is judged (cold starts).
    pub warmup: Duration,
    /// Least evidence per side before any verdict: denominator events for ratio and share,
    /// observations for the others.
    pub min_evidence: f64,
    /// Event time the rule must show no regression before it passes.
    pub observe: Duration,
}

impl Rule {
    pub fn threshold(&self, t: Tier) -> Option<Threshold> {
        self.tiers[t as usize]
    }

    /// Rules that need far longer than the others to rule a regression out (trends): a
    /// deploy passes without waiting for them, and they can still escalate the pass.
    pub fn slow(&self) -> bool {
        matches!(self.signal, Signal::Trend { .. })
    }
}

/// Error rates the sequential tests are run at, per tier (see docs/statistics.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alphas {
    pub warn: f64,
    pub pause: f64,
    pub rollback: f64,
    pub pass: f64,
}

impl Alphas {
    pub fn for_tier(&self, t: Tier) -> f64 {
        match t {
            Tier::Warn => self.warn,
            Tier::Pause => self.pause,
            Tier::Rollback => self.rollback,
        }
    }
}

impl Default for Alphas {
    fn default() -> Self {
        Alphas {
            warn: 0.05,
            pause: 0.02,
            rollback: 0.001,
            pass: 0.05,
        }
    }
}

/// All rules in force, with where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub alphas: Alphas,
    pub sources: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Error rates of the sequential tests; optional, defaults in docs/statistics.md.
    #[serde(default)]
    alpha: Option<RawAlphas>,
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlphas {
    warn: Option<f64>,
    pause: Option<f64>,
    rollback: Option<f64>,
    pass: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Unique name, `[a-z_][a-z0-9_]*`.
    name: String,
    #[serde(default)]
    description: String,
    /// ratio | quantile | rate | level | trend | increase | share
    signal: String,
    /// Selectors of the series for every signal but `ratio` and `quantile`... and for
    /// `quantile`, the `_bucket` series.
    #[serde(default)]
    select: Vec<String>,
    /// For `ratio`: the counters of bad events, and of all events.
    #[serde(default)]
    numerator: Vec<String>,
    #[serde(default)]
    denominator: Vec<String>,
    /// For `quantile`: which one, in (0, 1).
    #[serde(default)]
    quantile: Option<f64>,
    /// up (default) or down.
    #[serde(default)]
    bad: Option<Bad>,
    warn: Option<Threshold>,
    pause: Option<Threshold>,
    rollback: Option<Threshold>,
    /// Default true.
    #[serde(default)]
    critical: Option<bool>,
    /// Default 1m.
    #[serde(default)]
    warmup: Option<String>,
    /// Default 100 for ratio/share (events), 4 for the others (observations).
    #[serde(default)]
    min_evidence: Option<f64>,
    /// Default 5m.
    #[serde(default)]
    observe: Option<String>,
}

impl RuleSet {
    /// The embedded default rules.
    pub fn embedded() -> RuleSet {
        RuleSet::parse(&[(
            DEFAULT_RULES.to_string(),
            "<embedded rules/default.yml>".into(),
        )])
        .expect("the embedded rules are valid")
    }

    /// Loads the rules a config names: its `rule_files` globs, relative to the config file's
    /// directory (the working directory for the embedded config).
    pub fn for_config(
        config: &crate::config::Config,
        config_path: Option<&Path>,
    ) -> Result<RuleSet, ConfigError> {
        let base = config_path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        RuleSet::load(&config.rule_files, &base)
    }

    /// Loads the rule files matching the config's globs, relative to `base`. No globs: the
    /// embedded defaults. A glob matching nothing is an error (a typo would disable judging).
    pub fn load(globs: &[String], base: &Path) -> Result<RuleSet, ConfigError> {
        if globs.is_empty() {
            return Ok(RuleSet::embedded());
        }
        let mut files = Vec::new();
        for g in globs {
            let pattern = if Path::new(g).is_absolute() {
                g.clone()
            } else {
                base.join(g).display().to_string()
            };
            let paths = glob::glob(&pattern).map_err(|e| ConfigError::Invalid {
                path: pattern.clone(),
                message: format!("rule_files: invalid glob: {e}"),
            })?;
            let mut n = 0;
            for p in paths.flatten() {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                files.push((text, p.display().to_string()));
                n += 1;
            }
            if n == 0 {
                return Err(ConfigError::Invalid {
                    path: pattern,
                    message: "rule_files: the glob matches no file".into(),
                });
            }
        }
        RuleSet::parse(&files)
    }

    /// Parses rule file texts; each is `(text, name for messages)`.
    pub fn parse(files: &[(String, String)]) -> Result<RuleSet, ConfigError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut alphas = Alphas::default();
        let mut sources = Vec::new();
        for (text, source) in files {
            let raw: RawFile =
                serde_saphyr::from_str(text).map_err(|e| crate::config::yaml_error(source, &e))?;
            if let Some(a) = raw.alpha {
                for (name, v, slot) in [
                    ("warn", a.warn, &mut alphas.warn),
                    ("pause", a.pause, &mut alphas.pause),
                    ("rollback", a.rollback, &mut alphas.rollback),
                    ("pass", a.pass, &mut alphas.pass),
                ] {
                    if let Some(v) = v {
                        if !(v > 0.0 && v < 0.5) {
                            return Err(invalid(
                                source,
                                format!("alpha.{name} must be in (0, 0.5), got {v}"),
                            ));
                        }
                        *slot = v;
                    }
                }
            }
            for (i, r) in raw.rules.into_iter().enumerate() {
                let name = r.name.clone();
                let rule = validate(r)
                    .map_err(|m| invalid(source, format!("rules[{i}] ({name}): {m}")))?;
                if rules.iter().any(|x| x.name == rule.name) {
                    return Err(invalid(
                        source,
                        format!("rules[{i}]: duplicate rule name {:?}", rule.name),
                    ));
                }
                rules.push(rule);
            }
            sources.push(source.clone());
        }
        Ok(RuleSet {
            rules,
            alphas,
            sources,
        })
    }
}

fn invalid(source: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: source.to_string(),
        message,
    }
}

fn selectors(field: &str, texts: &[String]) -> Result<Vec<Selector>, String> {
    if texts.is_empty() {
        return Err(format!("{field}: at least one selector is required"));
    }
    texts
        .iter()
        .map(|t| Selector::parse(t).map_err(|e| format!("{field}: {e}")))
        .collect()
}

fn validate(r: RawRule) -> Result<Rule, String> {
    let name_ok = r
        .name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_lowercase() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if r.name.is_empty() || !name_ok {
        return Err("name: expected [a-z_][a-z0-9_]*".into());
    }
    let unused = |field: &str, present: bool| {
        if present {
            Err(format!("{field}: not used by signal {:?}", r.signal))
        } else {
            Ok(())
        }
    };
    let signal = match r.signal.as_str() {
        "ratio" => {
            unused("select", !r.select.is_empty())?;
            unused("quantile", r.quantile.is_some())?;
            Signal::Ratio {
                numerator: selectors("numerator", &r.numerator)?,
                denominator: selectors("denominator", &r.denominator)?,
            }
        }
        "quantile" => {
            unused("numerator", !r.numerator.is_empty())?;
            unused("denominator", !r.denominator.is_empty())?;
            let q = r.quantile.ok_or("quantile: required for signal quantile")?;
            if !(q > 0.0 && q < 1.0) {
                return Err(format!("quantile: must be in (0, 1), got {q}"));
            }
            Signal::Quantile { buckets: selectors("select", &r.select)?, quantile: q }
        }
        kind @ ("rate" | "level" | "trend" | "increase" | "share") => {
            unused("numerator", !r.numerator.is_empty())?;
            unused("denominator", !r.denominator.is_empty())?;
            unused("quantile", r.quantile.is_some())?;
            let series = selectors("select", &r.select)?;
            match kind {
                "rate" => Signal::Rate { series },
                "level" => Signal::Level { series },
                "trend" => Signal::Trend { series },
                "increase" => Signal::Increase { series },
                _ => Signal::Share { series },
            }
        }
        other => {
            return Err(format!(
                "signal: unknown {other:?}; expected ratio, quantile, rate, level, trend, increase or share"
            ))
        }
    };
    let tiers = [r.warn, r.pause, r.rollback];
    if tiers.iter().all(Option::is_none) {
        return Err("at least one of warn, pause, rollback is required".into());
    }
    let mut prev: Option<Threshold> = None;
    for (t, name) in tiers.iter().zip(["warn", "pause", "rollback"]) {
        if let Some(t) = t {
            if !(t.relative.is_finite() && t.relative > 1.0) {
                return Err(format!(
                    "{name}.relative: must be a factor above 1, got {}",
                    t.relative
                ));
            }
            if !(t.absolute.is_finite() && t.absolute >= 0.0) {
                return Err(format!("{name}.absolute: must be >= 0, got {}", t.absolute));
            }
            if let Some(p) = prev {
                if t.relative < p.relative || t.absolute < p.absolute {
                    return Err(format!(
                        "{name}: thresholds must not be lower than the tier below"
                    ));
                }
            }
            prev = Some(*t);
        }
    }
    let dur = |field: &str, v: &Option<String>, default: u64| -> Result<Duration, String> {
        match v {
            None => Ok(Duration::from_secs(default)),
            Some(s) => parse_duration(s).map_err(|e| format!("{field}: {e}")),
        }
    };
    let counts = matches!(signal, Signal::Ratio { .. } | Signal::Share { .. });
    let min_evidence = r.min_evidence.unwrap_or(if counts { 100.0 } else { 4.0 });
    if !(min_evidence.is_finite() && min_evidence >= 0.0) {
        return Err("min_evidence: must be >= 0".into());
    }
    Ok(Rule {
        name: r.name,
        description: r.description,
        bad: r.bad.unwrap_or(if matches!(signal, Signal::Share { .. }) {
            Bad::Down
        } else {
            Bad::Up
        }),
        signal,
        tiers,
        critical: r.critical.unwrap_or(true),
        warmup: dur("warmup", &r.warmup, 60)?,
        min_evidence,
        observe: dur("observe", &r.observe, 300)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults docs/rules.md and docs/statistics.md state are the ones in force (they
    /// once said twice these).
    #[test]
    fn the_documented_default_alphas_are_the_code_s() {
        let a = Alphas::default();
        let schema = format!(
            "alpha: {{warn: {}, pause: {}, rollback: {}, pass: {}}}",
            a.warn, a.pause, a.rollback, a.pass
        );
        let rules_md = include_str!("../../docs/rules.md");
        assert!(rules_md.contains(&schema), "docs/rules.md: {schema}");
        let stats = format!(
            "Defaults: warn α = {}, pause α = {}, rollback α = {}, pass\nα = {}",
            a.warn, a.pause, a.rollback, a.pass
        );
        let stats_md = include_str!("../../docs/statistics.md");
        assert!(stats_md.contains(&stats), "docs/statistics.md: {stats}");
    }

    #[test]
    fn default_rules_parse_and_cover_the_golden_signals() {
        let rs = RuleSet::embedded();
        let kinds: Vec<_> = rs
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.signal.kind()))
            .collect();
        for want in [
            "ratio", "quantile", "rate", "level", "trend", "increase", "share",
        ] {
            assert!(
                kinds.iter().any(|(_, k)| *k == want),
                "no {want} rule in {kinds:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_rule_and_field() {
        let bad = "rules:\n  - name: e\n    signal: ratio\n    numerator: ['x{']\n    denominator: [y]\n    rollback: {relative: 2}\n";
        let e = RuleSet::parse(&[(bad.into(), "r.yml".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.yml") && e.contains("rules[0] (e): numerator"),
            "{e}"
        );
        let bad = "rules:\n  - name: e\n    signal: ratio\n    numerator: [x]\n    denominator: [y]\n    rollback: {relative: 0.5}\n";
        let e = RuleSet::parse(&[(bad.into(), "r.yml".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rollback.relative"), "{e}");
        let bad = "rules:\n  - name: e\n    signal: ratio\n    numerater: [x]\n";
        let e = RuleSet::parse(&[(bad.into(), "r.yml".into())])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.yml:4:") && e.contains("numerater"), "{e}");
    }
}
