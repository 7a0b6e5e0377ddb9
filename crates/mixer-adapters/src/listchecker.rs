//! `listchecker`: allows or denies a `listentry` value against a list (Mixer's list adapter).
//!
//! ```yaml
//! params:
//!   overrides: ["v1", "v2"]     # a static list, always part of the list
//!   blacklist: false            # whitelist: a value must be listed; blacklist: must not be
//!   entryType: STRINGS          # CASE_INSENSITIVE_STRINGS, IP_ADDRESSES (addresses and CIDR ranges), REGEX
//!   providerUrl: http://lists.example:8080/list   # optional; fetched through the host's HTTP client
//!   refreshInterval: 60s        # how often the provider is asked
//!   ttl: 300s                   # how long the last good list stays usable when refreshes fail
//!   cachingInterval: 300s       # validity of a check answer
//!   cachingUseCount: 10000
//! ```
//!
//! A provider answers with one entry per line, a JSON array of strings, or a YAML
//! `entries:` list. When a refresh fails the last good list stays in force until `ttl` passes;
//! after that checks fail as a backend failure (the handler's failure policy decides).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration as StdDuration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mixer_attr::{Duration, Value};
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pal::{Clock, Dispatcher, HttpRequest, MonoTime};
use mixer_core::pending::Poll;
use mixer_core::{Code, Status};
use serde::Deserialize;

use crate::duration_param;

/// Largest regex program per entry list (bad config must not exhaust memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Most entries a list may hold.
const MAX_ENTRIES: usize = 1_000_000;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    provider_url: Option<String>,
    #[serde(default)]
    refresh_interval: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    caching_interval: Option<String>,
    #[serde(default)]
    caching_use_count: Option<i32>,
    #[serde(default)]
    overrides: Vec<String>,
    #[serde(default)]
    entry_type: Option<String>,
    #[serde(default)]
    blacklist: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryType {
    Strings,
    CaseInsensitive,
    IpAddresses,
    Regex,
}

/// A compiled list.
#[derive(Debug)]
enum Entries {
    Strings(foldhash::HashSet<String>),
    Ips {
        exact: HashSet<IpAddr>,
        ranges: Vec<(IpAddr, u8)>,
    },
    Regex(regex::RegexSet),
}

impl Entries {
    fn build(kind: EntryType, items: &[String]) -> Result<Entries, String> {
        if items.len() > MAX_ENTRIES {
            return Err(format!(
                "{} entries exceed the limit of {MAX_ENTRIES}",
                items.len()
            ));
        }
        let items = items.iter().map(|s| s.trim()).filter(|s| !s.is_empty());
        Ok(match kind {
            EntryType::Strings => Entries::Strings(items.map(str::to_string).collect()),
            EntryType::CaseInsensitive => Entries::Strings(items.map(str::to_lowercase).collect()),
            EntryType::IpAddresses => {
                let mut exact = HashSet::new();
                let mut ranges = Vec::new();
                for item in items {
                    match item.split_once('/') {
                        None => {
                            let ip: IpAddr = item.parse().map_err(|_| {
                                format!("`{item}` is not an IP address or CIDR range")
                            })?;
                            exact.insert(ip.to_canonical());
                        }
                        Some((addr, bits)) => {
                            let ip: IpAddr = addr
                                .parse()
                                .map_err(|_| format!("`{item}` is not a CIDR range"))?;
                            let max = if ip.is_ipv4() { 32 } else { 128 };
                            let bits: u8 = bits
                                .parse()
                                .ok()
                                .filter(|b| *b <= max)
                                .ok_or_else(|| format!("`{item}` has a bad prefix length"))?;
                            ranges.push((ip, bits));
                        }
                    }
                }
                Entries::Ips { exact, ranges }
            }
            EntryType::Regex => {
                let patterns: Vec<String> = items.map(|p| format!("^(?:{p})$")).collect();
                let set = regex::RegexSetBuilder::new(&patterns)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("bad regular expression: {e}"))?;
                Entries::Regex(set)
            }
        })
    }

    fn contains(&self, kind: EntryType, value: &Value<'_>) -> Result<bool, String> {
        match self {
            Entries::Strings(set) => {
                let s: Cow<'_, str> = match value.as_str() {
                    Some(s) => Cow::Borrowed(s),
                    None => Cow::Owned(value.to_string()),
                };
                // Already lower case (plain ASCII without capitals): no copy.
                let lower = s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase());
                Ok(if kind == EntryType::CaseInsensitive && !lower {
                    set.contains(&s.to_lowercase())
                } else {
                    set.contains(&*s)
                })
            }
            Entries::Regex(set) => Ok(set.is_match(
                &value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string()),
            )),
            Entries::Ips { exact, ranges } => {
                let ip = match value {
                    Value::IpAddress(ip) => *ip,
                    other => other
                        .as_str()
                        .and_then(|s| s.parse::<IpAddr>().ok())
                        .ok_or_else(|| format!("`{other}` is not an IP address"))?,
                };
                let ip = ip.to_canonical();
                Ok(exact.contains(&ip)
                    || ranges.iter().any(|(net, bits)| in_range(ip, *net, *bits)))
            }
        }
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses a provider's answer: a JSON array of strings, a YAML `entries:` list, or one entry per
/// line (`#` starts a comment).
fn parse_provider_body(body: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the list is not UTF-8".to_string())?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| format!("bad JSON list: {e}"));
    }
    let mut lines = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .peekable();
    if lines.peek() == Some(&"entries:") {
        lines.next();
        return lines
            .map(|l| {
                l.strip_prefix('-')
                    .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
                    .ok_or_else(|| format!("expected `- entry` under `entries:`, got `{l}`"))
            })
            .collect();
    }
    Ok(lines.map(str::to_string).collect())
}

struct Provider {
    url_authority: String,
    url_path: String,
    refresh: StdDuration,
    ttl: StdDuration,
}

/// The current list: overrides plus the provider's last good list.
struct Current {
    entries: Entries,
    /// When the provider's part was fetched (`None`: no provider, never stale).
    fetched: Option<MonoTime>,
}

/// A built list checker.
pub struct ListChecker {
    kind: EntryType,
    blacklist: bool,
    overrides: Vec<String>,
    current: ArcSwapOption<Current>,
    provider: Option<Provider>,
    clock: Arc<dyn Clock>,
    valid_duration: Duration,
    valid_use_count: i32,
    name: String,
    /// Refresh failures so far (for telemetry and tests).
    pub refresh_failures: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ListChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListChecker")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The `listchecker` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListCheckerAdapter;

fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then(|| (authority.to_string(), path.to_string()))
}

impl Adapter for ListCheckerAdapter {
    fn name(&self) -> &'static str {
        "listchecker"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["listentry"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let p: Params = if config.params.is_null() {
            Params::default()
        } else {
            serde_json::from_value(config.params.clone())
                .map_err(|e| AdapterError::new(e.to_string()))?
        };
        let kind = match p.entry_type.as_deref().unwrap_or("STRINGS") {
            "STRINGS" => EntryType::Strings,
            "CASE_INSENSITIVE_STRINGS" => EntryType::CaseInsensitive,
            "IP_ADDRESSES" => EntryType::IpAddresses,
            "REGEX" => EntryType::Regex,
            other => {
                return Err(AdapterError::field(
                    "entryType",
                    format!(
                        "`{other}` is not one of STRINGS, CASE_INSENSITIVE_STRINGS, IP_ADDRESSES, REGEX"
                    ),
                ));
            }
        };
        let entries =
            Entries::build(kind, &p.overrides).map_err(|e| AdapterError::field("overrides", e))?;
        let secs = Duration::from_secs;
        let refresh =
            duration_param::parse("refreshInterval", p.refresh_interval.as_deref(), secs(60))?;
        let ttl = duration_param::parse("ttl", p.ttl.as_deref(), secs(300))?;
        let valid_duration =
            duration_param::parse("cachingInterval", p.caching_interval.as_deref(), secs(300))?;
        let provider = match p.provider_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let (url_authority, url_path) = split_url(url).ok_or_else(|| {
                    AdapterError::field("providerUrl", format!("`{url}` is not an http:// URL"))
                })?;
                let refresh = refresh
                    .to_std()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| AdapterError::field("refreshInterval", "must be positive"))?;
                Some(Provider {
                    url_authority,
                    url_path,
                    refresh,
                    ttl: ttl.to_std().unwrap_or_default(),
                })
            }
        };
        let checker = Arc::new(ListChecker {
            kind,
            blacklist: p.blacklist,
            overrides: p.overrides,
            current: ArcSwapOption::from_pointee(if provider.is_none() {
                Some(Current {
                    entries,
                    fetched: None,
                })
            } else {
                None
            }),
            provider,
            clock: config.platform.clock.clone(),
            valid_duration,
            valid_use_count: p.caching_use_count.unwrap_or(10_000).max(0),
            name: config.name.to_string(),
            refresh_failures: Default::default(),
        });
        if checker.provider.is_some() {
            fetch(Arc::downgrade(&checker), config.platform.dispatcher.clone());
        }
        Ok(checker)
    }
}

/// Asks the provider now, and again every refresh interval for as long as the checker lives.
fn fetch(checker: Weak<ListChecker>, dispatcher: Arc<dyn Dispatcher>) {
    let Some(me) = checker.upgrade() else { return };
    let Some(p) = &me.provider else { return };
    let request = HttpRequest {
        authority: p.url_authority.clone(),
        method: "GET".into(),
        path: p.url_path.clone(),
        headers: vec![],
        body: Bytes::new(),
        timeout: StdDuration::from_secs(10).min(p.refresh),
    };
    let refresh = p.refresh;
    drop(me);
    let d = dispatcher.clone();
    let on_done = Box::new(
        move |result: Result<mixer_core::pal::HttpResponse, mixer_core::pal::CalloutError>| {
            let Some(me) = checker.upgrade() else { return };
            let list = match result {
                Ok(r) if r.status == 200 => parse_provider_body(&r.body),
                Ok(r) => Err(format!("provider answered HTTP {}", r.status)),
                Err(e) => Err(e.to_string()),
            };
            let merged = list.and_then(|mut l| {
                l.extend(me.overrides.iter().cloned());
                Entries::build(me.kind, &l)
            });
            match merged {
                Ok(entries) => me.current.store(Some(Arc::new(Current {
                    entries,
                    fetched: Some(me.clock.monotonic()),
                }))),
                Err(_) => {
                    me.refresh_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            drop(me);
            let again = checker.clone();
            let d2 = d.clone();
            d.schedule(refresh, Box::new(move || fetch(again, d2)));
        },
    );
    let _ = dispatcher.http(request, on_done);
}

impl Handler for ListChecker {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for ListChecker {
    fn check(&self, view: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        let current = self.current.load();
        let Some(current) = current.as_deref() else {
            return Poll::Ready(CheckResult::failure(Status::new(
                Code::UNAVAILABLE,
                format!("{}: list not fetched yet", self.name),
            )));
        };
        if let (Some(fetched), Some(p)) = (current.fetched, &self.provider)
            && self.clock.monotonic().since(fetched) > p.ttl
        {
            return Poll::Ready(CheckResult::failure(Status::new(
                Code::UNAVAILABLE,
                format!(
                    "{}: list is older than its ttl and could not be refreshed",
                    self.name
                ),
            )));
        }
        let Some(value) = view.get("value") else {
            return Poll::Ready(CheckResult::deny(
                Status::new(Code::INVALID_ARGUMENT, "listentry has no value"),
                Duration::ZERO,
                0,
            ));
        };
        let listed = match current.entries.contains(self.kind, value) {
            Ok(b) => b,
            Err(e) => {
                return Poll::Ready(CheckResult::deny(
                    Status::new(Code::INVALID_ARGUMENT, e),
                    self.valid_duration,
                    self.valid_use_count,
                ));
            }
        };
        let result = match (self.blacklist, listed) {
            (false, true) | (true, false) => {
                CheckResult::allow(self.valid_duration, self.valid_use_count)
            }
            (false, false) => CheckResult::deny(
                Status::new(Code::NOT_FOUND, format!("{value} is not whitelisted")),
                self.valid_duration,
                self.valid_use_count,
            ),
            (true, true) => CheckResult::deny(
                Status::new(Code::PERMISSION_DENIED, format!("{value} is blacklisted")),
                self.valid_duration,
                self.valid_use_count,
            ),
        };
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_and_exact_addresses() {
        let e = Entries::build(
            EntryType::IpAddresses,
            &["10.57.0.0/16".into(), "::1".into(), "192.168.1.1".into()],
        )
        .unwrap();
        let ip = |s: &str| Value::IpAddress(s.parse().unwrap());
        assert!(
            e.contains(EntryType::IpAddresses, &ip("10.57.3.4"))
                .unwrap()
        );
        assert!(
            !e.contains(EntryType::IpAddresses, &ip("10.58.0.1"))
                .unwrap()
        );
        assert!(
            e.contains(EntryType::IpAddresses, &ip("::ffff:10.57.0.9"))
                .unwrap(),
            "IPv4-mapped"
        );
        assert!(e.contains(EntryType::IpAddresses, &ip("::1")).unwrap());
        assert!(
            e.contains(EntryType::IpAddresses, &Value::str("192.168.1.1"))
                .unwrap()
        );
        assert!(
            e.contains(EntryType::IpAddresses, &Value::str("nope"))
                .is_err()
        );
        assert!(Entries::build(EntryType::IpAddresses, &["10.0.0.0/33".into()]).is_err());
        assert!(Entries::build(EntryType::IpAddresses, &["banana".into()]).is_err());
    }

    #[test]
    fn strings_case_and_regex() {
        let ci = Entries::build(EntryType::CaseInsensitive, &["Admin".into()]).unwrap();
        assert!(
            ci.contains(EntryType::CaseInsensitive, &Value::str("ADMIN"))
                .unwrap()
        );
        let re = Entries::build(EntryType::Regex, &["v[12]".into(), "canary-.*".into()]).unwrap();
        assert!(re.contains(EntryType::Regex, &Value::str("v2")).unwrap());
        assert!(
            !re.contains(EntryType::Regex, &Value::str("v22")).unwrap(),
            "anchored"
        );
        assert!(
            re.contains(EntryType::Regex, &Value::str("canary-x"))
                .unwrap()
        );
        assert!(Entries::build(EntryType::Regex, &["(".into()]).is_err());
        assert!(
            Entries::build(EntryType::Regex, &["a{1000}{1000}".into()]).is_err(),
            "size limit"
        );
    }

    #[test]
    fn provider_bodies() {
        assert_eq!(parse_provider_body(b"a\n# c\n\nb\n").unwrap(), ["a", "b"]);
        assert_eq!(parse_provider_body(b"[\"x\", \"y\"]").unwrap(), ["x", "y"]);
        assert_eq!(
            parse_provider_body(b"entries:\n  - v1\n  - \"v2\"\n").unwrap(),
            ["v1", "v2"]
        );
        assert!(parse_provider_body(b"entries:\n  v1\n").is_err());
        assert!(parse_provider_body(&[0xff, 0xfe]).is_err());
        assert_eq!(
            split_url("http://h:1/p?q"),
            Some(("h:1".into(), "/p?q".into()))
        );
        assert_eq!(split_url("https://h"), None);
    }
}
