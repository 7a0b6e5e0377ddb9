//! `jwt`: an attribute-producing adapter that verifies JSON Web Tokens against a key set (JWKS)
//! and produces Istio's `request.auth.*` attributes from the verified claims.
//!
//! ```yaml
//! kind: handler
//! metadata: {name: jwt}
//! spec:
//!   compiledAdapter: jwt
//!   params:
//!     issuer: https://accounts.example.com      # or issuers: [...]; required
//!     audiences: [bookinfo]                     # the token must carry one of them, when set
//!     jwks_uri: http://keys.example/jwks.json   # or jwks: '<JWKS JSON>', or jwks_file: /path
//!     jwks_refresh_interval: 10m                # jwks_uri only
//!     algorithms: [RS256, ES256, EdDSA]         # the default; HS256 needs an `oct` key
//!     clock_skew: 60s                           # tolerance for exp / nbf
//!     cache_duration: 5m                        # longest reuse of one verification
//!     token_prefix: "Bearer "                   # stripped case-insensitively; "" for none
//!   dispatch: {failurePolicy: FAIL_CLOSE}
//! ---
//! kind: jwt
//! metadata: {name: auth}
//! spec:
//!   token: request.headers["authorization"] | ""
//!   attribute_bindings:
//!     request.auth.principal: $out.principal | ""
//!     request.auth.claims: $out.claims | emptyStringMap()
//! ---
//! kind: rule
//! metadata: {name: authn}
//! spec:
//!   actions: [{handler: jwt, instances: [auth.jwt]}]
//! ```
//!
//! An empty token (or one without the prefix) produces nothing. A token that does not verify is
//! a handler failure with status UNAUTHENTICATED: fail-close denies the check, fail-open leaves
//! the attributes absent. Verified outputs are cached by the pipeline per token for the token's
//! remaining lifetime, at most `cache_duration`. Time is the request's PAL wall clock.
#![forbid(unsafe_code)]

mod jwks;
mod output;
mod params;
mod refresh;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mixer_core::adapter::{
    Adapter, AdapterError, ApaContext, AttributeProducer, Handler, HandlerConfig, Produced,
};
use mixer_core::instance::InstanceView;
use mixer_core::{Code, Status};
use parking_lot::Mutex;

pub use jwks::{JwksError, KeySet};
pub use verify::Rejection;

use params::{JwksSource, Params, UriSource};

/// Counters of one `jwt` handler.
#[derive(Debug, Default)]
pub struct JwtStats {
    /// Tokens verified or rejected (answers the pipeline reuses from its cache are not counted).
    pub verifications: AtomicU64,
    pub verified: AtomicU64,
    pub rejected: AtomicU64,
    /// Requests with a token that arrived before any key set was fetched.
    pub unavailable: AtomicU64,
    /// Completed `jwks_uri` fetches, good or not.
    pub jwks_fetches: AtomicU64,
    /// Fetches that failed or brought an unusable key set (the last good set stayed).
    pub jwks_refresh_failures: AtomicU64,
}

/// The `jwt` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct JwtAdapter;

/// A built `jwt` handler.
pub struct JwtHandler {
    name: String,
    policy: verify::Policy,
    pub(crate) keys: ArcSwapOption<KeySet>,
    pub(crate) uri: Option<UriSource>,
    pub(crate) stats: JwtStats,
    pub(crate) last_jwks_error: Mutex<Option<String>>,
    cache_duration: Duration,
    token_prefix: String,
    positions: output::Positions,
}

impl std::fmt::Debug for JwtHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtHandler")
            .field("name", &self.name)
            .field("issuers", &self.policy.issuers)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl Adapter for JwtAdapter {
    fn name(&self) -> &'static str {
        "jwt"
    }
    fn templates(&self) -> &'static [&'static str] {
        &["jwt"]
    }
    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        let handler = JwtHandler::new(config)?;
        if handler.uri.is_some() {
            refresh::fetch(Arc::downgrade(&handler), config.platform.dispatcher.clone());
        }
        Ok(handler)
    }
}

impl JwtHandler {
    fn new(config: &HandlerConfig<'_>) -> Result<Arc<JwtHandler>, AdapterError> {
        let p = Params::parse(config.params)?;
        let (keys, uri) = match p.source {
            JwksSource::Fixed(set) => (Some(Arc::new(set)), None),
            JwksSource::Uri(u) => (None, Some(u)),
        };
        Ok(Arc::new(JwtHandler {
            name: config.name.to_string(),
            policy: verify::Policy {
                issuers: p.issuers,
                audiences: p.audiences,
                algorithms: p.algorithms,
                clock_skew: p.clock_skew,
            },
            keys: ArcSwapOption::new(keys),
            uri,
            stats: JwtStats::default(),
            last_jwks_error: Mutex::new(None),
            cache_duration: p.cache_duration,
            token_prefix: p.token_prefix,
            positions: output::Positions::resolve()?,
        }))
    }

    /// The handler's counters.
    pub fn stats(&self) -> &JwtStats {
        &self.stats
    }

    /// Usable keys in the current key set (0 until a `jwks_uri` set is fetched).
    pub fn key_count(&self) -> usize {
        self.keys.load().as_deref().map_or(0, KeySet::len)
    }

    /// Why the last `jwks_uri` fetch failed, if it did.
    pub fn last_jwks_error(&self) -> Option<String> {
        self.last_jwks_error.lock().clone()
    }

    /// The token without its prefix; `None` when there is no token.
    fn token<'t>(&self, header: &'t str) -> Option<&'t str> {
        let prefix = self.token_prefix.as_bytes();
        let rest = if prefix.is_empty() {
            header
        } else {
            let head = header.as_bytes().get(..prefix.len())?;
            if !head.eq_ignore_ascii_case(prefix) {
                return None;
            }
            header.get(prefix.len()..)?
        };
        Some(rest.trim()).filter(|t| !t.is_empty())
    }

    /// How long the pipeline may reuse a verification of a token expiring at `exp`.
    fn cache_for(&self, exp: Option<f64>, now_secs: f64) -> Option<Duration> {
        let cap = self.cache_duration;
        if cap.is_zero() {
            return None;
        }
        match exp {
            None => Some(cap),
            Some(exp) if exp > now_secs => Some(
                Duration::try_from_secs_f64(exp - now_secs)
                    .unwrap_or(cap)
                    .min(cap),
            ),
            Some(_) => None,
        }
    }
}

impl Handler for JwtHandler {
    fn as_attribute_producer(&self) -> Option<&dyn AttributeProducer> {
        Some(self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl AttributeProducer for JwtHandler {
    fn produce(&self, view: &InstanceView<'_>, ctx: &ApaContext<'_>) -> Result<Produced, Status> {
        let header = view.get("token").and_then(|v| v.as_str()).unwrap_or("");
        let Some(token) = self.token(header) else {
            return Ok(Produced::nothing());
        };
        let keys = self.keys.load();
        let Some(keys) = keys.as_deref() else {
            self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(Status::new(
                Code::UNAVAILABLE,
                format!("{}: the key set is not fetched yet", self.name),
            ));
        };
        self.stats.verifications.fetch_add(1, Ordering::Relaxed);
        match self.policy.verify(token, keys, ctx.now()) {
            Ok(v) => {
                self.stats.verified.fetch_add(1, Ordering::Relaxed);
                let now_secs = ctx.now().unix_nanos() as f64 / 1e9;
                Ok(Produced {
                    output: Arc::new(output::outputs(&v, &self.positions)),
                    cache_for: self.cache_for(v.exp, now_secs),
                    reusable: false,
                })
            }
            Err(r) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Status::new(
                    Code::UNAUTHENTICATED,
                    format!("invalid JWT: {r}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_core::pal::virtual_time::VirtualPlatform;
    use serde_json::json;

    fn handler(params: serde_json::Value) -> Arc<JwtHandler> {
        let vt = VirtualPlatform::new();
        let platform = vt.platform();
        JwtHandler::new(&HandlerConfig {
            name: "jwt.istio-system",
            params: &params,
            instances: &[],
            platform: &platform,
        })
        .unwrap()
    }

    const JWKS: &str =
        r#"{"keys":[{"kty":"oct","kid":"h","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;

    #[test]
    fn prefixes_are_stripped_case_insensitively() {
        let h = handler(json!({"issuer": "i", "jwks": JWKS}));
        assert_eq!(h.token("Bearer a.b.c"), Some("a.b.c"));
        assert_eq!(h.token("BEARER  a.b.c "), Some("a.b.c"));
        assert_eq!(h.token("Bearer"), None);
        assert_eq!(h.token("Bearer   "), None);
        assert_eq!(h.token("Basic abc"), None);
        assert_eq!(h.token("Beärer abc"), None, "non-ASCII never panics");
        let raw = handler(json!({"issuer": "i", "jwks": JWKS, "token_prefix": ""}));
        assert_eq!(raw.token(" a.b.c"), Some("a.b.c"));
        assert_eq!(raw.token(""), None);
    }

    #[test]
    fn cache_for_is_bounded_by_expiry_and_cache_duration() {
        let h = handler(json!({"issuer": "i", "jwks": JWKS, "cache_duration": "5m"}));
        let secs = Duration::from_secs;
        assert_eq!(h.cache_for(None, 100.0), Some(secs(300)));
        assert_eq!(h.cache_for(Some(160.0), 100.0), Some(secs(60)));
        assert_eq!(h.cache_for(Some(1e300), 100.0), Some(secs(300)));
        assert_eq!(h.cache_for(Some(100.0), 100.0), None, "expired within skew");
        let off = handler(json!({"issuer": "i", "jwks": JWKS, "cache_duration": "0s"}));
        assert_eq!(off.cache_for(None, 100.0), None);
    }
}
