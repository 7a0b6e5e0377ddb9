//! kubernetesenv attribute-producing adapter: workload identity from a Kubernetes inventory.
