//! The semantics of the built-in functions and of equality on EMAIL_ADDRESS, DNS_NAME and URI
//! values, after Mixer's `externs` (Go's `net/mail`, `golang.org/x/net/idna` and `net/url`
//! reduced to what the checks need).

use std::net::IpAddr;

/// Mixer's `match(str, pattern)`: a trailing `*` matches a prefix, else a leading `*` matches a
/// suffix, else the strings must be equal. No other wildcard is special.
pub(crate) fn glob_match(s: &str, pattern: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        s.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        s.ends_with(suffix)
    } else {
        s == pattern
    }
}

/// IP address equality: an IPv4-mapped IPv6 address equals its IPv4 address (Go's `net.IP.Equal`).
pub(crate) fn ip_eq(a: &IpAddr, b: &IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// `dnsName(s)`: validates a domain name (labels of letters, digits, `-`, `_` or non-ASCII
/// characters, 1..=63 bytes, no leading or trailing `-`; at most 253 bytes; one trailing `.`
/// allowed).
pub(crate) fn check_dns_name(s: &str) -> Result<(), String> {
    let body = s.strip_suffix('.').unwrap_or(s);
    if body.is_empty() {
        return Err("empty domain name".to_string());
    }
    if body.len() > 253 {
        return Err("domain name longer than 253 bytes".to_string());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label longer than 63 bytes: {label:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("invalid label {label:?}"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || !c.is_ascii()))
        {
            return Err(format!("invalid character {c:?} in label {label:?}"));
        }
        if label
            .chars()
            .any(|c| !c.is_ascii() && (c.is_whitespace() || c.is_control()))
        {
            return Err(format!("invalid label {label:?}"));
        }
    }
    Ok(())
}

fn dns_normal(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

/// DNS name equality: case-insensitive, a trailing `.` ignored.
pub(crate) fn dns_eq(a: &str, b: &str) -> bool {
    let (a, b) = (dns_normal(a), dns_normal(b));
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// The address part of an RFC 5322 address (`a@b`, `"a"@b`, `Name <a@b>`), split into
/// unquoted local part and domain.
fn parse_email(s: &str) -> Result<(String, &str), String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("no address".to_string());
    }
    let addr = match (t.rfind('<'), t.ends_with('>')) {
        (Some(i), true) => &t[i + 1..t.len() - 1],
        (None, false) => t,
        _ => return Err("unclosed angle-addr".to_string()),
    };
    let at = addr
        .rfind('@')
        .ok_or_else(|| "missing @ in addr-spec".to_string())?;
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    if local.is_empty() {
        return Err("no local part".to_string());
    }
    let local = if let Some(q) = local.strip_prefix('"') {
        let q = q
            .strip_suffix('"')
            .ok_or_else(|| "unclosed quoted-string".to_string())?;
        let mut out = String::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next().ok_or_else(|| "bad quoted-pair".to_string())?),
                '"' => return Err("bad quoted-string".to_string()),
                c if c.is_control() => return Err("bad character in quoted-string".to_string()),
                c => out.push(c),
            }
        }
        out
    } else {
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err("invalid dot-atom in local part".to_string());
        }
        if let Some(c) = local.chars().find(|c| !is_atext(*c) && *c != '.') {
            return Err(format!("invalid character {c:?} in local part"));
        }
        local.to_string()
    };
    if domain.is_empty() {
        return Err("no domain in addr-spec".to_string());
    }
    let domain_ok = (domain.starts_with('[') && domain.ends_with(']'))
        || (!domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| is_atext(c) || c == '.'));
    if !domain_ok {
        return Err("invalid domain".to_string());
    }
    Ok((local, domain))
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `email(s)`: validates an e-mail address.
pub(crate) fn check_email(s: &str) -> Result<(), String> {
    parse_email(s).map(|_| ())
}

/// E-mail equality: the local parts equal (after unquoting), the domains equal as DNS names.
/// Values that do not parse compare as text.
pub(crate) fn email_eq(a: &str, b: &str) -> bool {
    match (parse_email(a), parse_email(b)) {
        (Ok((la, da)), Ok((lb, db))) => la == lb && dns_eq(da, db),
        _ => a == b,
    }
}

/// The parts of a URI that equality looks at.
struct UriParts<'a> {
    scheme: &'a str,
    /// `//authority` present.
    authority: Option<(&'a str, &'a str, &'a str)>, // userinfo (with `@`), host, port
    rest: &'a str,
}

fn split_uri(s: &str) -> Result<UriParts<'_>, String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("invalid control character {c:?} in URL"));
    }
    if s.starts_with(':') {
        return Err("missing protocol scheme".to_string());
    }
    let mut scheme = "";
    let mut rest = s;
    if let Some(i) = s.find(':') {
        let cand = &s[..i];
        let mut chars = cand.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            scheme = cand;
            rest = &s[i + 1..];
        } else if !cand.contains(['/', '?', '#']) {
            return Err("first path segment in URL cannot contain colon".to_string());
        }
    }
    check_escapes(rest)?;
    let mut authority = None;
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let auth = &after[..end];
        let (userinfo, hostport) = match auth.rfind('@') {
            Some(i) => (&auth[..=i], &auth[i + 1..]),
            None => ("", auth),
        };
        let (host, port) = if hostport.starts_with('[') {
            let close = hostport
                .find(']')
                .ok_or_else(|| "missing ']' in host".to_string())?;
            let port = &hostport[close + 1..];
            if !port.is_empty() && !port.starts_with(':') {
                return Err(format!("invalid port {port:?} after host"));
            }
            (&hostport[1..close], port.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rfind(':') {
                Some(i) => (&hostport[..i], &hostport[i + 1..]),
                None => (hostport, ""),
            }
        };
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid port {port:?} after host"));
        }
        if let Some(c) = host.chars().find(|c| " <>\"`{}|\\^".contains(*c)) {
            return Err(format!("invalid character {c:?} in host name"));
        }
        authority = Some((userinfo, host, port));
        rest = &after[end..];
    }
    Ok(UriParts {
        scheme,
        authority,
        rest,
    })
}

fn check_escapes(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                let end = (i + 3).min(s.len());
                let end = (end..=s.len())
                    .find(|e| s.is_char_boundary(*e))
                    .unwrap_or(s.len());
                return Err(format!("invalid URL escape {:?}", &s[i..end]));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// `uri(s)`: validates a URI (Go's `url.Parse` error cases).
pub(crate) fn check_uri(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty string".to_string());
    }
    split_uri(s).map(|_| ())
}

/// URI equality: schemes case-insensitively; for http(s), host names as DNS names and ports
/// exactly; everything else exactly. Values that do not parse compare as text.
pub(crate) fn uri_eq(a: &str, b: &str) -> bool {
    let (Ok(x), Ok(y)) = (split_uri(a), split_uri(b)) else {
        return a == b;
    };
    if !x.scheme.eq_ignore_ascii_case(y.scheme) || x.rest != y.rest {
        return false;
    }
    let http = x.scheme.eq_ignore_ascii_case("http") || x.scheme.eq_ignore_ascii_case("https");
    match (x.authority, y.authority) {
        (None, None) => true,
        (Some((ua, ha, pa)), Some((ub, hb, pb))) => {
            ua == ub && pa == pb && if http { dns_eq(ha, hb) } else { ha == hb }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_mixers() {
        assert!(glob_match("svc1.ns1.cluster", "*.ns1.cluster"));
        assert!(glob_match("curlish", "curl*"));
        assert!(!glob_match("ishcurl", "curl*"));
        assert!(glob_match("anything", "*"));
        assert!(glob_match("*ab", "*ab*"), "only the trailing star counts");
        assert!(!glob_match("xaby", "*ab*"));
        assert!(glob_match("a*b", "a*b"));
    }

    #[test]
    fn dns() {
        assert!(check_dns_name("foo.bar.baz").is_ok());
        assert!(check_dns_name("foo.Bar.baz.").is_ok());
        assert!(check_dns_name("").is_err());
        assert!(check_dns_name("-foo.-bar").is_err());
        assert!(check_dns_name("a..b").is_err());
        assert!(dns_eq("foo.bar.com", "fOO.bar.com"));
        assert!(dns_eq("foo.bar.baz", "foo.Bar.baz."));
        assert!(!dns_eq("foo.bar.com", "bar.foo.com"));
    }

    #[test]
    fn email() {
        assert!(check_email("istio@istio.io").is_ok());
        assert!(check_email("\"istio\"@istio.io").is_ok());
        assert!(check_email("Istio <istio@istio.io>").is_ok());
        assert!(check_email("").is_err());
        assert!(check_email("barfoo").is_err());
        assert!(check_email("a@").is_err());
        assert!(email_eq("\"istio\"@istio.io", "istio@istio.io"));
        assert!(email_eq("istio@ISTIO.io", "istio@istio.io"));
        assert!(!email_eq("Istio@istio.io", "istio@istio.io"));
        assert!(!email_eq("istio@istio.io", "pilot@istio.io"));
    }

    #[test]
    fn uri() {
        assert!(check_uri("http://istio.io").is_ok());
        assert!(check_uri("urn:foo").is_ok());
        assert!(check_uri("www.istio.io").is_ok());
        assert!(check_uri("").is_err());
        assert!(check_uri(":/").is_err());
        assert!(check_uri("a:b:c").is_ok());
        assert!(check_uri("ab/c:d").is_ok());
        assert!(check_uri("http://x:8x/").is_err());
        assert!(check_uri("http://x/%zz").is_err());
        assert!(uri_eq("http://foo.bar.com", "http://fOO.bar.com"));
        assert!(uri_eq("http://foo.bar.baz", "http://foo.Bar.baz."));
        assert!(!uri_eq("http://istio.io:80", "http://istio.io:81"));
        assert!(uri_eq("HTTP://istio.io/a", "http://ISTIO.io/a"));
        assert!(!uri_eq("http://istio.io/A", "http://istio.io/a"));
    }
}
