//! The config front-end: operator config as Kubernetes-style YAML (Istio 1.x Mixer config) or as
//! a serialized `mixer.v2.Config`, loaded into one [`v2::Config`] plus a [`SourceMap`] that
//! gives every object and field a `file:line:column`.
//!
//! ```no_run
//! # use std::path::PathBuf;
//! # fn demo(registry: &mixer_core::AdapterRegistry, platform: &mixer_core::pal::Platform) {
//! let loaded = mixer_config::load_paths(&[PathBuf::from("config/")]).expect("loads");
//! let snapshot = mixer_config::compile_loaded(&loaded, registry, platform, None, &Default::default());
//! # }
//! ```
//!
//! # What is read
//!
//! - Multi-document YAML files (`---`); a directory means every `*.yaml` / `*.yml` in it (not
//!   recursive), sorted by name; files named `*.pb` / `*.binpb` are serialized `mixer.v2.Config`.
//! - `kind: handler` (`compiledAdapter` or `adapter`, `params`, `connection`, `dispatch`),
//!   `kind: instance` (`compiledTemplate` or `template`, `params`, `attributeBindings`),
//!   `kind: rule` (`match`, `actions`, `requestHeaderOperations`, `responseHeaderOperations`,
//!   `sampling`, `experimental`, `fault`), `kind: attributemanifest` (`attributes`).
//!   Schema fields may be written in camelCase or snake_case; unknown fields are errors.
//! - Istio 1.0 per-template kinds (`kind: metric`, `quota`, `checknothing`, ... : an instance of
//!   that template whose `spec` is the params) and per-adapter kinds (`kind: denier`,
//!   `memquota`, ... : a handler of that adapter whose `spec` is the params).
//! - `QuotaSpec` and `QuotaSpecBinding` into `quota_specs` / `quota_spec_bindings`.
//! - Anything else (`DestinationRule`, a `kind` of another API group) and the out-of-process
//!   descriptors `kind: template` / `kind: adapter` are skipped with a note.
//!
//! `metadata.namespace` defaults to [`DEFAULT_NAMESPACE`] (`istio-system`, Mixer's default
//! config namespace). Object names in errors are `kind/namespace/name` with kind one of
//! `handler`, `instance`, `rule`, `attributemanifest`, `quotaspec`, `quotaspecbinding`.
//!
//! # Limits
//!
//! Input is bounded by [`Limits`]: file size, documents per file, nesting depth and YAML nodes
//! (alias uses count in full, so an alias bomb is refused early). Exceeding one is an error, never
//! an exhaustion of memory or stack.
#![forbid(unsafe_code)]

mod convert;
mod source_map;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mixer_core::pal::Platform;
use mixer_core::{AdapterRegistry, CompileOptions, ConfigError, Snapshot};
use mixer_proto::prost::Message as _;
pub use mixer_proto::v2;

pub use source_map::SourceMap;

/// The namespace of objects whose `metadata.namespace` is not given.
pub const DEFAULT_NAMESPACE: &str = "istio-system";

/// Bounds on the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file (or text) read, in bytes.
    pub max_file_bytes: usize,
    /// Most documents in one file.
    pub max_documents: usize,
    /// Deepest nesting of YAML lists and mappings.
    pub max_depth: usize,
    /// Most YAML nodes in one file, every use of an alias counting its whole subtree.
    pub max_nodes: usize,
    /// Most files read in one load (directories expanded).
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 4 << 20,
            max_documents: 10_000,
            max_depth: 64,
            max_nodes: 500_000,
            max_files: 10_000,
        }
    }
}

/// A loaded config: the messages, where they came from, and notes on what was skipped.
#[derive(Clone, Debug, Default)]
pub struct LoadedConfig {
    pub config: v2::Config,
    pub source_map: SourceMap,
    /// Non-fatal notes (`file:line:col: skipped DestinationRule ...`).
    pub notes: Vec<String>,
}

/// Every error of a rejected load, each with its object, field and (for YAML) position. Errors
/// about a whole file (unreadable, too large) name the file as their object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<ConfigError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Accumulates sources into one config.
#[derive(Debug)]
pub struct Loader {
    limits: Limits,
    /// Adapter names accepted as kinds beyond Istio's (`kind: <adapter>`).
    extra_adapters: Vec<&'static str>,
    out: convert::Out,
    files: usize,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new(Limits::default())
    }
}

fn file_error(file: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        object: file.to_string(),
        field: String::new(),
        message: message.into(),
        location: None,
    }
}

impl Loader {
    /// An empty loader with `limits`.
    pub fn new(limits: Limits) -> Self {
        Loader {
            limits,
            extra_adapters: Vec::new(),
            out: convert::Out::default(),
            files: 0,
        }
    }

    /// Also accepts `kind: <name>` for every adapter of `registry` (Istio's adapter kinds are
    /// always accepted).
    pub fn with_adapter_kinds(mut self, registry: &AdapterRegistry) -> Self {
        self.extra_adapters = registry.names();
        self
    }

    fn count_file(&mut self, name: &str) -> bool {
        self.files += 1;
        if self.files > self.limits.max_files {
            self.out.errors.push(file_error(
                name,
                format!("more than {} files", self.limits.max_files),
            ));
            return false;
        }
        true
    }

    /// Adds YAML text; `name` is the file name used in positions.
    pub fn add_str(&mut self, name: &str, text: &str) -> &mut Self {
        if !self.count_file(name) {
            return self;
        }
        if text.len() > self.limits.max_file_bytes {
            self.out.errors.push(file_error(
                name,
                format!(
                    "{} bytes is over the limit of {} bytes",
                    text.len(),
                    self.limits.max_file_bytes
                ),
            ));
            return self;
        }
        let file: Arc<str> = name.into();
        let parsed = yaml::parse(text, &self.limits);
        for e in parsed.errors {
            self.out.errors.push(ConfigError {
                object: format!("document {}", e.document),
                field: String::new(),
                message: e.message,
                location: Some((name.to_string(), e.pos.line, e.pos.col)),
            });
        }
        convert::convert(
            &file,
            text,
            &parsed.documents,
            &self.extra_adapters,
            &mut self.out,
        );
        self
    }

    /// Adds a serialized `mixer.v2.Config`.
    pub fn add_protobuf(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        if !self.count_file(name) {
            return self;
        }
        if bytes.len() > self.limits.max_file_bytes {
            self.out.errors.push(file_error(
                name,
                format!(
                    "{} bytes is over the limit of {} bytes",
                    bytes.len(),
                    self.limits.max_file_bytes
                ),
            ));
            return self;
        }
        let config = match v2::Config::decode(bytes) {
            Ok(c) => c,
            Err(e) => {
                self.out.errors.push(file_error(
                    name,
                    format!("not a serialized mixer.v2.Config: {e}"),
                ));
                return self;
            }
        };
        let file: Arc<str> = name.into();
        let mut objects: Vec<String> = Vec::new();
        objects.extend(
            config
                .handlers
                .iter()
                .map(|h| format!("handler/{}/{}", h.namespace, h.name)),
        );
        objects.extend(
            config
                .instances
                .iter()
                .map(|i| format!("instance/{}/{}", i.namespace, i.name)),
        );
        objects.extend(
            config
                .rules
                .iter()
                .map(|r| format!("rule/{}/{}", r.namespace, r.name)),
        );
        objects.extend(
            config
                .manifests
                .iter()
                .map(|m| format!("attributemanifest/{}/{}", m.namespace, m.name)),
        );
        objects.extend(
            config
                .quota_specs
                .iter()
                .map(|q| format!("quotaspec/{}/{}", q.namespace, q.name)),
        );
        objects.extend(
            config
                .quota_spec_bindings
                .iter()
                .map(|q| format!("quotaspecbinding/{}/{}", q.namespace, q.name)),
        );
        for object in objects {
            if let Some(first) = self.out.claim(&object, name.to_string()) {
                self.out.errors.push(ConfigError {
                    object: object.clone(),
                    field: "name".to_string(),
                    message: format!("duplicate name (first defined at {first})"),
                    location: None,
                });
            }
            let mut map = SourceMap::default();
            map.add(
                object,
                source_map::ObjectSource {
                    file: file.clone(),
                    start: None,
                    fields: Default::default(),
                },
            );
            self.out.map.merge(map);
        }
        let c = &mut self.out.config;
        c.handlers.extend(config.handlers);
        c.instances.extend(config.instances);
        c.rules.extend(config.rules);
        c.manifests.extend(config.manifests);
        c.apa_chain.extend(config.apa_chain);
        c.quota_specs.extend(config.quota_specs);
        c.quota_spec_bindings.extend(config.quota_spec_bindings);
        self
    }

    /// Adds a file (`*.pb` / `*.binpb`: protobuf; anything else: YAML) or a directory (its
    /// `*.yaml` and `*.yml` files, sorted by name).
    pub fn add_path(&mut self, path: &Path) -> &mut Self {
        let shown = path.display().to_string();
        if path.is_dir() {
            let entries = match std::fs::read_dir(path) {
                Ok(e) => e,
                Err(e) => {
                    self.out
                        .errors
                        .push(file_error(&shown, format!("cannot read directory: {e}")));
                    return self;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && matches!(extension(p).as_deref(), Some("yaml" | "yml")))
                .collect();
            files.sort();
            if files.is_empty() {
                self.out
                    .notes
                    .push(format!("{shown}: no *.yaml or *.yml files"));
            }
            for f in files {
                self.add_file(&f);
            }
            return self;
        }
        self.add_file(path);
        self
    }

    fn add_file(&mut self, path: &Path) {
        use std::io::Read as _;
        let shown = path.display().to_string();
        let limit = self.limits.max_file_bytes;
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path).and_then(|f| {
            f.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
                .read_to_end(&mut bytes)
        });
        if let Err(e) = read {
            self.out
                .errors
                .push(file_error(&shown, format!("cannot read: {e}")));
            return;
        }
        if bytes.len() > limit {
            self.out.errors.push(file_error(
                &shown,
                format!("file is over the limit of {limit} bytes"),
            ));
            return;
        }
        if matches!(extension(path).as_deref(), Some("pb" | "binpb")) {
            self.add_protobuf(&shown, &bytes);
            return;
        }
        match String::from_utf8(bytes) {
            Ok(text) => {
                self.add_str(&shown, &text);
            }
            Err(e) => self.out.errors.push(file_error(
                &shown,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )),
        }
    }

    /// The config, or every error found.
    pub fn finish(self) -> Result<LoadedConfig, LoadErrors> {
        let out = self.out;
        if !out.errors.is_empty() {
            return Err(LoadErrors(out.errors));
        }
        Ok(LoadedConfig {
            config: out.config,
            source_map: out.map,
            notes: out.notes,
        })
    }
}

fn extension(p: &Path) -> Option<String> {
    p.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Loads files and directories (see the crate docs) with the default [`Limits`].
pub fn load_paths(paths: &[PathBuf]) -> Result<LoadedConfig, LoadErrors> {
    let mut loader = Loader::default();
    for p in paths {
        loader.add_path(p);
    }
    loader.finish()
}

/// Loads YAML text given directly (embedding, FFI); `name` stands for the file in positions.
pub fn load_str(name: &str, text: &str) -> Result<LoadedConfig, LoadErrors> {
    let mut loader = Loader::default();
    loader.add_str(name, text);
    loader.finish()
}

/// Loads a serialized `mixer.v2.Config`; `name` stands for the file in errors.
pub fn load_protobuf(name: &str, bytes: &[u8]) -> Result<LoadedConfig, LoadErrors> {
    let mut loader = Loader::default();
    loader.add_protobuf(name, bytes);
    loader.finish()
}

/// Compiles a loaded config ([`mixer_core::compile`]) and gives each error its position.
pub fn compile_loaded(
    loaded: &LoadedConfig,
    registry: &AdapterRegistry,
    platform: &Platform,
    previous: Option<&Snapshot>,
    options: &CompileOptions,
) -> Result<Snapshot, Vec<ConfigError>> {
    mixer_core::compile(&loaded.config, registry, platform, previous, options).map_err(|errors| {
        let mut errors = errors.0;
        for e in &mut errors {
            loaded.source_map.locate(e);
        }
        errors
    })
}

/// A platform on virtual time that nothing drives: enough to build handlers when validating.
#[doc(hidden)]
pub fn idle_platform() -> Platform {
    let vt = mixer_core::pal::virtual_time::VirtualPlatform::new();
    Platform::on(Arc::new(vt.clone()), Arc::new(vt))
}

/// The fuzz target's body: load arbitrary bytes as YAML and compile them against the built-in
/// adapters (stdio writing to memory, never to files), skipping unknown adapters. Never panics
/// on any input (that is what the fuzzer checks).
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = load_protobuf("fuzz.pb", data);
        return;
    };
    let Ok(loaded) = load_str("fuzz.yaml", text) else {
        return;
    };
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(mixer_adapters::denier::DenierAdapter));
    registry.register(Arc::new(mixer_adapters::stdio::StdioAdapter::with_sink(
        Arc::new(mixer_adapters::stdio::MemorySink::default()),
    )));
    let platform = mixer_core::pal::virtual_time::VirtualPlatform::new().platform();
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };
    if let Err(errors) = compile_loaded(&loaded, &registry, &platform, None, &options) {
        for e in &errors {
            let _ = e.to_string();
        }
    }
}
