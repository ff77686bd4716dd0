//! Start a slow streaming run, cancel it from another task once it has
//! started, and watch the stream report the cancel.
//!
//! Start the demo first (`cargo run -- demo`), then:
//! `cargo run -p agentos-client --example cancel`.
//!
//! Unlike agno's `acancel_run`, which returns `False` for every failure,
//! `cancel_run` returns the host's error (unreachable, 401, 404, ...).

use agentos_client::{RemoteWorkflow, WorkflowEvent};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = std::env::var("AGENTOS_URL").unwrap_or_else(|_| "http://127.0.0.1:7777".into());
    let workflow = RemoteWorkflow::new(base_url, "slow-story")?;

    // AgentOS honours a caller-chosen run id, so the id is known up front.
    let run_id = format!("cancel-example-{}", std::process::id());
    let session_id = format!("{run_id}-session");
    let mut events = workflow
        .arun("a very long story")
        .run_id(&run_id)
        .session_id(&session_id)
        .stream()
        .await?;

    let mut cancel = None;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("{}", event.name());
        match event {
            WorkflowEvent::WorkflowStarted(_) if cancel.is_none() => {
                // Cancel from elsewhere while this task keeps reading.
                let workflow = workflow.clone();
                let (run_id, session_id) = (run_id.clone(), session_id.clone());
                cancel = Some(tokio::spawn(async move {
                    workflow.cancel_run(run_id).session_id(session_id).await
                }));
            }
            WorkflowEvent::WorkflowCancelled(cancelled) => {
                println!("  cancelled: {}", cancelled.reason.unwrap_or_default())
            }
            _ => {}
        }
    }
    match cancel {
        Some(task) => match task.await? {
            Ok(()) => println!("the host accepted the cancel"),
            Err(e) => println!("the cancel failed: {e}"),
        },
        None => println!("the run never started"),
    }
    Ok(())
}
