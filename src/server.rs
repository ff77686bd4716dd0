//! Serving: the app (routes plus layers) on an already-bound listener, and the
//! two-phase drain on shutdown. Tests bind `127.0.0.1:0` and call [`serve`]
//! in-process.
//!
//! Why two phases: a load balancer keeps sending new connections for a while
//! after a pod is told to stop, and axum's plain graceful shutdown never
//! finishes while an event stream is open. So on the signal:
//! 1. `/ready` turns 503 at once, and new connections are still accepted for
//!    `drain_grace`, so the load balancer deregisters the pod without errors;
//! 2. the listener closes; in-flight requests and streams run on for up to
//!    `drain_timeout` (a cut stream cancels the user's run);
//! 3. streams still open then end with an AgentOS error event and their runs
//!    are cancelled on the host; the process exits 0.
//!
//! Threads: on a multi-threaded runtime (the binary), connections are served
//! thread-per-core: the listener's task accepts and hands each connection,
//! round-robin, to one of N worker threads (N = cores, or
//! `TOKIO_WORKER_THREADS`), each running a single-threaded runtime that
//! serves the connection and opens its upstream connections to completion.
//! A request then never crosses threads: no work-stealing wake-ups, no
//! contended pool, and what every request writes (metrics, in-flight
//! counts) is kept per thread (`crate::sharded`); see BENCHMARKS.md for
//! what that bought. Each thread also runs [`upkeep`]. On a
//! single-threaded runtime (tests) connections are served right there.

use std::future::Future;
use std::io;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layers::App;
use crate::state::SharedState;
use crate::{http1, layers, routes, upstream};

/// How long streams cut at the drain deadline get to flush their error event,
/// and cancels of their runs get to reach the hosts.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// Serves the gateway on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = layers::apply(routes::Routes::new(state.clone()), &state);
    let stop_upkeep = CancellationToken::new();
    upstream::health::spawn(&state.upstreams, &stop_upkeep);
    let _stop_upkeep_on_return = stop_upkeep.drop_guard();
    let stop_accepting = CancellationToken::new();
    let workers = match tokio::runtime::Handle::current().runtime_flavor() {
        RuntimeFlavor::CurrentThread => Vec::new(),
        _ => (0..worker_count())
            .map(|i| {
                // A token of its own per thread: every request checks it, and
                // a token shared by all threads is a lock they contend on.
                let stop = stop_accepting.child_token();
                Worker::spawn(i, app.clone(), stop, state.clone())
            })
            .collect::<io::Result<Vec<_>>>()?,
    };
    let server = accept_and_serve(listener, app, workers, stop_accepting.clone());
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    let (grace, deadline) = (state.server.drain_grace, state.server.drain_timeout);
    state.start_draining();
    tracing::info!(
        ?grace,
        "draining: /ready now answers 503; still accepting connections"
    );
    tokio::select! {
        result = &mut server => return result,
        () = tokio::time::sleep(grace) => {}
    }

    stop_accepting.cancel();
    tracing::info!(
        streams = state.metrics.active_streams.get(),
        ?deadline,
        "listener closed; waiting for in-flight requests and streams"
    );
    let result = tokio::select! {
        result = &mut server => result,
        () = tokio::time::sleep(deadline) => {
            tracing::warn!(
                streams = state.metrics.active_streams.get(),
                "drain deadline passed; ending open streams"
            );
            state.end_streams.cancel();
            match tokio::time::timeout(FINAL_FLUSH, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("connections still open after the final flush; exiting anyway");
                    Ok(())
                }
            }
        }
    };
    state.background.close();
    if tokio::time::timeout(FINAL_FLUSH, state.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("some host-side cancels did not finish before exit");
    }
    tracing::info!("drained; exiting");
    result
}

/// Serving threads: `TOKIO_WORKER_THREADS` when set (as tokio reads it for
/// its own runtime), else one per core.
fn worker_count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n: &usize| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// Accepts until `stop` and serves every connection (on `workers`, or on
/// this runtime when there are none); resolves once every connection has
/// finished, as `axum::serve`'s graceful shutdown does.
async fn accept_and_serve(
    listener: TcpListener,
    app: App,
    workers: Vec<Worker>,
    stop: CancellationToken,
) -> io::Result<()> {
    let local = TaskTracker::new();
    let mut next = 0usize;
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, a connection reset while queued:
                    // keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if workers.is_empty() {
            serve_connection(stream, &app, &local, &stop);
            continue;
        }
        let worker = &workers[next % workers.len()];
        next = next.wrapping_add(1);
        match stream.into_std() {
            Ok(stream) => {
                if worker.connections.send(stream).is_err() {
                    // Only after its runtime failed; the connection is closed.
                    tracing::error!("a serving thread is gone; connection dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a worker"),
        }
    }
    drop(listener);
    local.close();
    local.wait().await;
    for worker in workers {
        drop(worker.connections);
        let _ = worker.done.await;
    }
    Ok(())
}

/// One serving thread with its own single-threaded runtime.
struct Worker {
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    /// Resolves once the worker stopped accepting and its connections ended.
    done: oneshot::Receiver<()>,
}

impl Worker {
    fn spawn(
        index: usize,
        app: App,
        stop: CancellationToken,
        state: SharedState,
    ) -> io::Result<Worker> {
        let (connections, mut incoming) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("gateway-worker-{index}"))
            .spawn(move || {
                crate::sharded::claim(index);
                runtime.block_on(async move {
                    let open = TaskTracker::new();
                    let upkeep = tokio::spawn(upkeep());
                    while let Some(stream) = incoming.recv().await {
                        let stream = stream
                            .set_nonblocking(true)
                            .and_then(|()| TcpStream::from_std(stream));
                        match stream {
                            Ok(stream) => serve_connection(stream, &app, &open, &stop),
                            Err(e) => tracing::warn!(error = %e, "cannot serve a connection"),
                        }
                    }
                    open.close();
                    open.wait().await;
                    upkeep.abort();
                    let _ = done_tx.send(());
                    // Cancels this thread's requests started on their hosts
                    // run here: keep the runtime until they are done.
                    state.background.wait().await;
                });
            })?;
        Ok(Worker { connections, done })
    }
}

/// A serving thread's once-a-second chores: the spare read buffers the
/// last second did not need are freed.
///
/// The standing timer matters for speed too. Tokio's timer wakes its own
/// driver (an eventfd write, a syscall) whenever a timer is armed while it
/// knows of none due sooner, which was every run's first-byte timeout armed
/// on a thread with no other request in flight: about one request in
/// three under load. With a timer always due within a second, a run's
/// timeout (seconds to minutes) never is.
async fn upkeep() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        http1::codec::trim_spare_buffers();
    }
}

/// Serves one connection on the current runtime, with the gateway's own
/// HTTP/1.1 framing ([`http1::server`]); on `stop` it finishes the request
/// in flight (streams included) and closes.
fn serve_connection(stream: TcpStream, app: &App, open: &TaskTracker, stop: &CancellationToken) {
    let _ = stream.set_nodelay(true);
    let connection = http1::server::serve_connection(stream, app.clone(), stop.clone());
    // `map`, not an async block around it, which would hold the future
    // twice (as captured and as awaited): its size is what an open
    // connection costs.
    open.spawn(connection.map(|result| {
        if let Err(e) = result {
            tracing::trace!(error = %e, "connection ended with an error");
        }
    }));
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
