//! What the `check`, `report` and `demo` commands share: loading config, a pipeline on the std
//! host's event loop, running a check to completion, and the JSON form of a decision.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mixer_attr::Bag;
use mixer_core::adapter::{HeaderChange, QuotaResult};
use mixer_core::{
    AdapterRegistry, CheckAnswer, CheckStart, CompileOptions, Pipeline, Snapshot, Status, Worker,
};
use mixer_host::EventLoop;
use parking_lot::Mutex;
use serde_json::{Value as Json, json};

/// Every adapter this build offers: the built-in ones and Knative's.
pub fn registry() -> AdapterRegistry {
    let mut r = mixer_adapters::registry();
    mixer_knative::register(&mut r);
    r.register(Arc::new(mixer_kubeenv::KubernetesEnv));
    r.register(Arc::new(mixer_jwt::JwtAdapter));
    r.register(Arc::new(mixer_apiattrs::ApiAttributesAdapter));
    r.register(Arc::new(mixer_mutation::Rewrite));
    r
}

/// A pipeline on a real-time event loop, with one worker.
pub struct Session {
    pub event_loop: EventLoop,
    pub pipeline: Pipeline,
    pub worker: Worker,
    pub notes: Vec<String>,
}

/// Loads config from files/directories, or from `embedded` YAML text when `paths` is empty.
pub fn load(
    paths: &[PathBuf],
    embedded: Option<(&str, &str)>,
) -> anyhow::Result<mixer_config::LoadedConfig> {
    let loaded = match (paths.is_empty(), embedded) {
        (false, _) => mixer_config::load_paths(paths),
        (true, Some((name, text))) => mixer_config::load_str(name, text),
        (true, None) => bail!("no config given (--config FILE_OR_DIR)"),
    };
    loaded.map_err(|e| anyhow::anyhow!("{}", lines(e.0.iter().map(ToString::to_string))))
}

fn lines(it: impl Iterator<Item = String>) -> String {
    it.collect::<Vec<_>>().join("\n")
}

impl Session {
    /// Compiles `loaded` with `registry` and starts a pipeline on a new event loop.
    pub fn start(
        loaded: &mixer_config::LoadedConfig,
        registry: &AdapterRegistry,
    ) -> anyhow::Result<Session> {
        let event_loop = EventLoop::new();
        let platform = event_loop.platform();
        let snapshot: Snapshot = mixer_config::compile_loaded(
            loaded,
            registry,
            &platform,
            None,
            &CompileOptions::default(),
        )
        .map_err(|errors| {
            anyhow::anyhow!(
                "config rejected:\n{}",
                lines(errors.iter().map(ToString::to_string))
            )
        })?;
        let mut notes = loaded.notes.clone();
        notes.extend(snapshot.warnings.iter().cloned());
        let pipeline = Pipeline::new(snapshot, platform);
        let worker = pipeline.worker(Arc::new(event_loop.clone()));
        Ok(Session {
            event_loop,
            pipeline,
            worker,
            notes,
        })
    }

    /// Runs a check to completion (driving the event loop while a backend answers).
    pub fn check(&self, bag: &dyn Bag) -> anyhow::Result<CheckAnswer> {
        let slot: Arc<Mutex<Option<CheckAnswer>>> = Arc::default();
        let out = slot.clone();
        match self.worker.check(bag, move |a| *out.lock() = Some(a)) {
            CheckStart::Done(a) => Ok(a),
            CheckStart::Pending(handle) => {
                self.event_loop
                    .run_until(|| slot.lock().is_some(), Duration::from_secs(30));
                drop(handle);
                slot.lock()
                    .take()
                    .context("the check did not complete within 30s")
            }
        }
    }
}

fn status_json(s: &Status) -> Json {
    json!({"code": s.code.0, "message": s.message})
}

fn header_ops_json(ops: &[HeaderChange]) -> Json {
    Json::Array(
        ops.iter()
            .map(|op| match op {
                HeaderChange::Set(n, v) => json!({"name": n, "value": v, "operation": "REPLACE"}),
                HeaderChange::Append(n, v) => json!({"name": n, "value": v, "operation": "APPEND"}),
                HeaderChange::Remove(n) => json!({"name": n, "operation": "REMOVE"}),
            })
            .collect(),
    )
}

fn quota_json(q: &QuotaResult) -> Json {
    json!({"granted_amount": q.granted, "valid_duration": q.valid_duration.to_string(), "status": status_json(&q.status)})
}

/// The decision as `mixer check` prints it.
pub fn decision_json(answer: &CheckAnswer, vocab: &mixer_attr::Vocabulary) -> Json {
    let d = &answer.decision;
    json!({
        "status": status_json(&d.status),
        "valid_duration": d.valid_duration.to_string(),
        "valid_use_count": d.valid_use_count,
        "referenced": d.referenced.to_strings(vocab),
        "request_header_operations": header_ops_json(&d.request_header_operations),
        "response_header_operations": header_ops_json(&d.response_header_operations),
        "direct_response": d.direct_response.as_ref().map(|r| json!({"code": r.code, "body": r.body})),
        "quotas": d.quotas.iter().map(|(n, q)| (n.clone(), quota_json(q))).collect::<serde_json::Map<_, _>>(),
        "cache_hit": answer.cache_hit,
    })
}

/// A bag from a JSON object of typed attribute values, typed by `vocab`.
pub fn bag_from_json(
    vocab: &mixer_attr::Vocabulary,
    text: &str,
    what: &str,
) -> anyhow::Result<mixer_attr::Attributes<'static>> {
    let json: Json = serde_json::from_str(text).with_context(|| format!("{what}: not JSON"))?;
    mixer_attr::json::attributes_from_json(vocab, &json)
        .with_context(|| format!("{what}: bad attributes"))
}
