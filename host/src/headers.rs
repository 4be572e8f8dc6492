//! Header block edits with HAProxy's ordering: a header that is set goes to
//! the end of the block (HAProxy deletes the old occurrences and appends),
//! and deleting keeps the order of the other headers. `HeaderMap::remove`
//! swaps entries around, so both edits rebuild the map in order.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Removes every `name` field, keeping the order of the others.
pub fn delete(map: &mut HeaderMap, name: &HeaderName) {
    rebuild(map, name, |_| None);
}

/// Rewrites each value of `name` where it stands (replace-header,
/// rep_value...); `f` returns the new value.
pub fn rewrite(
    map: &mut HeaderMap,
    name: &HeaderName,
    mut f: impl FnMut(&HeaderValue) -> HeaderValue,
) {
    rebuild(map, name, |v| Some(f(v)));
}

/// Rebuilds `map` in order, passing each value of `name` through `f` (None
/// drops it); other fields are kept as they are.
fn rebuild(
    map: &mut HeaderMap,
    name: &HeaderName,
    mut f: impl FnMut(&HeaderValue) -> Option<HeaderValue>,
) {
    if !map.contains_key(name) {
        return;
    }
    let old = std::mem::take(map);
    let mut current: Option<HeaderName> = None;
    for (n, v) in old {
        // into_iter yields the name only for the first value of a run.
        if let Some(n) = n {
            current = Some(n);
        }
        if let Some(n) = &current {
            let v = if n == name { f(&v) } else { Some(v) };
            if let Some(v) = v {
                map.append(n.clone(), v);
            }
        }
    }
}

/// HAProxy's regex replacement strings use `\1`; the regex crate uses
/// `${1}` (and `$` must be doubled).
pub fn regex_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

/// Replaces every `name` field by one, placed last.
pub fn set(map: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    delete(map, &name);
    map.append(name, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backreferences_are_translated() {
        assert_eq!(regex_replacement(r"\1-\2"), "${1}-${2}");
        assert_eq!(regex_replacement("a$b"), "a$$b");
    }

    fn names(m: &HeaderMap) -> Vec<String> {
        m.iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("")))
            .collect()
    }

    #[test]
    fn set_moves_to_the_end_and_delete_keeps_order() {
        let mut m = HeaderMap::new();
        for (n, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("b", "4")] {
            m.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        set(
            &mut m,
            HeaderName::from_static("a"),
            HeaderValue::from_static("9"),
        );
        assert_eq!(names(&m), ["b=2", "b=4", "c=3", "a=9"]);
        delete(&mut m, &HeaderName::from_static("b"));
        assert_eq!(names(&m), ["c=3", "a=9"]);
    }
}
