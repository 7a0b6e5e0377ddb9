//! The adapter's [`ApaOutput`]: the matched pods' shared entries, handing out values that
//! borrow from them. Which output position reads which field is worked out once from the
//! `kubernetes` template's output names.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use mixer_attr::{StringMapRef, Value};
use mixer_core::adapter::ApaOutput;

use crate::inventory::PodEntry;

/// Whose pod an output describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Source,
    Destination,
    Origin,
}

/// What an output position reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    PodUid,
    PodIp,
    PodName,
    Labels,
    Namespace,
    ServiceAccount,
    HostIp,
    Owner,
    WorkloadUid,
    WorkloadName,
    WorkloadNamespace,
    ContainerName,
    ServiceUid,
    ServiceName,
    ServiceNamespace,
    ServiceHost,
}

type Slot = Option<(Role, Field)>;

fn slot(path: &str) -> Slot {
    let (role, rest) = if let Some(r) = path.strip_prefix("source_") {
        (Role::Source, r)
    } else if let Some(r) = path.strip_prefix("destination_") {
        (Role::Destination, r)
    } else if let Some(r) = path.strip_prefix("origin_") {
        (Role::Origin, r)
    } else {
        return None;
    };
    let field = match rest {
        "pod_uid" => Field::PodUid,
        "pod_ip" => Field::PodIp,
        "pod_name" => Field::PodName,
        "labels" => Field::Labels,
        "namespace" => Field::Namespace,
        "service_account_name" => Field::ServiceAccount,
        "host_ip" => Field::HostIp,
        "owner" => Field::Owner,
        "workload_uid" => Field::WorkloadUid,
        "workload_name" => Field::WorkloadName,
        "workload_namespace" => Field::WorkloadNamespace,
        "container_name" => Field::ContainerName,
        "service_uid" => Field::ServiceUid,
        "service_name" => Field::ServiceName,
        "service_namespace" => Field::ServiceNamespace,
        "service_host" => Field::ServiceHost,
        _ => return None,
    };
    Some((role, field))
}

/// Output position -> (role, field), from the `kubernetes` template.
fn slots() -> &'static [Slot] {
    static SLOTS: OnceLock<Vec<Slot>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        mixer_core::template::template("kubernetes")
            .map(|t| t.outputs.iter().map(|f| slot(f.path)).collect())
            .unwrap_or_default()
    })
}

/// Forces the slot table to be built (at handler build time, not on the first request).
pub(crate) fn init() {
    let _ = slots();
}

/// The outputs of one lookup.
#[derive(Debug, Default)]
pub(crate) struct KubeOutput {
    pub source: Option<Arc<PodEntry>>,
    pub destination: Option<Arc<PodEntry>>,
    pub origin: Option<Arc<PodEntry>>,
    /// Index of the destination container serving the destination port.
    pub container: Option<usize>,
}

fn s(v: &str) -> Option<Value<'_>> {
    (!v.is_empty()).then_some(Value::String(Cow::Borrowed(v)))
}

impl ApaOutput for KubeOutput {
    #[inline]
    fn get(&self, position: usize) -> Option<Value<'_>> {
        let (role, field) = (*slots().get(position)?)?;
        let pod = match role {
            Role::Source => self.source.as_deref(),
            Role::Destination => self.destination.as_deref(),
            Role::Origin => self.origin.as_deref(),
        }?;
        match field {
            Field::PodUid => s(&pod.uid),
            Field::PodIp => pod.ip.map(Value::IpAddress),
            Field::PodName => s(&pod.name),
            // Borrowed from the shared entry: no reference count traffic per read.
            Field::Labels => pod
                .labels
                .as_deref()
                .map(|m| Value::StringMap(StringMapRef::Borrowed(m))),
            Field::Namespace => s(&pod.namespace),
            Field::ServiceAccount => s(&pod.service_account),
            Field::HostIp => pod.host_ip.map(Value::IpAddress),
            Field::Owner => s(&pod.workload.owner),
            Field::WorkloadUid => s(&pod.workload.uid),
            Field::WorkloadName => s(&pod.workload.name),
            Field::WorkloadNamespace => s(&pod.workload.namespace),
            Field::ContainerName => s(&pod.containers.get(self.container?)?.name),
            Field::ServiceUid => s(&pod.service.as_ref()?.uid),
            Field::ServiceName => s(&pod.service.as_ref()?.name),
            Field::ServiceNamespace => s(&pod.service.as_ref()?.namespace),
            Field::ServiceHost => s(&pod.service.as_ref()?.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_output_has_a_slot() {
        let t = mixer_core::template::template("kubernetes").unwrap();
        for (i, f) in t.outputs.iter().enumerate() {
            assert!(slots()[i].is_some(), "no slot for `{}`", f.path);
        }
        assert_eq!(
            slot("destination_service_host"),
            Some((Role::Destination, Field::ServiceHost))
        );
        assert_eq!(slot("bogus"), None);
    }
}
