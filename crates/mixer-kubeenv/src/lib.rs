//! kubernetesenv attribute-producing adapter: workload identity from a Kubernetes inventory.
//!
//! Istio Mixer's `kubernetesenv` for the `kubernetes` template: given a request's source,
//! destination and origin pod uid (`kubernetes://<pod>.<namespace>`, as Istio's proxies send
//! it) or IP, it produces the pod's uid, IP, name, namespace, labels, service account, host IP,
//! owner and workload (a Deployment above its ReplicaSet, a StatefulSet, DaemonSet, Job, or the
//! bare pod), the destination container serving the destination port, and the destination's
//! service (the service whose selector matches the pod's labels).
//!
//! ```yaml
//! apiVersion: config.istio.io/v1alpha2
//! kind: handler
//! metadata: {name: kubernetesenv, namespace: istio-system}
//! spec:
//!   compiledAdapter: kubernetesenv
//!   params:
//!     inventory_file: /etc/mixer/inventory.json  # kubectl get pods,services,replicasets -o json
//!     refresh_interval: 5s                       # how often the file is checked for changes
//!     kubernetes_api:                            # and/or the API (e.g. through `kubectl proxy`)
//!       url: http://127.0.0.1:8001
//!       token_file: /var/run/secrets/kubernetes.io/serviceaccount/token  # or token: ...
//!       namespace: default                       # optional: only this namespace
//!       watch_timeout: 5s                        # length of one watch call (update delay)
//!       request_timeout: 30s
//!     cluster_domain_name: svc.cluster.local     # service hosts: <svc>.<ns>.<this>
//! ```
//!
//! With neither source the handler is inactive and the pipeline leaves its stage out. Lookups
//! read an immutable [`Inventory`] swapped whole on every update: lock-free, and each lookup
//! sees one version of it.

mod api_source;
mod api_wire;
mod file_source;
pub mod inventory;
pub mod objects;
mod output;
mod params;
mod store;
mod yaml;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use mixer_attr::Value;
use mixer_core::adapter::{
    Adapter, AdapterError, ApaContext, ApaOutput, AttributeProducer, Handler, HandlerConfig,
    Produced,
};
use mixer_core::instance::{CompiledInstance, InstanceView, PerInstance};
use mixer_core::status::Status;
use parking_lot::Mutex;

pub use file_source::{Objects, parse_inventory};
pub use inventory::{Inventory, PodEntry};
pub use store::Stats;

use crate::api_source::ApiSource;
use crate::file_source::FileWatch;
use crate::inventory::KUBE_PREFIX;
use crate::output::KubeOutput;
use crate::store::{Shared, Sources, bump};

/// The `kubernetesenv` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct KubernetesEnv;

/// The adapter, for registration.
pub fn adapter() -> Arc<dyn Adapter> {
    Arc::new(KubernetesEnv)
}

/// Positions of the `kubernetes` template's inputs in one instance.
#[derive(Clone, Copy, Debug, Default)]
struct Inputs {
    source_uid: Option<usize>,
    source_ip: Option<usize>,
    destination_uid: Option<usize>,
    destination_ip: Option<usize>,
    destination_port: Option<usize>,
    origin_uid: Option<usize>,
    origin_ip: Option<usize>,
}

impl Inputs {
    fn of(i: &CompiledInstance) -> Inputs {
        Inputs {
            source_uid: i.position("source_uid"),
            source_ip: i.position("source_ip"),
            destination_uid: i.position("destination_uid"),
            destination_ip: i.position("destination_ip"),
            destination_port: i.position("destination_port"),
            origin_uid: i.position("origin_uid"),
            origin_ip: i.position("origin_ip"),
        }
    }
}

/// A configured `kubernetesenv` handler.
pub struct KubeEnvHandler {
    shared: Arc<Shared>,
    instances: PerInstance<Inputs>,
    active: bool,
}

impl std::fmt::Debug for KubeEnvHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnvHandler")
            .field("name", &self.shared.name)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl KubeEnvHandler {
    /// The inventory lookups currently read.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.shared.inventory.load_full()
    }

    /// The sources' counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    #[inline]
    fn inputs_for(&self, instance: &CompiledInstance) -> Inputs {
        self.instances.get(instance, Inputs::of)
    }
}

impl Adapter for KubernetesEnv {
    fn name(&self) -> &'static str {
        "kubernetesenv"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["kubernetes"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let settings = params::parse(config.params)?;
        output::init();
        let mut sources = Sources::default();
        let file = match &settings.inventory_file {
            None => None,
            Some(path) => {
                let (stamp, result) = file_source::load(path);
                sources.file = result.map_err(|e| {
                    AdapterError::field("inventory_file", format!("`{}`: {e}", path.display()))
                })?;
                Some(FileWatch {
                    path: path.clone(),
                    interval: settings.refresh_interval,
                    last: Mutex::new(stamp),
                    timer: Mutex::new(None),
                })
            }
        };
        let active = file.is_some() || settings.api.is_some();
        let shared = Arc::new(Shared {
            name: config.name.to_string(),
            inventory: ArcSwap::from_pointee(Inventory::default()),
            version: AtomicU64::new(store::next_version()),
            stats: Stats::default(),
            cluster_domain: settings.cluster_domain,
            sources: Mutex::new(sources),
            dispatcher: config.platform.dispatcher.clone(),
            file,
            api: settings.api.map(ApiSource::new),
        });
        if shared.file.is_some() {
            shared.publish();
            bump(&shared.stats.file_reloads);
            file_source::schedule(&shared);
        }
        if shared.api.is_some() {
            api_source::start(&shared);
        }
        Ok(Arc::new(KubeEnvHandler {
            shared,
            instances: PerInstance::new(config.instances, Inputs::of),
            active,
        }))
    }
}

impl Handler for KubeEnvHandler {
    fn as_attribute_producer(&self) -> Option<&dyn AttributeProducer> {
        Some(self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The pod a uid or IP input names: by uid first, then by IP (an unspecified IP, Istio's
/// `ip("0.0.0.0")` default, names none).
#[inline]
fn find<'i>(
    inv: &'i Inventory,
    view: &InstanceView<'_>,
    uid: Option<usize>,
    ip: Option<usize>,
) -> Option<&'i Arc<PodEntry>> {
    if let Some(uid) = uid.and_then(|p| view.at(p)).and_then(Value::as_str)
        && !uid.is_empty()
        && let Some(pod) = inv.by_uid(uid)
    {
        return Some(pod);
    }
    let ip = match ip.and_then(|p| view.at(p))? {
        Value::IpAddress(ip) => *ip,
        other => other.as_str()?.parse::<IpAddr>().ok()?,
    };
    if ip.is_unspecified() {
        return None;
    }
    inv.by_ip(ip)
}

impl KubeEnvHandler {
    /// The pods `view` names in the current inventory.
    fn look_up(&self, view: &InstanceView<'_>, inputs: &Inputs) -> Arc<dyn ApaOutput> {
        // One load per request: source, destination and origin come from the same inventory.
        let inv = self.shared.inventory.load();
        let source = find(&inv, view, inputs.source_uid, inputs.source_ip);
        let destination = find(&inv, view, inputs.destination_uid, inputs.destination_ip);
        let origin = find(&inv, view, inputs.origin_uid, inputs.origin_ip);
        if source.is_none() && destination.is_none() && origin.is_none() {
            return Produced::nothing().output;
        }
        let container = match (
            destination,
            inputs.destination_port.and_then(|p| view.at(p)),
        ) {
            (Some(d), Some(Value::Int64(port))) => d.container_for(*port),
            _ => None,
        };
        Arc::new(KubeOutput {
            source: source.cloned(),
            destination: destination.cloned(),
            origin: origin.cloned(),
            container,
        })
    }
}

impl AttributeProducer for KubeEnvHandler {
    fn produce(&self, view: &InstanceView<'_>, _: &ApaContext<'_>) -> Result<Produced, Status> {
        let inputs = self.inputs_for(view.instance);
        // The answer depends on the inputs and the inventory version only: the pipeline keeps
        // each thread's last one and reuses it for the same inputs in the same version.
        Ok(Produced::reusable(self.look_up(view, &inputs)))
    }

    fn generation(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    fn active(&self) -> bool {
        self.active
    }
}

/// `kubernetes://<name>.<namespace>`: a pod's uid as Istio writes it.
pub fn pod_uid(name: &str, namespace: &str) -> String {
    format!("{KUBE_PREFIX}{name}.{namespace}")
}
