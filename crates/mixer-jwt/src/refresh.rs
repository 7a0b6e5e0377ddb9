//! Fetching a `jwks_uri` key set through the host's HTTP client (PAL callouts on the handler's
//! platform dispatcher) and refreshing it with PAL timers for as long as the handler lives.
//!
//! A failed or malformed answer keeps the last good key set in force and is counted; until a
//! first key set arrives, failed fetches are retried sooner than the refresh interval.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use mixer_core::pal::{CalloutError, Dispatcher, HttpRequest, HttpResponse};

use crate::JwtHandler;
use crate::jwks::KeySet;

/// Longest wait for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry interval while no key set was ever fetched (capped by the refresh interval).
pub(crate) const FIRST_FETCH_RETRY: Duration = Duration::from_secs(5);

fn key_set(result: Result<HttpResponse, CalloutError>) -> Result<KeySet, String> {
    match result {
        Ok(r) if r.status == 200 => KeySet::parse(&r.body).map_err(|e| e.to_string()),
        Ok(r) => Err(format!("the JWKS endpoint answered HTTP {}", r.status)),
        Err(e) => Err(e.to_string()),
    }
}

/// Fetches the key set now and schedules the next fetch when this one completes.
pub(crate) fn fetch(handler: Weak<JwtHandler>, dispatcher: Arc<dyn Dispatcher>) {
    let Some(me) = handler.upgrade() else { return };
    let Some(source) = me.uri.clone() else { return };
    drop(me);
    let request = HttpRequest {
        authority: source.authority.clone(),
        method: "GET".into(),
        path: source.path.clone(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Bytes::new(),
        timeout: FETCH_TIMEOUT.min(source.refresh),
    };
    let d = dispatcher.clone();
    let done = Box::new(move |result: Result<HttpResponse, CalloutError>| {
        let Some(me) = handler.upgrade() else { return };
        me.stats.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let next = match key_set(result) {
            Ok(set) => {
                me.keys.store(Some(Arc::new(set)));
                *me.last_jwks_error.lock() = None;
                source.refresh
            }
            Err(why) => {
                me.stats
                    .jwks_refresh_failures
                    .fetch_add(1, Ordering::Relaxed);
                *me.last_jwks_error.lock() = Some(why);
                if me.keys.load().is_some() {
                    source.refresh
                } else {
                    source.refresh.min(FIRST_FETCH_RETRY)
                }
            }
        };
        drop(me);
        let again = d.clone();
        d.schedule(next, Box::new(move || fetch(handler, again)));
    });
    let _ = dispatcher.http(request, done);
}
