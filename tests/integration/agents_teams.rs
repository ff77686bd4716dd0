//! Agents and teams through the gateway, against in-process hosts: the fake
//! AgentOS (`agentos_gateway::fakehost`) for the documents, runs and
//! continues, and the recording mock host for byte-for-byte streams, owner
//! routing and cancels. No sleeps as synchronisation.

use std::time::Duration;

use crate::common::*;
use agentos_gateway::fakehost::{self, FakeBehavior, FakeEntry, FakeHostSpec};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Starts a fake AgentOS; it serves until the test's runtime ends.
async fn fake_host(spec: FakeHostSpec) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fakehost::serve(listener, spec, std::future::pending()));
    url
}

fn entry(id: &str, behavior: FakeBehavior) -> FakeEntry {
    FakeEntry {
        id: id.into(),
        name: format!("{id} name"),
        description: None,
        behavior,
    }
}

/// Host A: agent `helper` and team `crew`; host B: agent `helper` too (the
/// same remote id on another host) and workflow `echo`.
async fn two_hosts() -> (String, String) {
    let a = fake_host(FakeHostSpec {
        os_id: "host-a".into(),
        db_id: Some("db-a".into()),
        agents: vec![entry("helper", FakeBehavior::Echo)],
        teams: vec![entry("crew", FakeBehavior::Echo)],
        ..FakeHostSpec::default()
    })
    .await;
    let b = fake_host(FakeHostSpec {
        os_id: "host-b".into(),
        db_id: Some("db-b".into()),
        agents: vec![entry("helper", FakeBehavior::Echo)],
        workflows: vec![entry("echo", FakeBehavior::Echo)],
        ..FakeHostSpec::default()
    })
    .await;
    (a, b)
}

fn agent(id: &str, base_url: &str, agent_id: &str) -> String {
    format!("[[agents]]\nid = \"{id}\"\nbase_url = \"{base_url}\"\nagent_id = \"{agent_id}\"\n")
}

fn team(id: &str, base_url: &str, team_id: &str) -> String {
    format!("[[teams]]\nid = \"{id}\"\nbase_url = \"{base_url}\"\nteam_id = \"{team_id}\"\n")
}

async fn get_json(url: String) -> (reqwest::StatusCode, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn agents_and_teams_are_listed_and_detailed_under_gateway_ids() {
    let (a, b) = two_hosts().await;
    let toml = format!(
        "{}{}{}{}",
        agent("support", &a, "helper"),
        agent("sales", &b, "helper"),
        team("research", &a, "crew"),
        workflow("echo", &b, "echo"),
    );
    let gw = Gateway::start(&toml).await;

    let (status, agents) = get_json(gw.url("/agents")).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["support", "sales"]);
    // Whole documents, as AgentOS lists agents.
    assert_eq!(agents[0]["model"]["provider"], "Fake");
    assert_eq!(agents[1]["db_id"], "db-b");

    let (_, teams) = get_json(gw.url("/teams")).await;
    assert_eq!(teams.as_array().unwrap().len(), 1);
    assert_eq!(teams[0]["id"], "research");
    assert_eq!(teams[0]["mode"], "coordinate");
    assert_eq!(teams[0]["members"], json!([]));

    let r = client().get(gw.url("/agents/sales")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway-cache"], "hit");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(
        (doc["id"].as_str(), doc["db_id"].as_str()),
        (Some("sales"), Some("db-b"))
    );
    let (status, doc) = get_json(gw.url("/teams/research")).await;
    assert_eq!(
        (status.as_u16(), doc["id"].as_str()),
        (200, Some("research"))
    );

    // `/config` lists the hosts' summaries, under the gateway's ids.
    let (_, config) = get_json(gw.url("/config")).await;
    assert_eq!(
        config["agents"],
        json!([
            {"id":"support","name":"helper name","db_id":"db-a","model":{"id":"fake-model","provider":"Fake"},"sandboxed":false},
            {"id":"sales","name":"helper name","db_id":"db-b","model":{"id":"fake-model","provider":"Fake"},"sandboxed":false}
        ])
    );
    assert_eq!(config["teams"][0]["id"], "research");
    assert_eq!(config["teams"][0]["mode"], "coordinate");
    assert_eq!(config["workflows"][0]["id"], "echo");
    let (_, info) = get_json(gw.url("/info")).await;
    assert_eq!(
        (
            &info["agent_count"],
            &info["team_count"],
            &info["workflow_count"]
        ),
        (&json!(2), &json!(1), &json!(1))
    );
}

#[tokio::test]
async fn unknown_ids_get_agentos_s_details_and_kinds_never_mix() {
    let (a, b) = two_hosts().await;
    // Agent `x` and workflow `x` are different entries on different hosts.
    let toml = format!("{}{}", agent("x", &a, "helper"), workflow("x", &b, "echo"));
    let gw = Gateway::start(&toml).await;
    let c = client();
    for (method, path, detail) in [
        ("GET", "/agents/nope", "Agent not found"),
        ("POST", "/agents/nope/runs", "Agent not found"),
        ("GET", "/teams/x", "Team not found"),
        ("POST", "/teams/x/runs/r/cancel", "Team not found"),
        ("GET", "/workflows/nope", "Workflow not found"),
        ("POST", "/agents/nope/sessions/s/compact", "Agent not found"),
        // AgentOS has no compact for teams: the route itself is unknown.
        ("POST", "/teams/x/sessions/s/compact", "Not Found"),
    ] {
        let r = c
            .request(method.parse().unwrap(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "detail": detail }),
            "{path}"
        );
    }
    let (_, agent_doc) = get_json(gw.url("/agents/x")).await;
    let (_, workflow_doc) = get_json(gw.url("/workflows/x")).await;
    assert_eq!(agent_doc["db_id"], "db-a");
    assert_eq!(workflow_doc["db_id"], "db-b");
    assert!(workflow_doc.get("steps").is_some());
}

#[tokio::test]
async fn agent_and_team_runs_json_stream_lookup_and_continue() {
    let (a, _) = two_hosts().await;
    let toml = format!(
        "{}{}",
        agent("support", &a, "helper"),
        team("research", &a, "crew")
    );
    let gw = Gateway::start(&toml).await;
    let c = client();

    // Non-streamed: the host's RunOutput.
    let out: Value = c
        .post(gw.url("/agents/support/runs"))
        .form(&[("message", "hi"), ("stream", "false"), ("session_id", "S1")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (out["content"].as_str(), out["agent_id"].as_str()),
        (Some("hi"), Some("helper"))
    );
    let run_id = out["run_id"].as_str().unwrap();

    // `stream` defaults to true for agents and teams, as in AgentOS.
    let r = c
        .post(gw.url("/teams/research/runs"))
        .form(&[("message", "go"), ("run_id", "T1"), ("session_id", "S2")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let body = String::from_utf8(rest(r).await).unwrap();
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        ["TeamRunStarted", "TeamRunContent", "TeamRunCompleted"]
    );

    // Run look-ups work for agents (agno's own gateway answers 400).
    let (status, run) =
        get_json(gw.url(&format!("/agents/support/runs/{run_id}?session_id=S1"))).await;
    assert_eq!(
        (status.as_u16(), run["status"].as_str()),
        (200, Some("COMPLETED"))
    );
    let (status, run) = get_json(gw.url("/teams/research/runs/T1?session_id=S2")).await;
    assert_eq!(
        (status.as_u16(), run["team_id"].as_str()),
        (200, Some("crew"))
    );
    let (status, runs) = get_json(gw.url("/agents/support/runs?session_id=S1")).await;
    assert_eq!((status.as_u16(), runs.as_array().unwrap().len()), (200, 1));
    // A host's 4xx comes back as it was, not wrapped.
    let (status, missing) = get_json(gw.url("/agents/support/runs/none?session_id=S1")).await;
    assert_eq!(
        (status.as_u16(), missing),
        (404, json!({"detail": "Run not found"}))
    );

    // Continue: the caller's form reaches the host as it was sent.
    let tools = r#"[{"tool_call_id":"c1","result":"ok"}]"#;
    let out: Value = c
        .post(gw.url(&format!("/agents/support/runs/{run_id}/continue")))
        .form(&[("tools", tools), ("session_id", "S1"), ("stream", "false")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (out["content"].as_str(), out["run_id"].as_str()),
        (Some(tools), Some(run_id))
    );
    let r = c
        .post(gw.url("/teams/research/runs/T1/continue"))
        .form(&[("requirements", "[]")])
        .send()
        .await
        .unwrap();
    let body = String::from_utf8(rest(r).await).unwrap();
    assert!(body.starts_with("event: TeamRunContinued\n"), "{body}");
}

#[tokio::test]
async fn agent_streams_are_relayed_byte_for_byte() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&agent("support", &host.url, "remote")).await;
    let stream = host.stream();
    let events = [
        "event: RunStarted\ndata: {\"created_at\":1,\"event\":\"RunStarted\",\"agent_id\":\"remote\",\"agent_name\":\"R\",\"run_id\":\"R-1\",\"session_id\":\"S-1\",\"model\":\"m\"}\n\n",
        "event: RunContent\ndata: {\"created_at\":1,\"event\":\"RunContent\",\"agent_id\":\"remote\",\"run_id\":\"R-1\",\"content\":\"h\\u00e9\",\"content_type\":\"str\"}\n\n",
        "event: SomethingNew\ndata: {\"x\":[1,2]}\n\n",
        "event: RunCompleted\ndata: {\"created_at\":2,\"event\":\"RunCompleted\",\"run_id\":\"R-1\",\"content\":\"done\"}\n\n",
    ];
    let mut r = client()
        .post(gw.url("/agents/support/runs"))
        .form(&[("message", "hi")])
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    for event in events {
        stream.send(event).await;
        got.extend_from_slice(&next_chunk(&mut r).await.unwrap());
    }
    stream.finish();
    got.extend(rest(r).await);
    assert_eq!(String::from_utf8(got).unwrap(), events.concat());
    let sent = host.last();
    assert_eq!(sent.path_and_query, "/agents/remote/runs");
    assert_eq!(&sent.body[..], b"message=hi");

    // Access metrics carry the kind.
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains("agentos_gateway_requests_total{kind=\"agent\",id=\"support\",route=\"/agents/{id}/runs\",status=\"200\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_dying_team_stream_ends_with_a_team_run_error() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&team("research", &host.url, "crew")).await;
    let stream = host.stream();
    let started = "event: TeamRunStarted\ndata: {\"event\":\"TeamRunStarted\",\"team_id\":\"crew\",\"team_name\":\"Crew\",\"run_id\":\"R-2\",\"session_id\":\"S-2\"}\n\n";
    stream.send(started).await;
    let mut r = client()
        .post(gw.url("/teams/research/runs"))
        .form(&[("message", "go")])
        .send()
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), started.as_bytes());
    stream.die().await;
    let tail = String::from_utf8(rest(r).await).unwrap();
    assert!(tail.starts_with("event: TeamRunError\ndata: {"), "{tail}");
    let data: Value = json_of(
        tail.lines()
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(
        (data["team_id"].as_str(), data["run_id"].as_str()),
        (Some("crew"), Some("R-2"))
    );
    let message = data["content"].as_str().unwrap();
    assert!(
        message.contains("team 'research'") && !message.contains("127.0.0.1"),
        "{message}"
    );
}

fn cancels(host: &MockHost) -> Vec<String> {
    host.recorded()
        .into_iter()
        .filter(|r| r.path_and_query.contains("/cancel"))
        .map(|r| r.path_and_query)
        .collect()
}

#[tokio::test]
async fn agent_cancel_reaches_the_owner_replica_only() {
    let hosts = [MockHost::start("a").await, MockHost::start("b").await];
    let streams: Vec<_> = hosts.iter().map(MockHost::stream).collect();
    let toml = format!(
        "[[agents]]\nid = \"support\"\nagent_id = \"remote\"\nbase_urls = [\"{}\", \"{}\"]\n\
         [[workflows]]\nid = \"support\"\nbase_urls = [\"{}\", \"{}\"]\n",
        hosts[0].url, hosts[1].url, hosts[0].url, hosts[1].url
    );
    let gw = Gateway::start(&toml).await;
    let pending = tokio::spawn({
        let url = gw.url("/agents/support/runs");
        async move {
            client()
                .post(url)
                .form(&[("message", "go")])
                .send()
                .await
                .unwrap()
        }
    });
    eventually("a host got the run", || async {
        hosts.iter().any(|h| h.runs() == 1)
    })
    .await;
    let owner = hosts.iter().position(|h| h.runs() == 1).unwrap();
    let body = String::from_utf8(hosts[owner].last().body.to_vec()).unwrap();
    let run_id = body
        .split("&run_id=")
        .nth(1)
        .expect("run_id appended")
        .to_owned();
    let started =
        format!("event: RunStarted\ndata: {{\"run_id\":\"{run_id}\",\"session_id\":\"S\"}}\n\n");
    streams[owner].send(started.clone()).await;
    let mut r = pending.await.unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), started.as_bytes());

    // The workflow with the same gateway id knows nothing of this run: its
    // cancel fans out to both replicas.
    let c = client()
        .post(gw.url(&format!("/agents/support/runs/{run_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    assert_eq!(
        cancels(&hosts[owner]),
        vec![format!("/agents/remote/runs/{run_id}/cancel")]
    );
    assert!(cancels(&hosts[1 - owner]).is_empty(), "not the owner");
    let c = client()
        .post(gw.url(&format!("/workflows/support/runs/{run_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    let path = format!("/workflows/support/runs/{run_id}/cancel");
    eventually("the workflow cancel reached both replicas", || async {
        hosts.iter().all(|h| cancels(h).contains(&path))
    })
    .await;
}

#[tokio::test]
async fn a_disconnected_agent_run_is_cancelled_on_its_host() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&agent("support", &host.url, "remote")).await;
    let stream = host.stream();
    stream
        .send("event: RunStarted\ndata: {\"run_id\":\"R-7\",\"session_id\":\"S-7\"}\n\n")
        .await;
    let mut r = client()
        .post(gw.url("/agents/support/runs"))
        .form(&[("message", "go")])
        .send()
        .await
        .unwrap();
    next_chunk(&mut r).await.unwrap();
    drop(r);
    while stream.offer("event: RunContent\ndata: {}\n\n").await {}
    eventually("the host got the cancel", || async {
        cancels(&host) == vec!["/agents/remote/runs/R-7/cancel?session_id=S-7".to_owned()]
    })
    .await;
}

#[tokio::test]
async fn a_dead_host_never_hides_another_host_s_agents() {
    let (a, _) = two_hosts().await;
    let dead = refusing_url().await;
    let toml = format!(
        "[server]\nhealth_checks = false\nconfig_fetch_timeout = 5\n{}{}{}",
        agent("gone", &dead, "whatever"),
        agent("support", &a, "helper"),
        team("research", &a, "crew"),
    );
    let gw = Gateway::start(&toml).await;
    let (status, agents) = get_json(gw.url("/agents")).await;
    assert_eq!(status, 200);
    assert_eq!(
        agents[0],
        json!({"id": "gone", "name": "gone", "sandboxed": false})
    );
    assert_eq!(agents[1]["id"], "support");
    assert_eq!(agents[1]["model"]["model"], "fake-model");
    let (_, config) = get_json(gw.url("/config")).await;
    assert_eq!(config["agents"][0]["id"], "gone");
    assert_eq!(config["agents"][1]["db_id"], "db-a");
    assert_eq!(config["teams"][0]["id"], "research");
    let r = client().get(gw.url("/agents/gone")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let detail = r.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(detail, "Failed to connect to the host of agent 'gone'");
}

#[tokio::test]
async fn auth_token_reaches_a_protected_host_s_agent_documents() {
    let url = fake_host(FakeHostSpec {
        os_id: "locked".into(),
        agents: vec![entry("helper", FakeBehavior::Echo)],
        security_key: Some("sekrit".into()),
        ..FakeHostSpec::default()
    })
    .await;
    let toml = format!(
        "[[agents]]\nid = \"support\"\nbase_url = \"{url}\"\nagent_id = \"helper\"\nauth_token = \"sekrit\"\n"
    );
    let gw = Gateway::start(&toml).await;
    let (status, agents) = get_json(gw.url("/agents")).await;
    assert_eq!(
        (status.as_u16(), agents[0]["id"].as_str()),
        (200, Some("support"))
    );
    let (_, config) = get_json(gw.url("/config")).await;
    assert_eq!(config["agents"][0]["model"]["provider"], "Fake");
    let out: Value = client()
        .post(gw.url("/agents/support/runs"))
        .form(&[("message", "hi"), ("stream", "false")])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["content"], "hi");
    // A caller's own wrong token is the caller's: the host's 401 comes back.
    let r = client()
        .get(gw.url("/agents/support"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_reload_adds_and_removes_agents_and_teams() {
    use agentos_gateway::reload::{Trigger, reload};
    let (a, b) = two_hosts().await;
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    let first = workflow("echo", &b, "echo");
    std::fs::write(&path, &first).unwrap();
    let gw = Gateway::start(&first).await;
    assert_eq!(get_json(gw.url("/agents/support")).await.0, 404);

    // Agents and teams alone are a config that exposes something.
    let second = format!(
        "{}{}",
        agent("support", &a, "helper"),
        team("research", &a, "crew")
    );
    std::fs::write(&path, &second).unwrap();
    assert!(reload(&gw.state, &path, Trigger::Signal).await);
    let (status, doc) = get_json(gw.url("/agents/support")).await;
    assert_eq!(
        (status.as_u16(), doc["db_id"].as_str()),
        (200, Some("db-a"))
    );
    let (_, teams) = get_json(gw.url("/teams")).await;
    assert_eq!(teams[0]["id"], "research");
    let (status, body) = get_json(gw.url("/workflows/echo")).await;
    assert_eq!(
        (status.as_u16(), body),
        (404, json!({"detail": "Workflow not found"}))
    );

    // The agent moves to host B under the same gateway id: its document is
    // not the one cached for host A.
    std::fs::write(&path, agent("support", &b, "helper")).unwrap();
    assert!(reload(&gw.state, &path, Trigger::Signal).await);
    assert_eq!(get_json(gw.url("/agents/support")).await.1["db_id"], "db-b");
    assert_eq!(get_json(gw.url("/teams/research")).await.0, 404);

    // A file that exposes nothing is refused and changes nothing.
    std::fs::write(&path, "[server]\n").unwrap();
    assert!(!reload(&gw.state, &path, Trigger::Signal).await);
    assert_eq!(get_json(gw.url("/agents/support")).await.0, 200);
}
