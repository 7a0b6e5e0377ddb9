//! The inventory file on virtual time: reloaded when it changes, a bad or missing file keeps
//! the last good inventory (counted, logged), lookups from 4 threads during reloads each see one
//! whole inventory, and a dropped handler stops polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mixer_kubeenv::Stats;
use serde_json::json;

/// Generation `g`: pods `a` (10.0.0.1) and `b` (10.0.0.2), labelled `gen: g`, owned by
/// Deployments `a-g<g>` / `b-g<g>`, and a service `svc-g<g>` selecting `b`.
fn generation(g: u32) -> String {
    let gen_pod = |name: &str, ip: &str| {
        let hash = format!("h{g}");
        pod(
            name,
            "default",
            ip,
            json!({"gen": g.to_string(), "role": name, "pod-template-hash": hash}),
            Some(("apps/v1", "ReplicaSet", &format!("{name}-g{g}-{hash}"))),
        )
    };
    let items = vec![
        gen_pod("a", "10.0.0.1"),
        gen_pod("b", "10.0.0.2"),
        service(
            &format!("svc-g{g}"),
            "default",
            json!({"role": "b", "gen": g.to_string()}),
        ),
    ];
    serde_json::to_string(&list(items)).unwrap()
}

fn setup(g: u32) -> (Direct, std::path::PathBuf) {
    let path = scratch("reload").join("inventory.json");
    std::fs::write(&path, generation(g)).unwrap();
    let d = Direct::new(json!({ "inventory_file": path, "refresh_interval": "5s" }));
    (d, path)
}

fn gen_of(d: &Direct) -> Option<String> {
    let out = d.produce(&[("source.uid", s("kubernetes://a.default"))]);
    out.get("source_labels")
        .and_then(|l| l.as_string_map())
        .and_then(|m| m.get("gen").map(str::to_string))
}

fn counts(st: &Stats) -> (u64, u64) {
    (Stats::get(&st.file_reloads), Stats::get(&st.file_failures))
}

#[test]
fn a_changed_file_is_reloaded_at_the_next_poll() {
    let (d, path) = setup(1);
    assert_eq!(gen_of(&d).as_deref(), Some("1"));
    replace_file(&path, &generation(2));
    d.vt.advance(Duration::from_millis(4_999));
    assert_eq!(gen_of(&d).as_deref(), Some("1"), "not polled yet");
    d.vt.advance(Duration::from_millis(1));
    assert_eq!(gen_of(&d).as_deref(), Some("2"));
    let out = d.produce(&[("destination.ip", ip("10.0.0.2"))]);
    assert_eq!(out["destination_service_name"], s("svc-g2"));
    assert_eq!(out["destination_workload_name"], s("b-g2"));
    // Unchanged: no reload.
    d.vt.advance(Duration::from_secs(20));
    assert_eq!(counts(d.handler().stats()), (2, 0));
}

#[test]
fn a_bad_or_missing_file_keeps_the_last_good_inventory() {
    let (d, path) = setup(1);
    replace_file(
        &path,
        "{\"kind\": \"List\", \"items\": [{\"kind\": \"Pod\"}]}",
    );
    d.vt.advance(Duration::from_secs(5));
    assert_eq!(gen_of(&d).as_deref(), Some("1"));
    let st = d.handler().stats();
    assert_eq!(counts(st), (1, 1));
    let err = st.last_error().unwrap();
    assert!(
        err.contains("inventory.json") && err.contains("metadata.name"),
        "{err}"
    );
    // Not retried while it stays the same.
    d.vt.advance(Duration::from_secs(15));
    assert_eq!(counts(st), (1, 1));
    std::fs::remove_file(&path).unwrap();
    d.vt.advance(Duration::from_secs(5));
    assert_eq!(counts(st), (1, 2));
    assert_eq!(gen_of(&d).as_deref(), Some("1"));
    assert!(st.last_error().unwrap().contains("gone"));
    replace_file(&path, &generation(3));
    d.vt.advance(Duration::from_secs(5));
    assert_eq!(gen_of(&d).as_deref(), Some("3"));
    assert_eq!(counts(st), (2, 2));
}

#[test]
fn lookups_during_reloads_see_one_whole_inventory() {
    let (d, path) = setup(0);
    let stop = AtomicBool::new(false);
    const GENERATIONS: u32 = 40;
    let seen = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut last = 0u32;
                    let mut lookups = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let out = d.produce(&[
                            ("source.uid", s("kubernetes://a.default")),
                            ("destination.ip", ip("10.0.0.2")),
                        ]);
                        let label = |k: &str| {
                            out[k]
                                .as_string_map()
                                .unwrap()
                                .get("gen")
                                .unwrap()
                                .to_string()
                        };
                        let g: u32 = label("source_labels").parse().unwrap();
                        assert_eq!(label("destination_labels"), g.to_string());
                        assert_eq!(out["source_workload_name"], s(&format!("a-g{g}")));
                        assert_eq!(out["destination_workload_name"], s(&format!("b-g{g}")));
                        assert_eq!(out["destination_service_name"], s(&format!("svc-g{g}")));
                        assert!(g >= last, "went back from {last} to {g}");
                        last = g;
                        lookups += 1;
                    }
                    (last, lookups)
                })
            })
            .collect();
        for g in 1..=GENERATIONS {
            replace_file(&path, &generation(g));
            d.vt.advance(Duration::from_secs(5));
            assert_eq!(gen_of(&d), Some(g.to_string()));
        }
        stop.store(true, Ordering::Relaxed);
        readers
            .into_iter()
            .map(|r| r.join().expect("no reader panicked"))
            .collect::<Vec<_>>()
    });
    for (last, lookups) in seen {
        assert!(lookups > 0);
        assert!(last <= GENERATIONS);
    }
    assert_eq!(counts(d.handler().stats()), (u64::from(GENERATIONS) + 1, 0));
}

#[test]
fn a_dropped_handler_stops_polling() {
    let (d, path) = setup(1);
    assert_eq!(d.vt.pending_timers(), 1, "the poll timer");
    let vt = d.vt.clone();
    drop(d);
    vt.run_posted();
    assert_eq!(vt.pending_timers(), 0);
    std::fs::remove_file(Path::new(&path)).unwrap();
    vt.advance(Duration::from_secs(30));
    assert_eq!(vt.pending_timers(), 0);
}
