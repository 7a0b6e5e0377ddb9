//! `stdio`: writes `logentry` instances as lines, text or JSON, to stdout, stderr or a file
//! (Mixer's stdio adapter, as Istio's default access log uses it).
//!
//! ```yaml
//! params:
//!   outputAsJson: true
//!   outputStream: STDOUT        # STDERR, FILE (with outputPath)
//!   severityLevels: { warning: WARNING }
//! ```
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
#[serde(rename_all = "camelCase")]
struct Params {
    #[serde(default)]
    output_as_json: Option<bool>,
    #[serde(default)]
    output_stream: Option<String>,
    #[serde(default)]
    output_path: Option<String>,
    #[serde(default)]
    severity_levels: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    buffer_lines: Option<usize>,
}

/// The `stdio` adapter. By default writes where the params say; [`StdioAdapter::with_sink`]
/// overrides the destination (tests, the demo).
#[derive(Default, Clone)]
pub struct StdioAdapter {
    sink: Option<Arc<dyn LineSink>>,
}

impl std::fmt::Debug for StdioAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioAdapter").field("sink_override", &self.sink.is_some()).finish()
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
    levels: BTreeMap<String, String>,
    sink: Arc<dyn LineSink>,
    clock: Arc<dyn Clock>,
    buffer: Mutex<Vec<String>>,
    buffer_lines: usize,
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdio").field("json", &self.json).finish_non_exhaustive()
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
            serde_json::from_value(config.params.clone()).map_err(|e| AdapterError::new(e.to_string()))?
        };
        let sink: Arc<dyn LineSink> = match (&self.sink, params.output_stream.as_deref().unwrap_or("STDOUT")) {
            (Some(s), _) => s.clone(),
            (None, "STDOUT") => Arc::new(Stdout),
            (None, "STDERR") => Arc::new(Stderr),
            (None, "FILE" | "ROTATED_FILE") => {
                let path = params
                    .output_path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| AdapterError::field("outputPath", "outputStream FILE needs an outputPath"))?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| AdapterError::field("outputPath", format!("cannot open `{path}`: {e}")))?;
                Arc::new(FileSink { file: Mutex::new(file) })
            }
            (None, other) => {
                return Err(AdapterError::field(
                    "outputStream",
                    format!("`{other}` is not one of STDOUT, STDERR, FILE"),
                ));
            }
        };
        let levels = params
            .severity_levels
            .into_iter()
            .map(|(k, v)| {
                let level = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k.to_ascii_lowercase(), level.to_ascii_lowercase())
            })
            .collect();
        Ok(Arc::new(Stdio {
            json: params.output_as_json.unwrap_or(true),
            levels,
            sink,
            clock: config.platform.clock.clone(),
            buffer: Mutex::new(Vec::new()),
            buffer_lines: params.buffer_lines.unwrap_or(64).max(1),
        }))
    }
}

impl Stdio {
    fn level(&self, severity: Option<&str>) -> String {
        let s = severity.unwrap_or("info").to_ascii_lowercase();
        self.levels.get(&s).cloned().unwrap_or(match s.as_str() {
            "warning" | "warn" => "warn".to_string(),
            "error" | "critical" | "alert" | "emergency" => "error".to_string(),
            _ => "info".to_string(),
        })
    }

    fn line(&self, view: &InstanceView<'_>) -> String {
        let level = self.level(view.get("severity").and_then(Value::as_str));
        let time = match view.get("timestamp") {
            Some(Value::Timestamp(t)) => t.to_string(),
            _ => self.clock.wall().to_string(),
        };
        if self.json {
            let mut obj = serde_json::Map::new();
            obj.insert("level".into(), level.into());
            obj.insert("time".into(), time.into());
            obj.insert("instance".into(), view.name().into());
            for (k, v) in view.map("variables") {
                obj.insert(k.to_string(), value_to_json(v));
            }
            serde_json::Value::Object(obj).to_string()
        } else {
            let mut s = format!("{time}\t{level}\t{}", view.name());
            for (k, v) in view.map("variables") {
                let _ = write!(s, "\t{k}={v}");
            }
            s
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
            for v in instances {
                buf.push(self.line(v));
            }
            if buf.len() >= self.buffer_lines {
                full = Some(std::mem::take(&mut *buf));
            }
        }
        if let Some(lines) = full {
            self.sink.write_lines(&lines);
        }
    }
}
