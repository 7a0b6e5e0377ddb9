//! The API source over real HTTP: a fake API server on 127.0.0.1 answers LIST and watch calls
//! made through `mixer-host`'s HTTP client, and the inventory follows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mixer_core::{CompileOptions, compile};
use mixer_host::EventLoop;
use mixer_kubeenv::KubeEnvHandler;
use parking_lot::Mutex;
use serde_json::json;

/// Most connections the fake server serves before it stops by itself.
const MAX_CONNECTIONS: usize = 200;

fn head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn answer(path: &str) -> String {
    let strip = |mut o: serde_json::Value| {
        o.as_object_mut().unwrap().remove("kind");
        o
    };
    if path.starts_with("/api/v1/pods?limit=") {
        json!({"kind": "PodList", "metadata": {"resourceVersion": "10"},
            "items": [strip(bookinfo_items().remove(0))]})
        .to_string()
    } else if path.starts_with("/api/v1/services?limit=") {
        json!({"kind": "ServiceList", "metadata": {"resourceVersion": "5"},
            "items": [strip(service("productpage", "default", json!({"app": "productpage"})))]})
        .to_string()
    } else if path.contains("pods?watch=1&resourceVersion=10&") {
        let mut reviews = bookinfo_items().remove(1);
        reviews["metadata"]["resourceVersion"] = json!("11");
        json!({"type": "ADDED", "object": reviews}).to_string() + "\n"
    } else {
        // Nothing new: end the watch soon with no events.
        std::thread::sleep(Duration::from_millis(50));
        String::new()
    }
}

#[test]
fn list_and_watch_through_a_real_http_client() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let server = {
        let (stop, heads) = (stop.clone(), heads.clone());
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) && served < MAX_CONNECTIONS {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                served += 1;
                stream.set_nonblocking(false).unwrap();
                let h = head(&mut stream);
                let path = h.split_whitespace().nth(1).unwrap_or("").to_string();
                heads.lock().push(h);
                let body = answer(&path);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
    };

    let event_loop = EventLoop::new();
    let params = json!({"kubernetes_api": {
        "url": format!("http://127.0.0.1:{port}"), "token": "s3cret", "watch_timeout": "1s"}});
    let snapshot = compile(
        &config(params),
        &registry(),
        &event_loop.platform(),
        None,
        &CompileOptions::default(),
    )
    .unwrap();
    let handler = snapshot
        .handler("kubernetesenv.istio-system")
        .unwrap()
        .handler
        .as_any()
        .and_then(|a| a.downcast_ref::<KubeEnvHandler>())
        .unwrap();
    let reviews_seen = || {
        handler
            .inventory()
            .by_ip("10.1.0.11".parse().unwrap())
            .is_some()
    };
    assert!(
        event_loop.run_until(reviews_seen, Duration::from_secs(60)),
        "the watch event arrived"
    );
    let inv = handler.inventory();
    let pp = inv
        .by_uid("kubernetes://productpage-v1-7d9f8b5c6d-x7k2p.default")
        .unwrap();
    assert_eq!(pp.workload.name, "productpage-v1");
    assert_eq!(
        pp.service.as_ref().unwrap().host,
        "productpage.default.svc.cluster.local"
    );
    assert_eq!(inv.pods(), 2);
    assert_eq!(inv.services(), 1);
    let heads = heads.lock().clone();
    assert!(
        heads
            .iter()
            .all(|h| h.contains("Authorization: Bearer s3cret")),
        "{heads:?}"
    );
    drop(snapshot);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}
