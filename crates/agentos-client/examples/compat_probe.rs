//! The Rust `RemoteWorkflow` doing what the compatibility suite asks agno's
//! Python `RemoteWorkflow` to do, printing the results as one JSON object so
//! `tests/compat` can check that both clients see the same thing:
//!
//! `cargo run -p agentos-client --example compat_probe -- BASE_URL ECHO_WORKFLOW SLOW_WORKFLOW`
//!
//! - metadata: name, description, db id;
//! - a run without streaming: content and status;
//! - a streamed run: every event's type, in order;
//! - a slow streamed run cancelled after its third progress event: whether
//!   the cancel was accepted, and the events seen.

use agentos_client::RemoteWorkflow;
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base_url, echo_id, slow_id] = args.as_slice() else {
        return Err("usage: compat_probe BASE_URL ECHO_WORKFLOW SLOW_WORKFLOW".into());
    };
    let echo = RemoteWorkflow::new(base_url.as_str(), echo_id.as_str())?;
    let run = echo.arun("probe").await?;
    let mut streamed = Vec::new();
    let mut events = echo.arun("probe").stream_events(true).stream().await?;
    while let Some(event) = events.next().await {
        streamed.push(event?.name().to_owned());
    }

    let slow = RemoteWorkflow::new(base_url.as_str(), slow_id.as_str())?;
    let mut cancel_events = Vec::new();
    let mut cancelled = Value::Null;
    let mut events = slow.arun("probe").stream_events(true).stream().await?;
    while let Some(event) = events.next().await {
        let event = event?;
        cancel_events.push(event.name().to_owned());
        let progress = cancel_events
            .iter()
            .filter(|e| *e == "StepProgress")
            .count();
        if progress == 3 && cancelled.is_null() {
            let run_id = event.run_id().unwrap_or_default().to_owned();
            cancelled = slow.cancel_run(run_id).await.is_ok().into();
        }
    }

    let out = json!({
        "name": echo.name().await?,
        "description": echo.description().await?,
        "db_id": echo.db().await?.map(|db| db.id),
        "run": {"content": run.content, "status": run.status.as_ref().map(|s| s.as_str().to_owned())},
        "events": streamed,
        "cancelled": cancelled,
        "cancel_events": cancel_events,
    });
    println!("{out}");
    Ok(())
}
