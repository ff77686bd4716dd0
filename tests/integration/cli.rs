//! The binary's command line: `check` accepts the example config and rejects
//! each kind of bad config with the file, line and key.

use std::process::Command;

fn check(toml: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("agw-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentos-gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("CLI_TEST_UNSET")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_example_config_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentos-gateway"))
        .args(["check", "--config", "config/gateway.example.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (1 agents, 1 teams, 3 workflows, 0 pinned databases on 3 host groups"),
        "{stdout}"
    );
    assert!(stdout.contains("admin 0.0.0.0:9901)"), "{stdout}");
}

#[test]
fn each_bad_config_names_file_line_and_key() {
    let wf = "[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\n";
    let cases = [
        (
            format!("{wf}colour = \"red\"\n"),
            "FILE:4:1: `workflows.colour`: unknown field",
        ),
        (
            format!("{wf}{wf}"),
            "FILE:5:6: `workflows.id`: duplicate id `a`",
        ),
        (
            "[[workflows]]\nid = \"a\"\nbase_url = \"gopher://h\"\n".to_owned(),
            "FILE:3:12: `workflows.base_url`",
        ),
        (
            "[[workflows]]\nid = \"a b\"\nbase_url = \"http://h\"\n".to_owned(),
            "FILE:2:6: `workflows.id`: `a b` is not URL-safe",
        ),
        (
            format!("{wf}timeout = 0\n"),
            "FILE:4:11: `workflows.timeout`: must be a positive number",
        ),
        (
            format!("{wf}auth_token = \"${{CLI_TEST_UNSET}}\"\n"),
            "FILE:4:14: `workflows.auth_token`: environment variable `CLI_TEST_UNSET` is not set",
        ),
        (
            "[server]\nconfig_ttl = 0\n".to_owned(),
            "FILE:2:14: `server.config_ttl`",
        ),
        ("[server\n".to_owned(), "FILE:1:"),
        // The connection limits and the host transport.
        (
            "[server]\nmax_header_bytes = 100\n".to_owned(),
            "FILE:2:20: `server.max_header_bytes`: must be a whole number from 8192 to",
        ),
        (
            "[server]\nmax_connections = 0\n".to_owned(),
            "FILE:2:19: `server.max_connections`: must be a whole number from 1 to",
        ),
        (
            "[server]\nwrite_timeout = -1\n".to_owned(),
            "FILE:2:17: `server.write_timeout`: must be a positive number",
        ),
        (
            "[server]\nupstream_ca_file = \"/nonexistent/ca.pem\"\n".to_owned(),
            "FILE:2:20: `server.upstream_ca_file`: cannot read `/nonexistent/ca.pem`",
        ),
        (
            "[server]\nupstream_ca_file = \"Cargo.toml\"\n".to_owned(),
            "FILE:2:20: `server.upstream_ca_file`: `Cargo.toml` holds no PEM certificate",
        ),
        (
            "[admin]\nlisten = \"anywhere\"\n".to_owned(),
            "FILE:2:10: `admin.listen`: `anywhere` is not an IP:port address",
        ),
        // Type errors in an operator's words, not Rust's.
        (
            format!("{wf}timeout = \"ten\"\n"),
            "FILE:4:11: `workflows.timeout`: expected a number of seconds, got the text \"ten\"",
        ),
        (
            "[server]\nmax_body_bytes = 1.5\n".to_owned(),
            "FILE:2:18: `server.max_body_bytes`: expected a whole number, got `1.5`",
        ),
        (
            "[server]\nhealth_checks = \"yes\"\n".to_owned(),
            "FILE:2:17: `server.health_checks`: expected true or false, got the text \"yes\"",
        ),
    ];
    for (toml, expected) in cases {
        let (code, stderr) = check(&toml);
        assert_eq!(code, 64, "{toml}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_agentos-gateway"))
        .args(["check", "--config", "/nonexistent/gw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/gw.toml: cannot read config file")
    );
}

#[test]
fn check_names_the_admin_listener_or_says_it_is_off() {
    let dir = std::env::temp_dir().join(format!("agw-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let wf = "[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\n";
    for (admin, expected) in [
        ("listen = \"127.0.0.1:19901\"", "admin 127.0.0.1:19901)"),
        ("listen = \"\"", "admin off)"),
    ] {
        std::fs::write(&path, format!("{wf}\n[admin]\n{admin}\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_agentos-gateway"))
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("AGENTOS_GATEWAY_ADMIN_LISTEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{admin}: {stdout}");
        assert!(stdout.contains(expected), "{expected:?} in {stdout:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_that_exposes_nothing_is_refused_naming_the_file() {
    for toml in ["", "[server]\nlisten = \"127.0.0.1:0\"\n"] {
        let (code, stderr) = check(toml);
        assert_eq!(code, 64, "{stderr}");
        assert!(
            stderr.contains(
                "FILE: exposes nothing: add a [[workflows]], [[agents]], [[teams]] or [[dbs]] entry"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn agents_or_teams_alone_are_a_valid_config() {
    for toml in [
        "[[agents]]\nid = \"a\"\nbase_url = \"http://h\"\n",
        "[[teams]]\nid = \"t\"\nbase_url = \"http://h\"\nteam_id = \"remote\"\n",
    ] {
        let (code, stderr) = check(toml);
        assert_eq!(code, 0, "{toml}: {stderr}");
    }
    let (code, stderr) =
        check("[[teams]]\nid = \"t\"\nbase_url = \"http://h\"\nagent_id = \"x\"\n");
    assert_eq!(code, 64);
    assert!(
        stderr.contains("FILE:4:12: `teams.agent_id`: unknown field `agent_id` in [[teams]]"),
        "{stderr}"
    );
}

#[test]
fn demo_refuses_a_config_it_would_ignore() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentos-gateway"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .args(["--config", "config/gateway.example.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a demo that ignored the config would serve until killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo started instead of refusing the config");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`demo` runs its own embedded hosts and takes no config"),
        "{stderr}"
    );
}
