//! Each thread's most recent lookup, reused when the next request names the same pods in the
//! same inventory version: a proxy thread sees the same source and destination pods request
//! after request, and the reuse costs one comparison of the inputs instead of three hash
//! lookups, an allocation and the reference counts of the matched pods.
//!
//! Versions come from one process-wide counter, so a version names one inventory of one
//! handler: a remembered lookup can never answer for another handler or a later inventory.
//! A thread keeps one lookup (the inventory entries it matched stay alive until the thread's
//! next miss or its end).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mixer_attr::Value;
use mixer_core::adapter::ApaOutput;

/// Inventory versions, unique in the process.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// A version no inventory had before.
pub(crate) fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// A lookup's inputs, encoded: per input a tag, then its bytes (strings with their length).
#[derive(Default)]
pub(crate) struct Key(Vec<u8>);

impl Key {
    /// Encodes `inputs` (each absent or a string, IP or integer); `false` when one has another
    /// type (such requests are not remembered).
    fn encode<'v>(&mut self, inputs: impl IntoIterator<Item = Option<&'v Value<'v>>>) -> bool {
        let b = &mut self.0;
        b.clear();
        for input in inputs {
            match input {
                None => b.push(0),
                Some(Value::String(s)) => {
                    b.push(1);
                    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
                Some(Value::IpAddress(std::net::IpAddr::V4(ip))) => {
                    b.push(2);
                    b.extend_from_slice(&ip.octets());
                }
                Some(Value::IpAddress(std::net::IpAddr::V6(ip))) => {
                    b.push(3);
                    b.extend_from_slice(&ip.octets());
                }
                Some(Value::Int64(i)) => {
                    b.push(4);
                    b.extend_from_slice(&i.to_le_bytes());
                }
                Some(_) => return false,
            }
        }
        true
    }

    /// True when `inputs` encode to this key: compared in place, nothing is written.
    #[inline]
    fn matches<'v>(&self, inputs: impl IntoIterator<Item = Option<&'v Value<'v>>>) -> bool {
        let mut rest = self.0.as_slice();
        for input in inputs {
            let next = match input {
                None => rest.strip_prefix(&[0u8][..]),
                Some(Value::String(s)) => rest
                    .strip_prefix(&[1u8][..])
                    .and_then(|r| r.strip_prefix(&(s.len() as u64).to_le_bytes()[..]))
                    .and_then(|r| r.strip_prefix(s.as_bytes())),
                Some(Value::IpAddress(std::net::IpAddr::V4(ip))) => rest
                    .strip_prefix(&[2u8][..])
                    .and_then(|r| r.strip_prefix(&ip.octets()[..])),
                Some(Value::IpAddress(std::net::IpAddr::V6(ip))) => rest
                    .strip_prefix(&[3u8][..])
                    .and_then(|r| r.strip_prefix(&ip.octets()[..])),
                Some(Value::Int64(i)) => rest
                    .strip_prefix(&[4u8][..])
                    .and_then(|r| r.strip_prefix(&i.to_le_bytes()[..])),
                Some(_) => None,
            };
            match next {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

struct Remembered {
    version: u64,
    key: Key,
    output: Option<Arc<dyn ApaOutput>>,
}

thread_local! {
    static RECENT: RefCell<Remembered> = const {
        RefCell::new(Remembered { version: 0, key: Key(Vec::new()), output: None })
    };
}

/// This thread's output for `inputs` in inventory `version`, if it was the last one looked up;
/// otherwise `look_up()`'s, remembered when the inputs can be.
#[inline]
pub(crate) fn get_or<'v, I>(
    version: u64,
    inputs: impl Fn() -> I,
    look_up: impl FnOnce() -> Arc<dyn ApaOutput>,
) -> Arc<dyn ApaOutput>
where
    I: IntoIterator<Item = Option<&'v Value<'v>>>,
{
    let hit = RECENT.try_with(|r| {
        let r = r.try_borrow().ok()?;
        if r.version != version || !r.key.matches(inputs()) {
            return None;
        }
        r.output.clone()
    });
    if let Ok(Some(output)) = hit {
        return output;
    }
    let output = look_up();
    let _ = RECENT.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            if r.key.encode(inputs()) {
                r.version = version;
                r.output = Some(output.clone());
            } else {
                r.version = 0;
                r.output = None;
            }
        }
    });
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &[Option<Value<'static>>]) -> Vec<u8> {
        let mut k = Key::default();
        assert!(k.encode(v.iter().map(Option::as_ref)));
        assert!(k.matches(v.iter().map(Option::as_ref)));
        k.0
    }

    #[test]
    fn keys_tell_inputs_types_and_lengths_apart() {
        let s = |x: &'static str| Value::str(x);
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_ne!(enc(&[Some(s("ab")), None]), enc(&[None, Some(s("ab"))]));
        assert_ne!(
            enc(&[Some(s("ab")), Some(s(""))]),
            enc(&[Some(s("a")), Some(s("b"))])
        );
        assert_ne!(
            enc(&[Some(Value::IpAddress(ip))]),
            enc(&[Some(Value::Int64(0x0100_000a))])
        );
        assert_eq!(enc(&[Some(s("ab")), None]), enc(&[Some(s("ab")), None]));
        let mut k = Key::default();
        assert!(k.encode([Some(&s("ab")), None]));
        assert!(!k.matches([Some(&s("ab"))]), "fewer inputs");
        assert!(!k.matches([Some(&s("ab")), None, None]), "more inputs");
        assert!(!k.matches([Some(&s("ac")), None]));
        // Other types are not remembered.
        assert!(!k.encode([Some(&Value::Bool(true))]));
        assert!(!k.matches([Some(&Value::Bool(true))]));
    }

    #[test]
    fn a_lookup_is_reused_only_for_its_version_and_inputs() {
        let out: Arc<dyn ApaOutput> = Arc::new(mixer_core::adapter::ApaValues(Vec::new()));
        let (a, b) = (Value::str("a"), Value::str("b"));
        let calls = std::cell::Cell::new(0);
        let get = |version: u64, input: &Value<'static>| {
            get_or(
                version,
                || [Some(input)],
                || {
                    calls.set(calls.get() + 1);
                    out.clone()
                },
            )
        };
        let v = next_version();
        assert!(Arc::ptr_eq(&get(v, &a), &out));
        get(v, &a);
        assert_eq!(calls.get(), 1, "the second is remembered");
        get(v, &b);
        assert_eq!(calls.get(), 2);
        get(v, &a);
        assert_eq!(calls.get(), 3, "one lookup per thread: `b` replaced `a`");
        get(next_version(), &a);
        assert_eq!(calls.get(), 4, "a new inventory version");
        // Inputs that cannot be remembered are looked up every time.
        let t = Value::Bool(true);
        get(v, &t);
        get(v, &t);
        assert_eq!(calls.get(), 6);
    }
}
