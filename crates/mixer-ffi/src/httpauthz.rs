//! `httpauthz`: asks an HTTP authorization service through the host's HTTP client (Envoy:
//! `Http::AsyncClient` on a cluster), one callout per check: the check goes asynchronous and
//! completes on the worker thread when the host answers.
//!
//! ```yaml
//! spec:
//!   compiledAdapter: httpauthz
//!   params:
//!     cluster: authz        # the host's cluster (or host:port)
//!     path: /check          # GET path; the listentry `value` goes in `x-mixer-value`
//!     timeoutMs: 1000
//! ```
//!
//! 200 allows (not cached: every request asks); any other status denies with
//! PERMISSION_DENIED and the response body as message; a failed callout is a backend failure
//! (the handler's failure policy decides). Template: `listentry`.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use mixer_attr::Duration;
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pal::HttpRequest;
use mixer_core::pending::{Poll, pending};
use mixer_core::{Code, Status};
use serde::Deserialize;

/// The adapter (registered by `mixer_ffi::registry`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpAuthzAdapter;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    cluster: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug)]
struct HttpAuthz {
    cluster: String,
    path: String,
    timeout: StdDuration,
}

impl Adapter for HttpAuthzAdapter {
    fn name(&self) -> &'static str {
        "httpauthz"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["listentry"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let p: Params = serde_json::from_value(config.params.clone())
            .map_err(|e| AdapterError::new(e.to_string()))?;
        if p.cluster.is_empty() {
            return Err(AdapterError::field("cluster", "must not be empty"));
        }
        Ok(Arc::new(HttpAuthz {
            cluster: p.cluster,
            path: p.path.unwrap_or_else(|| "/check".into()),
            timeout: StdDuration::from_millis(p.timeout_ms.unwrap_or(1000)),
        }))
    }
}

impl Handler for HttpAuthz {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for HttpAuthz {
    fn check(&self, view: &InstanceView<'_>, ctx: &RequestContext<'_>) -> Poll<CheckResult> {
        let value = view
            .get("value")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let request = HttpRequest {
            authority: self.cluster.clone(),
            method: "GET".into(),
            path: self.path.clone(),
            headers: vec![("x-mixer-value".into(), value)],
            body: Bytes::new(),
            timeout: self.timeout,
        };
        let (completer, result) = pending();
        let _handle = ctx.dispatcher.http(
            request,
            Box::new(move |r| {
                let answer = match r {
                    Ok(r) if r.status == 200 => CheckResult::allow(Duration::ZERO, 0),
                    Ok(r) => CheckResult::deny(
                        Status::new(
                            Code::PERMISSION_DENIED,
                            String::from_utf8_lossy(&r.body).into_owned(),
                        ),
                        Duration::ZERO,
                        0,
                    ),
                    Err(e) => CheckResult::failure(Status::new(Code::UNAVAILABLE, e.to_string())),
                };
                completer.complete(answer);
            }),
        );
        Poll::Pending(result)
    }
}
