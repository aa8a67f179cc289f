//! Hot reload: the config file is watched (and SIGHUP re-reads it); routes, TTLs, backends, limits, the admin token
//! and the access log change without a restart and without failing calls in flight, which keep the routes they
//! started with. A backend whose config did not change is kept as it runs; every change that needs a restart is
//! logged with its field.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::assemble::{build_proxy, replace_backends};
use crate::config::Config;
use crate::proxy::{LiveProxy, LongLived};

/// How often the config file's modification time is checked.
const POLL: Duration = Duration::from_millis(250);

/// How long a changed backend that resolves names may take to find its endpoints before the running one is kept.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// Watches `path` until aborted; on a change (or SIGHUP) re-reads it and swaps in a proxy built from it. An invalid
/// file is logged with every bad field, and the running config stays.
pub async fn watch(path: PathBuf, mut running: Config, live: LiveProxy, long_lived: LongLived) {
    // Unknown at first: the file may have changed between `running` being read and this task's first poll (a busy
    // machine), so the first poll reads it, and applies it if it differs from `running`.
    let mut stamp = None;
    let mut hangup = hangup_signals();
    loop {
        let first_look = stamp.is_none();
        tokio::select! {
            () = tokio::time::sleep(POLL) => {
                let now = Some(modified(&path));
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
            // The file as the gateway started with it. (Later, a touch does reload: it retries what did not apply.)
            Ok(next) if first_look && next == running => {}
            Ok(next) => {
                for field in needs_restart(&running, &next) {
                    tracing::warn!(
                        field,
                        "changed in the config file, but takes effect only after a restart"
                    );
                }
                let running_backends = live.load().backends().clone();
                let built =
                    match replace_backends(&next, &long_lived, &running_backends, RESOLVE_WITHIN)
                        .await
                    {
                        Ok(backends) => build_proxy(&next, &long_lived, backends),
                        Err(err) => Err(err),
                    };
                match built {
                    Ok(proxy) => {
                        live.store(Arc::new(proxy));
                        // New backends, or new files: their descriptors now.
                        long_lived.schema.reloaded();
                        long_lived.metrics.set_access_log(next.log.access);
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

/// The fields a reload cannot change (listeners, TLS, the cache levels and namespace, global limits, log format,
/// telemetry, the worker threads) that differ between `running` and `next` (secrets compared as written, not as printed).
fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (running, next);
    let pairs: [(&'static str, bool); 15] = [
        ("listen", a.listen == b.listen),
        ("tls", a.tls == b.tls),
        ("admin.listen", a.admin.listen == b.admin.listen),
        ("cache.namespace", a.cache.namespace == b.cache.namespace),
        ("cache.l1", a.cache.l1 == b.cache.l1),
        ("cache.l2", a.cache.l2 == b.cache.l2),
        (
            "cache.flight_wait",
            a.cache.flight_wait == b.cache.flight_wait,
        ),
        ("cache.lease", a.cache.lease == b.cache.lease),
        (
            "max_concurrent_requests",
            a.max_concurrent_requests == b.max_concurrent_requests,
        ),
        ("shutdown_grace", a.shutdown_grace == b.shutdown_grace),
        ("drain_delay", a.drain_delay == b.drain_delay),
        ("idle_timeout", a.idle_timeout == b.idle_timeout),
        ("log.format", a.log.format == b.log.format),
        ("telemetry", a.telemetry == b.telemetry),
        ("worker_threads", a.worker_threads == b.worker_threads),
    ];
    pairs
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(field, _)| field)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(namespace: &str, token: &str, redis_password: &str, ttl: &str) -> Config {
        Config::from_yaml(&format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0, token: {token} }}\n\
             cache:\n  namespace: {namespace}\n  l2: {{ url: \"redis://:{redis_password}@127.0.0.1:1\" }}\n\
             backends:\n  b: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n\
             routes:\n  - match: \"*\"\n    backend: b\n    cache: {{ ttl: {ttl} }}\n"
        ))
        .expect("valid")
    }

    #[test]
    fn every_change_a_reload_cannot_apply_is_named() {
        let running = config("ns", "t1", "p1", "1s");
        assert!(needs_restart(&running, &config("ns", "t1", "p1", "5s")).is_empty());
        assert!(
            needs_restart(&running, &config("ns", "t2", "p1", "1s")).is_empty(),
            "the admin token is applied by a reload"
        );
        assert_eq!(
            needs_restart(&running, &config("ns", "t1", "p2", "1s")),
            ["cache.l2"],
            "a Redis password is compared as written, not as printed (redacted)"
        );
        assert_eq!(
            needs_restart(&running, &config("other", "t1", "p1", "1s")),
            ["cache.namespace"]
        );
        let mut more_threads = running.clone();
        more_threads.worker_threads = Some(4);
        assert_eq!(
            needs_restart(&running, &more_threads),
            ["worker_threads"],
            "the runtime is built once, before anything is served"
        );
    }
}
