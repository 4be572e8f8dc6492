//! Splitting a request URL as HAProxy's HTTP client does: a scheme ending in
//! `://` (only `https` means TLS; any other scheme is plain HTTP, on port 80
//! for `http` and on port 0, i.e. nowhere, for others unless the URL names a
//! port), an authority without user information, then the path.

/// The parts of a URL the client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// The authority as written (`host:port`), for the Host header.
    pub authority: String,
    /// The host without port or IPv6 brackets, for resolution and SNI.
    pub host: String,
    pub port: u16,
    /// Path and query; `/` when the URL has none.
    pub target: String,
}

/// Why a URL was refused; each maps to the error HAProxy raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// No `scheme://` (HAProxy: "couldn't start the httpclient").
    NoScheme,
    /// Nothing after the scheme (HAProxy: "Can't generate the HTTP request").
    NoAuthority,
}

pub fn parse(url: &str) -> Result<Url, UrlError> {
    let sep = url.find("://").ok_or(UrlError::NoScheme)?;
    let scheme = &url[..sep];
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(UrlError::NoScheme);
    }
    let rest = &url[sep + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut authority = &rest[..end];
    if let Some(at) = authority.rfind('@') {
        authority = &authority[at + 1..];
    }
    if authority.is_empty() {
        return Err(UrlError::NoAuthority);
    }
    let target = match &rest[end..] {
        "" => "/".to_string(),
        t if t.starts_with('/') => t.split('#').next().unwrap_or(t).to_string(),
        t => format!("/{}", t.split('#').next().unwrap_or(t)),
    };
    let tls = scheme.eq_ignore_ascii_case("https");
    let default_port = if tls {
        443
    } else if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        0
    };
    // A port is the digits after the last colon, unless that colon is
    // inside an IPv6 literal's brackets.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let digits = &authority[i + 1..];
            let port = if digits.is_empty() {
                default_port
            } else {
                digits.parse::<u16>().unwrap_or(default_port)
            };
            (&authority[..i], port)
        }
        _ => (authority, default_port),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(Url {
        tls,
        authority: authority.to_string(),
        host: host.to_string(),
        port,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_as_haproxy() {
        let u = parse("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (false, "127.0.0.1", 8080, "/a/b?x=1")
        );
        assert_eq!(u.authority, "127.0.0.1:8080");
        let u = parse("HTTPS://example.com").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (true, "example.com", 443, "/")
        );
        let u = parse("http://user:pw@[::1]:81?q").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.target.as_str(),
                u.authority.as_str()
            ),
            ("::1", 81, "/?q", "[::1]:81")
        );
        let u = parse("http://[::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        // Another scheme is plain HTTP; without a port, port 0.
        let u = parse("ftp://h:21/").unwrap();
        assert_eq!((u.tls, u.port), (false, 21));
        assert_eq!(parse("ftp://h/").unwrap().port, 0);
        assert_eq!(parse("foo"), Err(UrlError::NoScheme));
        assert_eq!(parse("/path"), Err(UrlError::NoScheme));
        assert_eq!(parse("http://"), Err(UrlError::NoAuthority));
        assert_eq!(parse("http:///x"), Err(UrlError::NoAuthority));
    }
}
