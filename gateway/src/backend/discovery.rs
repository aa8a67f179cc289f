//! DNS discovery: a `dns:///name:port` endpoint is re-resolved every `resolve_interval` (a Kubernetes headless
//! service: pods come and go without a restart).

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use super::pool::Pool;

/// Where names are resolved.
#[derive(Debug, Clone, Default)]
pub enum Resolver {
    /// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
    #[default]
    System,
    /// A hosts-format file (`ADDRESS NAME...` per line, `#` comments), read afresh at every resolution: lets a test
    /// change what a name resolves to while the gateway runs.
    #[cfg(test)]
    HostsFile(std::path::PathBuf),
}

impl Resolver {
    /// The addresses `name` resolves to, each with `port`.
    pub async fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((name, port)).await?.collect()),
            #[cfg(test)]
            Self::HostsFile(path) => {
                let file = path.clone();
                let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(file))
                    .await
                    .map_err(std::io::Error::other)??;
                let addrs: Vec<SocketAddr> = hosts_entries(&text)
                    .filter(|(_, names)| names.contains(&name))
                    .map(|(ip, _)| SocketAddr::new(ip, port))
                    .collect();
                if addrs.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("`{name}` is not in {}", path.display()),
                    ));
                }
                Ok(addrs)
            }
        }
    }
}

/// The well-formed lines of a hosts file: an address and its names.
#[cfg(test)]
fn hosts_entries(text: &str) -> impl Iterator<Item = (std::net::IpAddr, Vec<&str>)> {
    text.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let ip = fields.next()?.parse().ok()?;
        Some((ip, fields.collect()))
    })
}

/// Resolves `name:port` with `resolver` now and every `interval`, until the pool is gone. A failed resolution keeps
/// the endpoints known so far (a DNS hiccup must not empty the backend).
pub async fn resolve_forever(
    pool: Weak<Pool>,
    resolver: Resolver,
    name: String,
    port: u16,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let resolved = resolver.resolve(&name, port).await;
        let Some(pool) = pool.upgrade() else { return };
        match resolved {
            Ok(mut addrs) => {
                addrs.sort();
                addrs.dedup();
                if addrs.is_empty() {
                    tracing::warn!(%name, "resolved to no address; keeping the endpoints known so far");
                } else {
                    pool.set_resolved(&name, &addrs);
                }
            }
            Err(err) => {
                tracing::warn!(%name, error = %err, "cannot resolve; keeping the endpoints known so far")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_are_read_line_by_line() {
        let text =
            "# comment\n127.0.0.2 svc.test other # trailing\nnot-an-ip svc.test\n\n::1 svc.test\n";
        let entries: Vec<_> = hosts_entries(text).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].1, ["svc.test", "other"]);
        assert_eq!(
            entries[1].0,
            "::1".parse::<std::net::IpAddr>().expect("valid")
        );
    }
}
