//! Capture slots: `capture request header NAME len N`, `capture response
//! header NAME len N` and `http-request capture SAMPLE len N` keep values
//! for the log line (`%hr`, `%hs`) and for `capture.req.hdr(N)` /
//! `capture.res.hdr(N)`.

use super::TxnFacts;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName};

/// One slot: the header it takes (none when a rule fills it), and the
/// longest value kept.
struct Slot {
    header: Option<HeaderName>,
    len: usize,
}

/// The capture slots of a frontend.
pub struct CaptureSpec {
    req: Vec<Slot>,
    res: Vec<Slot>,
}

impl CaptureSpec {
    /// The frontend's slots, or none when it captures nothing.
    pub fn from_config(p: &crate::config::Proxy) -> Result<Option<CaptureSpec>, String> {
        let Some(l) = p.logging.as_deref() else {
            return Ok(None);
        };
        if l.req_captures.is_empty() && l.res_captures.is_empty() {
            return Ok(None);
        }
        let slots = |list: &[crate::config::Capture]| -> Result<Vec<Slot>, String> {
            list.iter()
                .map(|c| {
                    let header = match &c.header {
                        Some(h) => Some(
                            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                                .map_err(|_| format!("capture: invalid header name '{h}'"))?,
                        ),
                        None => None,
                    };
                    Ok(Slot { header, len: c.len })
                })
                .collect()
        };
        Ok(Some(CaptureSpec {
            req: slots(&l.req_captures)?,
            res: slots(&l.res_captures)?,
        }))
    }

    /// Takes the request headers' values into their slots (and makes room
    /// for the slots rules fill).
    pub fn request(&self, headers: &HeaderMap, facts: &mut TxnFacts) {
        facts.req_captures = take(&self.req, headers);
    }

    /// Takes the response headers' values into their slots.
    pub fn response(&self, headers: &HeaderMap, facts: &mut TxnFacts) {
        facts.res_captures = take(&self.res, headers);
    }
}

/// As HAProxy: the last occurrence of the header, cut to the slot's length.
fn take(slots: &[Slot], headers: &HeaderMap) -> Vec<Option<Bytes>> {
    slots
        .iter()
        .map(|s| {
            let name = s.header.as_ref()?;
            let v = headers.get_all(name).iter().next_back()?;
            let b = v.as_bytes();
            Some(Bytes::copy_from_slice(&b[..b.len().min(s.len)]))
        })
        .collect()
}

/// Stores a value computed by `http-request capture` in its slot.
pub fn store(facts: &mut TxnFacts, slot: usize, value: &[u8], len: usize) {
    if facts.req_captures.len() <= slot {
        facts.req_captures.resize(slot + 1, None);
    }
    facts.req_captures[slot] = Some(Bytes::copy_from_slice(&value[..value.len().min(len)]));
}

/// `{v1|v2}` for `%hr`/`%hs` (a missing value is empty); the characters
/// HAProxy encodes in captured headers (controls, `"`, `#`, `{`, `|`, `}`)
/// become `#XX`. None when the frontend has no slot.
pub fn braces(values: &[Option<Bytes>]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let mut out = String::from("{");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        if let Some(v) = v {
            encode_into(&mut out, v);
        }
    }
    out.push('}');
    Some(out)
}

/// `v1 v2` for `%hrl`/`%hsl` (a missing or empty value is `-`).
pub fn list(values: &[Option<Bytes>]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            Some(v) if !v.is_empty() => {
                let mut s = String::new();
                encode_into(&mut s, v);
                s
            }
            _ => "-".to_string(),
        })
        .collect();
    Some(parts.join(" "))
}

fn encode_into(out: &mut String, v: &[u8]) {
    for &c in v {
        if !(0x20..0x7f).contains(&c) || matches!(c, b'"' | b'#' | b'{' | b'|' | b'}') {
            out.push_str(&format!("#{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_and_encoding() {
        let v = vec![Some(Bytes::from_static(b"a|b")), None, Some(Bytes::new())];
        assert_eq!(braces(&v).unwrap(), "{a#7Cb||}");
        assert_eq!(braces(&[]), None);
        assert_eq!(list(&v).unwrap(), "a#7Cb - -");
    }

    #[test]
    fn last_occurrence_cut_to_len() {
        let mut h = HeaderMap::new();
        h.append("x-a", "first".parse().unwrap());
        h.append("x-a", "second-value".parse().unwrap());
        let slots = [
            Slot {
                header: Some(HeaderName::from_static("x-a")),
                len: 6,
            },
            Slot {
                header: None,
                len: 3,
            },
        ];
        let got = take(&slots, &h);
        assert_eq!(got, vec![Some(Bytes::from_static(b"second")), None]);
        let mut f = TxnFacts {
            req_captures: got,
            ..Default::default()
        };
        store(&mut f, 1, b"abcdef", 3);
        assert_eq!(f.req_captures[1], Some(Bytes::from_static(b"abc")));
    }
}
