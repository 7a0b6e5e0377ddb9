//! `stdio`: writes `logentry` instances as lines, text or JSON, to stdout, stderr or a file
//! (Mixer's stdio adapter, as Istio's default access log uses it).
//!
//! ```yaml
//! params:
//!   outputAsJson: true          # default true; false: tab-separated text
//!   logStream: STDOUT           # STDERR, FILE or ROTATED_FILE (with outputPath); also `outputStream`
//!   severityLevels: { notice: WARNING }   # severity -> INFO, WARNING or ERROR
//!   outputLevel: INFO           # entries below this level are not written (counted)
//! ```
//!
//! Levels follow Mixer: a severity found in `severityLevels` (case-insensitive), else Mixer's
//! default names (`info`/`informational`, `warn`/`warning`, `error`/`err`/`fatal`), else info;
//! written as `info`, `warn`, `error`. JSON lines hold `level`, `time` (the entry's `timestamp`,
//! else the PAL's wall clock), `instance` and every variable, sorted by name. `ROTATED_FILE`'s
//! rotation settings are accepted but the file is appended to without rotation; `metricLevel`
//! is accepted (this adapter takes no `metric` instances).
//!
//! Lines are buffered and written when the buffer holds `bufferLines` lines (default 64) and on
//! flush (config swap, shutdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use mixer_attr::{Value, json::value_to_json};
use mixer_core::adapter::{Adapter, AdapterError, Handler, HandlerConfig, ReportHandler};
use mixer_core::instance::InstanceView;
use mixer_core::pal::Clock;
use parking_lot::Mutex;
use serde::Deserialize;

/// Where lines go.
pub trait LineSink: Send + Sync {
    /// Writes complete lines (each without its newline).
    fn write_lines(&self, lines: &[String]);
}

/// Standard output.
#[derive(Debug, Default)]
pub struct Stdout;

impl LineSink for Stdout {
    fn write_lines(&self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }
}

/// Standard error.
#[derive(Debug, Default)]
pub struct Stderr;

impl LineSink for Stderr {
    fn write_lines(&self, lines: &[String]) {
        let mut out = std::io::stderr().lock();
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
}

/// A file, appended to.
#[derive(Debug)]
pub struct FileSink {
    file: Mutex<std::fs::File>,
}

impl LineSink for FileSink {
    fn write_lines(&self, lines: &[String]) {
        let mut f = self.file.lock();
        for l in lines {
            let _ = writeln!(f, "{l}");
        }
        let _ = f.flush();
    }
}

/// Keeps lines in memory (tests, the demo).
#[derive(Debug, Default)]
pub struct MemorySink {
    lines: Mutex<Vec<String>>,
}

impl MemorySink {
    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

impl LineSink for MemorySink {
    fn write_lines(&self, lines: &[String]) {
        self.lines.lock().extend_from_slice(lines);
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Params {
    #[serde(default, alias = "output_as_json")]
    output_as_json: Option<bool>,
    /// Mixer's name for the stream is `logStream`; `outputStream` is accepted too.
    #[serde(
        default,
        alias = "logStream",
        alias = "log_stream",
        alias = "output_stream"
    )]
    output_stream: Option<serde_json::Value>,
    #[serde(default, alias = "output_path")]
    output_path: Option<String>,
    #[serde(default, alias = "severity_levels")]
    severity_levels: BTreeMap<String, serde_json::Value>,
    /// Entries below this level are not written.
    #[serde(default, alias = "output_level")]
    output_level: Option<serde_json::Value>,
    /// For Mixer's `metric` template, which this adapter does not take: accepted, unused.
    #[serde(default, alias = "metric_level")]
    metric_level: Option<serde_json::Value>,
    /// ROTATED_FILE settings: accepted; the file is appended to without rotation.
    #[serde(default, alias = "max_megabytes_before_rotation")]
    max_megabytes_before_rotation: Option<i64>,
    #[serde(default, alias = "max_days_before_rotation")]
    max_days_before_rotation: Option<i64>,
    #[serde(default, alias = "max_rotated_files")]
    max_rotated_files: Option<i64>,
    #[serde(default, alias = "buffer_lines")]
    buffer_lines: Option<usize>,
}

/// Mixer's levels, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// A level in params: `INFO`/`WARNING`/`ERROR` (any case, `WARN` too) or 0/1/2.
    fn from_param(v: &serde_json::Value) -> Option<Level> {
        match v {
            serde_json::Value::Number(n) => match n.as_u64()? {
                0 => Some(Level::Info),
                1 => Some(Level::Warn),
                2 => Some(Level::Error),
                _ => None,
            },
            serde_json::Value::String(s) => Level::from_severity(s),
            _ => None,
        }
    }

    /// Mixer's default severity names.
    fn from_severity(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" | "informational" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warn),
            "error" | "err" | "fatal" | "critical" | "alert" | "emergency" => Some(Level::Error),
            _ => None,
        }
    }
}

/// The `stdio` adapter. By default writes where the params say; [`StdioAdapter::with_sink`]
/// overrides the destination (tests, the demo).
#[derive(Default, Clone)]
pub struct StdioAdapter {
    sink: Option<Arc<dyn LineSink>>,
}

impl std::fmt::Debug for StdioAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioAdapter")
            .field("sink_override", &self.sink.is_some())
            .finish()
    }
}

impl StdioAdapter {
    /// Every handler writes to `sink` whatever its params say.
    pub fn with_sink(sink: Arc<dyn LineSink>) -> Self {
        StdioAdapter { sink: Some(sink) }
    }
}

/// A built stdio handler.
pub struct Stdio {
    json: bool,
    /// `severityLevels`, keys lower-cased.
    levels: BTreeMap<String, Level>,
    output_level: Level,
    /// Entries below `outputLevel`, not written.
    filtered: std::sync::atomic::AtomicU64,
    sink: Arc<dyn LineSink>,
    clock: Arc<dyn Clock>,
    buffer: Mutex<Vec<String>>,
    buffer_lines: usize,
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdio")
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl Adapter for StdioAdapter {
    fn name(&self) -> &'static str {
        "stdio"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["logentry"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let params: Params = if config.params.is_null() {
            Params::default()
        } else {
            serde_json::from_value(config.params.clone())
                .map_err(|e| AdapterError::new(e.to_string()))?
        };
        let stream = match &params.output_stream {
            None => "STDOUT".to_string(),
            Some(serde_json::Value::String(s)) => s.to_ascii_uppercase(),
            // The protobuf enum's numbers.
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(0) => "STDOUT".to_string(),
                Some(1) => "STDERR".to_string(),
                Some(2) => "FILE".to_string(),
                Some(3) => "ROTATED_FILE".to_string(),
                _ => n.to_string(),
            },
            Some(other) => other.to_string(),
        };
        if !["STDOUT", "STDERR", "FILE", "ROTATED_FILE"].contains(&stream.as_str()) {
            return Err(AdapterError::field(
                "logStream",
                format!("`{stream}` is not one of STDOUT, STDERR, FILE, ROTATED_FILE"),
            ));
        }
        let sink: Arc<dyn LineSink> = match (&self.sink, stream.as_str()) {
            (Some(s), _) => s.clone(),
            (None, "STDOUT") => Arc::new(Stdout),
            (None, "STDERR") => Arc::new(Stderr),
            (None, "FILE" | "ROTATED_FILE") => {
                let path = params
                    .output_path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| AdapterError::field("outputPath", format!("outputStream {stream} needs an outputPath (`logStream` in Mixer's params)")))?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        AdapterError::field("outputPath", format!("cannot open `{path}`: {e}"))
                    })?;
                Arc::new(FileSink {
                    file: Mutex::new(file),
                })
            }
            (None, _) => Arc::new(Stdout),
        };
        let mut levels = BTreeMap::new();
        for (k, v) in params.severity_levels {
            let level = Level::from_param(&v).ok_or_else(|| {
                AdapterError::field(
                    format!("severityLevels.{k}"),
                    format!("`{v}` is not one of INFO, WARNING, ERROR"),
                )
            })?;
            levels.insert(k.to_ascii_lowercase(), level);
        }
        let output_level = match &params.output_level {
            None => Level::Info,
            Some(v) => Level::from_param(v).ok_or_else(|| {
                AdapterError::field(
                    "outputLevel",
                    format!("`{v}` is not one of INFO, WARNING, ERROR"),
                )
            })?,
        };
        if let Some(v) = params
            .metric_level
            .as_ref()
            .filter(|v| Level::from_param(v).is_none())
        {
            return Err(AdapterError::field(
                "metricLevel",
                format!("`{v}` is not one of INFO, WARNING, ERROR"),
            ));
        }
        let _ = (
            params.max_megabytes_before_rotation,
            params.max_days_before_rotation,
            params.max_rotated_files,
        );
        Ok(Arc::new(Stdio {
            json: params.output_as_json.unwrap_or(true),
            levels,
            output_level,
            filtered: std::sync::atomic::AtomicU64::new(0),
            sink,
            clock: config.platform.clock.clone(),
            buffer: Mutex::new(Vec::new()),
            buffer_lines: params.buffer_lines.unwrap_or(64).max(1),
        }))
    }
}

impl Stdio {
    /// The level of an entry's severity: `severityLevels` first (case-insensitive), then
    /// Mixer's default names; anything else is info.
    fn level(&self, severity: Option<&str>) -> Level {
        let Some(s) = severity else {
            return Level::Info;
        };
        self.levels
            .get(&s.to_ascii_lowercase())
            .copied()
            .or_else(|| Level::from_severity(s))
            .unwrap_or(Level::Info)
    }

    /// Entries not written because they were below `outputLevel`.
    pub fn filtered(&self) -> u64 {
        self.filtered.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn line(&self, view: &InstanceView<'_>) -> Option<String> {
        let level = self.level(view.get("severity").and_then(Value::as_str));
        if level < self.output_level {
            self.filtered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        let level = level.as_str();
        let time = match view.get("timestamp") {
            Some(Value::Timestamp(t)) => t.to_string(),
            _ => self.clock.wall().to_string(),
        };
        if self.json {
            // Written directly (no intermediate map): level, time, instance, then the variables
            // in name order, as Mixer's zap encoder did. A variable named like one of the
            // first three is left out (the key would repeat).
            let mut out = Vec::with_capacity(256 + 48 * view.values.len());
            // Display forms written as JSON strings, without a `serde_json::Value` each.
            let mut text = String::new();
            out.extend_from_slice(b"{\"level\":");
            let _ = serde_json::to_writer(&mut out, level);
            out.extend_from_slice(b",\"time\":");
            let _ = serde_json::to_writer(&mut out, &time);
            out.extend_from_slice(b",\"instance\":");
            let _ = serde_json::to_writer(&mut out, view.name());
            for (k, v) in view.map("variables") {
                if matches!(k, "level" | "time" | "instance") {
                    continue;
                }
                out.push(b',');
                let _ = serde_json::to_writer(&mut out, k);
                out.push(b':');
                let _ = match v {
                    Value::String(s)
                    | Value::EmailAddress(s)
                    | Value::Uri(s)
                    | Value::DnsName(s) => serde_json::to_writer(&mut out, &**s),
                    Value::Int64(i) => serde_json::to_writer(&mut out, i),
                    Value::Bool(b) => serde_json::to_writer(&mut out, b),
                    Value::Timestamp(_) | Value::Duration(_) | Value::IpAddress(_) => {
                        text.clear();
                        let _ = write!(text, "{v}");
                        serde_json::to_writer(&mut out, text.as_str())
                    }
                    other => serde_json::to_writer(&mut out, &value_to_json(other)),
                };
            }
            out.push(b'}');
            String::from_utf8(out).ok()
        } else {
            let mut s = format!("{time}\t{level}\t{}", view.name());
            for (k, v) in view.map("variables") {
                let _ = write!(s, "\t{k}={v}");
            }
            Some(s)
        }
    }
}

impl Handler for Stdio {
    fn as_report(&self) -> Option<&dyn ReportHandler> {
        Some(self)
    }
    fn flush(&self) {
        let lines = std::mem::take(&mut *self.buffer.lock());
        if !lines.is_empty() {
            self.sink.write_lines(&lines);
        }
    }
}

impl ReportHandler for Stdio {
    fn report(&self, instances: &[InstanceView<'_>]) {
        let mut full = None;
        {
            let mut buf = self.buffer.lock();
            buf.extend(instances.iter().filter_map(|v| self.line(v)));
            if buf.len() >= self.buffer_lines {
                full = Some(std::mem::take(&mut *buf));
            }
        }
        if let Some(lines) = full {
            self.sink.write_lines(&lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::pal::virtual_time::VirtualPlatform;

    fn build(params: serde_json::Value) -> Result<Arc<dyn Handler>, AdapterError> {
        let platform = VirtualPlatform::new().platform();
        let adapter = StdioAdapter::with_sink(Arc::new(MemorySink::default()));
        adapter.build(&HandlerConfig {
            name: "stdio.istio-system",
            params: &params,
            instances: &[],
            platform: &platform,
        })
    }

    fn stdio(params: serde_json::Value) -> Stdio {
        let platform = VirtualPlatform::new().platform();
        let h = build(params.clone()).unwrap();
        drop(h);
        let p: Params = serde_json::from_value(params).unwrap();
        let mut levels = BTreeMap::new();
        for (k, v) in p.severity_levels {
            levels.insert(k.to_ascii_lowercase(), Level::from_param(&v).unwrap());
        }
        Stdio {
            json: true,
            levels,
            output_level: p
                .output_level
                .as_ref()
                .and_then(Level::from_param)
                .unwrap_or(Level::Info),
            filtered: std::sync::atomic::AtomicU64::new(0),
            sink: Arc::new(MemorySink::default()),
            clock: platform.clock.clone(),
            buffer: Mutex::new(Vec::new()),
            buffer_lines: 1,
        }
    }

    #[test]
    fn mixer_param_names_and_levels() {
        // Mixer's own names (`logStream`, enum numbers, snake_case) are accepted.
        assert!(build(serde_json::json!({"logStream": "STDERR", "outputAsJson": false})).is_ok());
        assert!(
            build(
                serde_json::json!({"log_stream": 1, "output_level": "WARNING", "metricLevel": 0})
            )
            .is_ok()
        );
        assert!(build(serde_json::json!({"maxRotatedFiles": 3, "maxDaysBeforeRotation": 1, "maxMegabytesBeforeRotation": 5})).is_ok());
        let field = |p| build(p).err().and_then(|e| e.field);
        assert_eq!(
            field(serde_json::json!({"logStream": "PIPE"})).as_deref(),
            Some("logStream")
        );
        assert_eq!(
            field(serde_json::json!({"severityLevels": {"x": "LOUD"}})).as_deref(),
            Some("severityLevels.x")
        );
        assert_eq!(
            field(serde_json::json!({"outputLevel": 7})).as_deref(),
            Some("outputLevel")
        );
        assert!(
            build(serde_json::json!({"outputAsJSON": true})).is_err(),
            "unknown fields are errors"
        );

        let s = stdio(serde_json::json!({"severityLevels": {"Notice": "WARNING", "debug": 2}}));
        assert_eq!(s.level(Some("Info")), Level::Info);
        assert_eq!(s.level(Some("notice")), Level::Warn);
        assert_eq!(s.level(Some("DEBUG")), Level::Error);
        assert_eq!(s.level(Some("FATAL")), Level::Error);
        assert_eq!(s.level(Some("Warning")), Level::Warn);
        assert_eq!(s.level(Some("whatever")), Level::Info);
        assert_eq!(s.level(None), Level::Info);
        assert_eq!(Level::Warn.as_str(), "warn");
    }
}
