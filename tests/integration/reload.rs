//! Config reload: a new file is validated and swapped in whole while a
//! stream opened before it runs on to its end on its old host; an invalid
//! file changes nothing and is reported; replicas, their health and run
//! ownership carry over for host groups that stay. The binary reloads on
//! SIGHUP and on a Kubernetes-style ConfigMap symlink swap.

use std::path::Path;

use crate::common::*;
use agentos_gateway::reload::{Trigger, reload};
use serde_json::Value;

const STARTED: &str = "event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"workflow_id\":\"a\",\"session_id\":\"S-1\",\"run_id\":\"R-1\"}\n\n";
const STEP: &str = "event: StepProgress\ndata: {\"event\":\"StepProgress\",\"run_id\":\"R-1\"}\n\n";
const DONE: &str =
    "event: WorkflowCompleted\ndata: {\"event\":\"WorkflowCompleted\",\"run_id\":\"R-1\"}\n\n";

async fn get(url: String) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, json_of(&rest(r).await))
}

/// A streamed run of `a` through `base`, open once its first event arrived.
async fn open_stream(base: &str, host: &MockHost) -> (StreamControl, reqwest::Response) {
    let stream = host.stream();
    stream.send(STARTED).await;
    let mut r = client()
        .post(format!("{base}/workflows/a/runs"))
        .form(&[("message", "go")])
        .send()
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), STARTED.as_bytes());
    (stream, r)
}

fn write(path: &Path, toml: &str) {
    std::fs::write(path, toml).unwrap();
}

#[tokio::test]
async fn reloads_swap_routes_while_an_open_stream_runs_to_its_end() {
    let (host_a, host_b) = (MockHost::start("A").await, MockHost::start("B").await);
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    let first = workflow("a", &host_a.url, "a");
    write(&path, &first);
    let gw = Gateway::start(&first).await;
    assert_eq!(get(gw.url("/workflows/a")).await.1["name"], "a on A");
    let (stream, mut r) = open_stream(&gw.url, &host_a).await;

    // A bad file first: refused, nothing changes, the stream goes on.
    write(&path, "[[workflows]]\nid = \"a\"\n");
    assert!(!reload(&gw.state, &path, Trigger::Signal).await);
    stream.send(STEP).await;
    assert_eq!(next_chunk(&mut r).await.unwrap(), STEP.as_bytes());

    // `a` moves to host B and `b` appears.
    write(
        &path,
        &format!(
            "{}{}",
            workflow("a", &host_b.url, "a"),
            workflow("b", &host_b.url, "b")
        ),
    );
    assert!(reload(&gw.state, &path, Trigger::Signal).await);
    let (status, doc) = get(gw.url("/workflows/b")).await;
    assert_eq!((status, &doc["name"]), (200, &Value::from("b on B")));
    // Not the document cached for the old definition.
    assert_eq!(get(gw.url("/workflows/a")).await.1["name"], "a on B");

    // The stream opened before the reload keeps its host and completes.
    stream.send(STEP).await;
    assert_eq!(next_chunk(&mut r).await.unwrap(), STEP.as_bytes());
    stream.send(DONE).await;
    stream.finish();
    assert_eq!(rest(r).await, DONE.as_bytes());
    assert_eq!(host_b.runs(), 0, "the open run never moved");

    // `b` removed: new requests get AgentOS's 404.
    write(&path, &workflow("a", &host_b.url, "a"));
    assert!(reload(&gw.state, &path, Trigger::Signal).await);
    let (status, body) = get(gw.url("/workflows/b")).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "Workflow not found");
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_is_reported() {
    let host = MockHost::start("A").await;
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    let good = workflow("a", &host.url, "a");
    write(&path, &good);
    let gw = Gateway::start(&good).await;

    for bad in [
        // A type error.
        format!(
            "{good}\n[[workflows]]\nid = 7\nbase_url = \"{}\"\n",
            host.url
        ),
        // Valid TOML that validates to nothing exposed.
        String::from("[server]\n"),
        // Not TOML.
        String::from("[[workflows]\nid = \"a\""),
    ] {
        write(&path, &bad);
        assert!(!reload(&gw.state, &path, Trigger::Signal).await, "{bad}");
        assert_eq!(get(gw.url("/workflows/a")).await.0, 200, "{bad}");
    }
    let (_, view) = get(gw.admin_url("/gateway/config")).await;
    assert_eq!(view["reloads"]["error"], 3);
    assert_eq!(view["last_reload"]["result"], "error");
    let error = view["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("gateway.toml:1:"), "{error}");
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains("agentos_gateway_config_reloads_total{result=\"error\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("agentos_gateway_config_last_reload_successful 0"));

    // A file event with unchanged text is no reload; a good file is.
    write(&path, &format!("{good}{}", workflow("b", &host.url, "b")));
    assert!(reload(&gw.state, &path, Trigger::FileChanged).await);
    assert!(!reload(&gw.state, &path, Trigger::FileChanged).await);
    assert_eq!(get(gw.url("/workflows/b")).await.0, 200);
    let metrics = scrape(&gw).await;
    assert!(metrics.contains("agentos_gateway_config_reloads_total{result=\"ok\"} 1"));
    assert!(metrics.contains("agentos_gateway_config_last_reload_successful 1"));
}

#[tokio::test]
async fn replicas_and_run_owners_carry_over_a_reload() {
    let (h1, h2) = (MockHost::start("one").await, MockHost::start("two").await);
    let other = MockHost::start("other").await;
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    let group = format!(
        "[[workflows]]\nid = \"a\"\nbase_urls = [\"{}\", \"{}\"]\n",
        h1.url, h2.url
    );
    write(&path, &group);
    let gw = Gateway::start(&group).await;
    // Whichever replica the run lands on streams it.
    let (c1, c2) = (h1.stream(), h2.stream());
    c1.send(STARTED).await;
    c2.send(STARTED).await;
    let mut r = client()
        .post(gw.url("/workflows/a/runs"))
        .form(&[("message", "go")])
        .send()
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), STARTED.as_bytes());
    let (owner, bystander, control) = if h1.runs() == 1 {
        (&h1, &h2, c1)
    } else {
        (&h2, &h1, c2)
    };

    // Another workflow on another host; `a`'s group is unchanged.
    write(&path, &format!("{group}{}", workflow("b", &other.url, "b")));
    assert!(reload(&gw.state, &path, Trigger::Signal).await);

    // The group in service counts the stream opened before the reload: the
    // same replica, not a new one.
    let (_, view) = get(gw.admin_url("/gateway/upstreams")).await;
    let replicas = view["host_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["workflows"] == serde_json::json!(["a"]))
        .unwrap()["replicas"]
        .as_array()
        .unwrap()
        .clone();
    let in_flight =
        |url: &str| replicas.iter().find(|r| r["base_url"] == url).unwrap()["in_flight"].clone();
    assert_eq!(in_flight(&owner.url), 1);
    assert_eq!(in_flight(&bystander.url), 0);

    // The cancel reaches the owner alone (no fan-out: the owner is known).
    let cancel = client()
        .post(gw.url("/workflows/a/runs/R-1/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let cancels = |host: &MockHost| {
        host.recorded()
            .iter()
            .filter(|r| r.path_and_query.ends_with("/runs/R-1/cancel"))
            .count()
    };
    assert_eq!((cancels(owner), cancels(bystander)), (1, 0));
    control.send(DONE).await;
    control.finish();
    assert_eq!(rest(r).await, DONE.as_bytes());
}

fn admin_get(gw: &GatewayProcess, path: &str) -> impl Future<Output = (u16, Value)> {
    get(gw.admin_url(path))
}

#[tokio::test]
async fn the_binary_reloads_on_a_file_change_and_on_sighup() {
    let host = MockHost::start("A").await;
    let gw = GatewayProcess::spawn(&workflow("a", &host.url, "a"), &[]);
    let path = gw.config_path().to_owned();
    let good = std::fs::read_to_string(&path).unwrap();
    let gw_ref = &gw;

    // Saving a bad file: refused, logged with its line and key.
    write(
        &path,
        &format!("{good}[[workflows]]\nid = \"b\"\nbase_url = 5\n"),
    );
    eventually("the refused reload is reported", || async move {
        admin_get(gw_ref, "/gateway/config").await.1["reloads"]["error"] == 1
    })
    .await;
    let refused = gw
        .log()
        .into_iter()
        .find(|line| line.contains("config reload refused"))
        .unwrap();
    let line_of_key = good.lines().count() + 3;
    assert!(
        refused.contains(&format!("gateway.toml:{line_of_key}:")) && refused.contains("base_url"),
        "{refused}"
    );
    assert_eq!(get(gw.url("/workflows/a")).await.0, 200);
    assert_eq!(get(gw.url("/workflows/b")).await.0, 404);

    // Saving a good one: applied.
    write(&path, &format!("{good}{}", workflow("b", &host.url, "b")));
    eventually("the reload is applied", || async move {
        get(gw_ref.url("/workflows/b")).await.0 == 200
    })
    .await;
    let (_, view) = admin_get(&gw, "/gateway/config").await;
    assert_eq!(view["last_reload"]["trigger"], "file changed");

    // SIGHUP reloads even an unchanged file (and does not end the process,
    // as its default action would).
    gw.hang_up();
    eventually("SIGHUP reloads", || async move {
        let view = admin_get(gw_ref, "/gateway/config").await.1;
        view["reloads"]["ok"] == 2 && view["last_reload"]["trigger"] == "SIGHUP"
    })
    .await;
    assert_eq!(get(gw.url("/workflows/b")).await.0, 200);
}

/// The layout the kubelet gives a ConfigMap volume: the file is a symlink
/// through `..data`, itself a symlink to a timestamped directory, and an
/// update swaps `..data` with a rename.
fn configmap_version(dir: &Path, version: &str, toml: &str) {
    let data = dir.join(version);
    std::fs::create_dir(&data).unwrap();
    write(&data.join("gateway.toml"), toml);
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn a_configmap_update_is_picked_up_without_a_signal() {
    let host = MockHost::start("A").await;
    let dir = TempDir::new();
    let head = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let first = format!("{head}{}", workflow("a", &host.url, "a"));
    configmap_version(&dir.0, "..2026_12_03_v1", &first);
    let path = dir.0.join("gateway.toml");
    std::os::unix::fs::symlink("..data/gateway.toml", &path).unwrap();
    let gw = GatewayProcess::spawn_file(dir, &path, false, &[]);
    assert_eq!(get(gw.url("/workflows/b")).await.0, 404);

    let config_dir = path.parent().unwrap();
    let second = format!("{first}{}", workflow("b", &host.url, "b"));
    configmap_version(config_dir, "..2026_12_03_v2", &second);
    std::fs::remove_dir_all(config_dir.join("..2026_12_03_v1")).unwrap();
    let gw_ref = &gw;
    eventually("the new ConfigMap version is served", || async move {
        get(gw_ref.url("/workflows/b")).await.0 == 200
    })
    .await;
    let (_, view) = admin_get(&gw, "/gateway/config").await;
    assert_eq!(view["last_reload"]["trigger"], "file changed");
    assert_eq!(view["pending_restart"], serde_json::json!([]));
}
