//! Hot reload: the config file is watched (and SIGHUP re-reads it); routes, TTLs, backends, limits and the access log
//! change without a restart and without failing calls in flight, which keep the routes they started with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::assemble::build_proxy;
use crate::config::Config;
use crate::proxy::{Proxy, Shared};

/// The proxy serving new calls, replaced whole on a reload.
pub type LiveProxy = Arc<ArcSwap<Proxy>>;

/// How often the config file's modification time is checked.
const POLL: Duration = Duration::from_millis(250);

/// Watches `path` until aborted; on a change (or SIGHUP) re-reads it and swaps in a proxy built from it. An invalid
/// file is logged with every bad field, and the running config stays.
pub async fn watch(path: PathBuf, mut running: Config, live: LiveProxy, shared: Shared) {
    let mut stamp = modified(&path);
    let mut hangup = hangup_signals();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {
                let now = modified(&path);
                if now == stamp {
                    continue;
                }
                stamp = now;
            }
            _ = recv(&mut hangup) => tracing::info!("SIGHUP: re-reading the config"),
        }
        match Config::load(&path) {
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "config reload rejected; the running config stays")
            }
            Ok(next) => {
                for field in needs_restart(&running, &next) {
                    tracing::warn!(
                        field,
                        "changed in the config file, but takes effect only after a restart"
                    );
                }
                match build_proxy(&next, &shared) {
                    Ok(proxy) => {
                        live.store(Arc::new(proxy));
                        shared.metrics.set_access_log(next.log.access);
                        if next.log.level != running.log.level
                            && crate::telemetry::set_log_level(&next.log.level)
                        {
                            tracing::info!(level = %next.log.level, "log level changed");
                        }
                        tracing::info!(routes = next.routes.len(), "config reloaded");
                        running = next;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "config reload failed; the running config stays")
                    }
                }
            }
        }
    }
}

/// The fields a reload cannot change: listeners, TLS, the cache levels, global limits, log format, telemetry.
fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    let pairs: [(&'static str, String, String); 9] = [
        ("listen", yaml(&running.listen), yaml(&next.listen)),
        ("tls", yaml(&running.tls), yaml(&next.tls)),
        ("admin", yaml(&running.admin), yaml(&next.admin)),
        ("cache", yaml(&running.cache), yaml(&next.cache)),
        (
            "max_concurrent_requests",
            yaml(&running.max_concurrent_requests),
            yaml(&next.max_concurrent_requests),
        ),
        (
            "shutdown_grace",
            yaml(&running.shutdown_grace.as_millis()),
            yaml(&next.shutdown_grace.as_millis()),
        ),
        (
            "drain_delay",
            yaml(&running.drain_delay.as_millis()),
            yaml(&next.drain_delay.as_millis()),
        ),
        (
            "log.format",
            yaml(&running.log.format),
            yaml(&next.log.format),
        ),
        ("telemetry", yaml(&running.telemetry), yaml(&next.telemetry)),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(field, ..)| field)
        .collect()
}

/// A value as YAML, to compare two configs field by field.
fn yaml<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signals() -> Option<()> {
    None
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Option<()>) {
    std::future::pending().await
}
