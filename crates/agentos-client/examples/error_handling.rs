//! What each failure looks like: an unreachable host, an unknown workflow
//! (the AgentOS `detail` is kept), and a host slower than the timeout.
//!
//! Start the demo first (`cargo run -- demo`), then:
//! `cargo run -p agentos-client --example error_handling`.

use std::time::Duration;

use agentos_client::{ClientError, RemoteWorkflow, UnavailablePhase};

/// One line per error class, as a caller would branch on them.
fn explain(what: &str, error: &ClientError) {
    let class = match error {
        // agno's RemoteServerUnavailableError: nothing came back in time.
        ClientError::RemoteServerUnavailable { phase, .. } => match phase {
            UnavailablePhase::Connect { .. } | UnavailablePhase::ConnectTimeout { .. } => {
                "unreachable (nothing was sent; safe to retry elsewhere)"
            }
            UnavailablePhase::ResponseTimeout { .. } => "no answer within the timeout",
            UnavailablePhase::IdleTimeout { .. } => "the stream stalled",
        },
        ClientError::Status { .. } => "the host said no",
        ClientError::Decode { .. } => "the host sent something unexpected",
        ClientError::Transport { .. } => "the connection broke",
        _ => "other",
    };
    println!("{what}: {class}\n    {error}");
    if let (Some(status), Some(detail)) = (error.status(), error.detail()) {
        println!("    status {status}, detail {detail:?}");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = std::env::var("AGENTOS_URL").unwrap_or_else(|_| "http://127.0.0.1:7777".into());

    // Port 9 (discard) is closed on almost every machine.
    let nowhere = RemoteWorkflow::new("http://127.0.0.1:9", "echo")?;
    if let Err(e) = nowhere.arun("hello").await {
        explain("closed port", &e);
    }

    let missing = RemoteWorkflow::new(base_url.as_str(), "no-such-workflow")?;
    if let Err(e) = missing.name().await {
        explain("unknown workflow", &e);
    }

    // A timeout shorter than the slow workflow's pauses between events.
    let impatient = RemoteWorkflow::builder(base_url.as_str(), "slow-story")
        .timeout(Duration::from_millis(50))
        .build()?;
    match impatient.arun("a story").await {
        Ok(output) => println!("the slow workflow was fast: {:?}", output.content),
        Err(e) => explain("timeout", &e),
    }

    // A bad base URL fails when the handle is built, not on first use.
    if let Err(e) = RemoteWorkflow::new("not a url", "echo") {
        println!("bad base URL: {e}");
    }
    Ok(())
}
