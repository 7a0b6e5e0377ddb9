//! A minimal blocking HTTP/1.1 client (plain TCP, `Connection: close`) for callouts.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use bytes::Bytes;
use mixer_core::pal::{CalloutError, HttpRequest, HttpResponse};

/// Largest response accepted (a callout answer, not a download).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

pub(crate) fn call(req: &HttpRequest) -> Result<HttpResponse, CalloutError> {
    let conn = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            CalloutError::Timeout
        } else {
            CalloutError::Connection(format!("{}: {e}", req.authority))
        }
    };
    let addr = req
        .authority
        .to_socket_addrs()
        .map_err(conn)?
        .next()
        .ok_or_else(|| CalloutError::Connection(format!("{}: no address", req.authority)))?;
    let timeout = req.timeout.max(std::time::Duration::from_millis(1));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(conn)?;
    stream.set_read_timeout(Some(timeout)).map_err(conn)?;
    stream.set_write_timeout(Some(timeout)).map_err(conn)?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.path,
        req.authority,
        req.body.len()
    );
    for (k, v) in &req.headers {
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(CalloutError::Connection(format!(
                "header `{k}` contains a line break"
            )));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(&req.body);
    stream.write_all(&message).map_err(conn)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(conn)?;
    parse(&raw).ok_or_else(|| {
        CalloutError::Connection(format!("{}: malformed HTTP response", req.authority))
    })
}

fn parse(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = &raw[end + 4..];
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body = body.get(..len)?;
    }
    let body = if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some(HttpResponse {
        status,
        headers,
        body: Bytes::from(body),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiXX").unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hi"[..]));
        let r = parse(
            b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"abcd"[..]));
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort").is_none());
    }
}
