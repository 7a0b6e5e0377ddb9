//! What a handler's sources share: the objects each source last delivered, the published
//! [`Inventory`] (swapped whole with arc_swap, so readers never wait and never see half an
//! update), counters, and the timers and callouts to cancel when the handler goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use mixer_core::pal::{CalloutHandle, Dispatcher, TimerId};
use parking_lot::Mutex;

use crate::api_source::ApiSource;
use crate::file_source::{FileWatch, Objects};
use crate::inventory::Inventory;
use crate::objects::{Pod, Service};

/// Counters of a handler's sources (for telemetry and tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// Inventories swapped in.
    pub publishes: AtomicU64,
    /// Inventory file loads that succeeded (the first one included).
    pub file_reloads: AtomicU64,
    /// Inventory file loads that failed (the last good inventory stayed).
    pub file_failures: AtomicU64,
    /// Complete LISTs from the API (all pages).
    pub api_lists: AtomicU64,
    /// Watch calls that ended normally.
    pub api_watches: AtomicU64,
    /// Watch events applied (ADDED, MODIFIED, DELETED, BOOKMARK).
    pub api_events: AtomicU64,
    /// LISTs started again because the watch's resourceVersion was gone or it reported an error.
    pub api_relists: AtomicU64,
    /// Failed API calls and unreadable answers (each retried after a backoff).
    pub api_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    /// The last error a source met.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The objects each source last delivered.
#[derive(Default)]
pub(crate) struct Sources {
    pub file: Objects,
    pub api_pods: HashMap<String, Pod>,
    pub api_services: HashMap<String, Service>,
}

/// Inventory versions, unique in the process: a version names one inventory of one handler.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// A version no inventory had before.
pub(crate) fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct Shared {
    pub name: String,
    pub inventory: ArcSwap<Inventory>,
    /// The version of `inventory`, unique in the process (the handler's generation: outputs
    /// the pipeline keeps for reuse are tied to it). Set after each swap.
    pub version: AtomicU64,
    pub stats: Stats,
    pub cluster_domain: String,
    pub sources: Mutex<Sources>,
    /// The platform's main dispatcher: polls, callouts and their completions run there.
    pub dispatcher: Arc<dyn Dispatcher>,
    pub file: Option<FileWatch>,
    pub api: Option<ApiSource>,
}

impl Shared {
    /// Builds an inventory from every source's objects and swaps it in.
    pub fn publish(&self) {
        let inventory = {
            let s = self.sources.lock();
            Inventory::build(
                s.file.pods.iter().chain(s.api_pods.values()),
                s.file.services.iter().chain(s.api_services.values()),
                s.file.controllers.iter(),
                &self.cluster_domain,
            )
        };
        self.inventory.store(Arc::new(inventory));
        self.version.store(next_version(), Ordering::Release);
        bump(&self.stats.publishes);
    }

    /// Records and logs a source's error.
    pub fn error(&self, message: String) {
        eprintln!("mixer kubernetesenv {}: {message}", self.name);
        *self.stats.last_error.lock() = Some(message);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut timers: Vec<TimerId> = Vec::new();
        let mut callouts: Vec<CalloutHandle> = Vec::new();
        if let Some(f) = &self.file {
            timers.extend(f.timer.lock().take());
        }
        if let Some(a) = &self.api {
            a.take_pending(&mut timers, &mut callouts);
        }
        if timers.is_empty() && callouts.is_empty() {
            return;
        }
        // Cancel on the dispatcher's own thread (timers belong to it).
        let d = self.dispatcher.clone();
        self.dispatcher.post(Box::new(move || {
            for t in timers {
                d.cancel_timer(t);
            }
            for c in callouts {
                c.cancel();
            }
        }));
    }
}
