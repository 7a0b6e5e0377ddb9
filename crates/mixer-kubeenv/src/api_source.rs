//! The Kubernetes API source: LIST pods and services (paged), then WATCH each from the list's
//! resourceVersion through the host's HTTP callout. A callout is request/response, so one watch
//! call asks the server to end after `timeoutSeconds` and returns newline-delimited events; they
//! are applied (ADDED, MODIFIED, DELETED, BOOKMARK), the inventory is republished, and the next
//! watch resumes from the last resourceVersion seen. `410 Gone` (status or ERROR event) re-LISTs;
//! failures retry after a doubling backoff on PAL timers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mixer_core::pal::{CalloutError, CalloutHandle, HttpRequest, HttpResponse, MonoTime, TimerId};
use parking_lot::Mutex;
use serde_json::Value as Json;

use crate::api_wire::{Applied, Next, Resource, apply_events, encode, request};
use crate::objects::{Object, key_of, parse_object, resource_version};
use crate::params::ApiParams;
use crate::store::{Shared, bump};

/// Objects per LIST page.
pub const PAGE_SIZE: usize = 500;
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A watch that ends sooner than this with no event waits this long before the next one (a
/// server that answers at once must not be called in a tight loop).
const MIN_EMPTY_WATCH: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Watcher {
    /// The resourceVersion to watch from (`None`: LIST first).
    rv: Option<String>,
    /// Objects of the LIST in progress (several pages).
    listing: HashMap<String, Object>,
    backoff: Option<Duration>,
    timer: Option<TimerId>,
    callout: Option<CalloutHandle>,
}

/// The API source of one handler.
pub(crate) struct ApiSource {
    pub params: ApiParams,
    watchers: Mutex<[Watcher; 2]>,
}

impl ApiSource {
    pub fn new(params: ApiParams) -> Self {
        ApiSource {
            params,
            watchers: Mutex::new(Default::default()),
        }
    }

    /// Takes the outstanding timers and callouts (to cancel them).
    pub fn take_pending(&self, timers: &mut Vec<TimerId>, callouts: &mut Vec<CalloutHandle>) {
        for w in self.watchers.lock().iter_mut() {
            timers.extend(w.timer.take());
            callouts.extend(w.callout.take());
        }
    }
}

/// Starts listing and watching every resource.
pub(crate) fn start(shared: &Arc<Shared>) {
    for r in Resource::ALL {
        list(shared, r, None);
    }
}

type Done = Box<dyn FnOnce(&Arc<Shared>, Result<HttpResponse, CalloutError>) + Send>;

/// Sends a callout whose completion runs only while the handler lives.
fn call(shared: &Arc<Shared>, r: Resource, req: HttpRequest, done: Done) {
    let weak = Arc::downgrade(shared);
    let handle = shared.dispatcher.http(
        req,
        Box::new(move |result| {
            if let Some(shared) = weak.upgrade() {
                done(&shared, result);
            }
        }),
    );
    if let Some(api) = &shared.api {
        api.watchers.lock()[r as usize].callout = Some(handle);
    }
}

/// Runs `then` after `delay`, while the handler lives.
fn after(shared: &Arc<Shared>, r: Resource, delay: Duration, then: fn(&Arc<Shared>, Resource)) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let id = shared.dispatcher.schedule(
        delay,
        Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                then(&shared, r);
            }
        }),
    );
    if let Some(api) = &shared.api {
        api.watchers.lock()[r as usize].timer = Some(id);
    }
}

fn relist(shared: &Arc<Shared>, r: Resource) {
    list(shared, r, None);
}

/// Requests one LIST page (`cont`: the continue token of the next page).
fn list(shared: &Arc<Shared>, r: Resource, cont: Option<String>) {
    let Some(api) = &shared.api else { return };
    if cont.is_none() {
        api.watchers.lock()[r as usize].listing.clear();
    }
    let mut query = format!("limit={PAGE_SIZE}");
    if let Some(c) = &cont {
        query.push_str(&format!("&continue={}", encode(c)));
    }
    let req = request(shared, &api.params, r, query, api.params.request_timeout);
    call(shared, r, req, Box::new(move |s, res| on_list(s, r, res)));
}

fn on_list(shared: &Arc<Shared>, r: Resource, result: Result<HttpResponse, CalloutError>) {
    let Some(api) = &shared.api else { return };
    let Some(body) = answer_body(shared, r, "LIST", result, relist) else {
        return;
    };
    let page: Json = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return failed(
                shared,
                r,
                format!("LIST {}: invalid JSON: {e}", r.plural()),
                relist,
            );
        }
    };
    let Some(Json::Array(items)) = page.get("items") else {
        return failed(
            shared,
            r,
            format!("LIST {}: no `items`", r.plural()),
            relist,
        );
    };
    let mut skipped = Vec::new();
    {
        let mut w = api.watchers.lock();
        let listing = &mut w[r as usize].listing;
        for item in items {
            match (key_of(item), parse_object(item, r.hint())) {
                (Some(key), Ok(Some(obj))) => {
                    listing.insert(key, obj);
                }
                (_, Err(e)) => skipped.push(e),
                _ => {}
            }
        }
    }
    for e in skipped {
        shared.error(format!("LIST {}: skipped {e}", r.plural()));
    }
    let next = page
        .pointer("/metadata/continue")
        .and_then(Json::as_str)
        .filter(|c| !c.is_empty());
    if let Some(c) = next {
        return list(shared, r, Some(c.to_string()));
    }
    let rv = resource_version(&page).map(str::to_string);
    let has_rv = rv.is_some();
    let listing = {
        let mut w = api.watchers.lock();
        let w = &mut w[r as usize];
        w.rv = rv;
        std::mem::take(&mut w.listing)
    };
    {
        let mut s = shared.sources.lock();
        match r {
            Resource::Pods => {
                s.api_pods = listing
                    .into_iter()
                    .filter_map(|(k, o)| match o {
                        Object::Pod(p) => Some((k, p)),
                        _ => None,
                    })
                    .collect();
            }
            Resource::Services => {
                s.api_services = listing
                    .into_iter()
                    .filter_map(|(k, o)| match o {
                        Object::Service(p) => Some((k, p)),
                        _ => None,
                    })
                    .collect();
            }
        }
    }
    shared.publish();
    bump(&shared.stats.api_lists);
    // The backoff is reset once a watch ends normally, not here: a LIST that succeeds before
    // every watch fails must not make the retries tight.
    if has_rv {
        watch(shared, r);
    } else {
        let why = format!("LIST {}: no resourceVersion to watch from", r.plural());
        failed(shared, r, why, relist);
    }
}

/// Starts one watch call from the last resourceVersion.
fn watch(shared: &Arc<Shared>, r: Resource) {
    let Some(api) = &shared.api else { return };
    let Some(rv) = api.watchers.lock()[r as usize].rv.clone() else {
        return list(shared, r, None);
    };
    let secs = api.params.watch_timeout.as_millis().div_ceil(1000).max(1);
    let query = format!(
        "watch=1&resourceVersion={}&timeoutSeconds={secs}&allowWatchBookmarks=true",
        encode(&rv)
    );
    let timeout = api.params.watch_timeout + api.params.request_timeout;
    let req = request(shared, &api.params, r, query, timeout);
    let started = shared.dispatcher.clock().monotonic();
    call(
        shared,
        r,
        req,
        Box::new(move |s, res| on_watch(s, r, res, started)),
    );
}

fn on_watch(
    shared: &Arc<Shared>,
    r: Resource,
    result: Result<HttpResponse, CalloutError>,
    started: MonoTime,
) {
    let Some(body) = answer_body(shared, r, "WATCH", result, watch) else {
        return;
    };
    let Applied {
        changed,
        seen,
        rv,
        next,
    } = apply_events(shared, r, &body);
    bump(&shared.stats.api_watches);
    if changed > 0 {
        shared.publish();
    }
    if let Some(api) = &shared.api {
        let mut w = api.watchers.lock();
        let w = &mut w[r as usize];
        if rv.is_some() {
            w.rv = rv;
        }
        if matches!(next, Next::Watch) {
            // A watch that ended normally: the API works again.
            w.backoff = None;
        }
    }
    match next {
        Next::Relist => {
            bump(&shared.stats.api_relists);
            list(shared, r, None);
        }
        Next::RelistLater(why) => {
            bump(&shared.stats.api_relists);
            failed(shared, r, why, relist);
        }
        Next::Watch => {
            let quick = shared.dispatcher.clock().monotonic().since(started) < MIN_EMPTY_WATCH;
            if seen == 0 && quick {
                after(shared, r, MIN_EMPTY_WATCH, watch);
            } else {
                watch(shared, r);
            }
        }
    }
}

/// Counts a failure and runs `retry` after the backoff, which doubles each time.
/// The body of a 200 answer to a LIST or WATCH (`verb`). A 410 (the continue token or the
/// resource version expired) starts the LIST again; any other answer or a failed call goes to
/// [`failed`] with `retry`. `None`: the answer was handled here.
fn answer_body(
    shared: &Arc<Shared>,
    r: Resource,
    verb: &str,
    result: Result<HttpResponse, CalloutError>,
    retry: fn(&Arc<Shared>, Resource),
) -> Option<bytes::Bytes> {
    match result {
        Ok(resp) if resp.status == 200 => Some(resp.body),
        Ok(resp) if resp.status == 410 => {
            bump(&shared.stats.api_relists);
            list(shared, r, None);
            None
        }
        Ok(resp) => {
            let why = format!("{verb} {}: HTTP {}", r.plural(), resp.status);
            failed(shared, r, why, retry);
            None
        }
        Err(e) => {
            failed(shared, r, format!("{verb} {}: {e}", r.plural()), retry);
            None
        }
    }
}

fn failed(shared: &Arc<Shared>, r: Resource, why: String, retry: fn(&Arc<Shared>, Resource)) {
    let Some(api) = &shared.api else { return };
    bump(&shared.stats.api_failures);
    let delay = {
        let mut w = api.watchers.lock();
        let w = &mut w[r as usize];
        let delay = w.backoff.unwrap_or(INITIAL_BACKOFF);
        w.backoff = Some((delay * 2).min(MAX_BACKOFF));
        delay
    };
    shared.error(format!("{why}; retrying in {delay:?}"));
    after(shared, r, delay, retry);
}
