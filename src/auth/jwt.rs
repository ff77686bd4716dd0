//! JWT verification as agno's `JWTValidator` does it (agno 3.1.10 on PyJWT
//! 2.15): the same checks in the same order, so a refused token gets the same
//! 401 detail from the gateway as from an AgentOS.
//!
//! `jsonwebtoken` does the cryptography (`crypto::verify`: the signature,
//! and a key of the wrong family refused), key parsing (PEM, JWK) and
//! algorithm names. What is written out here is PyJWT's framing
//! (`PyJWS._load`) and claim checks (`PyJWT._validate_claims`), and agno's
//! audience and issuer checks after them, because what they answer is
//! what AgentOS puts in `detail`.
//!
//! # Why not `jsonwebtoken::decode` with a `Validation`
//!
//! Evaluated for issue 15 against `jsonwebtoken` 12.0. Its `decode` is the
//! only way to apply a `Validation` (the claim checks are crate-private),
//! and it differs from PyJWT where AgentOS users see it (each pinned by
//! `tests::why_not_jsonwebtoken_decode`):
//!
//! - **Padded segments.** PyJWT accepts base64url segments ending in `=`
//!   ("used by some issuers (e.g. AWS ALB)", its own comment), and the
//!   signature covers the padded text; `decode` refuses them outright, so
//!   tokens an AgentOS accepts could not be verified at all.
//! - **`iat` in the future.** PyJWT refuses it ("The token is not yet valid
//!   (iat)"); a `Validation` has no `iat` check, so the gateway would let
//!   through a token AgentOS refuses.
//! - **Claim order and types.** PyJWT checks `iat`, `nbf`, then `exp`, takes
//!   each through Python's `int()` (truncating floats, reading `"123"`,
//!   allowing negatives) and expires at `exp <= now - leeway`; `decode`
//!   checks `exp` before `nbf`, rounds floats, refuses strings and negatives
//!   as a format error, and expires at `exp < now - leeway`.
//! - **Which segment, which message.** PyJWT decodes all three segments
//!   before it checks the signature and names the one that fails ("Invalid
//!   payload padding"); `decode` checks the signature before it decodes the
//!   payload, and its `Base64` and `Json` errors do not say which segment
//!   they come from. A header it cannot type (`"alg": "none"`, no `alg`, a
//!   non-string `kid`) is a JSON error, where PyJWT answers "The specified
//!   alg value is not allowed", "Algorithm not specified", "Key ID header
//!   parameter must be a string".
//! - **Audience and issuer.** agno checks them itself, once, after trying
//!   every key, with its own messages that quote the claim (and the
//!   audience claim's name is configurable); in a `Validation` they would
//!   run per key, so a token with a wrong issuer and two configured keys
//!   would be reported as the second key's signature failure.
//!
//! Cold verification costs about the same either way (BENCHMARKS.md, "Edge
//! auth (issue 15)"), so the choice is about answers, not speed.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Where the token is read from (`JWTMiddleware`'s `token_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Cookie,
    /// The header first, then the cookie.
    Both,
}

/// The algorithm named `raw`, as the config (and a token's `alg`) spells
/// it: `jsonwebtoken`'s names, which are the JOSE names.
pub fn algorithm(raw: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(raw).map_err(|_| {
        format!(
            "`{raw}` is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
        )
    })
}

/// The verification keys: `verification_keys` tried in order, and the
/// `jwks_file` keys matched by `kid` (a key without one is the default).
#[derive(Default, Clone)]
pub struct KeySet {
    statics: Vec<DecodingKey>,
    jwks: HashMap<String, DecodingKey>,
    /// What the keys were read from, in order: equal sets compare equal
    /// (a config reload tells whether `[auth]` changed).
    sources: Vec<String>,
}

impl PartialEq for KeySet {
    fn eq(&self, other: &KeySet) -> bool {
        self.sources == other.sources
    }
}

/// The key id of a JWKS key without a `kid`, as agno names it.
const DEFAULT_KID: &str = "_default";

impl fmt::Debug for KeySet {
    // Keys (HMAC secrets among them) never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeySet({} static, {} JWKS)",
            self.statics.len(),
            self.jwks.len()
        )
    }
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.statics.is_empty() && self.jwks.is_empty()
    }

    /// A `verification_keys` entry: a shared secret for HS*, a PEM public
    /// key for the others.
    pub fn add_static(&mut self, alg: Algorithm, key: &str) -> Result<(), String> {
        use Algorithm::*;
        let pem = key.trim_start().starts_with("-----BEGIN");
        let parsed = match alg {
            HS256 | HS384 | HS512 => {
                // PyJWT refuses a PEM or SSH key as an HMAC secret: that is
                // the algorithm-confusion attack, so it is refused here.
                if pem || key.starts_with("ssh-") {
                    return Err(
                        "an asymmetric key cannot be an HMAC secret; use an RS/ES/PS algorithm"
                            .into(),
                    );
                }
                if key.is_empty() {
                    return Err("an empty HMAC secret".into());
                }
                DecodingKey::from_secret(key.as_bytes())
            }
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                DecodingKey::from_rsa_pem(key.as_bytes())
            }
            ES256 | ES384 => DecodingKey::from_ec_pem(key.as_bytes()),
            EdDSA => DecodingKey::from_ed_pem(key.as_bytes()),
            _ => return Err(format!("{alg:?} is not supported")),
        };
        let parsed = parsed.map_err(|e| format!("not a PEM public key for {alg:?}: {e}"))?;
        self.statics.push(parsed);
        self.sources.push(key.to_owned());
        Ok(())
    }

    /// Every key of a JWKS document; keys that do not parse are skipped
    /// with a warning, as agno does.
    pub fn add_jwks(&mut self, text: &str) -> Result<usize, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut added = 0;
        for key in keys {
            let kid = key
                .get("kid")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .unwrap_or(DEFAULT_KID)
                .to_owned();
            let parsed = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(key)
                .map_err(|e| e.to_string())
                .and_then(|jwk| DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string()));
            match parsed {
                Ok(k) => {
                    self.jwks.insert(kid, k);
                    added += 1;
                }
                Err(e) => tracing::warn!(kid, error = %e, "failed to parse JWKS key; skipped"),
            }
        }
        if added == 0 {
            return Err("contains no usable keys".into());
        }
        self.sources.push(text.to_owned());
        Ok(added)
    }

    /// Whether there are any JWKS keys.
    pub fn has_jwks(&self) -> bool {
        !self.jwks.is_empty()
    }

    /// Whether the JWKS part knows `kid`.
    pub fn knows_kid(&self, kid: &str) -> bool {
        self.jwks.contains_key(kid)
    }
}

/// Why a token was refused, with AgentOS's 401 detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `ExpiredSignatureError`.
    Expired,
    /// `InvalidAudienceError`.
    Audience,
    /// Any other `InvalidTokenError`: PyJWT's (or agno's) message.
    Invalid(String),
}

impl Rejection {
    /// The `detail` AgentOS answers with.
    pub fn detail(&self) -> String {
        match self {
            Rejection::Expired => "Token has expired".into(),
            Rejection::Audience => {
                "Invalid token audience - token not valid for this AgentOS instance".into()
            }
            Rejection::Invalid(m) => format!("Invalid token: {m}"),
        }
    }
}

fn invalid(m: impl Into<String>) -> Rejection {
    Rejection::Invalid(m.into())
}

/// The claim names and expectations a token is checked against.
#[derive(Debug, Clone)]
pub struct Rules {
    pub algorithm: Algorithm,
    pub leeway: u64,
    pub audience_claim: String,
    pub issuer: Option<String>,
}

/// agno's `JWTValidator.validate_token`: the JWKS key named by `kid` first,
/// then each static key in order; the last failure is reported, except that
/// an expired token is reported at once. Then audience and issuer.
pub fn validate(
    keys: &KeySet,
    rules: &Rules,
    token: &str,
    expected_audience: Option<&[String]>,
    now: f64,
) -> Result<Map<String, Value>, Rejection> {
    let mut last: Option<Rejection> = None;
    let mut payload = None;
    if !keys.jwks.is_empty() {
        match load(token) {
            Err(e) if keys.statics.is_empty() => return Err(e),
            Err(e) => last = Some(e),
            Ok(parts) => {
                let kid = parts
                    .header
                    .get("kid")
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty());
                let key = kid
                    .and_then(|k| keys.jwks.get(k))
                    .or_else(|| keys.jwks.get(DEFAULT_KID));
                if let Some(key) = key {
                    match decode(&parts, key, rules, now) {
                        Ok(p) => payload = Some(p),
                        Err(Rejection::Expired) => return Err(Rejection::Expired),
                        Err(e) if keys.statics.is_empty() => return Err(e),
                        Err(e) => last = Some(e),
                    }
                }
            }
        }
    }
    if payload.is_none() {
        for key in &keys.statics {
            // Each attempt re-reads the token, as each PyJWT `decode` does;
            // the framing errors are the same every time.
            let attempt = load(token).and_then(|parts| decode(&parts, key, rules, now));
            match attempt {
                Ok(p) => {
                    payload = Some(p);
                    break;
                }
                Err(Rejection::Expired) => return Err(Rejection::Expired),
                Err(e) => last = Some(e),
            }
        }
    }
    let Some(payload) = payload else {
        return Err(last.unwrap_or_else(|| invalid("No verification keys configured")));
    };
    if let Some(expected) = expected_audience.filter(|e| !e.is_empty()) {
        let claim = &rules.audience_claim;
        let audiences: Vec<&Value> = match payload.get(claim) {
            None | Some(Value::Null) => {
                return Err(invalid(format!(
                    "Token is missing the \"{claim}\" claim. Audience verification requires this claim to be present in the token."
                )));
            }
            Some(Value::Array(list)) => list.iter().collect(),
            Some(v) if truthy(v) => vec![v],
            Some(_) => Vec::new(),
        };
        let matched = audiences
            .iter()
            .any(|a| a.as_str().is_some_and(|a| expected.iter().any(|e| e == a)));
        if !matched {
            return Err(Rejection::Audience);
        }
    }
    if let Some(issuer) = &rules.issuer {
        match payload.get("iss") {
            None | Some(Value::Null) => {
                return Err(invalid(
                    "Token is missing the \"iss\" claim. Issuer verification requires this claim to be present in the token.",
                ));
            }
            Some(Value::String(iss)) if iss == issuer => {}
            Some(other) => {
                return Err(invalid(format!(
                    "Invalid issuer. Expected: {issuer}, got: {}",
                    py_str(other)
                )));
            }
        }
    }
    Ok(payload)
}

/// Whether a verified payload has expired since (its `exp`, with leeway).
pub fn expired(payload: &Map<String, Value>, leeway: u64, now: f64) -> bool {
    payload
        .get("exp")
        .and_then(py_int)
        .is_some_and(|exp| exp as f64 <= now - leeway as f64)
}

/// The `kid` a token's header names, unverified (to pick or fetch keys).
pub fn unverified_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = segment(header, "header").ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// A token cut into its parts, as PyJWT's `_load` does.
struct Parts<'t> {
    header: Map<String, Value>,
    payload: Vec<u8>,
    signing_input: &'t str,
    signature: &'t str,
}

fn load(token: &str) -> Result<Parts<'_>, Rejection> {
    let (signing_input, crypto) = token
        .rsplit_once('.')
        .ok_or_else(|| invalid("Not enough segments"))?;
    let (header_segment, payload_segment) = signing_input
        .split_once('.')
        .ok_or_else(|| invalid("Not enough segments"))?;
    let header_bytes = segment(header_segment, "header")?;
    let header: Value = serde_json::from_slice(&header_bytes)
        .map_err(|e| invalid(format!("Invalid header string: {}", py_json_error(&e))))?;
    let Value::Object(header) = header else {
        return Err(invalid("Invalid header string: must be a json object"));
    };
    let payload = if header.get("b64") == Some(&Value::Bool(false)) {
        if !payload_segment.is_empty() {
            return Err(invalid(
                "Payload segment must be empty when 'b64' is false.",
            ));
        }
        Vec::new()
    } else {
        segment(payload_segment, "payload")?
    };
    segment(crypto, "crypto")?;
    check_headers(&header)?;
    Ok(Parts {
        header,
        payload,
        signing_input,
        signature: crypto.trim_end_matches('='),
    })
}

/// PyJWT's strict base64url: at most two `=`, only the URL alphabet, and
/// canonical (re-encoding gives the same text).
fn segment(s: &str, name: &str) -> Result<Vec<u8>, Rejection> {
    let bad = || invalid(format!("Invalid {name} padding"));
    let stripped = s.trim_end_matches('=');
    let padding = s.len() - stripped.len();
    if padding > 2 || (padding > 0 && !s.len().is_multiple_of(4)) || stripped.len() % 4 == 1 {
        return Err(bad());
    }
    if !stripped
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad());
    }
    // The engine refuses non-zero trailing bits: PyJWT's re-encoding check.
    URL_SAFE_NO_PAD.decode(stripped).map_err(|_| bad())
}

/// `kid` and `crit`, as `PyJWS._validate_headers`.
fn check_headers(header: &Map<String, Value>) -> Result<(), Rejection> {
    if let Some(kid) = header.get("kid")
        && !kid.is_string()
    {
        return Err(invalid("Key ID header parameter must be a string"));
    }
    if let Some(crit) = header.get("crit") {
        let list = crit
            .as_array()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| invalid("Invalid 'crit' header: must be a non-empty list"))?;
        for ext in list {
            let ext = ext
                .as_str()
                .ok_or_else(|| invalid("Invalid 'crit' header: values must be strings"))?;
            if ext != "b64" {
                return Err(invalid(format!("Unsupported critical extension: {ext}")));
            }
            if !header.contains_key(ext) {
                return Err(invalid(format!(
                    "Critical extension '{ext}' is missing from headers"
                )));
            }
        }
    }
    Ok(())
}

/// One `jwt.decode(token, key, algorithms=[alg], leeway=...)`, audience
/// not verified (agno checks it afterwards).
fn decode(
    parts: &Parts<'_>,
    key: &DecodingKey,
    rules: &Rules,
    now: f64,
) -> Result<Map<String, Value>, Rejection> {
    let header = &parts.header;
    if header.get("b64") == Some(&Value::Bool(false)) {
        let listed = header
            .get("crit")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|e| e == "b64"));
        return Err(invalid(if listed {
            "It is required that you pass in a value for the \"detached_payload\" argument to decode a message having the b64 header set to false."
        } else {
            "The 'b64' header parameter requires 'b64' to be listed in 'crit'."
        }));
    }
    let alg = header
        .get("alg")
        .ok_or_else(|| invalid("Algorithm not specified"))?;
    // Only the configured algorithm: `none`, and an HS256 token against an
    // RSA public key, stop here.
    if alg.as_str().and_then(|a| Algorithm::from_str(a).ok()) != Some(rules.algorithm) {
        return Err(invalid("The specified alg value is not allowed"));
    }
    let verified = jsonwebtoken::crypto::verify(
        parts.signature,
        parts.signing_input.as_bytes(),
        key,
        rules.algorithm,
    )
    .unwrap_or(false);
    if !verified {
        return Err(invalid("Signature verification failed"));
    }
    let payload: Value = serde_json::from_slice(&parts.payload)
        .map_err(|e| invalid(format!("Invalid payload string: {}", py_json_error(&e))))?;
    let Value::Object(payload) = payload else {
        return Err(invalid("Invalid payload string: must be a json object"));
    };
    let leeway = rules.leeway as f64;
    if let Some(iat) = payload.get("iat") {
        let iat =
            py_int(iat).ok_or_else(|| invalid("Issued At claim (iat) must be an integer."))?;
        if iat as f64 > now + leeway {
            return Err(invalid("The token is not yet valid (iat)"));
        }
    }
    if let Some(nbf) = payload.get("nbf") {
        let nbf =
            py_int(nbf).ok_or_else(|| invalid("Not Before claim (nbf) must be an integer."))?;
        if nbf as f64 > now + leeway {
            return Err(invalid("The token is not yet valid (nbf)"));
        }
    }
    if let Some(exp) = payload.get("exp") {
        let exp = py_int(exp)
            .ok_or_else(|| invalid("Expiration Time claim (exp) must be an integer."))?;
        if exp as f64 <= now - leeway {
            return Err(Rejection::Expired);
        }
    }
    if payload.get("sub").is_some_and(|s| !s.is_string()) {
        return Err(invalid("Subject must be a string"));
    }
    if payload.get("jti").is_some_and(|s| !s.is_string()) {
        return Err(invalid("JWT ID must be a string"));
    }
    Ok(payload)
}

/// Python's `int(value)` for a JSON value: numbers truncated, booleans 0/1,
/// decimal strings parsed; anything else (null, lists) is an error.
fn py_int(v: &Value) -> Option<i128> {
    match v {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.trunc() as i128)
            }),
        Value::String(s) => {
            let s = s.trim();
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            let ok = !digits.is_empty()
                && !digits.starts_with('_')
                && !digits.ends_with('_')
                && !digits.contains("__")
                && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
            if !ok {
                return None;
            }
            s.replace('_', "").parse().ok()
        }
        _ => None,
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of a decoded JSON value, for messages that quote one.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `json` message for the commonest failure (no JSON value where
/// one was expected); other failures keep serde's wording.
fn py_json_error(e: &serde_json::Error) -> String {
    if e.is_eof() || e.to_string().starts_with("expected value") {
        let column = e.column().max(1);
        return format!(
            "Expecting value: line {} column {column} (char {})",
            e.line().max(1),
            column - 1
        );
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE;
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{EncodingKey, Validation};
    use proptest::prelude::*;

    const SECRET: &str = "jwt-rs-unit-test-secret-0123456789";

    fn hs256_keys() -> KeySet {
        let mut keys = KeySet::default();
        keys.add_static(Algorithm::HS256, SECRET).unwrap();
        keys
    }

    fn rules() -> Rules {
        Rules {
            algorithm: Algorithm::HS256,
            leeway: 10,
            audience_claim: "aud".into(),
            issuer: Some("https://idp.example".into()),
        }
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// An HS256 token over exactly these segments (padded or not).
    fn signed(header: &str, payload: &str) -> String {
        let input = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{signature}")
    }

    fn segment_of(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn claims(extra: Value) -> Value {
        let now = unix_now();
        let mut c = serde_json::json!({
            "sub": "alice", "aud": "os", "iss": "https://idp.example", "exp": now + 600,
        });
        if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
            c.extend(extra);
        }
        c
    }

    fn ours(token: &str) -> Result<Map<String, Value>, Rejection> {
        let audience = vec!["os".to_owned()];
        validate(
            &hs256_keys(),
            &rules(),
            token,
            Some(&audience),
            unix_now() as f64,
        )
    }

    fn theirs(token: &str) -> Result<(), ErrorKind> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 10;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.set_audience(&["os"]);
        validation.set_issuer(&["https://idp.example"]);
        let key = DecodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map(|_| ())
            .map_err(|e| e.into_kind())
    }

    /// The reasons in the module doc, as facts: if `jsonwebtoken` changes
    /// any of them, this fails and the choice can be made again.
    #[test]
    fn why_not_jsonwebtoken_decode() {
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        // A well-formed token: both agree.
        let good = signed(&segment_of(&header), &segment_of(&claims(Value::Null)));
        assert!(ours(&good).is_ok());
        assert!(theirs(&good).is_ok());

        // Padded segments, signed as sent (AWS ALB's tokens): PyJWT and the
        // gateway verify them; `decode` cannot.
        let payload = claims(serde_json::json!({"pad": "x"}));
        let padded = URL_SAFE.encode(serde_json::to_vec(&payload).unwrap());
        let padded = [1, 2, 3]
            .iter()
            .map(|n| {
                let mut p = payload.clone();
                p["pad"] = Value::String("x".repeat(*n));
                URL_SAFE.encode(serde_json::to_vec(&p).unwrap())
            })
            .find(|s| s.ends_with('='))
            .unwrap_or(padded);
        let token = signed(&segment_of(&header), &padded);
        assert!(ours(&token).is_ok(), "{:?}", ours(&token));
        assert!(matches!(theirs(&token), Err(ErrorKind::Base64(_))));

        // `iat` in the future: PyJWT refuses, a `Validation` lets it in.
        let token = signed(
            &segment_of(&header),
            &segment_of(&claims(serde_json::json!({"iat": unix_now() + 3600}))),
        );
        assert_eq!(
            ours(&token).unwrap_err().detail(),
            "Invalid token: The token is not yet valid (iat)"
        );
        assert!(theirs(&token).is_ok());

        // Not yet valid and expired: PyJWT reports `nbf` first.
        let token = signed(
            &segment_of(&header),
            &segment_of(&claims(serde_json::json!({
                "nbf": unix_now() + 600, "exp": unix_now() - 600,
            }))),
        );
        assert_eq!(
            ours(&token).unwrap_err().detail(),
            "Invalid token: The token is not yet valid (nbf)"
        );
        assert!(matches!(theirs(&token), Err(ErrorKind::ExpiredSignature)));

        // `exp` as a decimal string: Python's int() reads it.
        let token = signed(
            &segment_of(&header),
            &segment_of(&claims(
                serde_json::json!({"exp": (unix_now() + 600).to_string()}),
            )),
        );
        assert!(ours(&token).is_ok());
        assert!(matches!(theirs(&token), Err(ErrorKind::InvalidClaimFormat(c)) if c == "exp"));

        // `alg: none` and a missing `alg` are JSON errors to `decode`,
        // indistinguishable from any other header it cannot type.
        for (header, detail) in [
            (
                serde_json::json!({"alg": "none"}),
                "Invalid token: The specified alg value is not allowed",
            ),
            (
                serde_json::json!({"typ": "JWT"}),
                "Invalid token: Algorithm not specified",
            ),
            (
                serde_json::json!({"alg": "HS256", "kid": 7}),
                "Invalid token: Key ID header parameter must be a string",
            ),
        ] {
            let token = signed(&segment_of(&header), &segment_of(&claims(Value::Null)));
            assert_eq!(ours(&token).unwrap_err().detail(), detail);
            assert!(
                matches!(theirs(&token), Err(ErrorKind::Json(_))),
                "{header}"
            );
        }

        // A bad payload segment: PyJWT decodes every segment before the
        // signature and names it; `decode` checks the signature first.
        let token = format!("{}.a.c2ln", segment_of(&header));
        assert_eq!(
            ours(&token).unwrap_err().detail(),
            "Invalid token: Invalid payload padding"
        );
        assert!(matches!(theirs(&token), Err(ErrorKind::InvalidSignature)));
    }

    /// A valid token, then mangled: any one character replaced, removed or
    /// inserted, the token cut short, segments repeated or dropped.
    fn mangled() -> impl Strategy<Value = String> {
        let good = signed(
            &segment_of(&serde_json::json!({"alg": "HS256", "typ": "JWT"})),
            &segment_of(&claims(Value::Null)),
        );
        let len = good.len();
        let alphabet: Vec<char> = "ABCxyz019-_.=+/!\"{}%~ \u{e9}".chars().collect();
        let pick = proptest::sample::select(alphabet);
        prop_oneof![
            (0..len, pick.clone()).prop_map({
                let good = good.clone();
                move |(at, c)| {
                    let mut t: Vec<char> = good.chars().collect();
                    t[at] = c;
                    t.into_iter().collect()
                }
            }),
            (0..len).prop_map({
                let good = good.clone();
                move |at| {
                    let mut t: Vec<char> = good.chars().collect();
                    t.remove(at);
                    t.into_iter().collect()
                }
            }),
            (0..=len, pick).prop_map({
                let good = good.clone();
                move |(at, c)| {
                    let mut t: Vec<char> = good.chars().collect();
                    t.insert(at, c);
                    t.into_iter().collect()
                }
            }),
            (0..len).prop_map({
                let good = good.clone();
                move |at| good[..at].to_owned()
            }),
            proptest::collection::vec(0usize..3, 0..6).prop_map(move |picks| {
                let parts: Vec<&str> = good.split('.').collect();
                picks
                    .iter()
                    .map(|&i| parts[i])
                    .collect::<Vec<_>>()
                    .join(".")
            }),
            "\\PC{0,300}",
        ]
    }

    proptest! {
        /// Whatever arrives, the verifier answers (never panics), and a
        /// refusal is one of AgentOS's 401 details.
        #[test]
        fn mangled_tokens_are_refused_with_a_detail(token in mangled()) {
            if let Err(rejection) = ours(&token) {
                let detail = rejection.detail();
                prop_assert!(
                    detail.starts_with("Invalid token: ")
                        || detail == "Token has expired"
                        || detail.starts_with("Invalid token audience"),
                    "{detail}"
                );
            }
            let _ = unverified_kid(&token);
        }
    }

    #[test]
    fn python_int_of_claims() {
        assert_eq!(py_int(&serde_json::json!(12)), Some(12));
        assert_eq!(py_int(&serde_json::json!(-1.9)), Some(-1));
        assert_eq!(py_int(&serde_json::json!(true)), Some(1));
        assert_eq!(py_int(&serde_json::json!(" 1_000 ")), Some(1000));
        assert_eq!(py_int(&serde_json::json!("1.5")), None);
        assert_eq!(py_int(&serde_json::json!(null)), None);
        assert_eq!(py_int(&serde_json::json!([1])), None);
    }

    #[test]
    fn strict_base64url_segments() {
        assert!(segment("eyJ9", "header").is_ok());
        assert!(segment("eyJ9===", "header").is_err());
        assert!(segment("a", "header").is_err());
        assert!(segment("ab+/", "header").is_err());
        // Non-zero trailing bits are not canonical.
        assert!(segment("eB", "header").is_err());
        assert!(segment("eA", "header").is_ok());
    }

    #[test]
    fn framing_messages() {
        let keys = KeySet::default();
        let rules = Rules {
            algorithm: Algorithm::HS256,
            leeway: 10,
            audience_claim: "aud".into(),
            issuer: None,
        };
        let err = |t: &str| validate(&keys, &rules, t, None, 0.0).unwrap_err().detail();
        assert_eq!(err("abc"), "Invalid token: No verification keys configured");
        let mut keys = KeySet::default();
        keys.add_static(Algorithm::HS256, "secret").unwrap();
        let err = |t: &str| validate(&keys, &rules, t, None, 0.0).unwrap_err().detail();
        assert_eq!(err("abc"), "Invalid token: Not enough segments");
        assert_eq!(err("a.b.c"), "Invalid token: Invalid header padding");
        assert_eq!(
            err("e30.e30.c2ln"),
            "Invalid token: Algorithm not specified"
        );
        // {"alg":"none"}
        assert_eq!(
            err("eyJhbGciOiJub25lIn0.e30."),
            "Invalid token: The specified alg value is not allowed"
        );
        assert_eq!(
            err(".e30.c2ln"),
            "Invalid token: Invalid header string: Expecting value: line 1 column 1 (char 0)"
        );
    }
}
