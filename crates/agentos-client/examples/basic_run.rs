//! A non-streaming run, the Rust twin of agno's
//! `await RemoteWorkflow(base_url, "echo").arun("hello")`.
//!
//! Start the demo first (`cargo run -- demo`), then:
//! `cargo run -p agentos-client --example basic_run [-- "your input"]`.
//! `AGENTOS_URL` points it elsewhere (default http://127.0.0.1:7777).

use agentos_client::RemoteWorkflow;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = std::env::var("AGENTOS_URL").unwrap_or_else(|_| "http://127.0.0.1:7777".into());
    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "hello from Rust".into());

    let workflow = RemoteWorkflow::new(base_url, "echo")?;
    // Metadata comes from GET /workflows/echo, cached for config_ttl (300 s).
    println!(
        "workflow {} ({}): {}",
        workflow.id(),
        workflow.name().await?.unwrap_or_default(),
        workflow.description().await?.unwrap_or_default()
    );

    let output = workflow.arun(input).user_id("example-user").await?;
    println!("run {:?} in session {:?}", output.run_id, output.session_id);
    println!("status:  {:?}", output.status);
    match output.content_str() {
        Some(text) => println!("content: {text}"),
        None => println!("content: {:?}", output.content),
    }
    Ok(())
}
