//! Durations in handler params: `"5s"`, `"1m"`, `"0.5s"` strings (Go or protobuf-JSON form).

use mixer_core::adapter::AdapterError;

/// Parses an optional duration param, naming `field` in the error.
pub(crate) fn parse(
    field: &str,
    v: Option<&str>,
    default: mixer_attr::Duration,
) -> Result<mixer_attr::Duration, AdapterError> {
    match v {
        None => Ok(default),
        Some(s) => mixer_attr::Duration::parse(s)
            .ok()
            .filter(|d| d.as_nanos() >= 0)
            .ok_or_else(|| {
                AdapterError::field(
                    field,
                    format!("`{s}` is not a non-negative duration such as \"5s\""),
                )
            }),
    }
}
