//! Interned label sets: one contiguous byte string per series (`name 0xFF value 0xFF ...`),
//! compared directly against a request's label byte pairs. 0xFF never occurs in UTF-8, so
//! the encoding is unambiguous.

use std::fmt;
use std::hash::Hasher;

const SEP: u8 = 0xFF;

/// A series' label set, sorted by name, stored once.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LabelSet(Box<[u8]>);

impl LabelSet {
    /// Builds a label set from validated UTF-8 pairs, sorted by name.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> LabelSet {
        let mut v = Vec::new();
        encode_pairs(pairs, &mut v);
        LabelSet(v.into_boxed_slice())
    }

    /// Builds a label set from its encoded bytes (see [`encode_pairs`]), already validated.
    pub(crate) fn from_encoded(bytes: &[u8]) -> LabelSet {
        LabelSet(bytes.into())
    }

    /// Builds a label set from string pairs; sorts them by name.
    pub fn from_strs(pairs: &[(&str, &str)]) -> LabelSet {
        let mut p = pairs.to_vec();
        p.sort();
        LabelSet::from_pairs(p.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// Whether this set equals the given sorted pairs, without allocating.
    #[inline]
    pub fn eq_pairs<'a>(&self, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        let mut rest: &[u8] = &self.0;
        for (n, v) in pairs {
            let need = n.len() + v.len() + 2;
            if rest.len() < need
                || &rest[..n.len()] != n
                || rest[n.len()] != SEP
                || &rest[n.len() + 1..n.len() + 1 + v.len()] != v
                || rest[need - 1] != SEP
            {
                return false;
            }
            rest = &rest[need..];
        }
        rest.is_empty()
    }

    /// Iterates (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        Pairs { rest: &self.0 }
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The metric name (`__name__`), or "".
    pub fn metric_name(&self) -> &str {
        self.get("__name__").unwrap_or("")
    }

    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Iterator over a [`LabelSet`]'s pairs.
#[derive(Clone)]
struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let n_end = self.rest.iter().position(|&b| b == SEP)?;
        let v_end = n_end + 1 + self.rest[n_end + 1..].iter().position(|&b| b == SEP)?;
        let (n, v) = (&self.rest[..n_end], &self.rest[n_end + 1..v_end]);
        self.rest = &self.rest[v_end + 1..];
        // Only validated UTF-8 is ever stored.
        Some((
            std::str::from_utf8(n).unwrap_or_default(),
            std::str::from_utf8(v).unwrap_or_default(),
        ))
    }
}

/// Appends the encoding of sorted label pairs (`name 0xFF value 0xFF ...`, the bytes of the
/// equal [`LabelSet`]) to `out`.
#[inline]
pub fn encode_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>, out: &mut Vec<u8>) {
    for (n, v) in pairs {
        out.extend_from_slice(n);
        out.push(SEP);
        out.extend_from_slice(v);
        out.push(SEP);
    }
}

/// Hashes an encoded label set (a [`LabelSet`]'s bytes, or [`encode_pairs`]' output) in
/// one call: one pass over contiguous bytes instead of four hasher calls per label.
#[inline]
pub fn hash_encoded(state: &ahash::RandomState, encoded: &[u8]) -> u64 {
    let mut h = state.build_hasher();
    h.write(encoded);
    h.finish()
}

/// Hashes sorted label pairs as [`hash_encoded`] hashes their encoding. Allocates; the
/// write path encodes into reused scratch space and calls [`hash_encoded`] instead.
pub fn hash_pairs<'a>(
    state: &ahash::RandomState,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> u64 {
    let mut v = Vec::new();
    encode_pairs(pairs, &mut v);
    hash_encoded(state, &v)
}

use std::hash::BuildHasher;

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_compare() {
        let ls = LabelSet::from_strs(&[("job", "checkout"), ("__name__", "up"), ("version", "v1")]);
        assert_eq!(ls.metric_name(), "up");
        assert_eq!(ls.get("job"), Some("checkout"));
        assert_eq!(ls.get("nope"), None);
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b"__name__", b"up"),
            (b"job", b"checkout"),
            (b"version", b"v1"),
        ];
        assert!(ls.eq_pairs(pairs.iter().copied()));
        assert!(!ls.eq_pairs(pairs[..2].iter().copied()));
        let other: Vec<(&[u8], &[u8])> = vec![
            (b"__name__", b"up"),
            (b"job", b"checkou"),
            (b"tversion", b"v1"),
        ];
        assert!(!ls.eq_pairs(other.iter().copied()));
        assert_eq!(
            ls.to_string(),
            r#"{__name__="up", job="checkout", version="v1"}"#
        );
    }
}
