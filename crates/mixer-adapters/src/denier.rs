//! `denier`: answers every check with a configured status (Mixer's denier adapter).
//!
//! ```yaml
//! params:
//!   status: { code: 7, message: Not allowed }
//!   validDuration: 5s
//!   validUseCount: 1000
//!   directResponse: { code: 302, body: "https://login.example/" }   # optional: answer instead
//! ```

use std::sync::Arc;

use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, QuotaArgs,
    QuotaHandler, QuotaResult, RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pending::Poll;
use mixer_core::{Code, Status};
use serde::Deserialize;

use crate::duration_param;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusParams {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectResponseParams {
    code: u16,
    #[serde(default)]
    body: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    direct_response: Option<DirectResponseParams>,
    #[serde(default)]
    status: Option<StatusParams>,
    #[serde(default, alias = "valid_duration")]
    valid_duration: Option<String>,
    #[serde(default, alias = "valid_use_count")]
    valid_use_count: Option<i32>,
}

/// The `denier` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenierAdapter;

/// A built denier.
#[derive(Debug)]
pub struct Denier {
    result: CheckResult,
}

impl Adapter for DenierAdapter {
    fn name(&self) -> &'static str {
        "denier"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["checknothing", "listentry", "quota"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let params: Params = if config.params.is_null() {
            Params::default()
        } else {
            serde_json::from_value(config.params.clone())
                .map_err(|e| AdapterError::new(e.to_string()))?
        };
        let status = params.status.unwrap_or_default();
        let _ = status.details;
        let code = if status.code == 0 {
            Code::FAILED_PRECONDITION
        } else {
            Code(status.code)
        };
        if !(0..=16).contains(&code.0) {
            return Err(AdapterError::field(
                "status.code",
                format!("{} is not a google.rpc code (0-16)", code.0),
            ));
        }
        let valid_duration = duration_param::parse(
            "validDuration",
            params.valid_duration.as_deref(),
            mixer_attr::Duration::from_secs(5),
        )?;
        let valid_use_count = params.valid_use_count.unwrap_or(1000);
        if valid_use_count < 0 {
            return Err(AdapterError::field("validUseCount", "must not be negative"));
        }
        let message = if status.message.is_empty() {
            format!("denied by {}", config.name)
        } else {
            status.message
        };
        let mut result =
            CheckResult::deny(Status::new(code, message), valid_duration, valid_use_count);
        if let Some(d) = params.direct_response {
            if !(200..=599).contains(&d.code) {
                return Err(AdapterError::field(
                    "directResponse.code",
                    format!("{} is not an HTTP status", d.code),
                ));
            }
            result.direct_response = Some(mixer_core::DirectResponse {
                code: d.code,
                body: d.body,
            });
        }
        Ok(Arc::new(Denier { result }))
    }
}

impl Handler for Denier {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
    fn as_quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}

impl CheckHandler for Denier {
    fn check(&self, _: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        Poll::Ready(self.result.clone())
    }
}

impl QuotaHandler for Denier {
    fn allocate(
        &self,
        _: &InstanceView<'_>,
        _: &QuotaArgs,
        _: &RequestContext<'_>,
    ) -> Poll<QuotaResult> {
        Poll::Ready(QuotaResult {
            status: self.result.status.clone(),
            granted: 0,
            valid_duration: self.result.valid_duration,
        })
    }
}
