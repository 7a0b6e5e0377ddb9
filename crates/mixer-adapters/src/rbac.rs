//! `rbac`: role-based access control over the `authorization` template's subject and action,
//! in the spirit of Mixer's rbac adapter (ServiceRole / ServiceRoleBinding), with the roles and
//! bindings written inline in the handler's params.
//!
//! ```yaml
//! params:
//!   roles:
//!   - name: reviews-reader
//!     namespace: default            # optional: only actions in this namespace
//!     rules:
//!     - services: ["reviews.*"]     # exact, "*", "prefix*" or "*suffix"
//!       methods: ["GET", "HEAD"]    # empty: any
//!       paths: ["/reviews/*"]       # empty: any
//!       constraints:                # every key must hold one of its values
//!       - { key: version, values: ["v1", "v2"] }   # action.properties[version]
//!   bindings:
//!   - role: reviews-reader
//!     subjects:                     # any one subject suffices
//!     - user: "cluster.local/ns/default/sa/productpage"
//!     - group: admins               # one of subject.groups (comma separated)
//!     - properties: { namespace: default }   # every subject.properties entry must match
//!   cacheDuration: 60s
//! ```
//!
//! A request is allowed when some binding's subject matches and its role has a rule that matches
//! the action; otherwise it is denied with PERMISSION_DENIED.

use std::collections::BTreeMap;
use std::sync::Arc;

use mixer_attr::{Duration, Value};
use mixer_core::adapter::{
    Adapter, AdapterError, CheckHandler, CheckResult, Handler, HandlerConfig, RequestContext,
};
use mixer_core::instance::InstanceView;
use mixer_core::pending::Poll;
use mixer_core::template::{self, TemplateInfo};
use mixer_core::{Code, Status};
use serde::Deserialize;

use crate::duration_param;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstraintParams {
    key: String,
    values: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RuleParams {
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    constraints: Vec<ConstraintParams>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleParams {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    rules: Vec<RuleParams>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SubjectParams {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingParams {
    #[serde(default)]
    name: Option<String>,
    role: String,
    subjects: Vec<SubjectParams>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    roles: Vec<RoleParams>,
    #[serde(default)]
    bindings: Vec<BindingParams>,
    #[serde(default)]
    cache_duration: Option<String>,
}

/// `*`, `prefix*`, `*suffix` or an exact string.
#[derive(Debug, Clone)]
enum Glob {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
}

impl Glob {
    fn new(p: &str) -> Glob {
        if p == "*" {
            Glob::Any
        } else if let Some(pre) = p.strip_suffix('*') {
            Glob::Prefix(pre.to_string())
        } else if let Some(suf) = p.strip_prefix('*') {
            Glob::Suffix(suf.to_string())
        } else {
            Glob::Exact(p.to_string())
        }
    }
    fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Prefix(p) => s.starts_with(p.as_str()),
            Glob::Suffix(p) => s.ends_with(p.as_str()),
            Glob::Exact(p) => s == p,
        }
    }
}

/// Empty list: anything.
fn any_of(globs: &[Glob], s: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| g.matches(s))
}

#[derive(Debug)]
struct Rule {
    services: Vec<Glob>,
    methods: Vec<Glob>,
    paths: Vec<Glob>,
    constraints: Vec<(String, Vec<String>)>,
}

#[derive(Debug)]
struct Role {
    name: String,
    namespace: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Subject {
    user: Option<Glob>,
    group: Option<String>,
    properties: Vec<(String, String)>,
}

#[derive(Debug)]
struct Binding {
    role: usize,
    subjects: Vec<Subject>,
}

/// The `rbac` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct RbacAdapter;

/// A built rbac handler.
#[derive(Debug)]
pub struct Rbac {
    roles: Vec<Role>,
    bindings: Vec<Binding>,
    valid_duration: Duration,
    fields: RequestFields,
}

/// The `authorization` template and the indexes of the fields a check reads, resolved once.
#[derive(Debug)]
struct RequestFields {
    template: Option<&'static TemplateInfo>,
    index: [Option<usize>; REQUEST_PATHS.len()],
}

/// The instance fields [`Request`] holds, in its order.
const REQUEST_PATHS: [&str; 6] = [
    "subject.user",
    "subject.groups",
    "action.namespace",
    "action.service",
    "action.method",
    "action.path",
];

impl RequestFields {
    fn resolve() -> Self {
        let template = template::template("authorization");
        RequestFields {
            template,
            index: REQUEST_PATHS.map(|p| template.and_then(|t| t.field_index(p))),
        }
    }
}

impl Adapter for RbacAdapter {
    fn name(&self) -> &'static str {
        "rbac"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["authorization"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let p: Params = serde_json::from_value(config.params.clone())
            .map_err(|e| AdapterError::new(e.to_string()))?;
        let mut roles = Vec::new();
        for (i, r) in p.roles.into_iter().enumerate() {
            if roles.iter().any(|x: &Role| x.name == r.name) {
                return Err(AdapterError::field(
                    format!("roles[{i}].name"),
                    format!("duplicate role `{}`", r.name),
                ));
            }
            let rules = r
                .rules
                .into_iter()
                .map(|rule| Rule {
                    services: rule.services.iter().map(|s| Glob::new(s)).collect(),
                    methods: rule.methods.iter().map(|s| Glob::new(s)).collect(),
                    paths: rule.paths.iter().map(|s| Glob::new(s)).collect(),
                    constraints: rule
                        .constraints
                        .into_iter()
                        .map(|c| (c.key, c.values))
                        .collect(),
                })
                .collect();
            roles.push(Role {
                name: r.name,
                namespace: r.namespace,
                rules,
            });
        }
        let mut bindings = Vec::new();
        for (i, b) in p.bindings.into_iter().enumerate() {
            let role = roles.iter().position(|r| r.name == b.role).ok_or_else(|| {
                AdapterError::field(
                    format!("bindings[{i}].role"),
                    format!("no role `{}`", b.role),
                )
            })?;
            if b.subjects.is_empty() {
                let what = b.name.unwrap_or_else(|| format!("bindings[{i}]"));
                return Err(AdapterError::field(
                    format!("bindings[{i}].subjects"),
                    format!("{what} binds no subject"),
                ));
            }
            let subjects = b
                .subjects
                .into_iter()
                .map(|s| Subject {
                    user: s.user.as_deref().map(Glob::new),
                    group: s.group,
                    properties: s.properties.into_iter().collect(),
                })
                .collect();
            bindings.push(Binding { role, subjects });
        }
        let valid_duration = duration_param::parse(
            "cacheDuration",
            p.cache_duration.as_deref(),
            Duration::from_secs(60),
        )?;
        Ok(Arc::new(Rbac {
            roles,
            bindings,
            valid_duration,
            fields: RequestFields::resolve(),
        }))
    }
}

fn text<'a>(view: &'a InstanceView<'a>, path: &str) -> &'a str {
    view.get(path).and_then(Value::as_str).unwrap_or("")
}

fn property(view: &InstanceView<'_>, map: &str, key: &str) -> Option<String> {
    view.map(map).find(|(k, _)| *k == key).map(|(_, v)| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    })
}

/// The instance fields rules look at, read once per check.
struct Request<'a> {
    user: &'a str,
    groups: &'a str,
    namespace: &'a str,
    service: &'a str,
    method: &'a str,
    path: &'a str,
}

impl<'a> Request<'a> {
    fn of(view: &'a InstanceView<'a>, fields: &RequestFields) -> Self {
        // Instances of the `authorization` template (all that config lets reach rbac) are read
        // by field index; anything else by path.
        let indexed = fields
            .template
            .is_some_and(|t| std::ptr::eq(t, view.instance.template));
        let read = |i: usize| -> &'a str {
            match fields.index[i] {
                Some(at) if indexed => view.field(at).and_then(Value::as_str).unwrap_or(""),
                _ => text(view, REQUEST_PATHS[i]),
            }
        };
        Request {
            user: read(0),
            groups: read(1),
            namespace: read(2),
            service: read(3),
            method: read(4),
            path: read(5),
        }
    }
}

impl Rbac {
    fn subject_matches(&self, s: &Subject, req: &Request<'_>, view: &InstanceView<'_>) -> bool {
        if let Some(u) = &s.user
            && !u.matches(req.user)
        {
            return false;
        }
        if let Some(g) = &s.group
            && !req.groups.split(',').any(|x| x.trim() == g)
        {
            return false;
        }
        s.properties
            .iter()
            .all(|(k, v)| property(view, "subject.properties", k).as_deref() == Some(v.as_str()))
    }

    fn role_allows(&self, role: &Role, req: &Request<'_>, view: &InstanceView<'_>) -> bool {
        if let Some(ns) = &role.namespace
            && req.namespace != ns
        {
            return false;
        }
        role.rules.iter().any(|r| {
            any_of(&r.services, req.service)
                && any_of(&r.methods, req.method)
                && any_of(&r.paths, req.path)
                && r.constraints.iter().all(|(k, values)| {
                    property(view, "action.properties", k).is_some_and(|v| values.contains(&v))
                })
        })
    }
}

impl Handler for Rbac {
    fn as_check(&self) -> Option<&dyn CheckHandler> {
        Some(self)
    }
}

impl CheckHandler for Rbac {
    fn check(&self, view: &InstanceView<'_>, _: &RequestContext<'_>) -> Poll<CheckResult> {
        let req = Request::of(view, &self.fields);
        let allowed = self
            .bindings
            .iter()
            .filter(|b| {
                b.subjects
                    .iter()
                    .any(|s| self.subject_matches(s, &req, view))
            })
            .any(|b| self.role_allows(&self.roles[b.role], &req, view));
        Poll::Ready(if allowed {
            CheckResult::allow(self.valid_duration, 10_000)
        } else {
            CheckResult::deny(
                Status::new(Code::PERMISSION_DENIED, "RBAC: permission denied."),
                self.valid_duration,
                10_000,
            )
        })
    }
}
