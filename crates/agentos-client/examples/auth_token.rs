//! Bearer tokens: a default token on the handle (sent on every call,
//! metadata included) and a per-call `auth_token`, as agno's
//! `arun(..., auth_token=...)` takes one.
//!
//! Start the demo first (`cargo run -- demo`), then:
//! `AGENTOS_TOKEN=secret cargo run -p agentos-client --example auth_token`.
//! The demo has no auth, so both calls succeed; against a host with
//! `OS_SECURITY_KEY` set, a wrong token gives a 401 with the host's detail.

use agentos_client::RemoteWorkflow;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = std::env::var("AGENTOS_URL").unwrap_or_else(|_| "http://127.0.0.1:7777".into());
    let token = std::env::var("AGENTOS_TOKEN").unwrap_or_else(|_| "demo-token".into());

    let mut builder = RemoteWorkflow::builder(base_url, "echo");
    // agno never sends a token on metadata calls, so protected hosts break
    // `name`/`description`/`db`; a handle-wide token fixes that.
    builder = builder.auth_token(token);
    let workflow = builder.build()?;
    println!("name: {:?}", workflow.name().await?);

    // A per-call token overrides the handle's, for this call only.
    match workflow.arun("hello").auth_token("another-token").await {
        Ok(output) => println!("content: {:?}", output.content),
        Err(e) => match e.detail() {
            Some(detail) => println!("refused ({:?}): {detail}", e.status()),
            None => return Err(e.into()),
        },
    }
    Ok(())
}
