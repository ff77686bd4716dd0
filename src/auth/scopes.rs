//! Scope RBAC as AgentOS's `agno/os/scopes.py` does it: the route → scope
//! map (every AgentOS route, matched on `METHOD /path` patterns, not on the
//! gateway's own route list, so agent, team and database routes are covered
//! as they are added), scope parsing and matching, per-resource scopes, the
//! admin scope, and the ids a listing may show.

use std::collections::BTreeSet;

/// AgentOS's `get_default_scope_mappings()` (agno 3.1.10), in its order:
/// an exact key wins, then the first pattern that matches (`*` spans `/`).
pub const DEFAULT_SCOPE_MAPPINGS: &[(&str, &[&str])] = &[
    ("GET /config", &["config:read"]),
    ("GET /models", &["config:read"]),
    ("GET /agents", &["agents:read"]),
    ("GET /agents/*", &["agents:read"]),
    ("POST /agents", &["agents:write"]),
    ("PATCH /agents/*", &["agents:write"]),
    ("DELETE /agents/*", &["agents:delete"]),
    ("POST /agents/*/runs", &["agents:run"]),
    ("POST /agents/*/runs/*/continue", &["agents:run"]),
    ("POST /agents/*/runs/*/cancel", &["agents:run"]),
    ("GET /teams", &["teams:read"]),
    ("GET /teams/*", &["teams:read"]),
    ("POST /teams", &["teams:write"]),
    ("PATCH /teams/*", &["teams:write"]),
    ("DELETE /teams/*", &["teams:delete"]),
    ("POST /teams/*/runs", &["teams:run"]),
    ("POST /teams/*/runs/*/continue", &["teams:run"]),
    ("POST /teams/*/runs/*/cancel", &["teams:run"]),
    ("GET /workflows", &["workflows:read"]),
    ("GET /workflows/*", &["workflows:read"]),
    ("POST /workflows", &["workflows:write"]),
    ("PATCH /workflows/*", &["workflows:write"]),
    ("DELETE /workflows/*", &["workflows:delete"]),
    ("POST /workflows/*/runs", &["workflows:run"]),
    ("POST /workflows/*/runs/*/continue", &["workflows:run"]),
    ("POST /workflows/*/runs/*/cancel", &["workflows:run"]),
    ("GET /sessions", &["sessions:read"]),
    ("GET /sessions/*", &["sessions:read"]),
    ("POST /sessions", &["sessions:write"]),
    ("POST /sessions/*/rename", &["sessions:write"]),
    ("PATCH /sessions/*", &["sessions:write"]),
    ("DELETE /sessions", &["sessions:delete"]),
    ("DELETE /sessions/*", &["sessions:delete"]),
    ("GET /memories", &["memories:read"]),
    ("GET /memories/*", &["memories:read"]),
    ("GET /memory_topics", &["memories:read"]),
    ("GET /user_memory_stats", &["memories:read"]),
    ("POST /memories", &["memories:write"]),
    ("PATCH /memories/*", &["memories:write"]),
    ("DELETE /memories", &["memories:delete"]),
    ("DELETE /memories/*", &["memories:delete"]),
    ("POST /optimize-memories", &["memories:write"]),
    ("GET /learnings", &["learnings:read"]),
    ("GET /learnings/*", &["learnings:read"]),
    ("POST /learnings", &["learnings:write"]),
    ("PATCH /learnings/*", &["learnings:write"]),
    ("DELETE /learnings/*", &["learnings:delete"]),
    ("GET /knowledge/content", &["knowledge:read"]),
    ("GET /knowledge/content/*", &["knowledge:read"]),
    ("GET /knowledge/config", &["knowledge:read"]),
    ("POST /knowledge/content", &["knowledge:write"]),
    ("POST /knowledge/content/*/refresh", &["knowledge:write"]),
    ("PATCH /knowledge/content/*", &["knowledge:write"]),
    ("POST /knowledge/search", &["knowledge:read"]),
    ("DELETE /knowledge/content", &["knowledge:delete"]),
    ("DELETE /knowledge/content/*", &["knowledge:delete"]),
    ("GET /metrics", &["metrics:read"]),
    ("POST /metrics/refresh", &["metrics:write"]),
    ("GET /metrics/refresh/status", &["metrics:read"]),
    ("GET /eval-runs", &["evals:read"]),
    ("GET /eval-runs/*", &["evals:read"]),
    ("POST /eval-runs", &["evals:write"]),
    ("PATCH /eval-runs/*", &["evals:write"]),
    ("DELETE /eval-runs", &["evals:delete"]),
    ("GET /traces", &["traces:read"]),
    ("GET /traces/*", &["traces:read"]),
    ("GET /trace_session_stats", &["traces:read"]),
    ("POST /service-accounts", &["service_accounts:write"]),
    ("GET /service-accounts", &["service_accounts:read"]),
    ("DELETE /service-accounts/*", &["service_accounts:delete"]),
    ("GET /schedules", &["schedules:read"]),
    ("GET /schedules/*", &["schedules:read"]),
    ("POST /schedules", &["schedules:write"]),
    ("PATCH /schedules/*", &["schedules:write"]),
    ("DELETE /schedules/*", &["schedules:delete"]),
    ("POST /schedules/*/enable", &["schedules:write"]),
    ("POST /schedules/*/disable", &["schedules:write"]),
    ("POST /schedules/*/trigger", &["schedules:write"]),
    ("GET /schedules/*/runs", &["schedules:read"]),
    ("GET /schedules/*/runs/*", &["schedules:read"]),
    ("GET /approvals", &["approvals:read"]),
    ("GET /approvals/count", &["approvals:read"]),
    ("GET /approvals/*", &["approvals:read"]),
    ("GET /approvals/*/status", &["approvals:read"]),
    ("POST /approvals/*/resolve", &["approvals:write"]),
    ("DELETE /approvals/*", &["approvals:delete"]),
    ("POST /traces/search", &["traces:read"]),
    ("POST /databases/all/migrate", &["config:write"]),
    ("POST /databases/*/migrate", &["config:write"]),
    ("POST /knowledge/remote-content", &["knowledge:write"]),
    ("GET /knowledge/*/sources", &["knowledge:read"]),
    ("GET /knowledge/*/sources/*/files", &["knowledge:read"]),
    ("GET /filesystem/*", &["filesystem:read"]),
    ("GET /registry", &["registry:read"]),
    ("GET /components", &["components:read"]),
    ("GET /components/*", &["components:read"]),
    ("POST /components", &["components:write"]),
    ("PATCH /components/*", &["components:write"]),
    ("DELETE /components/*", &["components:delete"]),
    ("POST /components/*/restore", &["components:delete"]),
    ("GET /components/*/configs", &["components:read"]),
    ("GET /components/*/configs/*", &["components:read"]),
    ("GET /components/*/configs/current", &["components:read"]),
    ("POST /components/*/configs", &["components:write"]),
    ("PATCH /components/*/configs/*", &["components:write"]),
    ("DELETE /components/*/configs/*", &["components:delete"]),
    (
        "POST /components/*/configs/*/set-current",
        &["components:write"],
    ),
];

/// Legacy resource names still accepted (`system:read` is `config:read`).
fn alias(resource: &str) -> &str {
    if resource == "system" {
        "config"
    } else {
        resource
    }
}

/// The route → scope map in force: AgentOS's, then `extra` entries
/// (overriding a key in place, new keys at the end, as a dict update does).
#[derive(Debug, Clone)]
pub struct ScopeMap {
    entries: Vec<(String, String, Vec<String>)>,
}

impl ScopeMap {
    pub fn new(extra: &[(String, Vec<String>)]) -> ScopeMap {
        let mut entries: Vec<(String, String, Vec<String>)> = DEFAULT_SCOPE_MAPPINGS
            .iter()
            .map(|(route, scopes)| {
                let (method, path) = route.split_once(' ').unwrap_or((route, ""));
                (
                    method.to_owned(),
                    path.to_owned(),
                    scopes.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        for (route, scopes) in extra {
            let (method, path) = route.split_once(' ').unwrap_or((route, ""));
            match entries
                .iter_mut()
                .find(|(m, p, _)| m == method && p == path)
            {
                Some(entry) => entry.2 = scopes.clone(),
                None => entries.push((method.to_owned(), path.to_owned(), scopes.clone())),
            }
        }
        ScopeMap { entries }
    }

    /// `get_required_scopes_for_route`: the scopes `method path` needs;
    /// empty when none (or when no pattern matches).
    pub fn required(&self, method: &str, path: &str) -> &[String] {
        if let Some((_, _, scopes)) = self
            .entries
            .iter()
            .find(|(m, p, _)| m == method && p == path)
        {
            return scopes;
        }
        for (m, pattern, scopes) in &self.entries {
            if m == method && fnmatch(&braces_to_star(pattern), path) {
                return scopes;
            }
        }
        &[]
    }
}

/// `{param}` → `*`, as agno normalises FastAPI-style patterns.
fn braces_to_star(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains('{') {
        return pattern.into();
    }
    let mut out = String::with_capacity(pattern.len());
    let mut in_param = false;
    for c in pattern.chars() {
        match c {
            '{' if !in_param => in_param = true,
            '}' if in_param => {
                in_param = false;
                out.push('*');
            }
            _ if in_param => {}
            c => out.push(c),
        }
    }
    out.into()
}

/// Python's `fnmatch.fnmatch` on POSIX: `*` any run (including `/`), `?`
/// one character, `[...]`/`[!...]` a class; the whole string must match.
/// Matched byte by byte when both are ASCII (request paths always are),
/// which is the same match without collecting characters.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return fnmatch_in(pattern.as_bytes(), text.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fnmatch_in(&p, &t)
}

/// A pattern's unit: a byte of an ASCII string, or a character.
trait Symbol: Copy + Ord {
    fn is(self, ascii: u8) -> bool;
}

impl Symbol for u8 {
    fn is(self, ascii: u8) -> bool {
        self == ascii
    }
}

impl Symbol for char {
    fn is(self, ascii: u8) -> bool {
        self == char::from(ascii)
    }
}

fn fnmatch_in<S: Symbol>(p: &[S], t: &[S]) -> bool {
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            let c = p[pi];
            if c.is(b'*') {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            if c.is(b'?') {
                pi += 1;
                ti += 1;
                continue;
            }
            if c.is(b'[') {
                if let Some((matched, next)) = class(p, pi, t[ti]) {
                    if matched {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                } else if t[ti].is(b'[') {
                    pi += 1;
                    ti += 1;
                    continue;
                }
            } else if c == t[ti] {
                pi += 1;
                ti += 1;
                continue;
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| c.is(b'*'))
}

/// A `[...]` class at `p[start]`: whether `c` is in it and where the pattern
/// goes on; `None` when the `[` opens no class (it is then literal).
fn class<S: Symbol>(p: &[S], start: usize, c: S) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = p.get(i).is_some_and(|x| x.is(b'!'));
    if negate {
        i += 1;
    }
    let first = i;
    let mut matched = false;
    while i < p.len() && (!p[i].is(b']') || i == first) {
        if i + 2 < p.len() && p[i + 1].is(b'-') && !p[i + 2].is(b']') {
            matched |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((matched != negate, i + 1))
}

/// `get_resource_context_from_path`: `("workflows", Some("id"))` for
/// `/workflows/id/...` (also under `/a2a/`).
pub fn resource_context(path: &str) -> (Option<&'static str>, Option<&str>) {
    let rest = path
        .strip_prefix("/a2a")
        .filter(|r| r.starts_with('/'))
        .unwrap_or(path);
    for family in ["agents", "teams", "workflows"] {
        let Some(after) = rest.strip_prefix('/').and_then(|r| r.strip_prefix(family)) else {
            continue;
        };
        if after.is_empty() {
            return (Some(family), None);
        }
        if let Some(tail) = after.strip_prefix('/') {
            let id = tail.split('/').next().unwrap_or("");
            return (Some(family), (!id.is_empty()).then_some(id));
        }
    }
    (None, None)
}

/// A parsed scope (`parse_scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope<'s> {
    Admin,
    Global {
        resource: &'s str,
        action: &'s str,
    },
    PerResource {
        resource: &'s str,
        id: &'s str,
        action: &'s str,
    },
    Unknown,
}

fn parse<'s>(scope: &'s str, admin: &str) -> Scope<'s> {
    if scope == admin {
        return Scope::Admin;
    }
    let parts: Vec<&str> = scope.split(':').collect();
    match parts[..] {
        [resource, action] => Scope::Global {
            resource: alias(resource),
            action,
        },
        [resource, id, action] => Scope::PerResource {
            resource: alias(resource),
            id,
            action,
        },
        _ => Scope::Unknown,
    }
}

/// `matches_scope`: whether `user` satisfies `required` for `resource_id`.
fn matches(user: &Scope<'_>, required: &Scope<'_>, resource_id: Option<&str>) -> bool {
    let (u_res, u_id, u_act) = match user {
        Scope::Admin => return true,
        Scope::Unknown => return false,
        Scope::Global { resource, action } => (*resource, None, *action),
        Scope::PerResource {
            resource,
            id,
            action,
        } => (*resource, Some(*id), *action),
    };
    let (r_res, r_id, r_act) = match required {
        Scope::Admin => ("agent_os", None, "admin"),
        Scope::Unknown => return false,
        Scope::Global { resource, action } => (*resource, None, *action),
        Scope::PerResource {
            resource,
            id,
            action,
        } => (*resource, Some(*id), *action),
    };
    if matches!(required, Scope::Admin) {
        // The admin scope parses as admin only when it is the caller's.
        return false;
    }
    if u_res != r_res || u_act != r_act {
        return false;
    }
    let wildcard = u_id == Some("*");
    if r_id.is_some_and(|id| !id.is_empty()) {
        return wildcard || u_id.is_none_or(|id| id.is_empty()) || u_id == resource_id;
    }
    u_id.is_none_or(|id| id.is_empty()) || wildcard
}

/// `has_required_scopes`.
pub fn has_required(
    user_scopes: &[String],
    required: &[String],
    resource_type: Option<&str>,
    resource_id: Option<&str>,
    admin: &str,
) -> bool {
    if required.is_empty() {
        return true;
    }
    let parsed: Vec<Scope<'_>> = user_scopes.iter().map(|s| parse(s, admin)).collect();
    if parsed.contains(&Scope::Admin) {
        return true;
    }
    required.iter().all(|req| {
        let parts: Vec<&str> = req.split(':').collect();
        let rewritten;
        let req_scope = match (&parts[..], resource_id, resource_type) {
            (&[resource, action], Some(_), Some(family)) if alias(resource) == family => {
                rewritten = format!("{family}:<resource-id>:{action}");
                parse(&rewritten, admin)
            }
            _ => parse(req, admin),
        };
        parsed.iter().any(|u| matches(u, &req_scope, resource_id))
    })
}

/// Which ids of a family a caller may see: `All`, or the named ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    All,
    Only(BTreeSet<String>),
}

impl Visible {
    pub fn allows(&self, id: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(ids) => ids.contains(id),
        }
    }
}

/// `get_accessible_resource_ids`: with `action`, only scopes for it count;
/// without, `read` and `run` both do.
pub fn accessible_ids(
    user_scopes: &[String],
    family: &str,
    admin: &str,
    action: Option<&str>,
) -> Visible {
    let allowed = |a: &str| match action {
        Some(wanted) => a == wanted,
        None => a == "read" || a == "run",
    };
    let parsed: Vec<Scope<'_>> = user_scopes.iter().map(|s| parse(s, admin)).collect();
    for scope in &parsed {
        match scope {
            Scope::Admin => return Visible::All,
            Scope::Global { resource, action } if same(resource, family) && allowed(action) => {
                return Visible::All;
            }
            Scope::PerResource {
                resource,
                id,
                action,
            } if same(resource, family) && (same(id, "*") || id.is_empty()) && allowed(action) => {
                return Visible::All;
            }
            _ => {}
        }
    }
    Visible::Only(
        parsed
            .iter()
            .filter_map(|s| match s {
                Scope::PerResource {
                    resource,
                    id,
                    action,
                } if same(resource, family) && allowed(action) => Some(id.to_string()),
                _ => None,
            })
            .collect(),
    )
}

fn same(a: &str, b: &str) -> bool {
    a == b
}

/// The route gate's verdict (`check_route_scopes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `listing` names what a family listing may show when the
    /// caller holds only per-resource scopes.
    Allowed { listing: Option<Visible> },
    /// 403 with these required scopes.
    Denied(Vec<String>),
}

/// `check_route_scopes` for `method path` (path percent-decoded).
pub fn check(
    map: &ScopeMap,
    user_scopes: &[String],
    method: &str,
    path: &str,
    admin: &str,
) -> Verdict {
    let required = map.required(method, path);
    if required.is_empty() {
        return Verdict::Allowed { listing: None };
    }
    let (family, id) = resource_context(path);
    if has_required(user_scopes, required, family, id, admin) {
        return Verdict::Allowed { listing: None };
    }
    let first = &required[0];
    let required_family = first.split_once(':').map(|(f, _)| f);
    if let Some(family) = family
        && method == "GET"
        && id.is_none()
        && required_family == Some(family)
    {
        let action = first.rsplit_once(':').map(|(_, a)| a);
        return Verdict::Allowed {
            listing: Some(accessible_ids(user_scopes, family, admin, action)),
        };
    }
    Verdict::Denied(required.to_vec())
}

/// `build_insufficient_permissions_detail`.
pub fn insufficient(required: &[String]) -> String {
    if required.is_empty() {
        "Insufficient permissions".into()
    } else {
        format!(
            "Insufficient permissions. Required scope(s): {}",
            required.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fnmatch_as_python() {
        assert!(fnmatch("/agents/*", "/agents/a/runs/b"));
        assert!(fnmatch("/agents/*/runs", "/agents/a/runs"));
        assert!(!fnmatch("/agents/*/runs", "/agents/a/runs/x"));
        assert!(fnmatch("/docs*", "/docs"));
        assert!(fnmatch("/a?c", "/abc"));
        assert!(fnmatch("/[ab]x", "/bx"));
        assert!(!fnmatch("/[!ab]x", "/bx"));
        assert!(fnmatch("/", "/"));
        assert!(!fnmatch("/", "/x"));
    }

    proptest::proptest! {
        /// On ASCII, matching bytes is matching characters.
        #[test]
        fn bytes_match_as_characters(
            pattern in "[/ab*?\\[\\]!-]{0,10}",
            text in "[/ab\\[\\]!-]{0,10}",
        ) {
            let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
            proptest::prop_assert_eq!(
                fnmatch_in(pattern.as_bytes(), text.as_bytes()),
                fnmatch_in(&p, &t)
            );
        }
    }

    #[test]
    fn resource_context_as_python() {
        assert_eq!(
            resource_context("/agents/a/runs"),
            (Some("agents"), Some("a"))
        );
        assert_eq!(resource_context("/workflows"), (Some("workflows"), None));
        assert_eq!(resource_context("/a2a/teams/t"), (Some("teams"), Some("t")));
        assert_eq!(resource_context("/knowledge/agents/x"), (None, None));
        assert_eq!(resource_context("/agentsx"), (None, None));
    }

    #[test]
    fn per_resource_wildcard_global_and_admin() {
        let map = ScopeMap::new(&[]);
        let admin = "agent_os:admin";
        let ok = |scopes: &[&str], m: &str, p: &str| {
            matches!(
                check(&map, &s(scopes), m, p, admin),
                Verdict::Allowed { .. }
            )
        };
        assert!(ok(&["workflows:run"], "POST", "/workflows/w/runs"));
        assert!(ok(&["workflows:w:run"], "POST", "/workflows/w/runs"));
        assert!(ok(&["workflows:*:run"], "POST", "/workflows/w/runs"));
        assert!(!ok(&["workflows:v:run"], "POST", "/workflows/w/runs"));
        assert!(!ok(&["workflows:w:read"], "POST", "/workflows/w/runs"));
        assert!(ok(&["agent_os:admin"], "DELETE", "/sessions/x"));
        assert!(ok(&["system:read"], "GET", "/config"));
        assert!(!ok(&["agents:a:read"], "GET", "/sessions"));
        assert!(ok(&[], "GET", "/not-mapped"));
        assert_eq!(
            check(&map, &s(&["workflows:w:read"]), "GET", "/workflows", admin),
            Verdict::Allowed {
                listing: Some(Visible::Only(["w".to_string()].into()))
            }
        );
        assert_eq!(
            check(&map, &s(&["workflows:w:run"]), "GET", "/workflows", admin),
            Verdict::Allowed {
                listing: Some(Visible::Only(BTreeSet::new()))
            }
        );
        assert_eq!(
            check(&map, &s(&[]), "POST", "/workflows/w/runs", admin),
            Verdict::Denied(s(&["workflows:run"]))
        );
    }
}
