//! A suspect's label value and the deploy's registered changes in; the change it points at
//! out. Deterministic token matching: both sides are split on non-alphanumerics and
//! lower-cased; common path and language words and numbers are dropped; a value token
//! matches a change token when equal, or when one extends the other by at most two letters
//! (`cart` ↔ `carts`) and both have four or more. A match in the component weighs 3, in a
//! file path 2, in the summary 1; the change with the highest total wins, the first
//! registered on a tie.

use crate::deploy::Change;

/// Words that say nothing about which part of the code changed.
const STOPWORDS: &[&str] = &[
    "src", "lib", "main", "mod", "index", "internal", "pkg", "cmd", "app", "api", "http", "https",
    "www", "com", "rs", "go", "py", "js", "ts", "java", "kt", "rb", "the", "and", "for", "to",
    "of", "in", "on", "with", "from", "by", "fix", "add", "new", "old", "test", "tests", "get",
    "post", "put", "delete",
];

/// Lower-case alphanumeric runs, without stopwords, numbers and single letters.
pub fn tokens(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in s
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
    {
        if t.chars().count() < 2
            || t.chars().all(|c| c.is_ascii_digit())
            || STOPWORDS.contains(&t.as_str())
            || out.contains(&t)
        {
            continue;
        }
        out.push(t);
    }
    out
}

fn token_match(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= 4 && long.len() - short.len() <= 2 && long.starts_with(short)
}

/// The name a change is known by: its component, else its first file, else its summary.
pub fn change_name(c: &Change) -> String {
    if !c.component.is_empty() {
        c.component.clone()
    } else if let Some(f) = c.files.first() {
        f.clone()
    } else {
        c.summary.clone()
    }
}

/// The change a label value points at, if any. `ignore`: tokens that carry no meaning for
/// this value (the service's and version's names inside a pod name).
pub fn best_match(value: &str, ignore: &[String], changes: &[Change]) -> Option<String> {
    let want: Vec<String> = tokens(value)
        .into_iter()
        .filter(|t| !ignore.contains(t))
        .collect();
    if want.is_empty() {
        return None;
    }
    let mut best: Option<(u32, &Change)> = None;
    for c in changes {
        let fields: [(u32, Vec<String>); 3] = [
            (3, tokens(&c.component)),
            (2, c.files.iter().flat_map(|f| tokens(f)).collect()),
            (1, tokens(&c.summary)),
        ];
        let score: u32 = want
            .iter()
            .map(|w| {
                fields
                    .iter()
                    .filter(|(_, toks)| toks.iter().any(|t| token_match(w, t)))
                    .map(|(weight, _)| *weight)
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        if score > 0 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| change_name(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(component: &str, files: &[&str], summary: &str) -> Change {
        Change {
            component: component.into(),
            summary: summary.into(),
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn routes_match_components_and_files() {
        let changes = [
            change("redis-pool", &["src/cache/pool.rs"], "pool size 50 -> 500"),
            change(
                "checkout-cart",
                &["src/checkout/cart.rs"],
                "new cart totals",
            ),
        ];
        assert_eq!(
            best_match("/checkout", &[], &changes).as_deref(),
            Some("checkout-cart")
        );
        assert_eq!(
            best_match("/carts", &[], &changes).as_deref(),
            Some("checkout-cart")
        );
        assert_eq!(
            best_match("redis-main", &[], &changes).as_deref(),
            Some("redis-pool")
        );
        assert_eq!(best_match("/search", &[], &changes), None);
        assert_eq!(best_match("500", &[], &changes), None);
        // A pod's name carries the service's: ignored.
        let ignore = tokens("checkout v2");
        assert_eq!(best_match("checkout-v2-xk2bd", &ignore, &changes), None);
    }

    #[test]
    fn file_only_changes_are_named_by_their_file() {
        let changes = [change("", &["src/routes/search.rs"], "")];
        assert_eq!(
            best_match("/search", &[], &changes).as_deref(),
            Some("src/routes/search.rs")
        );
    }
}
