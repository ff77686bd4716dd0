//! The `auth` workload (issue 15): what edge JWT verification costs.
//!
//! Two measurements, both from tokens this module mints with fixed claims:
//!
//! - **Through the gateway**: the same non-streaming run workload against
//!   three fresh gateways, `[auth.jwt]` off, HS256 and RS256 (2048-bit),
//!   interleaved within a round, the order rotating every round. Every
//!   request carries one of a few distinct tokens (eight callers), so the
//!   gateway's verified-token cache works as it does in production, and
//!   the gateway without `[auth.jwt]` gets the same `Authorization` bytes
//!   (the RS256 tokens) and forwards them. Scope RBAC is on
//!   (`workflows:run`), and the verified `sub` is appended to each run's
//!   form, as a JWT-protected deployment runs.
//! - **Cold verification in-process**: a timing loop calling the
//!   gateway's verifier (`agentos_gateway::auth::jwt::validate`, the call a
//!   cache miss makes) on the orchestrator's own thread, timed by that
//!   thread's CPU clock, so the two busy cores elsewhere do not count; with
//!   `jsonwebtoken::decode` and a `Validation` for the same checks beside it,
//!   for comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentos_gateway::auth::jwt::{self, KeySet, Rules};
use agentos_gateway_bench::RunsResult;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The audience every token names (the gateways' `os_id`).
pub const OS_ID: &str = "bench-os";
const ISSUER: &str = "https://idp.bench.invalid";
/// A fixed HS256 secret: bench material, never a real credential.
const HS_SECRET: &str = "agentos-gateway-bench-hs256-secret-0123456789";
/// Distinct callers: enough to exercise the cache's map, few enough that
/// every token stays cached, as a steady population of callers does.
const CALLERS: usize = 8;
const LEEWAY: u64 = 10;

/// One gateway configuration of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Variant {
    Off,
    Hs256,
    Rs256,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Off, Variant::Hs256, Variant::Rs256];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Off => "JWT off",
            Variant::Hs256 => "JWT HS256",
            Variant::Rs256 => "JWT RS256",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Variant::Off => "jwt-off",
            Variant::Hs256 => "jwt-hs256",
            Variant::Rs256 => "jwt-rs256",
        }
    }
}

/// Keys and tokens, minted once per bench run.
pub struct Material {
    rs_public_pem: String,
    rs_encoding: EncodingKey,
    hs_encoding: EncodingKey,
    /// Token files for `bench-load --bearer-file`, by variant.
    bearer_files: BTreeMap<Variant, PathBuf>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fixed claims of caller `i`, valid for a day from now.
fn claims(i: usize) -> Value {
    let now = now_secs();
    json!({
        "sub": format!("bench-user-{i}"),
        "aud": OS_ID,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 86_400,
        "scopes": ["workflows:run"],
    })
}

impl Material {
    /// Generates the RS256 key, mints `CALLERS` tokens per algorithm and
    /// writes the bearer files into `dir`.
    pub fn mint(dir: &Path) -> Result<Material, String> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| format!("RSA key: {e}"))?;
        let rs_encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
            .map_err(|e| format!("RSA key: {e}"))?;
        let hs_encoding =
            EncodingKey::from_secret(HS_SECRET.as_bytes()).map_err(|e| format!("HS key: {e}"))?;
        let mut material = Material {
            rs_public_pem: pair.public_key_pem(),
            rs_encoding,
            hs_encoding,
            bearer_files: BTreeMap::new(),
        };
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        for (variant, alg) in [
            (Variant::Hs256, Algorithm::HS256),
            (Variant::Rs256, Algorithm::RS256),
        ] {
            let tokens = material.tokens(alg, CALLERS)?;
            let path = dir.join(format!("{}.tokens", variant.slug()));
            std::fs::write(&path, tokens.join("\n")).map_err(|e| e.to_string())?;
            material.bearer_files.insert(variant, path.clone());
            if variant == Variant::Rs256 {
                // The same bytes on the wire without verification.
                material.bearer_files.insert(Variant::Off, path);
            }
        }
        Ok(material)
    }

    /// `n` tokens signed with `alg`, one per caller.
    pub fn tokens(&self, alg: Algorithm, n: usize) -> Result<Vec<String>, String> {
        let key = match alg {
            Algorithm::HS256 => &self.hs_encoding,
            _ => &self.rs_encoding,
        };
        (0..n)
            .map(|i| {
                jsonwebtoken::encode(&Header::new(alg), &claims(i), key)
                    .map_err(|e| format!("minting: {e}"))
            })
            .collect()
    }

    pub fn bearer_file(&self, variant: Variant) -> Option<&Path> {
        self.bearer_files.get(&variant).map(PathBuf::as_path)
    }

    /// The `[auth.jwt]` table for `variant` (empty when off), as an IdP's
    /// deployment writes it: audience, issuer, scope RBAC.
    pub fn config_table(&self, variant: Variant) -> String {
        let (alg, key) = match variant {
            Variant::Off => return String::new(),
            Variant::Hs256 => ("HS256", HS_SECRET),
            Variant::Rs256 => ("RS256", self.rs_public_pem.as_str()),
        };
        format!(
            "[auth.jwt]\nalgorithm = \"{alg}\"\nverification_keys = ['''{key}''']\nverify_audience = true\nissuer = \"{ISSUER}\"\nleeway = {LEEWAY}\nauthorization = true\n\n"
        )
    }

    fn verification(&self, alg: Algorithm) -> &str {
        match alg {
            Algorithm::HS256 => HS_SECRET,
            _ => &self.rs_public_pem,
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct passed.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// One cold-verification timing.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyResult {
    pub algorithm: &'static str,
    pub verifier: &'static str,
    pub verifications: u64,
    pub cpu_us_per: f64,
    pub wall_us_per: f64,
    pub errors: u64,
}

/// Which code verifies in the timing loop.
#[derive(Clone, Copy)]
enum Verifier {
    /// The gateway's own: `jwt::validate`, what a cache miss runs.
    Gateway,
    /// `jsonwebtoken::decode` with a `Validation` for the same checks.
    Decode,
}

impl Verifier {
    fn name(self) -> &'static str {
        match self {
            Verifier::Gateway => "agentos_gateway::auth::jwt::validate",
            Verifier::Decode => "jsonwebtoken::decode + Validation (comparison)",
        }
    }
}

/// Verifies `CALLERS` distinct tokens round-robin for about `budget` of
/// this thread's CPU; nothing is cached between calls.
fn time_verifier(
    material: &Material,
    alg: Algorithm,
    verifier: Verifier,
    budget: Duration,
) -> Result<VerifyResult, String> {
    let tokens = material.tokens(alg, CALLERS)?;
    let mut keys = KeySet::default();
    keys.add_static(alg, material.verification(alg))?;
    let rules = Rules {
        algorithm: alg,
        leeway: LEEWAY,
        audience_claim: "aud".into(),
        issuer: Some(ISSUER.into()),
    };
    let audience = vec![OS_ID.to_owned()];
    let decoding = match alg {
        Algorithm::HS256 => DecodingKey::from_secret(HS_SECRET.as_bytes()),
        _ => DecodingKey::from_rsa_pem(material.rs_public_pem.as_bytes()),
    }
    .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY;
    validation.set_audience(&[OS_ID]);
    validation.set_issuer(&[ISSUER]);
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    let verify = |token: &str, now: f64| -> bool {
        match verifier {
            Verifier::Gateway => jwt::validate(&keys, &rules, token, Some(&audience), now).is_ok(),
            Verifier::Decode => {
                jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation).is_ok()
            }
        }
    };
    let now = now_secs() as f64;
    // Warm caches and the allocator first.
    for t in &tokens {
        verify(t, now);
    }
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let (mut n, mut errors) = (0u64, 0u64);
    while thread_cpu() - cpu0 < budget {
        for t in &tokens {
            if !verify(std::hint::black_box(t), now) {
                errors += 1;
            }
            n += 1;
        }
    }
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    Ok(VerifyResult {
        algorithm: if alg == Algorithm::HS256 {
            "HS256"
        } else {
            "RS256"
        },
        verifier: verifier.name(),
        verifications: n,
        cpu_us_per: per(cpu),
        wall_us_per: per(wall),
        errors,
    })
}

/// The cold-verification timings of one round: HS256 and RS256, the
/// gateway's verifier and `jsonwebtoken::decode`.
pub fn verify_costs(material: &Material, budget: Duration) -> Vec<Result<VerifyResult, String>> {
    let mut out = Vec::new();
    for alg in [Algorithm::HS256, Algorithm::RS256] {
        for verifier in [Verifier::Gateway, Verifier::Decode] {
            out.push(time_verifier(material, alg, verifier, budget));
        }
    }
    out
}

/// Everything the workload measured in one round.
#[derive(Default, Clone, Serialize)]
pub struct AuthRound {
    pub runs: BTreeMap<Variant, RunsResult>,
    pub verify: Vec<VerifyResult>,
    pub notes: Vec<String>,
}

impl AuthRound {
    pub fn errors(&self) -> u64 {
        self.runs.values().map(|r| r.errors).sum::<u64>()
            + self.verify.iter().map(|v| v.errors).sum::<u64>()
    }

    /// Whether every variant and every timing has a result.
    pub fn complete(&self) -> bool {
        self.runs.len() == Variant::ALL.len() && self.verify.len() == 4
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `median (min–max)` of per-round values.
fn spread(v: Vec<f64>, digits: usize, suffix: &str) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match median(v) {
        None => "—".into(),
        Some(m) => format!("{m:.digits$}{suffix} ({lo:.digits$}–{hi:.digits$})"),
    }
}

fn cpu_per_request(r: &RunsResult) -> Option<f64> {
    let us = r.cpu.proxy_us?;
    (r.requests > 0).then(|| us as f64 / r.requests as f64)
}

/// The workload's tables.
pub fn report(rounds: &[AuthRound], connections: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Edge auth (issue 15): runs × {connections} connections, JWT on against off\n"
    );
    let _ = writeln!(
        out,
        "{} round(s), the three gateways interleaved within each, the order rotating; median (min–max) over rounds; ratios and differences taken within a round. {CALLERS} distinct tokens per algorithm, cached after their first use.\n",
        rounds.len()
    );
    let _ = writeln!(
        out,
        "| gateway | req/s | throughput vs off | gateway CPU µs/req | CPU µs/req over off | p50 µs | p99 µs | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let per_round = |v: Variant, f: &dyn Fn(&RunsResult, &RunsResult) -> Option<f64>| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| f(r.runs.get(&v)?, r.runs.get(&Variant::Off)?))
            .collect()
    };
    for v in Variant::ALL {
        if !rounds.iter().any(|r| r.runs.contains_key(&v)) {
            let note = rounds
                .iter()
                .flat_map(|r| r.notes.iter())
                .next()
                .map_or("no result", String::as_str);
            let _ = writeln!(out, "| {} | not run: {note} ||||||| |", v.name());
            continue;
        }
        let is_on = v != Variant::Off;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            v.name(),
            spread(per_round(v, &|a, _| Some(a.rps)), 0, ""),
            if is_on {
                spread(per_round(v, &|a, b| Some(a.rps / b.rps)), 2, "×")
            } else {
                "—".into()
            },
            spread(per_round(v, &|a, _| cpu_per_request(a)), 1, ""),
            if is_on {
                spread(
                    per_round(v, &|a, b| Some(cpu_per_request(a)? - cpu_per_request(b)?)),
                    1,
                    "",
                )
            } else {
                "—".into()
            },
            spread(per_round(v, &|a, _| Some(a.latency.p50_us)), 0, ""),
            spread(per_round(v, &|a, _| Some(a.latency.p99_us)), 0, ""),
            spread(per_round(v, &|a, _| Some(a.errors as f64)), 0, ""),
        );
    }
    let _ = writeln!(
        out,
        "\n### Cold verification, in-process (no cache): CPU per verification\n"
    );
    let _ = writeln!(
        out,
        "| algorithm | verifier | CPU µs/verification | wall µs/verification | verifications per round | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut keys: Vec<(&'static str, &'static str)> = Vec::new();
    for r in rounds {
        for v in &r.verify {
            if !keys.contains(&(v.algorithm, v.verifier)) {
                keys.push((v.algorithm, v.verifier));
            }
        }
    }
    for (alg, verifier) in keys {
        let of = |f: &dyn Fn(&VerifyResult) -> f64| -> Vec<f64> {
            rounds
                .iter()
                .flat_map(|r| r.verify.iter())
                .filter(|v| v.algorithm == alg && v.verifier == verifier)
                .map(f)
                .collect()
        };
        let _ = writeln!(
            out,
            "| {alg} | `{verifier}` | {} | {} | {} | {} |",
            spread(of(&|v| v.cpu_us_per), 2, ""),
            spread(of(&|v| v.wall_us_per), 2, ""),
            spread(of(&|v| v.verifications as f64), 0, ""),
            spread(of(&|v| v.errors as f64), 0, ""),
        );
    }
    out
}
