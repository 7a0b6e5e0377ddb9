//! Which quotas a request charges: the proxy-side `QuotaSpec` (rules: attribute match clauses ->
//! quotas and charges) and `QuotaSpecBinding` (which destination services use which specs),
//! compiled once per snapshot.

use mixer_attr::{AttrId, Bag, Value, Vocabulary};
use mixer_proto::v2;
use regex::Regex;

use super::ConfigError;
use crate::pipeline::QuotaRequest;

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(e) => s == e,
            Matcher::Prefix(p) => s.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(s),
        }
    }
}

/// One attribute test of a clause: an attribute, or one key of a map attribute.
#[derive(Debug)]
struct AttrTest {
    attr: AttrId,
    map_key: Option<String>,
    matcher: Matcher,
}

#[derive(Debug)]
struct QuotaRule {
    /// Any clause (all of its tests) matches; no clause: always.
    clauses: Vec<Vec<AttrTest>>,
    quotas: Vec<(String, i64)>,
}

#[derive(Debug)]
pub(crate) struct CompiledQuotaSpec {
    name: String,
    namespace: String,
    rules: Vec<QuotaRule>,
}

#[derive(Debug)]
enum ServiceMatch {
    All,
    Service {
        name: String,
        namespace: String,
        host: String,
    },
}

#[derive(Debug)]
pub(crate) struct CompiledQuotaBinding {
    services: Vec<ServiceMatch>,
    specs: Vec<usize>,
}

/// Compiled quota specs and bindings of a snapshot.
#[derive(Debug, Default)]
pub struct QuotaSpecs {
    specs: Vec<CompiledQuotaSpec>,
    bindings: Vec<CompiledQuotaBinding>,
    dest_name: Option<AttrId>,
    dest_namespace: Option<AttrId>,
    dest_host: Option<AttrId>,
}

fn string_of<'a>(v: &'a Value<'a>) -> Option<std::borrow::Cow<'a, str>> {
    match v {
        Value::StringMap(_) => None,
        other => Some(
            other
                .as_str()
                .map(std::borrow::Cow::Borrowed)
                .unwrap_or_else(|| other.to_string().into()),
        ),
    }
}

impl QuotaSpecs {
    /// Compiles the specs and bindings of `config`; problems are appended to `errors`.
    pub(crate) fn compile(
        config: &v2::Config,
        vocab: &Vocabulary,
        errors: &mut Vec<ConfigError>,
    ) -> QuotaSpecs {
        let mut out = QuotaSpecs {
            dest_name: vocab.lookup("destination.service.name"),
            dest_namespace: vocab.lookup("destination.service.namespace"),
            dest_host: vocab.lookup("destination.service.host"),
            ..Default::default()
        };
        for spec in &config.quota_specs {
            let obj = format!("QuotaSpec/{}/{}", spec.namespace, spec.name);
            let mut rules = Vec::new();
            for (ri, rule) in spec.rules.iter().enumerate() {
                let mut clauses = Vec::new();
                for (ci, clause) in rule.r#match.iter().enumerate() {
                    let mut tests = Vec::new();
                    for (name, m) in &clause.clause {
                        let field = format!("rules[{ri}].match[{ci}].clause.{name}");
                        let (attr_name, map_key) = match name.split_once('[') {
                            Some((a, rest)) => (
                                a,
                                Some(rest.trim_end_matches(']').trim_matches('"').to_string()),
                            ),
                            None => (name.as_str(), None),
                        };
                        let Some(attr) = vocab.lookup(attr_name) else {
                            errors.push(ConfigError::new(
                                &obj,
                                field,
                                format!("unknown attribute `{attr_name}`"),
                            ));
                            continue;
                        };
                        let matcher = match &m.match_type {
                            Some(v2::string_match::MatchType::Exact(s)) => {
                                Matcher::Exact(s.clone())
                            }
                            Some(v2::string_match::MatchType::Prefix(s)) => {
                                Matcher::Prefix(s.clone())
                            }
                            Some(v2::string_match::MatchType::Regex(s)) => {
                                match regex::RegexBuilder::new(&format!("^(?:{s})$"))
                                    .size_limit(1 << 20)
                                    .build()
                                {
                                    Ok(r) => Matcher::Regex(r),
                                    Err(e) => {
                                        errors.push(ConfigError::new(
                                            &obj,
                                            field,
                                            format!("bad regex: {e}"),
                                        ));
                                        continue;
                                    }
                                }
                            }
                            None => {
                                errors.push(ConfigError::new(
                                    &obj,
                                    field,
                                    "needs exact, prefix or regex",
                                ));
                                continue;
                            }
                        };
                        tests.push(AttrTest {
                            attr,
                            map_key,
                            matcher,
                        });
                    }
                    clauses.push(tests);
                }
                let quotas = rule
                    .quotas
                    .iter()
                    .map(|q| (q.quota.clone(), if q.charge <= 0 { 1 } else { q.charge }))
                    .collect();
                rules.push(QuotaRule { clauses, quotas });
            }
            out.specs.push(CompiledQuotaSpec {
                name: spec.name.clone(),
                namespace: spec.namespace.clone(),
                rules,
            });
        }
        for b in &config.quota_spec_bindings {
            let obj = format!("QuotaSpecBinding/{}/{}", b.namespace, b.name);
            let mut specs = Vec::new();
            for (i, r) in b.quota_specs.iter().enumerate() {
                let ns = if r.namespace.is_empty() {
                    &b.namespace
                } else {
                    &r.namespace
                };
                match out
                    .specs
                    .iter()
                    .position(|s| s.name == r.name && &s.namespace == ns)
                {
                    Some(idx) => specs.push(idx),
                    None => errors.push(ConfigError::new(
                        &obj,
                        format!("quotaSpecs[{i}]"),
                        format!("no QuotaSpec `{}` in namespace `{ns}`", r.name),
                    )),
                }
            }
            let services = b
                .services
                .iter()
                .map(|s| {
                    if s.service == "*" {
                        return ServiceMatch::All;
                    }
                    let namespace = if s.namespace.is_empty() {
                        b.namespace.clone()
                    } else {
                        s.namespace.clone()
                    };
                    let domain = if s.domain.is_empty() {
                        "cluster.local"
                    } else {
                        s.domain.as_str()
                    };
                    let host = if s.service.is_empty() {
                        format!("{}.{namespace}.svc.{domain}", s.name)
                    } else {
                        s.service.clone()
                    };
                    ServiceMatch::Service {
                        name: s.name.clone(),
                        namespace,
                        host,
                    }
                })
                .collect();
            out.bindings.push(CompiledQuotaBinding { services, specs });
        }
        out
    }

    /// True when no binding exists (no request charges a quota).
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    fn text(bag: &dyn Bag, id: Option<AttrId>) -> Option<String> {
        let v = bag.get(id?)?;
        v.as_str().map(str::to_string)
    }

    /// The quotas the request in `bag` charges.
    pub fn requests(&self, bag: &dyn Bag) -> Vec<QuotaRequest> {
        let mut out: Vec<QuotaRequest> = Vec::new();
        if self.bindings.is_empty() {
            return out;
        }
        let name = Self::text(bag, self.dest_name);
        let namespace = Self::text(bag, self.dest_namespace);
        let host = Self::text(bag, self.dest_host);
        for b in &self.bindings {
            let bound = b.services.iter().any(|s| match s {
                ServiceMatch::All => true,
                ServiceMatch::Service {
                    name: n,
                    namespace: ns,
                    host: h,
                } => {
                    host.as_deref() == Some(h.as_str())
                        || (name.as_deref() == Some(n.as_str())
                            && namespace.as_deref() == Some(ns.as_str()))
                }
            });
            if !bound {
                continue;
            }
            for &si in &b.specs {
                for rule in &self.specs[si].rules {
                    let applies = rule.clauses.is_empty()
                        || rule
                            .clauses
                            .iter()
                            .any(|tests| tests.iter().all(|t| Self::test(bag, t)));
                    if !applies {
                        continue;
                    }
                    for (quota, charge) in &rule.quotas {
                        match out.iter_mut().find(|r| &r.name == quota) {
                            Some(r) => r.args.amount = r.args.amount.saturating_add(*charge),
                            None => out.push(QuotaRequest {
                                name: quota.clone(),
                                args: crate::adapter::QuotaArgs {
                                    amount: *charge,
                                    ..Default::default()
                                },
                            }),
                        }
                    }
                }
            }
        }
        out
    }

    fn test(bag: &dyn Bag, t: &AttrTest) -> bool {
        let Some(v) = bag.get(t.attr) else {
            return false;
        };
        match (&t.map_key, &v) {
            (Some(k), Value::StringMap(m)) => m.get(k).is_some_and(|s| t.matcher.matches(s)),
            (Some(_), _) => false,
            (None, v) => string_of(v).is_some_and(|s| t.matcher.matches(&s)),
        }
    }
}
