//! One check run: the steps compiled from the proxy's check settings
//! (a plain connect, `option httpchk` with its `http-check` rules, or
//! `option tcp-check` with its `tcp-check` rules), executed on a tokio
//! socket with HAProxy's timeouts.

use super::status::{os_error_text, Outcome, Status};
use crate::config::{CheckKind, CheckRule, HttpChkLine, HttpSend, Matcher, ProxyCheck};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer a check reads (HAProxy's check buffer is one
/// `tune.bufsize`, 16 kB by default).
const MAX_ANSWER: usize = 16 * 1024;

/// One compiled step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Connect {
        port: Option<u16>,
        addr: Option<IpAddr>,
        /// Added by luahost (no `connect` rule came first): its success is
        /// reported without "(tcp-check)".
        implicit: bool,
    },
    /// Bytes to write (a tcp-check send, or an HTTP request).
    Send(Vec<u8>),
    /// Reads an HTTP response (after an HTTP request).
    ReadHttp,
    Expect {
        negate: bool,
        matcher: Matcher,
        /// The step's 1-based rule number, for tcp-check messages.
        step: usize,
    },
}

/// What a check does, shared by the servers of a backend.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub http: bool,
}

impl Plan {
    /// A plain connect check.
    pub(crate) fn connect() -> Plan {
        Plan {
            steps: vec![Step::Connect {
                port: None,
                addr: None,
                implicit: true,
            }],
            http: false,
        }
    }

    /// The plan of a backend's check settings.
    pub(crate) fn of(pc: Option<&ProxyCheck>) -> Plan {
        let Some(pc) = pc else {
            return Plan::connect();
        };
        match pc.kind {
            None => Plan::connect(),
            Some(CheckKind::Tcp) => tcp_plan(&pc.tcp_rules),
            Some(CheckKind::Http) => http_plan(&pc.httpchk, &pc.http_rules),
        }
    }
}

fn tcp_plan(rules: &[CheckRule]) -> Plan {
    let mut steps = Vec::new();
    if !matches!(rules.first(), Some(CheckRule::Connect { .. })) {
        steps.push(Step::Connect {
            port: None,
            addr: None,
            implicit: true,
        });
    }
    for (i, r) in rules.iter().enumerate() {
        let step = i + 1;
        match r {
            CheckRule::Connect { port, addr } => steps.push(Step::Connect {
                port: *port,
                addr: *addr,
                implicit: false,
            }),
            CheckRule::Send(data) => steps.push(Step::Send(data.clone())),
            CheckRule::Expect { negate, matcher } => steps.push(Step::Expect {
                negate: *negate,
                matcher: matcher.clone(),
                step,
            }),
            // The parser keeps http-check sends out of tcp-check rules.
            CheckRule::HttpSend(_) => {}
        }
    }
    Plan { steps, http: false }
}

/// HTTP checks: `option httpchk`'s request line, overridden and extended
/// by `http-check send`; a connect first and a request when the rules have
/// none; `expect status 200-399` when nothing is expected after the last
/// request (HAProxy's defaults).
fn http_plan(line: &HttpChkLine, rules: &[CheckRule]) -> Plan {
    let mut steps = Vec::new();
    if !matches!(rules.first(), Some(CheckRule::Connect { .. })) {
        steps.push(Step::Connect {
            port: None,
            addr: None,
            implicit: true,
        });
    }
    let has_send = rules.iter().any(|r| matches!(r, CheckRule::HttpSend(_)));
    if !has_send {
        steps.push(Step::Send(http_request(line, &HttpSend::default())));
        steps.push(Step::ReadHttp);
    }
    for (i, r) in rules.iter().enumerate() {
        match r {
            CheckRule::Connect { port, addr } => steps.push(Step::Connect {
                port: *port,
                addr: *addr,
                implicit: false,
            }),
            CheckRule::HttpSend(send) => {
                steps.push(Step::Send(http_request(line, send)));
                steps.push(Step::ReadHttp);
            }
            CheckRule::Expect { negate, matcher } => steps.push(Step::Expect {
                negate: *negate,
                matcher: matcher.clone(),
                step: i + 1,
            }),
            CheckRule::Send(_) => {}
        }
    }
    if !matches!(steps.last(), Some(Step::Expect { .. })) {
        steps.push(Step::Expect {
            negate: false,
            matcher: Matcher::Status(vec![(200, 399)]),
            step: rules.len() + 1,
        });
    }
    Plan { steps, http: true }
}

/// The request bytes of an HTTP check.
fn http_request(line: &HttpChkLine, send: &HttpSend) -> Vec<u8> {
    let meth = send.meth.as_deref().unwrap_or(&line.meth);
    let uri = send.uri.as_deref().unwrap_or(&line.uri);
    let ver = send.ver.as_deref().unwrap_or(&line.ver);
    let mut r = format!("{meth} {uri} {ver}\r\n");
    for (n, v) in &send.hdrs {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(body) = &send.body {
        r.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    // One request per connection, as HAProxy's checks.
    r.push_str("connection: close\r\n\r\n");
    if let Some(body) = &send.body {
        r.push_str(body);
    }
    r.into_bytes()
}

/// Where and how long to connect and wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// The server's address, with the `addr`/`port` check options applied.
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// How long reading an answer may take once connected.
    pub read_timeout: Duration,
}

/// An HTTP answer as expect rules see it.
struct HttpAnswer {
    code: u16,
    reason: String,
    body: Vec<u8>,
}

/// Runs `plan` against `target`.
pub(crate) async fn run(plan: &Plan, target: Target) -> Outcome {
    let start = Instant::now();
    let mut out = run_steps(plan, target).await;
    out.duration = start.elapsed();
    out
}

async fn run_steps(plan: &Plan, target: Target) -> Outcome {
    let mut conn: Option<TcpStream> = None;
    let mut data: Vec<u8> = Vec::new();
    let mut answer: Option<HttpAnswer> = None;
    let mut last_connect_implicit = true;
    let mut last_was_expect = false;
    for step in &plan.steps {
        last_was_expect = false;
        match step {
            Step::Connect {
                port,
                addr,
                implicit,
            } => {
                let mut to = target.addr;
                if let Some(a) = addr {
                    to.set_ip(*a);
                }
                if let Some(p) = port {
                    to.set_port(*p);
                }
                drop(conn.take());
                data.clear();
                match tokio::time::timeout(target.connect_timeout, TcpStream::connect(to)).await {
                    Err(_) => return Outcome::new(Status::L4Tout, None),
                    Ok(Err(e)) => return Outcome::new(Status::L4Con, Some(os_error_text(&e))),
                    Ok(Ok(s)) => conn = Some(s),
                }
                last_connect_implicit = *implicit;
            }
            Step::Send(bytes) => {
                let Some(c) = conn.as_mut() else {
                    return Outcome::new(Status::SockErr, None);
                };
                if let Err(e) = c.write_all(bytes).await {
                    return Outcome::new(Status::SockErr, Some(os_error_text(&e)));
                }
            }
            Step::ReadHttp => {
                let Some(c) = conn.as_mut() else {
                    return Outcome::new(Status::SockErr, None);
                };
                match read_http(c, target.read_timeout).await {
                    Ok(a) => answer = Some(a),
                    Err(o) => return o,
                }
            }
            Step::Expect {
                negate,
                matcher,
                step,
            } => {
                last_was_expect = true;
                let failed = if plan.http {
                    let Some(a) = answer.as_ref() else {
                        return Outcome::new(Status::L7Rsp, None);
                    };
                    expect_http(a, *negate, matcher)
                } else {
                    let Some(c) = conn.as_mut() else {
                        return Outcome::new(Status::SockErr, None);
                    };
                    expect_tcp(c, &mut data, target.read_timeout, *negate, matcher, *step).await
                };
                if let Some(o) = failed {
                    return o;
                }
            }
        }
    }
    // HAProxy's end of a tcp-check: L7OK after an expect (HTTP: with the
    // reason as info and the code), L4OK after a connect.
    if last_was_expect {
        if let Some(a) = answer.filter(|_| plan.http) {
            let mut o = Outcome::new(Status::L7Ok, Some(a.reason));
            o.code = Some(a.code);
            return o;
        }
        return Outcome::new(Status::L7Ok, Some("(tcp-check)".to_string()));
    }
    match plan.steps.last() {
        Some(Step::Connect { .. }) => Outcome::new(
            Status::L4Ok,
            (!last_connect_implicit).then(|| "(tcp-check)".to_string()),
        ),
        _ => Outcome::new(Status::L7Ok, Some("(tcp-check)".to_string())),
    }
}

/// Reads a whole HTTP response (until the body's end or the close).
async fn read_http(c: &mut TcpStream, limit: Duration) -> Result<HttpAnswer, Outcome> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, c.read(&mut chunk)).await {
            Err(_) => return Err(Outcome::new(Status::L7Tout, None)),
            Ok(Err(e)) => return Err(Outcome::new(Status::SockErr, Some(os_error_text(&e)))),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let closed = n == 0;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let have = buf.len() - head;
                let done = closed || length.is_some_and(|l| have >= l) || buf.len() >= MAX_ANSWER;
                if done {
                    let code = resp.code.unwrap_or(0);
                    let reason = resp.reason.unwrap_or_default().to_string();
                    let end = length.map_or(buf.len(), |l| (head + l).min(buf.len()));
                    let body = buf[head..end].to_vec();
                    return Ok(HttpAnswer { code, reason, body });
                }
            }
            Ok(httparse::Status::Partial) if !closed && buf.len() < MAX_ANSWER => {}
            Ok(httparse::Status::Partial) | Err(_) => {
                return Err(Outcome::new(
                    Status::L7Rsp,
                    Some("HTTP content check could not find a response".to_string()),
                ))
            }
        }
    }
}

/// An HTTP expect rule against the answer; Some(failure) when it fails.
fn expect_http(a: &HttpAnswer, negate: bool, m: &Matcher) -> Option<Outcome> {
    let (matched, on_status) = match m {
        Matcher::Status(ranges) => (
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&a.code)),
            true,
        ),
        Matcher::RStatus(re) => (re.is_match(a.code.to_string().as_bytes()), true),
        Matcher::String(s) => (contains(&a.body, s), false),
        Matcher::RString(re) => (re.is_match(&a.body), false),
        Matcher::Binary(b) => (contains(&a.body, b), false),
    };
    if matched != negate {
        return None;
    }
    if on_status {
        let mut o = Outcome::new(Status::L7Sts, Some(a.reason.clone()));
        o.code = Some(a.code);
        return Some(o);
    }
    // HAProxy reports a body mismatch without the status code.
    let info = if negate {
        "HTTP content check matched unwanted content"
    } else {
        "HTTP content check did not match"
    };
    Some(Outcome::new(Status::L7Rsp, Some(info.to_string())))
}

/// A tcp-check expect: reads until the pattern matches, the connection
/// closes or the read timeout passes; Some(failure) when it fails.
async fn expect_tcp(
    c: &mut TcpStream,
    data: &mut Vec<u8>,
    limit: Duration,
    negate: bool,
    m: &Matcher,
    step: usize,
) -> Option<Outcome> {
    let deadline = tokio::time::Instant::now() + limit;
    let matches = |d: &[u8]| match m {
        Matcher::String(s) | Matcher::Binary(s) => contains(d, s),
        Matcher::RString(re) => re.is_match(d),
        Matcher::Status(_) | Matcher::RStatus(_) => false,
    };
    loop {
        let matched = matches(data);
        if matched && !negate {
            data.clear();
            return None;
        }
        if matched && negate {
            return Some(tcp_mismatch(m, step, true));
        }
        // A negated pattern passes on the first answer that lacks it.
        if negate && !data.is_empty() {
            data.clear();
            return None;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, c.read(&mut chunk)).await {
            Err(_) => {
                return Some(Outcome::new(
                    Status::L7Tout,
                    Some(format!(
                        "at step {step} of tcp-check (expect {})",
                        describe(m)
                    )),
                ))
            }
            Ok(Err(e)) => return Some(Outcome::new(Status::SockErr, Some(os_error_text(&e)))),
            Ok(Ok(0)) => return Some(tcp_mismatch(m, step, false)),
            Ok(Ok(n)) => {
                data.extend_from_slice(&chunk[..n]);
                if data.len() > MAX_ANSWER {
                    return Some(tcp_mismatch(m, step, false));
                }
            }
        }
    }
}

fn describe(m: &Matcher) -> String {
    match m {
        Matcher::String(s) => format!("string '{}'", String::from_utf8_lossy(s)),
        Matcher::Binary(b) => format!(
            "binary '{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        Matcher::RString(re) => format!("rstring '{}'", re.as_str()),
        Matcher::Status(_) | Matcher::RStatus(_) => "status".to_string(),
    }
}

/// HAProxy's "TCPCHK did not match content 'X' at step N".
fn tcp_mismatch(m: &Matcher, step: usize, negated: bool) -> Outcome {
    let what = match m {
        Matcher::String(s) => format!("content '{}'", String::from_utf8_lossy(s)),
        Matcher::Binary(b) => format!(
            "binary content '{}'",
            b.iter().map(|x| format!("{x:02X}")).collect::<String>()
        ),
        Matcher::RString(re) => format!("regex '{}'", re.as_str()),
        Matcher::Status(_) | Matcher::RStatus(_) => "status".to_string(),
    };
    let verb = if negated {
        "matched unwanted"
    } else {
        "did not match"
    };
    Outcome::new(
        Status::L7Rsp,
        Some(format!("TCPCHK {verb} {what} at step {step}")),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_defaults() {
        let mut pc = ProxyCheck {
            kind: Some(CheckKind::Http),
            ..ProxyCheck::default()
        };
        let p = Plan::of(Some(&pc));
        assert!(matches!(p.steps[0], Step::Connect { implicit: true, .. }));
        match &p.steps[1] {
            Step::Send(b) => assert_eq!(
                std::str::from_utf8(b).unwrap(),
                "OPTIONS / HTTP/1.0\r\nconnection: close\r\n\r\n"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(p.steps[3], Step::Expect { matcher: Matcher::Status(ref r), .. } if r == &[(200, 399)])
        );
        pc.http_rules.push(CheckRule::HttpSend(Box::new(HttpSend {
            meth: Some("GET".into()),
            hdrs: vec![("Host".into(), "a".into())],
            ..HttpSend::default()
        })));
        let p = Plan::of(Some(&pc));
        match &p.steps[1] {
            Step::Send(b) => assert_eq!(
                std::str::from_utf8(b).unwrap(),
                "GET / HTTP/1.0\r\nHost: a\r\nconnection: close\r\n\r\n"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A one-shot server on 127.0.0.1 that answers `reply` to the first
    /// connection.
    async fn answering(reply: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    fn target(addr: SocketAddr) -> Target {
        Target {
            addr,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
        }
    }

    fn http_check(rules: Vec<CheckRule>) -> Plan {
        Plan::of(Some(&ProxyCheck {
            kind: Some(CheckKind::Http),
            http_rules: rules,
            ..ProxyCheck::default()
        }))
    }

    #[tokio::test]
    async fn runs_against_real_sockets() {
        // A port nobody listens on: connection refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let o = run(&Plan::connect(), target(closed)).await;
        assert_eq!(
            (o.status, o.info.as_deref()),
            (Status::L4Con, Some("Connection refused"))
        );

        let a = answering(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let o = run(&http_check(vec![]), target(a)).await;
        assert_eq!((o.status, o.code), (Status::L7Sts, Some(503)));
        assert_eq!(o.info.as_deref(), Some("Service Unavailable"));

        let a = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nalive").await;
        let expect = CheckRule::Expect {
            negate: false,
            matcher: Matcher::String(b"alive".to_vec()),
        };
        let o = run(&http_check(vec![expect]), target(a)).await;
        assert_eq!((o.status, o.code), (Status::L7Ok, Some(200)));

        let a = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndead").await;
        let expect = CheckRule::Expect {
            negate: false,
            matcher: Matcher::String(b"alive".to_vec()),
        };
        let o = run(&http_check(vec![expect]), target(a)).await;
        assert_eq!(o.status, Status::L7Rsp);

        let a = answering(b"+PONG\r\n").await;
        let plan = Plan::of(Some(&ProxyCheck {
            kind: Some(CheckKind::Tcp),
            tcp_rules: vec![
                CheckRule::Send(b"PING\r\n".to_vec()),
                CheckRule::Expect {
                    negate: false,
                    matcher: Matcher::String(b"+PONG".to_vec()),
                },
            ],
            ..ProxyCheck::default()
        }));
        let o = run(&plan, target(a)).await;
        assert_eq!(
            (o.status, o.info.as_deref()),
            (Status::L7Ok, Some("(tcp-check)"))
        );
    }
}
