//! What a program that depends on agentos-client compiles: the crate's
//! normal dependency tree, with its features resolved for this crate alone
//! (as in a dependent program), holds no server-side crate and no server
//! feature of hyper or hyper-util. reqwest brings its own tower-http for
//! following redirects; the client never depends on tower-http itself, and
//! none of its server middleware (CORS, tracing, limits) is compiled.

use std::path::Path;
use std::process::Command;

/// Crates that only a server (the gateway) needs.
const SERVER_SIDE: &[&str] = &[
    "agentos-gateway",
    "axum",
    "axum-core",
    "prometheus-client",
    "clap",
    "clap_builder",
    "tracing-subscriber",
    "tracing-appender",
];

/// The tower-http features reqwest enables for itself (client middleware).
const REQWESTS_TOWER_HTTP: &[&str] = &["follow-redirect", "futures-util", "tower"];

/// Each package of the tree once, with its enabled features; `extra`
/// arguments narrow it (`--depth 1`: direct dependencies only).
fn normal_tree(extra: &[&str]) -> Vec<(String, Vec<String>)> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "agentos-client",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--locked", "-f", "{p}|{f}", "--manifest-path"])
        .arg(&workspace)
        .args(extra)
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut packages: Vec<(String, Vec<String>)> = stdout
        .lines()
        .filter_map(|line| {
            let (package, features) = line.split_once('|')?;
            let name = package.split_whitespace().next()?.to_owned();
            let features = features
                .trim_end_matches(" (*)")
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect();
            Some((name, features))
        })
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

#[test]
fn the_client_crate_compiles_no_server_side_dependency() {
    let tree = normal_tree(&[]);
    let names: Vec<&str> = tree.iter().map(|(name, _)| name.as_str()).collect();
    // The tree was read: the crate and what it is built on are in it.
    for expected in ["agentos-client", "reqwest", "serde_json", "hyper"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let server_side: Vec<&&str> = names.iter().filter(|n| SERVER_SIDE.contains(n)).collect();
    assert!(
        server_side.is_empty(),
        "server-side crates: {server_side:?}"
    );
    for (name, features) in &tree {
        if name == "hyper" || name == "hyper-util" {
            let server: Vec<&String> = features.iter().filter(|f| f.contains("server")).collect();
            assert!(server.is_empty(), "{name} has server features {server:?}");
        }
    }
    let direct = normal_tree(&["--depth", "1"]);
    assert!(
        !direct.iter().any(|(name, _)| name == "tower-http"),
        "agentos-client must not depend on tower-http itself"
    );
    for (name, features) in tree.iter().filter(|(name, _)| name == "tower-http") {
        let extra: Vec<&String> = features
            .iter()
            .filter(|f| !REQWESTS_TOWER_HTTP.contains(&f.as_str()))
            .collect();
        assert!(extra.is_empty(), "{name} has server middleware {extra:?}");
    }
}
