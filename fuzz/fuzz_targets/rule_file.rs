//! The rule-file parser (`RuleSet::parse`, YAML via serde-saphyr, then validation and
//! selector parsing).
//!
//! Input: the file's text (non-UTF-8 input is skipped, as `read_to_string` refuses it).
//! Checks: no panic, no runaway allocation (YAML aliases); an accepted rule set satisfies
//! every documented constraint; each selector re-parses from its own text to the same
//! matchers; parsing is deterministic; selectors match a label set without panicking.
#![no_main]

use deploywatch::rules::{RuleSet, Selector};
use deploywatch::store::LabelSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = [(text.to_string(), "fuzz.yml".to_string())];
    let Ok(set) = RuleSet::parse(&files) else {
        return;
    };
    assert_eq!(
        RuleSet::parse(&files).ok().as_ref(),
        Some(&set),
        "deterministic"
    );
    let a = set.alphas;
    for v in [a.warn, a.pause, a.rollback, a.pass] {
        assert!(v > 0.0 && v < 0.5);
    }
    let labels = LabelSet::from_strs(&[
        ("__name__", "http_requests_total"),
        ("code", "500"),
        ("job", "api"),
        ("le", "+Inf"),
    ]);
    for (i, r) in set.rules.iter().enumerate() {
        assert!(!r.name.is_empty());
        assert!(
            set.rules[..i].iter().all(|o| o.name != r.name),
            "names are unique"
        );
        assert!(r.tiers.iter().any(Option::is_some));
        let mut prev = None;
        for t in r.tiers.iter().flatten() {
            assert!(t.relative.is_finite() && t.relative > 1.0);
            assert!(t.absolute.is_finite() && t.absolute >= 0.0);
            if let Some((pr, pa)) = prev {
                assert!(t.relative >= pr && t.absolute >= pa);
            }
            prev = Some((t.relative, t.absolute));
        }
        assert!(r.min_evidence.is_finite() && r.min_evidence >= 0.0);
        if let deploywatch::rules::Signal::Quantile { quantile, .. } = r.signal {
            assert!(quantile > 0.0 && quantile < 1.0);
        }
        let selectors = r.signal.selectors();
        assert!(!selectors.is_empty());
        for (_, s) in selectors {
            let again = Selector::parse(&s.text).expect("a selector re-parses from its text");
            assert_eq!(again.metric, s.metric);
            assert_eq!(again.matchers.len(), s.matchers.len());
            assert_eq!(again.metric_name(), s.metric_name());
            assert_eq!(again.matches(&labels), s.matches(&labels));
        }
    }
});
