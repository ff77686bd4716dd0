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
//! A second SIGTERM or Ctrl-C during the drain ends it at once, as step 3
//! does, and the process exits non-zero. A Ctrl-C with nothing in flight
//! (an operator at a terminal) skips the drain.
//!
//! Each connection is served by [`connection`]: hyper frames it, within the
//! connection limits of `[server]`; beyond `max_connections`, a new
//! connection is closed at accept.
//!
//! Threads: on a multi-threaded runtime (the binary), connections are served
//! thread-per-core: the listener's task accepts and hands each connection,
//! round-robin, to one of N worker threads (N = cores, or
//! `TOKIO_WORKER_THREADS`), each running a single-threaded runtime that
//! serves the connection to completion: no work-stealing wake-ups, and what
//! every request writes (metrics, in-flight counts) is kept per thread
//! (`crate::sharded`); see BENCHMARKS.md for what that bought. Host
//! connections come from the replica's pool, which every thread shares
//! (hyper-util's; a connection's task runs on the thread that opened it).
//! On a single-threaded runtime (tests) connections are served right there.

pub mod connection;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::layers::App;
use crate::state::SharedState;
use crate::{layers, routes};
use connection::{ConnectionLimiter, ConnectionSlot, Settings};

/// How long streams cut at the drain deadline get to flush their error event,
/// and cancels of their runs get to reach the hosts.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// How the gateway was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the two-phase drain (a load balancer is deregistering us).
    Drain,
    /// Ctrl-C: at once when nothing is in flight, else the two-phase drain.
    Interrupt,
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains;
/// `state.hurry` ends the drain at once (an error: the process should exit
/// non-zero).
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = Stop> + Send + 'static,
) -> std::io::Result<()> {
    let app = layers::apply(routes::Routes::new(state.clone()), &state);
    let settings = Arc::new(
        Settings::new(&state.server.limits).with_peer_address(state.auth.needs_peer_address()),
    );
    let limiter = ConnectionLimiter::new(
        state.server.limits.max_connections,
        state.metrics.open_connections.clone(),
    );
    state.start_upkeep();
    let _stop_upkeep_on_return = StopUpkeep(state.clone());
    let stop_accepting = CancellationToken::new();
    let workers = match tokio::runtime::Handle::current().runtime_flavor() {
        RuntimeFlavor::CurrentThread => Vec::new(),
        _ => (0..worker_count())
            .map(|i| {
                // A token of its own per thread: every request checks it, and
                // a token shared by all threads is a lock they contend on.
                let stop = stop_accepting.child_token();
                Worker::spawn(i, app.clone(), settings.clone(), stop, state.clone())
            })
            .collect::<io::Result<Vec<_>>>()?,
    };
    let server = accept_and_serve(
        listener,
        Serving {
            app,
            settings,
            limiter,
            state: state.clone(),
        },
        workers,
        stop_accepting.clone(),
    );
    tokio::pin!(server);

    let stop = tokio::select! {
        result = &mut server => return result,
        stop = shutdown => stop,
    };
    let (grace, deadline) = (state.server.drain_grace, state.server.drain_timeout);
    state.start_draining();
    let hurry = state.hurry.clone();
    let mut hurried = false;
    if stop == Stop::Interrupt && state.nothing_in_flight() {
        tracing::info!("nothing in flight; stopping now");
    } else {
        tracing::info!(
            ?grace,
            "draining: /ready now answers 503; still accepting connections"
        );
        tokio::select! {
            result = &mut server => return result,
            () = tokio::time::sleep(grace) => {}
            () = hurry.cancelled() => hurried = true,
        }
    }

    stop_accepting.cancel();
    tracing::info!(
        streams = state.metrics.active_streams.get(),
        ?deadline,
        "listener closed; waiting for in-flight requests and streams"
    );
    let cut_short = async {
        if !hurried {
            tokio::select! {
                () = tokio::time::sleep(deadline) => {}
                () = hurry.cancelled() => hurried = true,
            }
        }
    };
    let result = tokio::select! {
        result = &mut server => result,
        () = cut_short => {
            tracing::warn!(
                streams = state.metrics.active_streams.get(),
                second_signal = hurried,
                "drain ended; ending open streams"
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
    if hurried {
        return Err(std::io::Error::other(
            "a second signal cut the drain short; open streams were ended",
        ));
    }
    tracing::info!("drained; exiting");
    result
}

/// Stops the health checks and DNS look-ups when `serve` returns.
struct StopUpkeep(SharedState);

impl Drop for StopUpkeep {
    fn drop(&mut self) {
        self.0.stop_upkeep();
    }
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

/// What the accept loop hands each connection.
struct Serving {
    app: App,
    settings: Arc<Settings>,
    limiter: ConnectionLimiter,
    state: SharedState,
}

/// Accepts until `stop` and serves every connection (on `workers`, or on
/// this runtime when there are none); resolves once every connection has
/// finished, as `axum::serve`'s graceful shutdown does.
async fn accept_and_serve(
    listener: TcpListener,
    serving: Serving,
    workers: Vec<Worker>,
    stop: CancellationToken,
) -> io::Result<()> {
    let local = TaskTracker::new();
    let mut next = 0usize;
    while let Some(stream) = next_connection(&listener, &stop).await {
        let Some(slot) = serving.limiter.try_take() else {
            // Closed at once: a caller learns now, not after a hang, and a
            // load balancer retries elsewhere.
            serving.state.metrics.refused_connections.inc();
            tracing::debug!("max_connections open; connection closed at accept");
            drop(stream);
            continue;
        };
        if workers.is_empty() {
            let connection = connection::serve(
                stream,
                serving.app.clone(),
                serving.settings.clone(),
                stop.clone(),
                slot,
            );
            local.spawn(connection);
            continue;
        }
        let worker = &workers[next % workers.len()];
        next = next.wrapping_add(1);
        match stream.into_std() {
            Ok(stream) => {
                if worker.connections.send((stream, slot)).is_err() {
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

/// The next accepted connection, or `None` once `stop` is cancelled. A
/// failed accept (out of descriptors, a connection reset while queued) is
/// logged and the loop goes on, pausing briefly so as not to spin on it.
pub async fn next_connection(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<TcpStream> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => return Some(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// One serving thread with its own single-threaded runtime.
struct Worker {
    connections: mpsc::UnboundedSender<(std::net::TcpStream, ConnectionSlot)>,
    /// Resolves once the worker stopped accepting and its connections ended.
    done: oneshot::Receiver<()>,
}

impl Worker {
    fn spawn(
        index: usize,
        app: App,
        settings: Arc<Settings>,
        stop: CancellationToken,
        state: SharedState,
    ) -> io::Result<Worker> {
        let (connections, mut incoming) =
            mpsc::unbounded_channel::<(std::net::TcpStream, ConnectionSlot)>();
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
                    while let Some((stream, slot)) = incoming.recv().await {
                        let stream = stream
                            .set_nonblocking(true)
                            .and_then(|()| TcpStream::from_std(stream));
                        match stream {
                            Ok(stream) => {
                                let connection = connection::serve(
                                    stream,
                                    app.clone(),
                                    settings.clone(),
                                    stop.clone(),
                                    slot,
                                );
                                open.spawn(connection);
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot serve a connection"),
                        }
                    }
                    open.close();
                    open.wait().await;
                    let _ = done_tx.send(());
                    // Cancels this thread's requests started on their hosts
                    // run here: keep the runtime until they are done.
                    state.background.wait().await;
                });
            })?;
        Ok(Worker { connections, done })
    }
}

/// Binds the public listener with the configured accept queue (`listen`
/// and `listen_backlog`), so that a burst of connects is queued rather
/// than dropped into SYN retries.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Resolves on the first SIGTERM or Ctrl-C, saying which. From then on, a
/// second one cancels `hurry`: the drain ends at once. The same listeners
/// watch for both, so a second signal sent right after the first is not
/// missed.
pub async fn signals(hurry: CancellationToken) -> Stop {
    let mut listeners = SignalListeners::new();
    let first = listeners.next().await;
    tokio::spawn(async move {
        listeners.next().await;
        tracing::warn!("second signal: ending the drain now");
        hurry.cancel();
    });
    first
}

/// Ctrl-C (SIGINT) and SIGTERM, each listened for while this lives.
struct SignalListeners {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl SignalListeners {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            SignalListeners {
                interrupt: listen(SignalKind::interrupt(), "Ctrl-C"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        SignalListeners {}
    }

    /// The next SIGTERM or Ctrl-C.
    async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.interrupt) => {
                    tracing::info!("Ctrl-C received; shutting down");
                    Stop::Interrupt
                }
                () = recv(&mut self.terminate) => {
                    tracing::info!("SIGTERM received; shutting down");
                    Stop::Drain
                }
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            Stop::Interrupt
        }
    }
}
