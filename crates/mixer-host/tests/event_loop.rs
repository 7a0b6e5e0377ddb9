//! The std host's event loop: timers, posts from other threads, and HTTP callouts against a
//! loopback server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mixer_core::pal::{CalloutError, Dispatcher, HttpRequest, HttpResponse};
use mixer_host::EventLoop;
use parking_lot::Mutex;

#[test]
fn timers_and_posts_run_on_the_loop() {
    let lp = EventLoop::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    for (ms, name) in [(30u64, "late"), (10, "early")] {
        let log = log.clone();
        lp.schedule(
            Duration::from_millis(ms),
            Box::new(move || log.lock().push(name)),
        );
    }
    let cancelled = {
        let log = log.clone();
        lp.schedule(
            Duration::from_millis(20),
            Box::new(move || log.lock().push("cancelled")),
        )
    };
    lp.cancel_timer(cancelled);
    let (lp2, log2) = (lp.clone(), log.clone());
    std::thread::spawn(move || lp2.post(Box::new(move || log2.lock().push("posted"))))
        .join()
        .unwrap();
    assert!(lp.run_until_idle(Duration::from_secs(5)));
    assert_eq!(*log.lock(), ["posted", "early", "late"]);
}

fn serve_once(response: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Read the whole request (head and Content-Length body) before answering: closing with
        // unread bytes would reset the connection under the client's read.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        s.write_all(response).unwrap();
        got
    });
    (addr, t)
}

fn request(authority: String) -> HttpRequest {
    HttpRequest {
        authority,
        method: "POST".into(),
        path: "/list".into(),
        headers: vec![("x-test".into(), "1".into())],
        body: Bytes::from_static(b"ping"),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn http_callout_completes_on_the_loop() {
    let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let lp = EventLoop::new();
    let got: Arc<Mutex<Option<Result<HttpResponse, CalloutError>>>> = Arc::default();
    let g = got.clone();
    let _h = lp.http(request(addr), Box::new(move |r| *g.lock() = Some(r)));
    assert!(lp.run_until_idle(Duration::from_secs(10)));
    let r = got.lock().take().unwrap().unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    let sent = String::from_utf8(server.join().unwrap()).unwrap();
    assert!(sent.starts_with("POST /list HTTP/1.1\r\n"), "{sent}");
    assert!(
        sent.contains("x-test: 1\r\n") && sent.ends_with("ping"),
        "{sent}"
    );
}

#[test]
fn refused_connection_and_cancel() {
    let lp = EventLoop::new();
    // A port nobody listens on: bind, learn the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let got: Arc<Mutex<Option<Result<HttpResponse, CalloutError>>>> = Arc::default();
    let g = got.clone();
    let _h = lp.http(
        request(format!("127.0.0.1:{port}")),
        Box::new(move |r| *g.lock() = Some(r)),
    );
    assert!(lp.run_until_idle(Duration::from_secs(10)));
    assert!(matches!(
        got.lock().take(),
        Some(Err(CalloutError::Connection(_)))
    ));

    let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let called = Arc::new(Mutex::new(false));
    let c = called.clone();
    let h = lp.http(request(addr), Box::new(move |_| *c.lock() = true));
    h.cancel();
    assert!(lp.run_until_idle(Duration::from_secs(10)));
    server.join().unwrap();
    assert!(!*called.lock(), "a cancelled callout never calls back");
}
