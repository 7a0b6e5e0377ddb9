//! A small RESP2 client codec over a blocking TCP stream, with a deadline on every exchange and
//! strict bounds on what a reply may contain (a misbehaving server cannot make us allocate
//! without limit, recurse without limit, or wait past the deadline).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest status, error or integer line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string accepted.
const MAX_BULK: usize = 1024 * 1024;
/// Most elements in one array.
const MAX_ARRAY: usize = 1024;
/// Deepest nesting of arrays.
const MAX_DEPTH: usize = 4;
/// Read buffer size (holds at least one maximal line).
const BUF: usize = MAX_LINE + 2;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Reply>>),
}

/// Why an exchange with the server failed. Every variant leaves the connection unusable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RespError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
    #[error("the server closed the connection")]
    Closed,
    #[error("malformed reply: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> RespError {
    RespError::Malformed(what.into())
}

/// Appends `args` to `out` as one RESP command (an array of bulk strings).
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A byte source with a deadline (a socket, or a byte slice in tests).
pub(crate) trait Source {
    /// Reads some bytes into `buf`, waiting no later than `deadline`. `Ok(0)`: closed.
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, RespError>;
}

impl Source for TcpStream {
    fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, RespError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RespError::Timeout);
        }
        self.set_read_timeout(Some(left))?;
        loop {
            match self.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(RespError::Timeout);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Source for &[u8] {
    fn read_by(&mut self, buf: &mut [u8], _: Instant) -> Result<usize, RespError> {
        Ok(Read::read(self, buf)?)
    }
}

/// Buffered reader of replies from a [`Source`].
pub(crate) struct Reader<S> {
    src: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<S: Source> Reader<S> {
    pub(crate) fn new(src: S) -> Self {
        Reader {
            src,
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.src
    }

    /// Reads more bytes (compacting the buffer first if needed).
    fn fill(&mut self, deadline: Instant) -> Result<(), RespError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(malformed("line too long"));
        }
        let n = self.src.read_by(&mut self.buf[self.end..], deadline)?;
        if n == 0 {
            return Err(RespError::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// The next line without its CRLF (owned, so the buffer can move on).
    fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, RespError> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some(i) = avail[scanned.saturating_sub(1)..]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let i = i + scanned.saturating_sub(1);
                let line = avail[..i].to_vec();
                self.start += i + 2;
                return Ok(line);
            }
            scanned = avail.len();
            if scanned > MAX_LINE {
                return Err(malformed("line too long"));
            }
            self.fill(deadline)?;
        }
    }

    /// Exactly `n` bytes followed by CRLF.
    fn bulk(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, RespError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.start == self.end {
                self.fill(deadline)?;
            }
            let take = (n - out.len()).min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
        }
        while self.end - self.start < 2 {
            self.fill(deadline)?;
        }
        if &self.buf[self.start..self.start + 2] != b"\r\n" {
            return Err(malformed("bulk string not terminated by CRLF"));
        }
        self.start += 2;
        Ok(out)
    }

    /// Reads one reply, waiting no later than `deadline`.
    pub(crate) fn read(&mut self, deadline: Instant) -> Result<Reply, RespError> {
        self.read_at(deadline, 0)
    }

    fn read_at(&mut self, deadline: Instant, depth: usize) -> Result<Reply, RespError> {
        let line = self.line(deadline)?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(malformed("empty line"));
        };
        let text = || std::str::from_utf8(rest).map_err(|_| malformed("line is not UTF-8"));
        match kind {
            b'+' => Ok(Reply::Simple(text()?.to_string())),
            b'-' => Ok(Reply::Error(text()?.to_string())),
            b':' => Ok(Reply::Int(parse_int(rest)?)),
            b'$' => match parse_int(rest)? {
                -1 => Ok(Reply::Bulk(None)),
                n if n < 0 => Err(malformed(format!("bulk length {n}"))),
                n => {
                    let n = usize::try_from(n).map_err(|_| malformed("bulk length"))?;
                    if n > MAX_BULK {
                        return Err(malformed(format!(
                            "bulk string of {n} bytes (limit {MAX_BULK})"
                        )));
                    }
                    Ok(Reply::Bulk(Some(self.bulk(n, deadline)?)))
                }
            },
            b'*' => match parse_int(rest)? {
                -1 => Ok(Reply::Array(None)),
                n if n < 0 => Err(malformed(format!("array length {n}"))),
                n => {
                    let n = usize::try_from(n).map_err(|_| malformed("array length"))?;
                    if n > MAX_ARRAY {
                        return Err(malformed(format!(
                            "array of {n} elements (limit {MAX_ARRAY})"
                        )));
                    }
                    if depth >= MAX_DEPTH {
                        return Err(malformed("arrays nested too deep"));
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.read_at(deadline, depth + 1)?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
            },
            other => Err(malformed(format!("unknown reply type byte 0x{other:02x}"))),
        }
    }
}

fn parse_int(digits: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            malformed(format!(
                "`{}` is not an integer",
                String::from_utf8_lossy(digits)
            ))
        })
}

/// A connection to a Redis server.
pub(crate) struct Connection {
    reader: Reader<TcpStream>,
}

impl Connection {
    /// Connects to the first address of `target` (`host:port`) that answers within `timeout`.
    pub(crate) fn connect(target: &str, timeout: Duration) -> Result<Connection, RespError> {
        let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{target}` resolved to no address"),
        );
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Connection {
                        reader: Reader::new(stream),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    /// Writes `bytes` in full by `deadline`.
    pub(crate) fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), RespError> {
        let stream = self.reader.get_mut();
        let mut rest = bytes;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RespError::Timeout);
            }
            stream.set_write_timeout(Some(left))?;
            match stream.write(rest) {
                Ok(0) => return Err(RespError::Closed),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(RespError::Timeout);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads one reply by `deadline`.
    pub(crate) fn read(&mut self, deadline: Instant) -> Result<Reply, RespError> {
        self.reader.read(deadline)
    }

    /// Sends one command and reads its reply.
    pub(crate) fn call(&mut self, args: &[&[u8]], deadline: Instant) -> Result<Reply, RespError> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.send(&out, deadline)?;
        self.read(deadline)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, RespError> {
        let deadline = Instant::now() + Duration::from_secs(1);
        Reader::new(bytes).read(deadline)
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&mut out, &[b"EVALSHA", b"ab", b""]);
        assert_eq!(out, b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(
            parse(b"-NOSCRIPT No matching script\r\n").unwrap(),
            Reply::Error("NOSCRIPT No matching script".into())
        );
        assert_eq!(parse(b":-42\r\n").unwrap(), Reply::Int(-42));
        assert_eq!(
            parse(b"$3\r\na\r\n\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Array(None));
        assert_eq!(
            parse(b"*3\r\n:5\r\n:1000\r\n*1\r\n$0\r\n\r\n").unwrap(),
            Reply::Array(Some(vec![
                Reply::Int(5),
                Reply::Int(1000),
                Reply::Array(Some(vec![Reply::Bulk(Some(vec![]))]))
            ]))
        );
    }

    #[test]
    fn parses_replies_split_across_reads() {
        // A source that yields one byte per read.
        struct Drip<'a>(&'a [u8]);
        impl Source for Drip<'_> {
            fn read_by(&mut self, buf: &mut [u8], _: Instant) -> Result<usize, RespError> {
                match self.0.split_first() {
                    Some((b, rest)) if !buf.is_empty() => {
                        buf[0] = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let mut r = Reader::new(Drip(b"*2\r\n:7\r\n$5\r\nhello\r\n+PONG\r\n"));
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            r.read(deadline).unwrap(),
            Reply::Array(Some(vec![
                Reply::Int(7),
                Reply::Bulk(Some(b"hello".to_vec()))
            ]))
        );
        assert_eq!(r.read(deadline).unwrap(), Reply::Simple("PONG".into()));
        assert!(matches!(r.read(deadline), Err(RespError::Closed)));
    }

    #[test]
    fn rejects_malformed_and_oversized_replies() {
        for bad in [
            &b"?what\r\n"[..],
            b"\r\n",
            b":12x\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$2\r\nabcd",
            b"*-5\r\n",
            b"*1000000\r\n",
            b"$2000000\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            let r = parse(bad);
            assert!(
                matches!(r, Err(RespError::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE + 10], b"\r\n"].concat();
        assert!(matches!(parse(&long), Err(RespError::Malformed(_))));
        assert!(matches!(parse(b":12"), Err(RespError::Closed)), "truncated");
    }
}
