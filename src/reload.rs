//! Config reload: SIGHUP, or a change of the config file, loads the file
//! again, validates it fully and swaps the new agents, teams, workflows and host groups in
//! at once ([`AppState::replace_upstreams`]).
//!
//! New requests see the new routes; requests and streams under way keep the
//! snapshot they started with, so they keep their host and finish. Host
//! groups whose definition did not change keep their replicas (pools,
//! health, in-flight counts), and run ownership lives outside the snapshot,
//! so cancels of earlier runs still reach their replica. A file that does
//! not validate changes nothing: the error (file, line, key) is logged,
//! counted in `agentos_gateway_config_reloads_total{result="error"}` and
//! shown by the admin listener's `GET /gateway/config`.
//!
//! `[server]`, `[admin]` and `[tracing]` (listen addresses, connection
//! limits, timeouts of the listener, the span exporter) are read at start: a reload that changes them applies
//! everything else and says that those tables wait for a restart.
//!
//! The file is watched through its directory, which is how a Kubernetes
//! ConfigMap update shows up: the kubelet swaps a `..data` symlink in the
//! mounted directory, and the config file itself (a symlink through
//! `..data`) never sees an event of its own. Any event in the directory
//! re-reads the file; only a change of its text reloads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::state::{AppState, SharedState};
use crate::upstream::Upstreams;

/// How long the file must be quiet before it is read: an editor or the
/// kubelet writes in several steps, and one reload should see all of them.
const SETTLE: Duration = Duration::from_millis(200);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: reload even when the text is unchanged (an environment
    /// variable or the CA file it names may have changed).
    Signal,
    /// An event in the config file's directory: reload only if the text
    /// changed.
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file changed",
        }
    }
}

/// The outcome of the last reload and what is in service, for
/// `GET /gateway/config` on the admin listener.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    path: Option<PathBuf>,
    /// The text of the file in service, to tell an unchanged file.
    source: Option<String>,
    /// The config the gateway started with: its `[server]` and `[admin]`
    /// stay in service until a restart.
    started_with: Option<Config>,
    loaded_at: Option<String>,
    ok: u64,
    errors: u64,
    last: Option<Value>,
    pending_restart: Vec<&'static str>,
}

impl ReloadStatus {
    /// Records the config the gateway started with.
    pub fn started(&self, path: &Path, config: &Config, source: String) {
        let mut inner = self.lock();
        inner.path = Some(path.to_owned());
        inner.source = Some(source);
        inner.started_with = Some(config.clone());
        inner.loaded_at = Some(now());
    }

    /// The admin listener's view.
    pub fn view(&self) -> Value {
        let inner = self.lock();
        json!({
            "file": inner.path.as_ref().map(|p| p.display().to_string()),
            "loaded_at": inner.loaded_at,
            "reloads": { "ok": inner.ok, "error": inner.errors },
            "last_reload": inner.last,
            "pending_restart": inner.pending_restart,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Loads `path` and, if it validates, puts it in service. Returns whether
/// it did (`false` for an invalid file, and for an unchanged one when
/// `trigger` is a file event).
pub async fn reload(state: &SharedState, path: &Path, trigger: Trigger) -> bool {
    let load_state = state.clone();
    let load_path = path.to_owned();
    // Reading the file (and a CA file) and building clients is blocking work.
    let loaded = tokio::task::spawn_blocking(move || load(&load_state, &load_path, trigger)).await;
    match loaded {
        Ok(Ok(Some(next))) => {
            apply(state, next, trigger);
            true
        }
        Ok(Ok(None)) => false,
        Ok(Err(error)) => {
            refused(state, path, trigger, &error);
            false
        }
        Err(join) => {
            refused(state, path, trigger, &join.to_string());
            false
        }
    }
}

/// A validated config ready to swap in.
struct Loaded {
    config: Config,
    source: String,
    upstreams: Upstreams,
}

/// `Ok(None)`: the file did not change and nothing asks to reload anyway.
fn load(state: &AppState, path: &Path, trigger: Trigger) -> Result<Option<Loaded>, String> {
    // Read once: the text compared is the text validated and kept.
    let source = match std::fs::read_to_string(path) {
        Ok(source) => source,
        // A file that cannot be read right now (mid-swap) is not yet a
        // reload: the event that completes the swap follows.
        Err(_) if trigger == Trigger::FileChanged => return Ok(None),
        Err(source) => {
            let path = path.to_owned();
            return Err(ConfigError::Read { path, source }.to_string());
        }
    };
    if trigger == Trigger::FileChanged
        && state.reloads.lock().source.as_deref() == Some(source.as_str())
    {
        return Ok(None);
    }
    let config = Config::servable(path, &source).map_err(|e| e.to_string())?;
    let upstreams = Upstreams::build(&config, Some(&state.upstreams()))?;
    Ok(Some(Loaded {
        config,
        source,
        upstreams,
    }))
}

fn apply(state: &AppState, next: Loaded, trigger: Trigger) {
    let Loaded {
        config,
        source,
        upstreams,
    } = next;
    state.replace_upstreams(upstreams);
    state.metrics.config_reload(true);
    let mut inner = state.reloads.lock();
    let pending_restart = match &inner.started_with {
        Some(started) => restart_only_changes(started, &config),
        None => Vec::new(),
    };
    let at = now();
    inner.source = Some(source);
    inner.loaded_at = Some(at.clone());
    inner.ok += 1;
    inner.last = Some(json!({ "at": at, "trigger": trigger.as_str(), "result": "ok" }));
    if pending_restart.is_empty() {
        tracing::info!(
            trigger = trigger.as_str(),
            entries = config.entries.len(),
            host_groups = config.host_groups.len(),
            "config reloaded"
        );
    } else {
        tracing::warn!(
            trigger = trigger.as_str(),
            entries = config.entries.len(),
            host_groups = config.host_groups.len(),
            restart_needed_for = %pending_restart.join(", "),
            "config reloaded; changes to these tables take effect at the next restart"
        );
    }
    inner.pending_restart = pending_restart;
}

fn refused(state: &AppState, path: &Path, trigger: Trigger, error: &str) {
    state.metrics.config_reload(false);
    tracing::error!(
        trigger = trigger.as_str(),
        file = %path.display(),
        %error,
        "config reload refused; the config in service is unchanged"
    );
    let mut inner = state.reloads.lock();
    inner.errors += 1;
    inner.last = Some(json!({
        "at": now(),
        "trigger": trigger.as_str(),
        "result": "error",
        "error": error,
    }));
}

/// The tables read only at start whose text changed.
fn restart_only_changes(started: &Config, next: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if started.server != next.server {
        changed.push("[server]");
    }
    if started.admin != next.admin {
        changed.push("[admin]");
    }
    // The exporter's thread and the sampling of the layer are set up once.
    if started.tracing != next.tracing {
        changed.push("[tracing]");
    }
    // The auth gate and its rate limiters are built once, at start.
    if started.auth != next.auth {
        changed.push("[auth]");
    }
    if started.limits != next.limits {
        changed.push("[limits]");
    }
    changed
}

/// Reloads `path` on SIGHUP and whenever its directory changes, until
/// `stop`. Fails only if SIGHUP cannot be handled; a directory that cannot
/// be watched is logged and leaves SIGHUP working.
pub fn spawn(
    state: SharedState,
    path: PathBuf,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let changed = Arc::new(Notify::new());
    let watcher = watch(&path, changed.clone());
    Ok(tokio::spawn(async move {
        // Dropping the watcher stops its thread; it lives as long as this.
        let _watcher = watcher;
        loop {
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                signal = hangups.recv() => match signal {
                    Some(()) => Trigger::Signal,
                    None => return,
                },
                () = changed.notified() => {
                    // Let a multi-step write finish; events meanwhile are
                    // folded into this reload.
                    tokio::time::sleep(SETTLE).await;
                    Trigger::FileChanged
                }
            };
            reload(&state, &path, trigger).await;
        }
    }))
}

/// Watches the directories of `path` and of what it resolves to (they
/// differ when the file is a symlink, as in a ConfigMap volume).
fn watch(path: &Path, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            changed.notify_one();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config file; reload with SIGHUP");
            return None;
        }
    };
    let mut directories = vec![parent(path)];
    if let Ok(resolved) = std::fs::canonicalize(path) {
        let resolved = parent(&resolved);
        if !directories.contains(&resolved) {
            directories.push(resolved);
        }
    }
    for directory in &directories {
        if let Err(error) = watcher.watch(directory, RecursiveMode::NonRecursive) {
            tracing::warn!(
                directory = %directory.display(),
                %error,
                "cannot watch the config file's directory; reload with SIGHUP"
            );
        }
    }
    Some(watcher)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
