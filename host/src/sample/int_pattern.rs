//! Integer patterns (`-m int`, `-m len`, integer maps) read exactly as
//! HAProxy reads them, so a configuration HAProxy rejects is rejected here
//! with the same words, and one it accepts means the same thing.
//!
//! HAProxy's rules (pattern.c `pat_parse_int`, tools.c `strl2llrc`, the
//! operator layer of acl.c), checked against HAProxy 2.6 and 3.0:
//!
//! - a number is an optional `-` then decimal digits that fit in an i64
//!   (`+5`, `0x10`, `1.5`, ` 7` are not numbers; a lone `-` reads as 0);
//! - the first `:` or `-` splits a range: `N:M`/`N-M` (rejected when N > M,
//!   so `9:5` and `2147483648:9` fail), `N:`/`N-` (at least N), `:M`/`-M`
//!   (at most M: `-5` is "at most 5", not minus five), `:` alone fails;
//! - in an ACL's pattern list, a word `eq`, `ne`, `lt`, `le`, `gt` or `ge`
//!   sets the operator for the following plain numbers: `gt 5` is `6:`,
//!   `le 5` is `:5`. Words with `:` or `-` are taken as ranges whatever the
//!   operator (`gt -5` is `-5`, at most 5). `ne` is accepted but, as in
//!   HAProxy, leaves the number as an exact match.

use super::pattern::Range;

/// An operator word of an integer ACL's pattern list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Operator {
    /// HAProxy's `get_std_op`: the word exactly.
    fn from_word(w: &str) -> Option<Operator> {
        Some(match w {
            "eq" => Operator::Eq,
            "ne" => Operator::Ne,
            "lt" => Operator::Lt,
            "le" => Operator::Le,
            "gt" => Operator::Gt,
            "ge" => Operator::Ge,
            _ => return None,
        })
    }
}

/// HAProxy's `strl2llrc`: an optional leading `-`, then digits only, no
/// overflow. An empty text is not a number; a lone `-` is 0.
pub fn parse_number(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let (neg, digits) = match b.split_first() {
        None => return None,
        Some((b'-', rest)) => (true, rest),
        Some(_) => (false, b),
    };
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// HAProxy's `pat_parse_int`: one integer pattern to an inclusive range.
pub fn parse_int_pattern(text: &str) -> Result<Range, String> {
    let not_a_number = || format!("'{text}' is not a number");
    let not_a_range = || format!("'{text}' is not a valid number range");
    if text.is_empty() {
        return Err(not_a_range());
    }
    let Some(sep) = text.find([':', '-']) else {
        let v = parse_number(text).ok_or_else(not_a_number)?;
        return Ok(Range { min: v, max: v });
    };
    let (low, high) = (&text[..sep], &text[sep + 1..]);
    if sep == 0 && !high.is_empty() {
        let max = parse_number(high).ok_or_else(not_a_range)?;
        return Ok(Range { min: i64::MIN, max });
    }
    if high.is_empty() {
        let min = parse_number(low).ok_or_else(not_a_range)?;
        return Ok(Range { min, max: i64::MAX });
    }
    let min = parse_number(low).ok_or_else(not_a_range)?;
    let max = parse_number(high).ok_or_else(not_a_range)?;
    if min > max {
        return Err(not_a_range());
    }
    Ok(Range { min, max })
}

/// An integer ACL's pattern words with the operators applied: each returned
/// word is one pattern for [`parse_int_pattern`].
pub fn apply_operators(words: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(words.len());
    let mut op = Operator::Eq;
    for w in words {
        if let Some(o) = Operator::from_word(w) {
            op = o;
            continue;
        }
        if op == Operator::Eq || w.contains([':', '-']) {
            out.push(w.clone());
            continue;
        }
        let v = parse_number(w)
            .ok_or_else(|| format!("'{w}' is neither a number nor a supported operator"))?;
        // HAProxy computes in a C long long: `gt` of the largest value wraps
        // to the smallest, whose range text then fails to parse, as there.
        out.push(match op {
            Operator::Eq | Operator::Ne => w.clone(),
            Operator::Gt => format!("{}:", v.wrapping_add(1)),
            Operator::Ge => format!("{v}:"),
            Operator::Lt => format!(":{}", v.wrapping_sub(1)),
            Operator::Le => format!(":{v}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> Result<(i64, i64), String> {
        parse_int_pattern(text).map(|r| (r.min, r.max))
    }

    const MIN: i64 = i64::MIN;
    const MAX: i64 = i64::MAX;

    #[test]
    fn numbers_as_strl2llrc_reads_them() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("00012"), Some(12));
        assert_eq!(parse_number("-"), Some(0));
        assert_eq!(parse_number("9223372036854775807"), Some(MAX));
        assert_eq!(parse_number("-9223372036854775808"), Some(MIN));
        for bad in [
            "",
            "+5",
            "0x10",
            "1.5",
            " 7",
            "7 ",
            "9223372036854775808",
            "-9223372036854775809",
            "--1",
            "5-",
        ] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    /// Each case was run through `haproxy -c` (2.6 and 3.0), which accept
    /// and reject the same set with these messages.
    #[test]
    fn ranges_accepted_and_rejected_as_haproxy() {
        assert_eq!(range("5"), Ok((5, 5)));
        assert_eq!(range("2147483648"), Ok((2147483648, 2147483648)));
        assert_eq!(range("5:9"), Ok((5, 9)));
        assert_eq!(range("5-9"), Ok((5, 9)));
        assert_eq!(range("5:5"), Ok((5, 5)));
        assert_eq!(range("5:"), Ok((5, MAX)));
        assert_eq!(range("5-"), Ok((5, MAX)));
        assert_eq!(range(":5"), Ok((MIN, 5)));
        assert_eq!(range("-5"), Ok((MIN, 5)));
        assert_eq!(range(":-1"), Ok((MIN, -1)));
        assert_eq!(range("5:2147483648"), Ok((5, 2147483648)));
        assert_eq!(range("9223372036854775807:"), Ok((MAX, MAX)));
        let not_range = |t: &str| Err(format!("'{t}' is not a valid number range"));
        for t in [
            "9:5",
            "2147483648:9",
            "9-5",
            "3:-2",
            "5--3",
            "-3:-2",
            "-5:-1",
            "-9223372036854775808:0",
            ":",
            "-",
            "5::6",
            "5:abc",
            "",
        ] {
            assert_eq!(range(t), not_range(t), "{t:?}");
        }
        for t in ["abc", "1.5", "0x10", "+5", "9223372036854775808"] {
            assert_eq!(range(t), Err(format!("'{t}' is not a number")), "{t:?}");
        }
    }

    fn ops(words: &[&str]) -> Result<Vec<String>, String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        apply_operators(&words)
    }

    #[test]
    fn operators_rewrite_plain_numbers_only() {
        assert_eq!(ops(&["gt", "5"]).unwrap(), ["6:"]);
        assert_eq!(ops(&["ge", "5"]).unwrap(), ["5:"]);
        assert_eq!(ops(&["lt", "5"]).unwrap(), [":4"]);
        assert_eq!(ops(&["le", "5", "7"]).unwrap(), [":5", ":7"]);
        assert_eq!(ops(&["eq", "x"]).unwrap(), ["x"]);
        assert_eq!(ops(&["ne", "5"]).unwrap(), ["5"]);
        assert_eq!(ops(&["gt", "-5"]).unwrap(), ["-5"]);
        assert_eq!(ops(&["lt", "1:x"]).unwrap(), ["1:x"]);
        assert_eq!(ops(&["5", "gt"]).unwrap(), ["5"]);
        assert_eq!(ops(&["gt"]).unwrap(), Vec::<String>::new());
        assert_eq!(
            ops(&["lt", "x"]),
            Err("'x' is neither a number nor a supported operator".to_string())
        );
        // gt of the largest value wraps, and the range text is then refused.
        let w = ops(&["gt", "9223372036854775807"]).unwrap();
        assert_eq!(w, ["-9223372036854775808:"]);
        assert!(parse_int_pattern(&w[0]).is_err());
    }
}
