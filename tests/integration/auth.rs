//! Edge authentication, authorization and rate limits: every refusal with
//! AgentOS's status and `detail` (checked against agno 3.1.10's own
//! `JWTValidator` and `check_route_scopes`), and nothing of a refused
//! request reaching a host.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::recording::RecordingHost;
use crate::common::{
    Gateway, GatewayProcess, MockHost, client, eventually, json_of, rest, workflow,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example";
const HS_SECRET: &str = "hs-secret-for-tests-0123456789abcdef";

/// A signing key and the config's verification key for one algorithm.
struct Signer {
    alg: Algorithm,
    encoding: EncodingKey,
    /// What `verification_keys` holds: the PEM public key, or the secret.
    verification: String,
}

fn signer(alg: Algorithm) -> Signer {
    let pair = |a: &'static rcgen::SignatureAlgorithm| {
        let pair = rcgen::KeyPair::generate_for(a).unwrap();
        (pair.serialize_pem(), pair.public_key_pem())
    };
    match alg {
        Algorithm::HS256 => Signer {
            alg,
            encoding: EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
            verification: HS_SECRET.into(),
        },
        Algorithm::RS256 => {
            let (private, public) = pair(&rcgen::PKCS_RSA_SHA256);
            Signer {
                alg,
                encoding: EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
                verification: public,
            }
        }
        Algorithm::ES256 => {
            let (private, public) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
            Signer {
                alg,
                encoding: EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
                verification: public,
            }
        }
        other => panic!("no test key for {other:?}"),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a valid token for the gateway `gw-os` carries.
fn claims(extra: Value) -> Value {
    let mut c = json!({
        "sub": "alice",
        "aud": "gw-os",
        "iss": ISSUER,
        "exp": now() + 600,
        "scopes": ["agent_os:admin"],
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        for (k, v) in extra {
            c.insert(k, v);
        }
    }
    c
}

fn sign(s: &Signer, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(s.alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &s.encoding).unwrap()
}

/// A token by hand: any header, any signature.
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        enc(header),
        enc(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// An HS256 token whose HMAC key is `secret` (an RSA public key, for the
/// algorithm-confusion attack).
fn hs256_with(secret: &[u8], claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let input = format!("{}.{}", enc(&header), enc(claims));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(secret).unwrap(),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{signature}")
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => unreachable!(),
    }
}

fn jwt_config(s: &Signer, extra: &str) -> String {
    format!(
        "[server]\nos_id = \"gw-os\"\nhealth_checks = false\n\n[auth.jwt]\nalgorithm = \"{}\"\nverification_keys = ['''{}''']\nverify_audience = true\nissuer = \"{ISSUER}\"\nauthorization = true\n{extra}\n",
        alg_name(s.alg),
        s.verification
    )
}

/// POSTs a run with `authorization` (if any); returns status and `detail`.
async fn run_as(gw: &Gateway, authorization: Option<&str>) -> (u16, Value) {
    let mut request = client()
        .post(gw.url("/workflows/wf/runs"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("message=hi&stream=false");
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = rest(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn refusals_for(alg: Algorithm) {
    let s = signer(alg);
    let mut other = signer(alg);
    if alg == Algorithm::HS256 {
        other.encoding = EncodingKey::from_secret(b"another-secret-0123456789abcdef").unwrap();
    }
    let host = RecordingHost::start("guarded").await;
    let gw = Gateway::start(&format!(
        "{}{}",
        jwt_config(&s, ""),
        workflow("wf", &host.url, "wf")
    ))
    .await;
    let bearer = |t: &str| format!("Bearer {t}");
    let mut cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "Authorization header missing"),
        (
            // The parser trims the space: agno then reads the token "Bearer".
            "blank",
            Some("Bearer ".into()),
            "Invalid token: Not enough segments",
        ),
        (
            "expired",
            Some(bearer(&sign(&s, &claims(json!({"exp": now() - 60})), None))),
            "Token has expired",
        ),
        (
            "not yet valid",
            Some(bearer(&sign(
                &s,
                &claims(json!({"nbf": now() + 600})),
                None,
            ))),
            "Invalid token: The token is not yet valid (nbf)",
        ),
        (
            "wrong signature",
            Some(bearer(&sign(&other, &claims(json!({})), None))),
            "Invalid token: Signature verification failed",
        ),
        (
            "wrong audience",
            Some(bearer(&sign(
                &s,
                &claims(json!({"aud": "another-os"})),
                None,
            ))),
            "Invalid token audience - token not valid for this AgentOS instance",
        ),
        (
            "no audience",
            Some(bearer(&sign(&s, &claims(json!({"aud": null})), None))),
            "Invalid token: Token is missing the \"aud\" claim. Audience verification requires this claim to be present in the token.",
        ),
        (
            "wrong issuer",
            Some(bearer(&sign(
                &s,
                &claims(json!({"iss": "https://evil.example"})),
                None,
            ))),
            "Invalid token: Invalid issuer. Expected: https://idp.example, got: https://evil.example",
        ),
        (
            "none algorithm",
            Some(bearer(&raw_token(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims(json!({})),
                b"",
            ))),
            "Invalid token: The specified alg value is not allowed",
        ),
        (
            "garbage",
            Some(bearer("not-a-jwt")),
            "Invalid token: Not enough segments",
        ),
        (
            "reserved subject",
            Some(bearer(&sign(&s, &claims(json!({"sub": "sa:robot"})), None))),
            "Invalid token subject",
        ),
        (
            "service account token",
            Some(bearer("agno_pat_abc")),
            "Service accounts are not enabled on this AgentOS instance",
        ),
    ];
    if alg != Algorithm::HS256 {
        // The public key as an HMAC secret: algorithm confusion.
        cases.push((
            "algorithm confusion",
            Some(bearer(&hs256_with(
                s.verification.as_bytes(),
                &claims(json!({})),
            ))),
            "Invalid token: The specified alg value is not allowed",
        ));
    }
    for (case, authorization, detail) in &cases {
        let (status, body) = run_as(&gw, authorization.as_deref()).await;
        assert_eq!(status, 401, "{alg:?} {case}: {body}");
        assert_eq!(body, json!({"detail": detail}), "{alg:?} {case}");
    }
    assert!(
        host.connections().is_empty(),
        "{alg:?}: a refused request reached the host\n{}",
        host.describe()
    );
    // A bare token (no `Bearer`), expired within the 10 s leeway, goes
    // through, audience defaulting to the os_id.
    let token = sign(&s, &claims(json!({"exp": now() - 3})), None);
    let (status, body) = run_as(&gw, Some(&token)).await;
    assert!(status < 300, "{alg:?} bare token: {status} {body}");
}

#[tokio::test]
async fn hs256_refusals_match_agentos_and_never_reach_a_host() {
    refusals_for(Algorithm::HS256).await;
}

#[tokio::test]
async fn rs256_refusals_match_agentos_and_never_reach_a_host() {
    refusals_for(Algorithm::RS256).await;
}

#[tokio::test]
async fn es256_refusals_match_agentos_and_never_reach_a_host() {
    refusals_for(Algorithm::ES256).await;
}

/// Random and mangled tokens (a valid RS256 token with a character
/// replaced, removed or inserted, cut short, its segments shuffled; or any
/// printable text): the gateway answers every one, with 401 and a
/// `{"detail": "..."}` body, and none reaches the host.
#[test]
fn mangled_tokens_are_refused_with_a_detail_and_never_reach_a_host() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = signer(Algorithm::RS256);
    let (host, gw) = runtime.block_on(async {
        let host = RecordingHost::start("mangled").await;
        let gw = Gateway::start(&format!(
            "{}{}",
            jwt_config(&s, ""),
            workflow("wf", &host.url, "wf")
        ))
        .await;
        (host, gw)
    });
    let good = sign(&s, &claims(json!({})), Some("k1"));
    let (status, body) = runtime.block_on(run_as(&gw, Some(&good)));
    assert!(status < 300, "the token itself: {status} {body}");
    let mark = host.mark();
    let len = good.len();
    // Neither `=` nor a space is inserted: padding at a segment's end and
    // spaces around the token are accepted, as PyJWT and agno accept them.
    let pick = proptest::sample::select("AQgw09-_.+/!\"{}%~".chars().collect::<Vec<_>>());
    let chars = move |t: &str| t.chars().collect::<Vec<char>>();
    let mangled = prop_oneof![
        (0..len, pick.clone()).prop_map({
            let good = good.clone();
            move |(at, c)| {
                let mut t = chars(&good);
                t[at] = if t[at] == c { '!' } else { c };
                t.into_iter().collect::<String>()
            }
        }),
        (0..len).prop_map({
            let good = good.clone();
            move |at| {
                let mut t = chars(&good);
                t.remove(at);
                t.into_iter().collect()
            }
        }),
        (0..=len, pick).prop_map({
            let good = good.clone();
            move |(at, c)| {
                let mut t = chars(&good);
                t.insert(at, c);
                t.into_iter().collect()
            }
        }),
        (0..len).prop_map({
            let good = good.clone();
            move |at| good[..at].to_owned()
        }),
        proptest::collection::vec(0usize..3, 0..6).prop_filter_map("the token itself", {
            let good = good.clone();
            move |picks| {
                let parts: Vec<&str> = good.split('.').collect();
                let t = picks
                    .iter()
                    .map(|&i| parts[i])
                    .collect::<Vec<_>>()
                    .join(".");
                (t != good).then_some(t)
            }
        }),
        "[!-~][ -~]{0,300}",
    ];
    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&mangled, |token| {
            let (status, body) = runtime.block_on(run_as(&gw, Some(&format!("Bearer {token}"))));
            if status != 401 {
                return Err(TestCaseError::fail(format!("{token:?}: {status} {body}")));
            }
            let detail = body
                .as_object()
                .filter(|o| o.len() == 1)
                .and_then(|o| o["detail"].as_str());
            if detail.is_none_or(str::is_empty) {
                return Err(TestCaseError::fail(format!("{token:?}: body {body}")));
            }
            Ok(())
        })
        .unwrap();
    assert!(
        host.since(&mark).is_empty(),
        "a refused request reached the host\n{}",
        host.describe()
    );
}

#[tokio::test]
async fn jwks_file_keys_are_matched_by_kid() {
    let s = signer(Algorithm::RS256);
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&s.encoding, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let dir = crate::common::TempDir::new();
    let path = dir.0.join("jwks.json");
    std::fs::write(&path, json!({"keys": [jwk]}).to_string()).unwrap();
    let host = RecordingHost::start("jwks").await;
    let config = format!(
        "[server]\nos_id = \"gw-os\"\nhealth_checks = false\n[auth.jwt]\nalgorithm = \"RS256\"\njwks_file = \"{}\"\n{}",
        path.display(),
        workflow("wf", &host.url, "wf")
    );
    let gw = Gateway::start(&config).await;
    let unknown = sign(&s, &claims(json!({})), Some("k2"));
    let (status, body) = run_as(&gw, Some(&format!("Bearer {unknown}"))).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"detail": "Invalid token: No verification keys configured"})
    );
    assert!(host.connections().is_empty(), "{}", host.describe());
    let known = sign(&s, &claims(json!({})), Some("k1"));
    let (status, body) = run_as(&gw, Some(&format!("Bearer {known}"))).await;
    assert!(status < 300, "{status} {body}");
}

/// Every row of agno's own RBAC verdicts (tests/fixtures, generated from
/// the pinned agno by `agno_scope_matrix.py`): a denied row is a 403 with
/// AgentOS's detail, an allowed row gets past the gate.
#[tokio::test]
async fn scope_matrix_matches_agno_row_by_row() {
    let rows: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/agno_scope_matrix.json")).unwrap();
    assert!(rows.len() > 400);
    let s = signer(Algorithm::HS256);
    let gw = Gateway::start(&format!(
        "[server]\nos_id = \"gw-os\"\nhealth_checks = false\n[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"{HS_SECRET}\"]\nauthorization = true\n"
    ))
    .await;
    let http = client();
    for row in &rows {
        let method: http::Method = row["method"].as_str().unwrap().parse().unwrap();
        let path = row["path"].as_str().unwrap();
        let token = sign(&s, &claims(json!({"scopes": row["scopes"]})), None);
        let response = http
            .request(method.clone(), gw.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = json_of(&rest(response).await);
        if row["allowed"].as_bool().unwrap() {
            assert!(
                status != 401 && status != 403,
                "{method} {path} with {}: agno allows, gateway said {status} {body}",
                row["scopes"]
            );
        } else {
            assert_eq!(
                (status, &body["detail"]),
                (403, &row["detail"]),
                "{method} {path} with {}",
                row["scopes"]
            );
        }
    }
}

#[tokio::test]
async fn listings_show_only_what_per_resource_scopes_name() {
    let host = MockHost::start("host-os").await;
    let s = signer(Algorithm::HS256);
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"{HS_SECRET}\"]\nauthorization = true\n{}{}",
        workflow("a", &host.url, "a"),
        workflow("b", &host.url, "b")
    ))
    .await;
    let get = |path: &'static str, scopes: Value| {
        let token = sign(&s, &claims(json!({"scopes": scopes})), None);
        let url = gw.url(path);
        async move {
            let r = client().get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), json_of(&rest(r).await))
        }
    };
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = get("/workflows", json!(["workflows:a:read"])).await;
    assert_eq!((status, ids(&body)), (200, vec!["a".to_owned()]));
    let (status, body) = get("/workflows", json!(["workflows:read"])).await;
    assert_eq!(
        (status, ids(&body)),
        (200, vec!["a".to_owned(), "b".to_owned()])
    );
    let (status, body) = get("/workflows", json!(["workflows:*:read"])).await;
    assert_eq!((status, ids(&body).len()), (200, 2), "a wildcard lists all");
    let (status, body) = get("/workflows", json!(["workflows:a:run"])).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"detail": "Insufficient permissions. Required scope(s): workflows:read"})
    );
    let (status, body) = get("/config", json!(["config:read", "workflows:b:read"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["workflows"]), vec!["b".to_owned()]);
}

#[tokio::test]
async fn hosts_see_the_verified_user_and_the_chosen_token() {
    let host = MockHost::start("host-os").await;
    let s = signer(Algorithm::HS256);
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"{HS_SECRET}\"]\n{}{}auth_token = \"host-token\"\nforward_caller_token = false\n",
        workflow("pass", &host.url, "pass"),
        workflow("own", &host.url, "own"),
    ))
    .await;
    let token = sign(&s, &claims(json!({"session_id": "s-1"})), None);
    for id in ["pass", "own"] {
        let response = client()
            .post(gw.url(&format!("/workflows/{id}/runs")))
            .bearer_auth(&token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("message=hi&user_id=mallory&stream=false")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let runs: Vec<_> = host
        .recorded()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let body = String::from_utf8_lossy(&run.body);
        assert!(
            body.ends_with("&user_id=alice&session_id=s-1"),
            "the verified user comes last: {body}"
        );
    }
    let auth =
        |r: &crate::common::Recorded| r.headers["authorization"].to_str().unwrap().to_owned();
    assert_eq!(auth(&runs[0]), format!("Bearer {token}"));
    assert_eq!(auth(&runs[1]), "Bearer host-token");
    // The group serves a workflow that withholds the caller's token, so its
    // own /config is fetched with the workflow's token.
    let config = client()
        .get(gw.url("/config"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    let seen = host.config_auth();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|a| a.as_deref() == Some("Bearer host-token")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn security_key_mode_as_os_security_key() {
    let host = RecordingHost::start("keyed").await;
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n[auth]\nsecurity_key = \"sk-live-0123456789\"\n{}",
        workflow("wf", &host.url, "wf")
    ))
    .await;
    let (status, body) = run_as(&gw, None).await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Authorization header required"}))
    );
    let (status, body) = run_as(&gw, Some("Bearer sk-live-wrong")).await;
    assert_eq!(
        (status, body),
        (401, json!({"detail": "Invalid authentication token"}))
    );
    assert!(host.connections().is_empty(), "{}", host.describe());
    let health = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "excluded routes need no key");
    let (status, _) = run_as(&gw, Some("Bearer sk-live-0123456789")).await;
    assert!(status < 300, "{status}");
}

#[tokio::test]
async fn run_calls_are_rate_limited_per_caller() {
    let host = MockHost::start("host-os").await;
    let s = signer(Algorithm::HS256);
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"{HS_SECRET}\"]\n[limits]\nrun_rate = 0.001\nrun_burst = 2\n{}",
        workflow("wf", &host.url, "wf")
    ))
    .await;
    let alice = format!("Bearer {}", sign(&s, &claims(json!({})), None));
    let bob = format!("Bearer {}", sign(&s, &claims(json!({"sub": "bob"})), None));
    assert_eq!(run_as(&gw, Some(&alice)).await.0, 200);
    assert_eq!(run_as(&gw, Some(&alice)).await.0, 200);
    let response = client()
        .post(gw.url("/workflows/wf/runs"))
        .header("authorization", &alice)
        .body("message=hi&stream=false")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(
        json_of(&rest(response).await),
        json!({"detail": "Rate limit exceeded"})
    );
    assert_eq!(
        run_as(&gw, Some(&bob)).await.0,
        200,
        "bob has his own bucket"
    );
    let other = client()
        .get(gw.url("/workflows/wf"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "only run calls are limited here");
}

#[tokio::test]
async fn no_token_key_or_secret_reaches_the_log() {
    let host = MockHost::start("host-os").await;
    let s = signer(Algorithm::HS256);
    let good = sign(&s, &claims(json!({})), None);
    let expired = sign(&s, &claims(json!({"exp": now() - 100})), None);
    let forged = hs256_with(b"forged-secret", &claims(json!({})));
    let gw = GatewayProcess::spawn(
        &format!(
            "[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"{HS_SECRET}\"]\n{}auth_token = \"host-secret-token\"\n",
            workflow("wf", &host.url, "wf")
        ),
        &[],
    );
    for token in [&good, &expired, &forged, &"agno_pat_marker".to_owned()] {
        client()
            .post(gw.url("/workflows/wf/runs"))
            .bearer_auth(token)
            .body("message=hi&stream=false")
            .send()
            .await
            .unwrap();
    }
    client()
        .get(gw.url("/workflows/wf/runs/probe-last"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    eventually("the last request is logged", || {
        let log = gw.log();
        async move { log.iter().any(|l| l.contains("probe-last")) }
    })
    .await;
    let log = gw.log().join("\n");
    assert!(log.contains("Token has expired"), "refusals are logged");
    for secret in [
        good.as_str(),
        expired.as_str(),
        forged.as_str(),
        "agno_pat_marker",
        HS_SECRET,
        "host-secret-token",
    ] {
        // The signature part alone must not show up either.
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(tail), "`{tail}` appears in the log:\n{log}");
    }
}

/// An IdP serving a JWKS document the test can rotate or break, counting
/// fetches.
struct Idp {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<(Value, bool)>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Idp {
    async fn start(keys: Value) -> Idp {
        use axum::routing::get;
        use std::sync::atomic::Ordering;
        let shared = std::sync::Arc::new(std::sync::Mutex::new((keys, true)));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, f) = (shared.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            get(move || {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let (doc, up) = s.lock().unwrap().clone();
                    if up {
                        (http::StatusCode::OK, doc.to_string())
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, String::new())
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Idp {
            url,
            keys: shared,
            fetches,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn jwk(s: &Signer, kid: &str) -> Value {
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&s.encoding, s.alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

#[tokio::test]
async fn jwks_url_is_fetched_refetched_on_unknown_kid_and_kept_when_down() {
    let (one, two) = (signer(Algorithm::ES256), signer(Algorithm::ES256));
    let idp = Idp::start(json!({"keys": [jwk(&one, "k1")]})).await;
    let host = MockHost::start("host-os").await;
    let config = |min_refetch: &str| {
        format!(
            "[server]\nhealth_checks = false\n[auth.jwt]\nalgorithm = \"ES256\"\njwks_url = \"{}\"\njwks_min_refetch = {min_refetch}\n{}",
            idp.url,
            workflow("wf", &host.url, "wf")
        )
    };
    let gw = Gateway::start(&config("3600")).await;
    let token_one = format!("Bearer {}", sign(&one, &claims(json!({})), Some("k1")));
    let token_two = format!("Bearer {}", sign(&two, &claims(json!({})), Some("k2")));
    assert_eq!(run_as(&gw, Some(&token_one)).await.0, 200);
    // The IdP rotates in k2, but the start-up fetch was within the hour:
    // no refetch, however many unknown kids arrive.
    idp.keys.lock().unwrap().0 = json!({"keys": [jwk(&one, "k1"), jwk(&two, "k2")]});
    let before = idp.fetches();
    for _ in 0..3 {
        let (status, body) = run_as(&gw, Some(&token_two)).await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(idp.fetches(), before, "no refetch within the interval");

    // A gateway allowed to refetch at once picks up a rotated key, and keeps
    // the last good set while the IdP is down.
    let eager = Gateway::start(&config("0.001")).await;
    let unknown = format!("Bearer {}", sign(&two, &claims(json!({})), Some("k9")));
    assert_eq!(run_as(&eager, Some(&token_two)).await.0, 200);
    idp.keys.lock().unwrap().1 = false;
    let down = idp.fetches();
    assert_eq!(run_as(&eager, Some(&unknown)).await.0, 401);
    assert!(idp.fetches() > down, "refetched on the unknown kid");
    assert_eq!(
        run_as(&eager, Some(&token_one)).await.0,
        200,
        "last good set kept while the IdP is down"
    );
}

#[tokio::test]
async fn a_withheld_caller_token_stays_at_the_gateway_without_auth_and_by_any_path() {
    // No [auth]: the policy is the forwarding path's, not the auth layer's.
    let host = MockHost::start("host-os").await;
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n{}auth_token = \"host-token\"\nforward_caller_token = false\n[[agents]]\nid = \"helper\"\nbase_url = \"{}\"\nauth_token = \"agent-token\"\nforward_caller_token = false\n",
        workflow("own", &host.url, "own"),
        host.url,
    ))
    .await;
    // The plain path, a percent-encoded one the router decodes to the same
    // workflow, and an agent.
    for (path, expected) in [
        ("/workflows/own/runs", "Bearer host-token"),
        ("/workflows/%6Fwn/runs", "Bearer host-token"),
        ("/agents/helper/runs", "Bearer agent-token"),
    ] {
        let response = client()
            .post(gw.url(path))
            .header("authorization", "Bearer caller-secret")
            .form(&[("message", "hi"), ("stream", "false")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let last = host.last();
        assert_eq!(last.headers["authorization"], expected, "{path}");
        assert_eq!(
            last.headers.get_all("authorization").iter().count(),
            1,
            "{path}"
        );
    }
    assert!(
        host.recorded()
            .iter()
            .all(|r| !format!("{:?}", r.headers).contains("caller-secret")),
        "the caller's token never reached the host"
    );
}

#[tokio::test]
async fn an_anonymous_caller_is_limited_by_address_whatever_forwarded_for_says() {
    // No token: the bucket is the caller's address. Loopback is no trusted
    // proxy here, so a forged X-Forwarded-For must not buy a new bucket.
    let host = MockHost::start("host-os").await;
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n[limits]\nrun_rate = 0.001\nrun_burst = 1\n{}",
        workflow("wf", &host.url, "wf")
    ))
    .await;
    let run = |forwarded_for: &'static str| {
        client()
            .post(gw.url("/workflows/wf/runs"))
            .header("x-forwarded-for", forwarded_for)
            .form(&[("message", "hi"), ("stream", "false")])
            .send()
    };
    assert_eq!(run("203.0.113.1").await.unwrap().status(), 200);
    for forged in ["203.0.113.2", "198.51.100.7, 203.0.113.3", "not-an-address"] {
        assert_eq!(run(forged).await.unwrap().status(), 429, "{forged}");
    }
    assert_eq!(host.runs(), 1, "refused runs never reached the host");
}

#[tokio::test]
async fn behind_a_trusted_proxy_forwarded_for_names_the_caller() {
    // Loopback is the trusted proxy: each forwarded client has its bucket,
    // which needs the connection's own address to get there at all.
    let host = MockHost::start("host-os").await;
    let gw = Gateway::start(&format!(
        "[server]\nhealth_checks = false\n[limits]\nrun_rate = 0.001\nrun_burst = 1\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
        workflow("wf", &host.url, "wf")
    ))
    .await;
    let run = |forwarded_for: &'static str| {
        client()
            .post(gw.url("/workflows/wf/runs"))
            .header("x-forwarded-for", forwarded_for)
            .form(&[("message", "hi"), ("stream", "false")])
            .send()
    };
    assert_eq!(run("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(run("203.0.113.2").await.unwrap().status(), 200);
    assert_eq!(run("203.0.113.1").await.unwrap().status(), 429);
    // A client cannot pose as another by prepending an address: the
    // right-most untrusted hop is the caller.
    assert_eq!(run("203.0.113.9, 203.0.113.2").await.unwrap().status(), 429);
}
