//! The rule index changes which rules are evaluated, never the outcome: decisions with and
//! without the index agree on generated rule sets and requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::pending::Poll;
use mixer_core::snapshot::json_to_struct;
use mixer_core::{
    AdapterRegistry, CheckStart, Code, CompileOptions, Config, Pipeline, PipelineOptions, Status,
    compile,
};
use mixer_proto::v2;
use serde_json::json;

/// Denies with a message naming the handler, so decisions show which rules fired.
struct Named;
struct NamedHandler(String);

impl Adapter for Named {
    fn name(&self) -> &'static str {
        "named"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["checknothing"]
    }
    fn build(&self, c: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(NamedHandler(c.name.to_string())))
    }
}

impl Handler for NamedHandler {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for NamedHandler {
    fn check(&self, _: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        Poll::Ready(CheckResult::deny(
            Status::new(Code::PERMISSION_DENIED, self.0.clone()),
            mixer_attr::Duration::from_secs(1),
            1,
        ))
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const SERVICES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const PATHS: [&str; 3] = ["/", "/x", "/y"];

fn generated_config(rng: &mut Rng, rules: usize) -> Config {
    let mut cfg = Config {
        instances: vec![v2::Instance {
            name: "nothing".into(),
            namespace: "istio-system".into(),
            template: "checknothing".into(),
            params: Some(json_to_struct(&json!({}))),
            ..Default::default()
        }],
        ..Default::default()
    };
    for i in 0..rules {
        let s = SERVICES[rng.next(6) as usize];
        let p = PATHS[rng.next(3) as usize];
        let predicate = match rng.next(6) {
            0 => format!(r#"destination.service.name == "{s}""#),
            1 => format!(r#"request.path == "{p}" && destination.service.name == "{s}""#),
            2 => format!(r#"destination.labels["app"] == "{s}""#),
            3 => format!(r#"destination.service.name == "{s}" || request.path == "{p}""#),
            4 => format!(r#"(destination.labels["app"] | "none") == "{s}""#),
            _ => String::new(),
        };
        cfg.handlers.push(v2::Handler {
            name: format!("h{i}"),
            namespace: "istio-system".into(),
            adapter: "named".into(),
            ..Default::default()
        });
        cfg.rules.push(v2::Rule {
            name: format!("r{i}"),
            namespace: "istio-system".into(),
            r#match: predicate,
            actions: vec![v2::Action {
                handler: format!("h{i}"),
                instances: vec!["nothing".into()],
                name: String::new(),
            }],
            ..Default::default()
        });
    }
    cfg
}

fn decide(p: &Pipeline, vt: &VirtualPlatform, bag: &Attributes<'_>) -> (Code, String) {
    match p.worker(Arc::new(vt.clone())).check(bag, |_| {}) {
        CheckStart::Done(a) => (a.status.code, a.status.message.clone()),
        CheckStart::Pending(_) => panic!("in process"),
    }
}

#[test]
fn index_never_changes_decisions() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vt = VirtualPlatform::new();
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(Named));
    let no_cache = PipelineOptions {
        check_cache: mixer_core::cache::CheckCacheConfig {
            max_entries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    for round in 0..20 {
        let cfg = generated_config(&mut rng, 10 + round * 5);
        let indexed = compile(
            &cfg,
            &registry,
            &vt.platform(),
            None,
            &CompileOptions::default(),
        )
        .unwrap();
        assert!(indexed.rule_index.indexed_rules() > 0);
        let plain = compile(
            &cfg,
            &registry,
            &vt.platform(),
            None,
            &CompileOptions {
                index_rules: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plain.rule_index.indexed_rules(), 0);
        let (a, b) = (
            Pipeline::with_options(indexed, vt.platform(), no_cache),
            Pipeline::with_options(plain, vt.platform(), no_cache),
        );
        for _ in 0..50 {
            let mut bag = Attributes::new();
            if rng.next(4) > 0 {
                bag.set(
                    wk::DESTINATION_SERVICE_NAME,
                    Value::str(SERVICES[rng.next(6) as usize]),
                );
            }
            if rng.next(4) > 0 {
                bag.set(wk::REQUEST_PATH, Value::str(PATHS[rng.next(3) as usize]));
            }
            if rng.next(2) > 0 {
                let m: StringMap = [(
                    "app".to_string(),
                    SERVICES[rng.next(6) as usize].to_string(),
                )]
                .into_iter()
                .collect();
                bag.set(wk::DESTINATION_LABELS, Value::string_map(m));
            }
            assert_eq!(
                decide(&a, &vt, &bag),
                decide(&b, &vt, &bag),
                "round {round}, {bag:?}"
            );
        }
    }
}
