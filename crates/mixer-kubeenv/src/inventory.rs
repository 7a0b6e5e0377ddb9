//! The immutable inventory that lookups read: one [`PodEntry`] per pod with everything the
//! outputs need already computed (uid, workload, owner, destination service, labels as a shared
//! map), indexed by `name.namespace` and by IP. A source builds a new one and swaps it in whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::fast::RandomState;
use mixer_attr::StringMap;

use crate::objects::{Container, Controller, OwnerRef, Pod, Service};

/// Prefix of pod uids as Istio's proxies send them (`kubernetes://<pod>.<namespace>`).
pub const KUBE_PREFIX: &str = "kubernetes://";

/// How many controllers up a pod's owner chain is followed.
const MAX_OWNER_DEPTH: usize = 8;

/// A pod's workload (its root controller, or the pod itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `istio://<namespace>/workloads/<name>`
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>`
    pub owner: String,
}

/// The service selecting a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `istio://<namespace>/services/<name>`
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `<name>.<namespace>.<cluster domain>`
    pub host: String,
}

/// One pod, ready to be handed out.
#[derive(Debug)]
pub struct PodEntry {
    /// `kubernetes://<name>.<namespace>`
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    /// `None` when the pod has no labels.
    pub labels: Option<Arc<StringMap>>,
    /// Empty when not set.
    pub service_account: String,
    pub containers: Vec<Container>,
    pub workload: Workload,
    pub service: Option<ServiceInfo>,
}

impl PodEntry {
    /// The container declaring `port`, by index into [`PodEntry::containers`].
    pub fn container_for(&self, port: i64) -> Option<usize> {
        self.containers.iter().position(|c| c.ports.contains(&port))
    }
}

/// All pods, indexed. Immutable once built.
#[derive(Debug, Default)]
pub struct Inventory {
    by_name: HashMap<Box<str>, Arc<PodEntry>, RandomState>,
    by_ip: HashMap<IpAddr, Arc<PodEntry>, RandomState>,
    services: usize,
}

impl Inventory {
    /// Builds the inventory. A pod listed twice (same name and namespace): the later wins.
    pub fn build<'a>(
        pods: impl IntoIterator<Item = &'a Pod>,
        services: impl IntoIterator<Item = &'a Service>,
        controllers: impl IntoIterator<Item = &'a Controller>,
        cluster_domain: &str,
    ) -> Inventory {
        let services: Vec<&Service> = services.into_iter().collect();
        let selectors = SelectorIndex::new(&services);
        let controllers: HashMap<(&str, &str, &str), &Controller> = controllers
            .into_iter()
            .map(|c| ((c.namespace.as_str(), c.kind.as_str(), c.name.as_str()), c))
            .collect();
        let mut inv = Inventory {
            services: services.len(),
            ..Default::default()
        };
        // IP owners: (pod, rank) so a running pod wins over a terminated one sharing its IP.
        let mut ip_owner: HashMap<IpAddr, (&Pod, Arc<PodEntry>), RandomState> = HashMap::default();
        for pod in pods {
            let entry = Arc::new(PodEntry {
                uid: format!("{KUBE_PREFIX}{}.{}", pod.name, pod.namespace),
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                ip: pod.ip,
                host_ip: pod.host_ip,
                labels: (!pod.labels.is_empty()).then(|| Arc::new(pod.labels.clone())),
                service_account: pod.service_account.clone(),
                containers: pod.containers.clone(),
                workload: workload(pod, &controllers),
                service: selectors.service_of(pod, cluster_domain),
            });
            inv.by_name.insert(
                format!("{}.{}", pod.name, pod.namespace).into(),
                entry.clone(),
            );
            // Host-network pods share their node's IP: an IP does not identify them.
            if let (Some(ip), false) = (pod.ip, pod.host_network) {
                let better = match ip_owner.get(&ip) {
                    None => true,
                    Some((other, _)) => rank(pod) >= rank(other),
                };
                if better {
                    ip_owner.insert(ip, (pod, entry));
                }
            }
        }
        inv.by_ip = ip_owner.into_iter().map(|(ip, (_, e))| (ip, e)).collect();
        inv
    }

    /// Looks a pod up by uid as Istio sends it: `kubernetes://<pod>.<namespace>`,
    /// `<pod>.<namespace>`, or an IP address.
    #[inline]
    pub fn by_uid(&self, uid: &str) -> Option<&Arc<PodEntry>> {
        match uid.strip_prefix(KUBE_PREFIX) {
            Some(rest) => self.by_name.get(rest),
            None => self
                .by_name
                .get(uid)
                .or_else(|| uid.parse::<IpAddr>().ok().and_then(|ip| self.by_ip(ip))),
        }
    }

    /// Looks a pod up by its IP (IPv4-mapped IPv6 addresses match their IPv4 form).
    #[inline]
    pub fn by_ip(&self, ip: IpAddr) -> Option<&Arc<PodEntry>> {
        self.by_ip.get(&ip.to_canonical())
    }

    /// The pod `name` in `namespace`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Arc<PodEntry>> {
        self.by_name.get(format!("{name}.{namespace}").as_str())
    }

    /// Number of pods.
    pub fn pods(&self) -> usize {
        self.by_name.len()
    }

    /// Number of services.
    pub fn services(&self) -> usize {
        self.services
    }
}

/// Which pod keeps an IP both claim: live before terminated, then the newer one.
fn rank(p: &Pod) -> (bool, &str, &str) {
    (!p.terminated(), p.created.as_str(), p.name.as_str())
}

/// Services by namespace and by their selector's first pair, so a pod is matched only against
/// services that could select it.
struct SelectorIndex<'a> {
    by_first: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Service>>,
}

impl<'a> SelectorIndex<'a> {
    fn new(services: &[&'a Service]) -> Self {
        let mut by_first: HashMap<(&str, &str, &str), Vec<&Service>> = HashMap::new();
        for s in services {
            if let Some((k, v)) = s.selector.iter().next() {
                by_first
                    .entry((s.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(s);
            }
        }
        SelectorIndex { by_first }
    }

    /// The service selecting `pod` (the first by name when several do).
    fn service_of(&self, pod: &Pod, cluster_domain: &str) -> Option<ServiceInfo> {
        let ns = pod.namespace.as_str();
        let best = pod
            .labels
            .iter()
            .filter_map(|(k, v)| self.by_first.get(&(ns, k.as_str(), v.as_str())))
            .flatten()
            .filter(|s| s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
            .min_by(|a, b| a.name.cmp(&b.name))?;
        Some(ServiceInfo {
            uid: format!("istio://{}/services/{}", best.namespace, best.name),
            host: format!("{}.{}.{cluster_domain}", best.name, best.namespace),
            name: best.name.clone(),
            namespace: best.namespace.clone(),
        })
    }
}

fn controller_of(owners: &[OwnerRef]) -> Option<&OwnerRef> {
    owners.iter().find(|o| o.controller)
}

/// A pod's workload, as Istio's kubernetesenv derived it: the root of its controller chain
/// (a Deployment above its ReplicaSet, a CronJob above its Job), or the pod itself.
pub fn workload(pod: &Pod, controllers: &HashMap<(&str, &str, &str), &Controller>) -> Workload {
    let ns = pod.namespace.as_str();
    let (api_version, kind, name) = match controller_of(&pod.owners) {
        None => ("v1".to_string(), "Pod".to_string(), pod.name.clone()),
        Some(first) => {
            let mut root = first.clone();
            for _ in 0..MAX_OWNER_DEPTH {
                let parent = controllers
                    .get(&(ns, root.kind.as_str(), root.name.as_str()))
                    .and_then(|c| controller_of(&c.owners))
                    .cloned()
                    .or_else(|| deployment_of_replicaset(&root, pod));
                match parent {
                    Some(p) => root = p,
                    None => break,
                }
            }
            (root.api_version, root.kind, root.name)
        }
    };
    Workload {
        uid: format!("istio://{ns}/workloads/{name}"),
        owner: format!(
            "{KUBE_PREFIX}apis/{api_version}/namespaces/{ns}/{}s/{name}",
            kind.to_ascii_lowercase()
        ),
        name,
        namespace: ns.to_string(),
    }
}

/// The Deployment owning ReplicaSet `rs` when the inventory does not hold the ReplicaSet: a
/// Deployment names its ReplicaSets `<deployment>-<pod-template-hash>` and labels their pods
/// with that hash (ReplicaSets made by hand carry no such label and stay the workload).
fn deployment_of_replicaset(rs: &OwnerRef, pod: &Pod) -> Option<OwnerRef> {
    if rs.kind != "ReplicaSet" {
        return None;
    }
    let hash = pod.labels.get("pod-template-hash")?;
    let name = rs.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!name.is_empty()).then(|| OwnerRef {
        api_version: rs.api_version.clone(),
        kind: "Deployment".into(),
        name: name.to_string(),
        controller: true,
    })
}
