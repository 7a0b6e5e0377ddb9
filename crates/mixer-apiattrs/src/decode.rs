//! Percent-decoding of path segments and query components (RFC 3986 `%XX`, and `+` as a space in
//! query strings). Malformed escapes are kept as written; bytes that do not form UTF-8 after
//! decoding become U+FFFD. Never panics on request input.

use std::borrow::Cow;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when `s` needs decoding (`%`, or `+` when `plus_as_space`).
fn needs_decoding(s: &str, plus_as_space: bool) -> bool {
    s.bytes().any(|b| b == b'%' || (plus_as_space && b == b'+'))
}

/// Longest run of consecutive escapes decoded on the stack; longer runs take the slow path.
const RUN: usize = 48;

/// The byte that the escape `%XX` at `i` stands for.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    let hi = hex(*bytes.get(i + 1)?)?;
    let lo = hex(*bytes.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

/// Decodes into `out` without allocating beyond `out` (runs of escapes go through a stack
/// buffer); false, with `out` unchanged, when a run is longer than [`RUN`].
fn decode_fast(out: &mut String, s: &str, plus_as_space: bool) -> bool {
    let start = out.len();
    let bytes = s.as_bytes();
    let mut run = [0u8; RUN];
    let mut n = 0;
    // Start of the literal text not yet written (always after an ASCII byte).
    let mut lit = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(b) = escape_at(bytes, i) {
            if n == 0 {
                out.push_str(s.get(lit..i).unwrap_or_default());
            }
            let Some(slot) = run.get_mut(n) else {
                out.truncate(start);
                return false;
            };
            *slot = b;
            n += 1;
            i += 3;
            lit = i;
            continue;
        }
        if n > 0 {
            out.push_str(&String::from_utf8_lossy(run.get(..n).unwrap_or_default()));
            n = 0;
        }
        if plus_as_space && bytes[i] == b'+' {
            out.push_str(s.get(lit..i).unwrap_or_default());
            out.push(' ');
            lit = i + 1;
        }
        i += 1;
    }
    if n > 0 {
        out.push_str(&String::from_utf8_lossy(run.get(..n).unwrap_or_default()));
    } else {
        out.push_str(s.get(lit..).unwrap_or_default());
    }
    true
}

/// Appends the decoded form of `s` to `out`.
pub(crate) fn decode_into(out: &mut String, s: &str, plus_as_space: bool) {
    if !needs_decoding(s, plus_as_space) {
        out.push_str(s);
        return;
    }
    if decode_fast(out, s, plus_as_space) {
        return;
    }
    let bytes = s.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(b) = escape_at(bytes, i) {
            decoded.push(b);
            i += 3;
            continue;
        }
        let b = bytes[i];
        decoded.push(if plus_as_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    out.push_str(&String::from_utf8_lossy(&decoded));
}

/// The decoded form of `s`, borrowed when there is nothing to decode.
pub(crate) fn decode(s: &str, plus_as_space: bool) -> Cow<'_, str> {
    if needs_decoding(s, plus_as_space) {
        let mut out = String::with_capacity(s.len());
        decode_into(&mut out, s, plus_as_space);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(decode("x%20y", false), "x y");
        assert_eq!(decode("x+y", false), "x+y");
        assert_eq!(decode("x+y%2B", true), "x y+");
        assert_eq!(decode("%E2%82%AC", false), "€");
        assert!(matches!(decode("plain", true), Cow::Borrowed("plain")));
    }

    #[test]
    fn malformed_input_is_kept_or_replaced() {
        assert_eq!(decode("100%", false), "100%");
        assert_eq!(decode("%zz%4", false), "%zz%4");
        assert_eq!(decode("%FF", false), "\u{FFFD}");
        assert_eq!(decode("%C3", false), "\u{FFFD}");
        assert_eq!(decode("a%C3b%A9", false), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn long_runs_of_escapes_take_the_slow_path_alike() {
        let euro = "%E2%82%AC".repeat(40);
        assert_eq!(decode(&euro, false), "€".repeat(40));
        let mut out = String::from("x");
        decode_into(&mut out, &format!("a+{euro}+b"), true);
        assert_eq!(out, format!("xa {} b", "€".repeat(40)));
        // The fast path and the slow path agree on mixed input.
        for s in ["%41%42c+d%2", "+%%41+", "%E2%82%AC%FFz", "a%20b%E2%82", ""] {
            let mut fast = String::new();
            assert!(decode_fast(&mut fast, s, true));
            let mut slow = String::new();
            decode_into(&mut slow, &format!("{s}{}", "%41".repeat(RUN + 1)), true);
            assert_eq!(slow, format!("{fast}{}", "A".repeat(RUN + 1)), "{s}");
        }
    }
}
