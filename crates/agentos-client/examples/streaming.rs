//! Print the events of a streaming run as they arrive, the Rust twin of
//! `async for event in workflow.arun(input, stream=True, stream_events=True)`.
//!
//! Start the demo first (`cargo run -- demo`), then:
//! `cargo run -p agentos-client --example streaming [-- "a story about a crab"]`.
//! Pass `--raw` as the first argument to print the SSE bytes unchanged instead.

use std::io::Write;

use agentos_client::{RemoteWorkflow, WorkflowEvent};
use futures::StreamExt;
use serde_json::Value;

/// Content as text: strings without their JSON quotes.
fn text(content: Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = std::env::var("AGENTOS_URL").unwrap_or_else(|_| "http://127.0.0.1:7777".into());
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let raw = args.first().is_some_and(|a| a == "--raw");
    if raw {
        args.remove(0);
    }
    let input = args.pop().unwrap_or_else(|| "a lighthouse keeper".into());
    let workflow = RemoteWorkflow::new(base_url, "slow-story")?;
    let run = workflow.arun(input).stream_events(true);

    if raw {
        // The host's bytes, chunk by chunk, byte for byte.
        let mut bytes = run.stream_raw().await?;
        let mut stdout = std::io::stdout();
        while let Some(chunk) = bytes.next().await {
            stdout.write_all(&chunk?)?;
            stdout.flush()?;
        }
        return Ok(());
    }

    let mut events = run.stream().await?;
    while let Some(event) = events.next().await {
        match event? {
            WorkflowEvent::WorkflowStarted(e) => {
                println!("started run {}", e.base.run_id.unwrap_or_default())
            }
            WorkflowEvent::StepStarted(step) => {
                println!("  step {} ...", step.step_name.unwrap_or_default())
            }
            WorkflowEvent::StepProgress(step) | WorkflowEvent::StepCompleted(step) => {
                if step.content.is_some() {
                    println!("  {}", text(step.content));
                }
            }
            WorkflowEvent::RunContent(delta) => {
                print!("{}", text(delta.content));
                std::io::stdout().flush()?;
            }
            WorkflowEvent::WorkflowCompleted(done) => {
                println!("completed: {}", text(done.content))
            }
            WorkflowEvent::WorkflowError(e) => {
                println!("run failed: {}", e.error.unwrap_or_default())
            }
            // Unknown event types arrive whole instead of being dropped.
            WorkflowEvent::Other { event, data } => println!("  ({event}: {data})"),
            other => println!("  ({})", other.name()),
        }
    }
    Ok(())
}
