//! What goes over the wire to the Kubernetes API: request paths and headers, and the
//! newline-delimited watch events a watch call returns, applied to the source's objects.

use std::time::Duration;

use bytes::Bytes;
use mixer_core::pal::HttpRequest;
use serde_json::Value as Json;

use crate::objects::{KindHint, Object, key_of, parse_object, resource_version};
use crate::params::ApiParams;
use crate::store::{Shared, bump};

/// A watched resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Pods = 0,
    Services = 1,
}

impl Resource {
    pub const ALL: [Resource; 2] = [Resource::Pods, Resource::Services];
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Services => "services",
        }
    }
    pub fn hint(self) -> KindHint {
        match self {
            Resource::Pods => KindHint::Pod,
            Resource::Services => KindHint::Service,
        }
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A GET of `r` with `query`, with the token when there is one.
pub(crate) fn request(
    shared: &Shared,
    api: &ApiParams,
    r: Resource,
    query: String,
    t: Duration,
) -> HttpRequest {
    let ns = api
        .namespace
        .as_ref()
        .map(|n| format!("/namespaces/{n}"))
        .unwrap_or_default();
    let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
    let token = match (&api.token, &api.token_file) {
        (Some(t), _) => Some(t.clone()),
        // Re-read each time: projected service-account tokens rotate.
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                shared.error(format!("token_file `{}`: {e}", path.display()));
                None
            }
        },
        (None, None) => None,
    };
    if let Some(t) = token {
        headers.push(("Authorization".into(), format!("Bearer {t}")));
    }
    HttpRequest {
        authority: api.authority.clone(),
        method: "GET".into(),
        path: format!("{}/api/v1{ns}/{}?{query}", api.prefix, r.plural()),
        headers,
        body: Bytes::new(),
        timeout: t,
    }
}

/// What one watch call's events said to do next.
pub(crate) enum Next {
    Watch,
    Relist,
    RelistLater(String),
}

/// What one watch call brought.
pub(crate) struct Applied {
    /// Events that changed an object.
    pub changed: usize,
    /// Events read, bookmarks included.
    pub seen: usize,
    /// The resourceVersion of the last event.
    pub rv: Option<String>,
    pub next: Next,
}

/// Applies a watch call's newline-delimited events to the source's objects.
pub(crate) fn apply_events(shared: &Shared, r: Resource, body: &[u8]) -> Applied {
    let mut applied = 0;
    let mut seen = 0;
    let mut rv = None;
    let mut next = Next::Watch;
    let mut errors = Vec::new();
    {
        let mut sources = shared.sources.lock();
        for line in body
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
        {
            // A line cut short (the server ended mid-event) is skipped: the next watch resumes
            // from the last complete event and gets it again.
            let Ok(event) = serde_json::from_slice::<Json>(line) else {
                continue;
            };
            let object = event.get("object").unwrap_or(&Json::Null);
            let kind = event.get("type").and_then(Json::as_str).unwrap_or("");
            if kind == "ERROR" {
                let code = object.get("code").and_then(Json::as_i64).unwrap_or(0);
                let message = object.get("message").and_then(Json::as_str).unwrap_or("");
                next = if code == 410 {
                    Next::Relist
                } else {
                    Next::RelistLater(format!("WATCH {}: error {code}: {message}", r.plural()))
                };
                break;
            }
            let key = key_of(object);
            match (kind, key) {
                ("ADDED" | "MODIFIED", Some(key)) => match parse_object(object, r.hint()) {
                    Ok(Some(Object::Pod(p))) => {
                        sources.api_pods.insert(key, p);
                    }
                    Ok(Some(Object::Service(s))) => {
                        sources.api_services.insert(key, s);
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                },
                ("DELETED", Some(key)) => {
                    match r {
                        Resource::Pods => sources.api_pods.remove(&key).map(|_| ()),
                        Resource::Services => sources.api_services.remove(&key).map(|_| ()),
                    };
                }
                ("BOOKMARK", _) => {}
                _ => continue,
            }
            applied += usize::from(kind != "BOOKMARK");
            seen += 1;
            bump(&shared.stats.api_events);
            if let Some(v) = resource_version(object) {
                rv = Some(v.to_string());
            }
        }
    }
    for e in errors {
        shared.error(format!("WATCH {}: skipped {e}", r.plural()));
    }
    Applied {
        changed: applied,
        seen,
        rv,
        next,
    }
}
