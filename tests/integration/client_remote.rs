//! The client library's `RemoteAgent`, `RemoteTeam` and `RemoteDb` against a
//! small recording mock host of this file's own: the exact method, path,
//! query string and form or JSON body each call sends, compared with what
//! agno's Python client sends (agno 3.1.10; every expectation cites the line
//! of `agno/client/os.py` or `agno/{agent,team}/remote.py` it comes from),
//! unknown fields and events kept through decoding, and host errors
//! surfacing as `ClientError::Status` with the host's status and detail.
//!
//! agno's `json.dumps` writes `{"a": 1}` where serde writes `{"a":1}`, so
//! JSON-valued form fields are compared as JSON, everything else as text.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentos_gateway::client::{
    ClientError, DbFilter, Media, MemoriesQuery, MemoryInput, MemoryStatsQuery, NewSession,
    OptimizeMemories, RemoteAgent, RemoteDb, RemoteTeam, RemoteWorkflow, RunEvent, RunStatus,
    RunsQuery, SessionFilter, SessionType, SessionUpdate, SessionsQuery,
};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};

/// One request as the mock host received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The path and query exactly as sent.
    target: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

impl Seen {
    /// The form fields, decoded, in order.
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }
}

/// The answers the host gives, in order; an empty queue answers 204.
type Answer = (u16, &'static str, String);

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

/// A mock AgentOS that records every request and answers from a queue.
struct Host {
    url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        content_type: text(header::CONTENT_TYPE),
        authorization: text(header::AUTHORIZATION),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let answer = shared.answers.lock().unwrap().pop_front();
    let (status, content_type, body) = answer.unwrap_or((204, "text/plain", String::new()));
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

impl Host {
    async fn start() -> Host {
        let shared = Shared::default();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Host { url, shared, task }
    }

    fn answer(&self, status: u16, body: Value) -> &Host {
        self.shared.answers.lock().unwrap().push_back((
            status,
            "application/json",
            body.to_string(),
        ));
        self
    }

    fn answer_sse(&self, frames: &[Value]) {
        let body: String = frames
            .iter()
            .map(|data| {
                format!(
                    "event: {}\ndata: {data}\n\n",
                    data["event"].as_str().unwrap()
                )
            })
            .collect();
        self.shared
            .answers
            .lock()
            .unwrap()
            .push_back((200, "text/event-stream", body));
    }

    /// Everything received so far, emptying the record.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.shared.seen.lock().unwrap())
    }

    fn only(&self) -> Seen {
        let mut seen = self.take();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        seen.remove(0)
    }

    /// A `RemoteDb` for database `db1` on this host.
    fn db(&self) -> RemoteDb {
        let url = url::Url::parse(&self.url).unwrap();
        let client =
            agentos_gateway::client::AgentOsClient::new(&url, Duration::from_secs(5)).unwrap();
        RemoteDb::new(client, "db1").timeout(Duration::from_secs(10))
    }
}

fn names(form: &[(String, String)]) -> Vec<&str> {
    form.iter().map(|(k, _)| k.as_str()).collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name} in {form:?}"))
}

fn json_field(form: &[(String, String)], name: &str) -> Value {
    serde_json::from_str(field(form, name)).unwrap()
}

#[tokio::test]
async fn an_agent_run_sends_agnos_form_and_keeps_unknown_output_fields() {
    let host = Host::start().await;
    host.answer(
        200,
        json!({"run_id": "R-fixed", "agent_id": "assistant", "session_id": "S1",
               "content": "hi", "status": "COMPLETED", "model": "m",
               "brand_new": {"kept": true}}),
    );
    let agent = RemoteAgent::new(&host.url, "assistant").unwrap();
    let out = agent
        .arun("hello")
        .session_id("S1")
        .user_id("U1")
        .images([Media::from_url("http://img/1.png")])
        .session_state(json!({"a": 1}))
        .stream_events(true)
        .retries(2)
        .knowledge_filters(json!({"k": "v"}))
        .add_history_to_context(true)
        .dependencies(json!({"d": 1}))
        .metadata(json!({"m": 2}))
        .run_id("R-fixed")
        .field("custom_flag", true)
        .auth_token("tok")
        .await
        .unwrap();
    assert_eq!(out.content_str(), Some("hi"));
    assert_eq!(out.agent_id.as_deref(), Some("assistant"));
    assert_eq!(out.status, Some(RunStatus::Completed));
    assert_eq!(out.extra["brand_new"], json!({"kept": true}));

    let sent = host.only();
    // os.py:562-584 (run_agent): the endpoint, then `message`, `stream`,
    // the ids, the media, and the kwargs `RemoteAgent.arun` passes
    // (agent/remote.py:331-351) in its order, `stream_events` included on a
    // non-streaming run; **kwargs (`run_id`, `custom_flag`) last.
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str()),
        ("POST", "/agents/assistant/runs")
    );
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(sent.authorization.as_deref(), Some("Bearer tok"));
    let form = sent.form();
    assert_eq!(
        names(&form),
        [
            "message",
            "stream",
            "session_id",
            "user_id",
            "images",
            "session_state",
            "stream_events",
            "retries",
            "knowledge_filters",
            "add_history_to_context",
            "dependencies",
            "metadata",
            "run_id",
            "custom_flag"
        ]
    );
    for (name, text) in [
        ("message", "hello"),
        ("stream", "false"),
        ("session_id", "S1"),
        ("user_id", "U1"),
        ("stream_events", "true"),
        ("retries", "2"),
        ("add_history_to_context", "true"),
        ("run_id", "R-fixed"),
        ("custom_flag", "true"),
    ] {
        assert_eq!(field(&form, name), text, "{name}");
    }
    assert_eq!(json_field(&form, "session_state"), json!({"a": 1}));
    assert_eq!(json_field(&form, "knowledge_filters"), json!({"k": "v"}));
    assert_eq!(json_field(&form, "metadata"), json!({"m": 2}));
    assert_eq!(json_field(&form, "images")[0]["url"], "http://img/1.png");
}

#[tokio::test]
async fn a_team_stream_yields_team_and_member_events_and_keeps_unknown_ones() {
    let host = Host::start().await;
    host.answer_sse(&[
        json!({"event": "TeamRunStarted", "team_id": "t", "run_id": "R", "session_id": "S"}),
        json!({"event": "RunContent", "agent_id": "writer", "run_id": "M", "content": "Once"}),
        json!({"event": "CustomEvent", "team_id": "t", "run_id": "R", "mood": "happy"}),
        json!({"event": "TeamBrandNew", "run_id": "R", "x": 1}),
        json!({"event": "TeamRunCompleted", "team_id": "t", "run_id": "R", "content": "The end",
               "new_field": [1]}),
    ]);
    let team = RemoteTeam::new(&host.url, "storytellers").unwrap();
    let events = team
        .arun("tell")
        .stream_events(false)
        .stream()
        .await
        .unwrap();
    let events: Vec<RunEvent> =
        tokio::time::timeout(Duration::from_secs(10), events.collect::<Vec<_>>())
            .await
            .unwrap()
            .into_iter()
            .collect::<Result<_, ClientError>>()
            .unwrap();

    let names: Vec<&str> = events.iter().map(RunEvent::name).collect();
    assert_eq!(
        names,
        [
            "TeamRunStarted",
            "RunContent",
            "CustomEvent",
            "TeamBrandNew",
            "TeamRunCompleted"
        ]
    );
    assert!(matches!(&events[0], RunEvent::Team(e) if e.run_id.as_deref() == Some("R")));
    // A member's event is an agent event with the member's own run id.
    assert!(matches!(&events[1], RunEvent::Agent(e) if e.agent_id.as_deref() == Some("writer")));
    assert_eq!(events[1].content(), Some(&json!("Once")));
    // A team's custom event is a team event, its own fields kept.
    assert!(matches!(&events[2], RunEvent::Team(e) if e.extra["mood"] == "happy"));
    // agno's client drops an event type it does not know; this keeps it.
    assert!(
        matches!(&events[3], RunEvent::Other { event, data } if event == "TeamBrandNew" && data["x"] == 1)
    );
    let RunEvent::Team(done) = &events[4] else {
        panic!("{:?}", events[4])
    };
    assert_eq!(done.extra["new_field"], json!([1]));

    // os.py:900-921 (run_team_stream): `stream=true`, and team/remote.py
    // passes `stream_events` through when it is given, even `false`.
    let sent = host.only();
    assert_eq!(sent.target, "/teams/storytellers/runs");
    assert_eq!(
        sent.form(),
        [
            ("message".to_owned(), "tell".to_owned()),
            ("stream".to_owned(), "true".to_owned()),
            ("stream_events".to_owned(), "false".to_owned()),
        ]
    );
}

#[tokio::test]
async fn continue_sends_each_kinds_resolved_list() {
    let host = Host::start().await;
    let tool = json!({"tool_call_id": "c1", "tool_name": "get_weather", "confirmed": true});
    host.answer(
        200,
        json!({"run_id": "r1", "agent_id": "a", "status": "COMPLETED", "content": "sunny"}),
    );
    let agent = RemoteAgent::new(&host.url, "a").unwrap();
    let out = agent
        .continue_run("r1")
        // agent/remote.py:487-489: only each requirement's `tool_execution`
        // is sent, in `tools`; one without is skipped.
        .requirements([
            json!({"id": "q1", "tool_execution": tool}),
            json!({"id": "q2"}),
        ])
        .session_id("S1")
        .user_id("U1")
        .await
        .unwrap();
    assert_eq!(out.content_str(), Some("sunny"));
    // os.py:681-686 (continue_agent_run).
    let sent = host.only();
    assert_eq!(sent.target, "/agents/a/runs/r1/continue");
    let form = sent.form();
    assert_eq!(names(&form), ["tools", "stream", "session_id", "user_id"]);
    assert_eq!(json_field(&form, "tools"), json!([tool]));
    assert_eq!(field(&form, "stream"), "false");

    // os.py:972-988 (continue_team_run): the requirements themselves.
    host.answer(
        200,
        json!({"run_id": "r2", "team_id": "t", "member_responses": [{"x": 1}]}),
    );
    let requirement = json!({"id": "q1", "confirmed": true});
    let team = RemoteTeam::new(&host.url, "t").unwrap();
    let out = team
        .continue_run("r2")
        .requirements([requirement.clone()])
        .session_id("S1")
        .await
        .unwrap();
    assert_eq!(out.member_responses, Some(vec![json!({"x": 1})]));
    let sent = host.only();
    assert_eq!(sent.target, "/teams/t/runs/r2/continue");
    let form = sent.form();
    assert_eq!(names(&form), ["requirements", "stream", "session_id"]);
    assert_eq!(json_field(&form, "requirements"), json!([requirement]));

    // os.py:1265-1274 (continue_workflow_run), unchanged.
    host.answer(200, json!({"run_id": "r3", "status": "COMPLETED"}));
    let workflow = RemoteWorkflow::new(&host.url, "w").unwrap();
    workflow
        .continue_run("r3")
        .step_requirements([json!({"step_id": "s"})])
        .await
        .unwrap();
    let sent = host.only();
    assert_eq!(sent.target, "/workflows/w/runs/r3/continue");
    assert_eq!(names(&sent.form()), ["step_requirements", "stream"]);
}

#[tokio::test]
async fn cancel_goes_to_each_kinds_route() {
    let host = Host::start().await;
    // os.py:751 (cancel_agent_run) and os.py:942 (cancel_team_run): a POST
    // without a body.
    RemoteAgent::new(&host.url, "a")
        .unwrap()
        .cancel_run("r1")
        .await
        .unwrap();
    RemoteTeam::new(&host.url, "t")
        .unwrap()
        .cancel_run("r2")
        .session_id("S1")
        .await
        .unwrap();
    let seen = host.take();
    let targets: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str(), s.body.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("POST", "/agents/a/runs/r1/cancel", ""),
            ("POST", "/teams/t/runs/r2/cancel?session_id=S1", "")
        ]
    );

    // A refusal is the error, with the host's status and detail.
    host.answer(404, json!({"detail": "Team not found"}));
    let error = RemoteTeam::new(&host.url, "gone")
        .unwrap()
        .cancel_run("r")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(error.detail(), Some("Team not found"));
}

#[tokio::test]
async fn an_agents_metadata_and_db_come_from_its_document_and_the_config() {
    let host = Host::start().await;
    host.answer(
        200,
        json!({"id": "a", "name": "Assistant", "description": "helps", "role": "helper",
               "db_id": "db1", "tools": {"tools": "[{\"name\": \"search\"}]"},
               "model": {"name": "m"}}),
    )
    .answer(
        200,
        json!({"os_id": "os", "databases": ["db1"],
               "session": {"dbs": [{"db_id": "db1", "tables": ["agno_sessions"]}]},
               "memory": {"dbs": [{"db_id": "db1", "tables": ["agno_memories"]}]}}),
    );
    let agent = RemoteAgent::builder(&host.url, "a")
        .auth_token("tok")
        .build()
        .unwrap();
    assert_eq!(agent.timeout(), Duration::from_secs(60), "agno's default");
    assert_eq!(agent.name().await.unwrap().as_deref(), Some("Assistant"));
    assert_eq!(agent.role().await.unwrap().as_deref(), Some("helper"));
    assert_eq!(
        agent.tools().await.unwrap(),
        Some(vec![json!({"name": "search"})])
    );
    assert_eq!(
        agent.agent_config().await.unwrap().extra["model"]["name"],
        "m"
    );
    let db = agent.db().await.unwrap().unwrap();
    assert_eq!(db.id, "db1");
    assert_eq!(db.session_table_name.as_deref(), Some("agno_sessions"));
    assert_eq!(db.memory_table_name.as_deref(), Some("agno_memories"));
    let targets: Vec<String> = host.take().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/agents/a", "/config"], "one fetch each, cached");

    // The db shares the agent's host and token.
    host.answer(200, json!(["food"]));
    assert_eq!(
        db.get_memory_topics(&DbFilter::default()).await.unwrap(),
        ["food"]
    );
    let sent = host.only();
    assert_eq!(sent.target, "/memory_topics?db_id=db1");
    assert_eq!(sent.authorization.as_deref(), Some("Bearer tok"));
}

/// The method, path and query of each request, and its JSON body (`Null`
/// for none).
fn calls(seen: &[Seen]) -> Vec<(String, String, Value)> {
    seen.iter()
        .map(|s| {
            let body = if s.body.is_empty() {
                Value::Null
            } else {
                assert_eq!(s.content_type.as_deref(), Some("application/json"));
                s.json()
            };
            (s.method.clone(), s.target.clone(), body)
        })
        .collect()
}

fn call(method: &str, target: &str, body: Value) -> (String, String, Value) {
    (method.to_owned(), target.to_owned(), body)
}

#[tokio::test]
async fn session_calls_send_agnos_queries_and_bodies() {
    let host = Host::start().await;
    let db = host.db();
    let session = json!({"session_id": "s1", "session_name": "first", "agent_id": "a",
                         "agent_session_id": "s1", "chat_history": [], "unknown": 7});
    host.answer(
        200,
        json!({"data": [{"session_id": "s1", "session_name": "first", "session_type": "agent",
                         "created_at": "2025-01-01T00:00:00Z", "brand_new": 1}],
               "meta": {"page": 1, "limit": 20, "total_pages": 1, "total_count": 1,
                        "search_time_ms": 0.5, "cursor": "c"}}),
    );
    let page = db.get_sessions(&SessionsQuery::default()).await.unwrap();
    assert_eq!(page.data[0].session_name, "first");
    assert_eq!(page.data[0].extra["brand_new"], 1);
    assert_eq!(page.meta.total_count, 1);
    assert_eq!(page.meta.extra["cursor"], "c");

    host.answer(200, json!({"data": [], "meta": {}}));
    db.get_sessions(&SessionsQuery {
        session_type: Some(SessionType::Agent),
        component_id: Some("assistant".into()),
        user_id: Some("u 1".into()),
        session_name: Some("n".into()),
        limit: 5,
        page: 2,
        table: Some("tbl".into()),
        ..SessionsQuery::default()
    })
    .await
    .unwrap();

    host.answer(200, session.clone());
    let detail = db
        .get_session(
            "s1",
            &SessionFilter {
                user_id: Some("u1".into()),
                ..SessionFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(detail.session_type(), Some(SessionType::Agent));
    assert_eq!(detail.extra["unknown"], 7);
    assert_eq!(detail.extra["agent_session_id"], "s1");

    host.answer(200, session.clone());
    db.create_session(&NewSession {
        session_id: Some("s1".into()),
        user_id: Some("u1".into()),
        agent_id: Some("assistant".into()),
        ..NewSession::default()
    })
    .await
    .unwrap();
    host.answer(200, session.clone());
    db.rename_session("s1", "new name", &SessionFilter::default())
        .await
        .unwrap();
    host.answer(200, session.clone());
    db.update_session(
        "s1",
        &SessionUpdate {
            session_state: Some(json!({"x": 1})),
            ..SessionUpdate::default()
        },
        &SessionFilter::default(),
    )
    .await
    .unwrap();
    db.delete_session(
        "s1",
        &DbFilter {
            user_id: Some("u1".into()),
            ..DbFilter::default()
        },
    )
    .await
    .unwrap();
    db.delete_sessions(
        &["s1".into(), "s2".into()],
        &[SessionType::Agent, SessionType::Team],
        &DbFilter::default(),
    )
    .await
    .unwrap();

    host.answer(
        200,
        json!([{"run_id": "r1", "agent_id": "a", "status": "COMPLETED", "messages": []},
               {"run_id": "r2", "team_id": "t"},
               {"run_id": "r3", "workflow_id": "w", "step_results": [1]}]),
    );
    let runs = db
        .get_session_runs(
            "s1",
            &RunsQuery {
                created_after: Some(10),
                status: vec!["COMPLETED".into(), "ERROR".into()],
                ..RunsQuery::default()
            },
        )
        .await
        .unwrap();
    let kinds: Vec<SessionType> = runs.iter().map(|r| r.session_type()).collect();
    assert_eq!(
        kinds,
        [SessionType::Agent, SessionType::Team, SessionType::Workflow]
    );
    assert_eq!(runs[2].extra["step_results"], json!([1]));

    host.answer(
        200,
        json!([{"run_id": "r1", "content_preview": "hi", "new": true}]),
    );
    let previews = db
        .get_session_run_previews("s1", &RunsQuery::default())
        .await
        .unwrap();
    assert_eq!(previews[0].content_preview.as_deref(), Some("hi"));
    assert_eq!(previews[0].extra["new"], true);

    host.answer(200, json!({"run_id": "r1", "agent_id": "a"}));
    db.get_session_run(
        "s1",
        "r1",
        &SessionFilter {
            session_type: Some(SessionType::Agent),
            ..SessionFilter::default()
        },
    )
    .await
    .unwrap();

    assert_eq!(
        calls(&host.take()),
        [
            // os.py:1750-1765 (get_sessions): agno's defaults are always sent.
            call(
                "GET",
                "/sessions?limit=20&page=1&sort_by=created_at&sort_order=desc&db_id=db1",
                Value::Null
            ),
            call(
                "GET",
                "/sessions?type=agent&limit=5&page=2&sort_by=created_at&sort_order=desc\
                 &db_id=db1&table=tbl&user_id=u+1&session_name=n&component_id=assistant",
                Value::Null
            ),
            // os.py:1798-1806 (get_session).
            call("GET", "/sessions/s1?user_id=u1&db_id=db1", Value::Null),
            // os.py:1692-1707 (create_session): `model_dump()`, nulls included.
            call(
                "POST",
                "/sessions?type=agent&db_id=db1",
                json!({"session_id": "s1", "session_name": null, "session_state": null,
                       "metadata": null, "user_id": "u1", "agent_id": "assistant",
                       "team_id": null, "workflow_id": null})
            ),
            // os.py:2084-2093 (rename_session).
            call(
                "POST",
                "/sessions/s1/rename?db_id=db1",
                json!({"session_name": "new name"})
            ),
            // os.py:2138-2154 (update_session): only what is set.
            call(
                "PATCH",
                "/sessions/s1?db_id=db1",
                json!({"session_state": {"x": 1}})
            ),
            // os.py:2015-2022 (delete_session).
            call("DELETE", "/sessions/s1?user_id=u1&db_id=db1", Value::Null),
            // os.py:2045-2056 (delete_sessions).
            call(
                "DELETE",
                "/sessions?db_id=db1",
                json!({"session_ids": ["s1", "s2"], "session_types": ["agent", "team"]})
            ),
            // os.py:1849-1860 (get_session_runs): a list repeats its key.
            call(
                "GET",
                "/sessions/s1/runs?created_after=10&status=COMPLETED&status=ERROR&db_id=db1",
                Value::Null
            ),
            // os.py:1883-1948 (aget_session_run_previews).
            call("GET", "/sessions/s1/run-previews?db_id=db1", Value::Null),
            // os.py:1978-1986 (get_session_run).
            call(
                "GET",
                "/sessions/s1/runs/r1?type=agent&db_id=db1",
                Value::Null
            ),
        ]
    );
}

#[tokio::test]
async fn memory_calls_send_agnos_queries_and_bodies() {
    let host = Host::start().await;
    let db = host.db();
    let memory = json!({"memory_id": "m1", "memory": "likes tea", "topics": ["food"],
                        "user_id": "u1", "updated_at": "2025-01-01T00:00:00Z", "score": 0.9});
    let user = |user_id: &str| DbFilter {
        user_id: Some(user_id.into()),
        ..DbFilter::default()
    };

    host.answer(200, memory.clone());
    let created = db
        .create_memory(&MemoryInput {
            memory: "likes tea".into(),
            user_id: "u1".into(),
            topics: Some(vec!["food".into()]),
            table: None,
        })
        .await
        .unwrap();
    assert_eq!(created.memory_id, "m1");
    assert_eq!(created.extra["score"], 0.9);

    host.answer(200, memory.clone());
    db.get_memory("m1", &user("u1")).await.unwrap();

    host.answer(
        200,
        json!({"data": [memory.clone()], "meta": {"page": 1, "limit": 20}}),
    );
    let page = db
        .get_memories(&MemoriesQuery {
            user_id: Some("u1".into()),
            topics: Some(vec!["food".into(), "drink".into()]),
            search_content: Some("tea".into()),
            ..MemoriesQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.data[0].topics, Some(vec!["food".to_owned()]));

    host.answer(200, memory.clone());
    db.update_memory(
        "m1",
        &MemoryInput {
            memory: "likes coffee".into(),
            user_id: "u1".into(),
            ..MemoryInput::default()
        },
    )
    .await
    .unwrap();
    db.delete_memory("m1", &user("u1")).await.unwrap();
    db.delete_memories(&["m1".into(), "m2".into()], &user("u1"))
        .await
        .unwrap();
    host.answer(200, json!(["food", "drink"]));
    assert_eq!(
        db.get_memory_topics(&user("u1")).await.unwrap(),
        ["food", "drink"]
    );
    host.answer(
        200,
        json!({"data": [{"user_id": "u1", "total_memories": 3, "extra": "kept"}], "meta": {}}),
    );
    let stats = db
        .get_user_memory_stats(&MemoryStatsQuery::default())
        .await
        .unwrap();
    assert_eq!(stats.data[0].total_memories, 3);
    assert_eq!(stats.data[0].extra["extra"], "kept");
    host.answer(
        200,
        json!({"memories": [memory], "memories_before": 2, "memories_after": 1,
               "tokens_before": 10, "tokens_after": 5, "tokens_saved": 5,
               "reduction_percentage": 50.0}),
    );
    let optimized = db
        .optimize_memories(&OptimizeMemories::new("u1"))
        .await
        .unwrap();
    assert_eq!(optimized.memories_after, 1);

    assert_eq!(
        calls(&host.take()),
        [
            // os.py:1380-1386 (create_memory): `exclude_none` body.
            call(
                "POST",
                "/memories?db_id=db1",
                json!({"memory": "likes tea", "user_id": "u1", "topics": ["food"]})
            ),
            // os.py:1412-1415 (get_memory).
            call("GET", "/memories/m1?db_id=db1&user_id=u1", Value::Null),
            // os.py:1455-1470 (list_memories): defaults sent, topics repeated.
            call(
                "GET",
                "/memories?limit=20&page=1&sort_by=updated_at&sort_order=desc&db_id=db1\
                 &user_id=u1&topics=food&topics=drink&search_content=tea",
                Value::Null
            ),
            // os.py:1500-1506 (update_memory).
            call(
                "PATCH",
                "/memories/m1?db_id=db1",
                json!({"memory": "likes coffee", "user_id": "u1"})
            ),
            // os.py:1531-1534 (delete_memory).
            call("DELETE", "/memories/m1?db_id=db1&user_id=u1", Value::Null),
            // os.py:1556-1562 (delete_memories): user_id in the body.
            call(
                "DELETE",
                "/memories?db_id=db1",
                json!({"memory_ids": ["m1", "m2"], "user_id": "u1"})
            ),
            // os.py:1586-1589 (get_memory_topics).
            call("GET", "/memory_topics?user_id=u1&db_id=db1", Value::Null),
            // os.py:1617-1620 (get_user_memory_stats).
            call(
                "GET",
                "/user_memory_stats?limit=20&page=1&db_id=db1",
                Value::Null
            ),
            // os.py:1645-1649 (optimize_memories).
            call(
                "POST",
                "/optimize-memories?db_id=db1",
                json!({"user_id": "u1", "apply": true})
            ),
        ]
    );
}

#[tokio::test]
async fn host_errors_are_client_errors_with_the_hosts_status_and_detail() {
    let host = Host::start().await;
    let db = host.db();

    host.answer(404, json!({"detail": "Session not found"}));
    let error = db
        .get_session("nope", &SessionFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Status { status, detail, .. }
            if *status == StatusCode::NOT_FOUND && detail == "Session not found"),
        "{error:?}"
    );

    // FastAPI's validation detail is a list: kept, as compact JSON.
    host.answer(
        422,
        json!({"detail": [{"loc": ["body", "memory"], "msg": "too short"}]}),
    );
    let error = db
        .create_memory(&MemoryInput {
            memory: String::new(),
            user_id: "u1".into(),
            ..MemoryInput::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert!(error.detail().unwrap().contains("too short"), "{error:?}");

    // A 2xx answer of the wrong shape is a decode error, not a panic.
    host.answer(200, json!({"data": "not a list"}));
    let error = db
        .get_sessions(&SessionsQuery::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Decode { .. }), "{error:?}");

    // Runs fail the same way.
    host.answer(401, json!({"detail": "Invalid token"}));
    let error = RemoteAgent::new(&host.url, "a")
        .unwrap()
        .arun("hi")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(error.detail(), Some("Invalid token"));
    assert_eq!(error.base_url(), host.url);
}
