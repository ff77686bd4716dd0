//! The database routes (`/sessions`, `/memories`, `/metrics`, `/knowledge`,
//! ...) through the gateway, against recording mock hosts that report their
//! databases in `/config`: each call reaches the host that owns the database
//! it names, byte for byte, and no other; AgentOS's own errors where it
//! cannot be placed; hostile `db_id`s; conflicts; a dead host.

use crate::common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Hosts `a` (databases `a-db`, `a-db2`; knowledge `kb-a` on `a-db`) and `b`
/// (`b-db`; knowledge `kb-b`), each serving one workflow so the gateway
/// knows it.
async fn two_hosts() -> (MockHost, MockHost, Gateway) {
    let (a, b) = (MockHost::start("a").await, MockHost::start("b").await);
    a.set_databases(&["a-db", "a-db2"]);
    a.set_knowledge(&[("kb-a", "a-db")]);
    b.set_databases(&["b-db"]);
    b.set_knowledge(&[("kb-b", "b-db")]);
    let toml = format!(
        "{}{}",
        workflow("wa", &a.url, "wa"),
        workflow("wb", &b.url, "wb")
    );
    let gw = Gateway::start(&toml).await;
    (a, b, gw)
}

/// What the hosts' fallback route recorded (metadata fetches aside).
fn calls(host: &MockHost) -> Vec<Recorded> {
    host.recorded()
}

/// A request body: its content type and bytes.
type Sent<'a> = Option<(&'a str, &'a [u8])>;

async fn send(gw: &Gateway, method: &str, path: &str, body: Sent<'_>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method, gw.url(path));
    if let Some((content_type, bytes)) = body {
        request = request
            .header("content-type", content_type)
            .body(bytes.to_vec());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn each_call_reaches_the_host_that_owns_its_database_unchanged() {
    let (a, b, gw) = two_hosts().await;
    let json_body: &[u8] = br#"{"memory": "likes tea", "topics": ["x"]}"#;
    let cases: &[(&str, &str, Sent, char)] = &[
        ("GET", "/sessions?db_id=b-db&type=agent&limit=5", None, 'b'),
        ("GET", "/sessions?type=team&db_id=a-db2", None, 'a'),
        ("DELETE", "/sessions/s1?db_id=a-db", None, 'a'),
        (
            "GET",
            "/sessions/s%2F1/runs/r1?db_id=b-db&table=t",
            None,
            'b',
        ),
        (
            "POST",
            "/sessions/s1/rename?db_id=b-db",
            Some(("application/json", br#"{"session_name":"n"}"#)),
            'b',
        ),
        (
            "PATCH",
            "/memories/m1?db_id=b-db",
            Some(("application/json", json_body)),
            'b',
        ),
        ("GET", "/memory_topics?db_id=a-db", None, 'a'),
        (
            "GET",
            "/metrics?db_id=a-db&starting_date=2026-01-01",
            None,
            'a',
        ),
        ("POST", "/metrics/refresh?db_id=b-db", None, 'b'),
        ("GET", "/eval-runs?db_id=b-db", None, 'b'),
        ("GET", "/traces/t1?db_id=a-db&span_id=x", None, 'a'),
        (
            "POST",
            "/traces/search?db_id=b-db",
            Some(("application/json", br#"{"filter":{}}"#)),
            'b',
        ),
        (
            "PATCH",
            "/learnings/users?db_id=a-db",
            Some(("application/json", b"{}")),
            'a',
        ),
        (
            "POST",
            "/databases/b-db/migrate?target_version=2.0.0",
            None,
            'b',
        ),
        (
            "GET",
            "/knowledge/content?knowledge_id=kb-b&limit=3",
            None,
            'b',
        ),
        ("GET", "/knowledge/content?db_id=a-db", None, 'a'),
        ("GET", "/knowledge/kb-a/sources", None, 'a'),
        (
            "POST",
            "/knowledge/search",
            Some((
                "application/json",
                br#"{"query": "tea", "knowledge_id": "kb-b"}"#,
            )),
            'b',
        ),
        (
            "POST",
            "/knowledge/search",
            Some(("application/json", br#"{"query": "tea", "db_id": "a-db"}"#)),
            'a',
        ),
    ];
    for (method, path, body, owner) in cases {
        let (before_a, before_b) = (calls(&a).len(), calls(&b).len());
        let (status, answer) = send(&gw, method, path, *body).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        let (host, other, before, other_before) = match owner {
            'a' => (&a, &b, before_a, before_b),
            _ => (&b, &a, before_b, before_a),
        };
        let got = calls(host);
        assert_eq!(
            got.len(),
            before + 1,
            "{method} {path} reached its host once"
        );
        assert_eq!(
            calls(other).len(),
            other_before,
            "{method} {path} reached another host"
        );
        let seen = &got[before];
        assert_eq!(seen.method, *method);
        assert_eq!(seen.path_and_query, *path, "path and query unchanged");
        assert_eq!(&seen.body[..], body.map_or(&b""[..], |(_, bytes)| bytes));
        // The host's answer comes back as it is.
        assert_eq!(answer["method"], *method);
        assert_eq!(answer["path"], path.split('?').next().unwrap());
    }
}

#[tokio::test]
async fn host_answers_pass_through_with_their_status() {
    let (a, _b, gw) = two_hosts().await;
    a.respond_next(404, json!({"detail": "Session not found"}));
    let (status, body) = send(&gw, "GET", "/sessions/nope?db_id=a-db", None).await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Session not found"}))
    );
    a.respond_next(
        422,
        json!({"detail": [{"loc": ["query", "type"], "msg": "bad"}]}),
    );
    let (status, body) = send(&gw, "GET", "/sessions?db_id=a-db&type=x", None).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["msg"], "bad");
}

#[tokio::test]
async fn calls_that_name_no_known_database_get_agentos_s_answers() {
    let (a, b, gw) = two_hosts().await;
    let cases = [
        (
            "GET",
            "/sessions",
            400,
            "The db_id query parameter is required when using multiple databases",
        ),
        (
            "GET",
            "/sessions?db_id=",
            400,
            "The db_id query parameter is required when using multiple databases",
        ),
        (
            "GET",
            "/memories?table=agno_memories",
            400,
            "The db_id query parameter is required when passing a table",
        ),
        (
            "GET",
            "/sessions?db_id=nope",
            404,
            "No database found with id 'nope'",
        ),
        (
            "POST",
            "/databases/nope/migrate",
            404,
            "No database found with id 'nope'",
        ),
        (
            "GET",
            "/knowledge/content?knowledge_id=kb-z",
            404,
            "Knowledge base 'kb-z' not found",
        ),
        (
            "GET",
            "/knowledge/content?db_id=nope",
            404,
            "Knowledge instance with db_id 'nope' not found",
        ),
        (
            "GET",
            "/knowledge/content",
            400,
            "db_id or knowledge_id query parameter is required when using multiple knowledge bases. Available IDs: ['kb-a', 'kb-b']",
        ),
    ];
    for (method, path, status, detail) in cases {
        let answer = send(&gw, method, path, None).await;
        assert_eq!(
            answer,
            (status, json!({"detail": detail})),
            "{method} {path}"
        );
    }
    assert!(
        calls(&a).is_empty() && calls(&b).is_empty(),
        "nothing reached a host"
    );
    // Methods the route does not have: 405, as AgentOS.
    let response = client().put(gw.url("/sessions")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST, DELETE");
}

#[tokio::test]
async fn one_database_needs_no_db_id_and_migrate_all_skips_remote_ones() {
    let a = MockHost::start("a").await;
    let gw = Gateway::start(&workflow("wa", &a.url, "wa")).await;
    let (status, _) = send(&gw, "GET", "/sessions?type=agent", None).await;
    assert_eq!(status, 200);
    assert_eq!(calls(&a)[0].path_and_query, "/sessions?type=agent");
    // No knowledge anywhere: AgentOS's 503.
    let (status, body) = send(&gw, "GET", "/knowledge/content", None).await;
    assert_eq!(status, 503);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("No knowledge base is available")
    );
    // Every database is remote here, as on agno's own gateway.
    let (status, body) = send(&gw, "POST", "/databases/all/migrate", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"message": "All databases migrated successfully to latest version", "skipped": ["a-db"]})
    );
    assert_eq!(calls(&a).len(), 1);
}

#[tokio::test]
async fn a_database_two_hosts_report_is_refused_until_pinned() {
    let (a, b) = (MockHost::start("a").await, MockHost::start("b").await);
    a.set_databases(&["shared", "a-db"]);
    b.set_databases(&["shared"]);
    let hosts = format!(
        "{}{}",
        workflow("wa", &a.url, "wa"),
        workflow("wb", &b.url, "wb")
    );
    let gw = Gateway::start(&hosts).await;
    let (status, body) = send(&gw, "GET", "/sessions?db_id=shared", None).await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"detail": "Database 'shared' is reported by more than one host"})
        )
    );
    // The other database is unaffected.
    assert_eq!(send(&gw, "GET", "/sessions?db_id=a-db", None).await.0, 200);
    let view: Value = client()
        .get(gw.admin_url("/gateway/upstreams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conflict = &view["database_conflicts"][0];
    assert_eq!(conflict["db_id"], "shared");
    assert_eq!(conflict["host_groups"].as_array().unwrap().len(), 2);
    assert!(calls(&b).is_empty());

    // Pinned: it is b's.
    let pinned = format!(
        "{hosts}[[dbs]]\nid = \"shared\"\nbase_url = \"{}\"\n",
        b.url
    );
    let gw = Gateway::start(&pinned).await;
    let (status, _) = send(&gw, "GET", "/sessions?db_id=shared", None).await;
    assert_eq!(status, 200);
    assert_eq!(calls(&b).len(), 1);
    assert_eq!(calls(&a).len(), 1, "only the earlier a-db call");
}

#[tokio::test]
async fn a_dead_host_fails_fast_and_never_hides_the_others() {
    let (a, b, gw) = two_hosts().await;
    // Learnt while b is up.
    assert_eq!(send(&gw, "GET", "/sessions?db_id=b-db", None).await.0, 200);
    b.stop().await;
    let (status, body) = send(&gw, "GET", "/sessions?db_id=b-db", None).await;
    assert!(matches!(status, 502 | 503), "{status} {body}");
    assert!(
        body["detail"].as_str().unwrap().contains("database 'b-db'"),
        "{body}"
    );
    assert_eq!(send(&gw, "GET", "/sessions?db_id=a-db", None).await.0, 200);
    assert_eq!(calls(&a).len(), 1);
}

#[tokio::test]
async fn an_unknown_id_while_a_host_is_down_is_not_blamed_on_the_caller() {
    let a = MockHost::start("a").await;
    let dead = refusing_url().await;
    let toml = format!(
        "{}{}",
        workflow("wa", &a.url, "wa"),
        workflow("wd", &dead, "wd")
    );
    let gw = Gateway::start(&toml).await;
    let (status, body) = send(&gw, "GET", "/sessions?db_id=d-db", None).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"detail": "Database 'd-db' could not be looked up: a host is unreachable"})
        )
    );
    assert_eq!(send(&gw, "GET", "/sessions?db_id=a-db", None).await.0, 200);
}

#[tokio::test]
async fn the_group_s_token_policy_applies_to_its_databases() {
    let a = MockHost::start("a").await;
    let toml = format!(
        "[[workflows]]\nid = \"wa\"\nbase_url = \"{}\"\nauth_token = \"service-token\"\nforward_caller_token = false\n",
        a.url
    );
    let gw = Gateway::start(&toml).await;
    let response = client()
        .get(gw.url("/sessions?db_id=a-db"))
        .header("authorization", "Bearer caller-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = &calls(&a)[0];
    assert_eq!(seen.headers["authorization"], "Bearer service-token");
    // The host's /config was read with the service token too.
    assert!(
        a.config_auth()
            .iter()
            .all(|t| t.as_deref() == Some("Bearer service-token"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever the `db_id` values, a call reaches at most the host that owns
    /// the last one (the one AgentOS reads), with the query unchanged.
    #[test]
    fn hostile_db_ids_reach_only_their_owner(
        ids in proptest::collection::vec(
            prop_oneof![
                Just("a-db".to_owned()),
                Just("b-db".to_owned()),
                Just(String::new()),
                "[a-z&=%#/ +.-]{0,12}",
                Just("a-db&db_id=b-db".to_owned()),
                Just("b-db%00".to_owned()),
            ],
            1..4,
        )
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (a, b, gw) = two_hosts().await;
            let query: String = ids
                .iter()
                .map(|id| format!("db_id={}", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()))
                .collect::<Vec<_>>()
                .join("&");
            let path = format!("/sessions?{query}");
            let (status, _) = send(&gw, "GET", &path, None).await;
            let last = ids.last().cloned().unwrap_or_default();
            let owner = match last.as_str() {
                "a-db" => Some(&a),
                "b-db" => Some(&b),
                _ => None,
            };
            let (got_a, got_b) = (calls(&a), calls(&b));
            match owner {
                Some(host) => {
                    prop_assert_eq!(status, 200);
                    prop_assert_eq!(got_a.len() + got_b.len(), 1);
                    let seen = calls(host);
                    prop_assert_eq!(seen.len(), 1);
                    prop_assert_eq!(&seen[0].path_and_query, &path);
                }
                None => {
                    prop_assert!(status == 400 || status == 404, "{} {}", status, path);
                    prop_assert!(got_a.is_empty() && got_b.is_empty());
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn the_binary_will_not_start_when_two_hosts_report_one_database() {
    let (a, b) = (MockHost::start("a").await, MockHost::start("b").await);
    a.set_databases(&["shared"]);
    b.set_databases(&["b-db", "shared"]);
    let dir = std::env::temp_dir().join(format!("agw-dbs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let hosts = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n{}{}",
        workflow("wa", &a.url, "wa"),
        workflow("wb", &b.url, "wb")
    );
    std::fs::write(&path, &hosts).unwrap();
    let out = tokio::process::Command::new(gateway_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("database `shared` is reported by host groups")
            && stderr.contains(&a.url)
            && stderr.contains(&b.url)
            && stderr.contains("[[dbs]]"),
        "{stderr}"
    );
    // Pinned, it starts (and is stopped here).
    let pinned = format!(
        "{hosts}[[dbs]]\nid = \"shared\"\nbase_url = \"{}\"\n",
        a.url
    );
    std::fs::write(&path, pinned).unwrap();
    let mut child = tokio::process::Command::new(gateway_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut ready = false;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("agentos-gateway ready") {
            ready = true;
            break;
        }
    }
    assert!(ready, "the pinned config did not start");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a fake AgentOS (`agentos_gateway::fakehost`) with its database.
async fn fake_host(os_id: &str, db_id: &str, agent: &str) -> String {
    use agentos_gateway::fakehost::{self, FakeBehavior, FakeEntry, FakeHostSpec};
    let spec = FakeHostSpec {
        os_id: os_id.into(),
        db_id: Some(db_id.into()),
        agents: vec![FakeEntry {
            id: agent.into(),
            name: agent.into(),
            description: None,
            behavior: FakeBehavior::Echo,
        }],
        ..FakeHostSpec::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fakehost::serve(listener, spec, std::future::pending()));
    url
}

#[tokio::test]
async fn sessions_of_each_host_are_listed_by_their_database() {
    let a = fake_host("host-a", "db-a", "helper-a").await;
    let b = fake_host("host-b", "db-b", "helper-b").await;
    let toml = format!(
        "[[agents]]\nid = \"helper-a\"\nbase_url = \"{a}\"\n[[agents]]\nid = \"helper-b\"\nbase_url = \"{b}\"\n"
    );
    let gw = Gateway::start(&toml).await;
    for (agent, session) in [("helper-a", "s-a"), ("helper-b", "s-b")] {
        let run = client()
            .post(gw.url(&format!("/agents/{agent}/runs")))
            .form(&[
                ("message", "hi"),
                ("stream", "false"),
                ("session_id", session),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(run.status(), 200);
    }
    let (status, page) = send(&gw, "GET", "/sessions?db_id=db-b&type=agent", None).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-b"]);
    let (status, runs) = send(&gw, "GET", "/sessions/s-a/runs?db_id=db-a", None).await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs[0]["agent_id"], "helper-a");
    // Host a does not hold host b's session: its own 404 comes back.
    let (status, _) = send(&gw, "GET", "/sessions/s-b?db_id=db-a", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_web_ui_s_sessions_list_asks_for_the_entry_s_id_on_its_host() {
    let a = MockHost::start("a").await;
    let toml = format!(
        "[[agents]]\nid = \"support\"\nbase_url = \"{}\"\nagent_id = \"support-v2\"\n",
        a.url
    );
    let gw = Gateway::start(&toml).await;
    // As agno's agent-ui sends it (src/api/os.ts, getAllSessionsAPI).
    let path = "/sessions?type=agent&component_id=support&db_id=a-db";
    assert_eq!(send(&gw, "GET", path, None).await.0, 200);
    assert_eq!(
        calls(&a)[0].path_and_query,
        "/sessions?type=agent&component_id=support-v2&db_id=a-db"
    );
    // Another kind's id, or an id the gateway does not expose, is left alone.
    for path in [
        "/sessions?type=team&component_id=support&db_id=a-db",
        "/sessions?component_id=other&db_id=a-db",
    ] {
        assert_eq!(send(&gw, "GET", path, None).await.0, 200);
        assert_eq!(calls(&a).last().unwrap().path_and_query, path);
    }
}

#[tokio::test]
async fn a_hostile_search_body_is_the_caller_s_and_reaches_no_host() {
    let (a, b, gw) = two_hosts().await;
    // Over the 1 MiB read to find the database: the caller's 413.
    let big = format!(
        "{{\"query\": \"{}\", \"db_id\": \"a-db\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, body) = send(
        &gw,
        "POST",
        "/knowledge/search",
        Some(("application/json", big.as_bytes())),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    // Not JSON, or JSON naming nothing usable: it names no knowledge base,
    // and two hosts hold one each.
    for bytes in [
        &b"db_id=a-db"[..],
        br#"{"db_id": 7, "knowledge_id": ["kb-a"]}"#,
        br#"["db_id", "a-db"]"#,
        b"\xff\xfe{",
    ] {
        let (status, body) = send(
            &gw,
            "POST",
            "/knowledge/search",
            Some(("application/json", bytes)),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("Available IDs"));
    }
    assert!(calls(&a).is_empty() && calls(&b).is_empty());
}

#[tokio::test]
async fn a_host_reporting_endless_databases_is_capped() {
    let a = MockHost::start("a").await;
    let ids: Vec<String> = (0..3000).map(|i| format!("db-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    a.set_databases(&refs);
    let gw = Gateway::start(&workflow("wa", &a.url, "wa")).await;
    assert_eq!(
        send(&gw, "GET", "/sessions?db_id=db-1023", None).await.0,
        200
    );
    let (status, body) = send(&gw, "GET", "/sessions?db_id=db-1024", None).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"detail": "No database found with id 'db-1024'"})
        )
    );
    assert_eq!(calls(&a).len(), 1);
}
