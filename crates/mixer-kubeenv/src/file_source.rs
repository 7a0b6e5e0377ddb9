//! The inventory file: JSON or YAML holding a Kubernetes `List` (what
//! `kubectl get pods,services,replicasets -o json` prints), a `{pods: [...], services: [...]}`
//! map, single objects, or several YAML documents of those. It is polled through a PAL timer
//! (modification time, size and inode) and reloaded when it changes; a file that fails to load
//! keeps the last good inventory and is counted and logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use mixer_core::pal::TimerId;
use parking_lot::Mutex;
use serde_json::Value as Json;

use crate::objects::{Controller, KindHint, Object, Pod, Service, parse_object};
use crate::store::{Shared, bump};
use crate::yaml;

/// Largest inventory file read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The objects of one inventory file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Objects {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    /// ReplicaSets, Jobs and other owners, to follow a pod's controller chain.
    pub controllers: Vec<Controller>,
}

impl Objects {
    fn add(&mut self, item: &Json, hint: KindHint, at: &str) -> Result<(), String> {
        match parse_object(item, hint).map_err(|e| format!("{at}: {e}"))? {
            Some(Object::Pod(p)) => self.pods.push(p),
            Some(Object::Service(s)) => self.services.push(s),
            Some(Object::Controller(c)) => self.controllers.push(c),
            None => {}
        }
        Ok(())
    }

    fn add_all(&mut self, items: &Json, hint: KindHint, at: &str) -> Result<(), String> {
        match items {
            Json::Null => Ok(()),
            Json::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| self.add(item, hint, &format!("{at}[{i}]"))),
            _ => Err(format!("{at} is not a list")),
        }
    }

    fn add_document(&mut self, doc: &Json, at: &str) -> Result<(), String> {
        let Json::Object(map) = doc else {
            return match doc {
                Json::Null => Ok(()),
                Json::Array(_) => self.add_all(doc, KindHint::Infer, at),
                _ => Err(format!("{at}: expected a Kubernetes List or object")),
            };
        };
        if let Some(items) = map.get("items") {
            let hint = match map.get("kind").and_then(Json::as_str) {
                Some("PodList") => KindHint::Pod,
                Some("ServiceList") => KindHint::Service,
                _ => KindHint::Infer,
            };
            return self.add_all(items, hint, &format!("{at}items"));
        }
        if map.contains_key("kind") {
            return self.add(doc, KindHint::Infer, at.trim_end_matches('.'));
        }
        for (k, v) in map {
            match k.as_str() {
                "pods" => self.add_all(v, KindHint::Pod, &format!("{at}pods"))?,
                "services" => self.add_all(v, KindHint::Service, &format!("{at}services"))?,
                "controllers" => self.add_all(v, KindHint::Infer, &format!("{at}controllers"))?,
                other => {
                    return Err(format!(
                        "{at}{other}: unknown key (expected a Kubernetes List, an object, or pods/services/controllers)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses an inventory file's contents.
pub fn parse_inventory(bytes: &[u8]) -> Result<Objects, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_string())?;
    let trimmed = text.trim_start();
    let docs = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON: {e}"))?]
    } else {
        yaml::documents(text)?
    };
    let mut objects = Objects::default();
    let many = docs.len() > 1;
    for (i, doc) in docs.iter().enumerate() {
        let at = if many {
            format!("document {}: ", i + 1)
        } else {
            String::new()
        };
        objects.add_document(doc, &at)?;
    }
    Ok(objects)
}

/// What identifies one version of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stamp {
    Missing,
    Seen {
        modified: Option<SystemTime>,
        len: u64,
        inode: u64,
    },
}

fn stamp(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Err(_) => Stamp::Missing,
        Ok(m) => Stamp::Seen {
            modified: m.modified().ok(),
            len: m.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&m),
            #[cfg(not(unix))]
            inode: 0,
        },
    }
}

/// Reads and parses the file, with its stamp taken before reading (a write that lands while
/// reading changes the stamp, so the next poll reads it again).
pub(crate) fn load(path: &Path) -> (Stamp, Result<Objects, String>) {
    let before = stamp(path);
    if let Stamp::Seen { len, .. } = before
        && len > MAX_FILE_BYTES
    {
        return (
            before,
            Err(format!("{len} bytes exceed the limit of {MAX_FILE_BYTES}")),
        );
    }
    let result = std::fs::read(path)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|b| parse_inventory(&b));
    (before, result)
}

/// The file poll of one handler.
pub(crate) struct FileWatch {
    pub path: PathBuf,
    pub interval: Duration,
    pub last: Mutex<Stamp>,
    pub timer: Mutex<Option<TimerId>>,
}

/// Schedules the next poll.
pub(crate) fn schedule(shared: &Arc<Shared>) {
    let Some(f) = &shared.file else { return };
    let weak = Arc::downgrade(shared);
    let id = shared
        .dispatcher
        .schedule(f.interval, Box::new(move || poll(&weak)));
    *f.timer.lock() = Some(id);
}

/// Reloads the file if it changed, then schedules the next poll (for as long as the handler
/// lives).
fn poll(weak: &Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    let Some(f) = &shared.file else { return };
    let now = stamp(&f.path);
    let changed = {
        let mut last = f.last.lock();
        std::mem::replace(&mut *last, now) != now
    };
    if changed {
        if now == Stamp::Missing {
            bump(&shared.stats.file_failures);
            shared.error(format!(
                "inventory file `{}` is gone; keeping the last good inventory",
                f.path.display()
            ));
        } else {
            let (stamp, result) = load(&f.path);
            *f.last.lock() = stamp;
            match result {
                Ok(objects) => {
                    shared.sources.lock().file = objects;
                    shared.publish();
                    bump(&shared.stats.file_reloads);
                }
                Err(e) => {
                    bump(&shared.stats.file_failures);
                    shared.error(format!(
                        "inventory file `{}`: {e}; keeping the last good inventory",
                        f.path.display()
                    ));
                }
            }
        }
    }
    schedule(&shared);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_inventory_files() {
        let list = br#"{"kind":"List","items":[
            {"kind":"Pod","metadata":{"name":"p","namespace":"n"}},
            {"kind":"Service","metadata":{"name":"s","namespace":"n"}},
            {"kind":"ReplicaSet","metadata":{"name":"r","namespace":"n"}}]}"#;
        let o = parse_inventory(list).unwrap();
        assert_eq!(
            (o.pods.len(), o.services.len(), o.controllers.len()),
            (1, 1, 1)
        );
        let simple = b"pods:\n- metadata: {name: p}\nservices:\n- metadata: {name: s}\n";
        let o = parse_inventory(simple).unwrap();
        assert_eq!((o.pods.len(), o.services.len()), (1, 1));
        assert_eq!(o.pods[0].namespace, "default");
        let docs = b"kind: Pod\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {name: b}\n";
        let o = parse_inventory(docs).unwrap();
        assert_eq!((o.pods.len(), o.services.len()), (1, 1));
    }

    #[test]
    fn errors_say_where() {
        let e = parse_inventory(br#"{"items":[{"kind":"Pod","metadata":{}}]}"#).unwrap_err();
        assert!(e.starts_with("items[0]"), "{e}");
        let e = parse_inventory(b"pods: 3\n").unwrap_err();
        assert!(e.contains("pods is not a list"), "{e}");
        assert!(parse_inventory(b"nodes: []\n").is_err());
        assert!(parse_inventory(b"{").unwrap_err().contains("invalid JSON"));
    }
}
