//! The schema the gateway runs with, and the task that keeps it current: the descriptor-set files, and each
//! backend's reflection — asked at start, after every reload, every `descriptors.refresh`, and soon after a call to
//! a method without a descriptor.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::reflection;
use super::{MethodIndex, Schema, index_files};
use crate::backend::Backend;
use crate::config::DescriptorsConfig;
use crate::metrics::{DescriptorLabels, DescriptorMethods};

/// The shortest time between two rounds woken early (by calls to methods without a descriptor): a client sending
/// made-up method names makes the backends asked at most this often.
const MIN_GAP: Duration = Duration::from_secs(10);

/// The schema in use, replaced whole by the refresher.
#[derive(Debug, Default)]
pub struct LiveSchema {
    current: ArcSwap<Schema>,
    /// A call to a method without a descriptor: a round soon, at most every [`MIN_GAP`].
    wake: Notify,
    /// A reload: a round now.
    reloaded: Notify,
}

impl LiveSchema {
    /// The schema now.
    pub fn load(&self) -> Arc<Schema> {
        self.current.load_full()
    }

    /// Asks the refresher for a round soon: a call came for a method without a descriptor.
    pub fn ask_again(&self) {
        self.wake.notify_one();
    }

    /// Asks the refresher for a round now: the config (backends, files) changed.
    pub fn reloaded(&self) {
        self.reloaded.notify_one();
    }
}

/// What a refresh round asks of the running gateway.
pub trait Running: Send {
    /// The descriptors config and the backends now (a reload changes both).
    fn now(&self) -> (DescriptorsConfig, Vec<(String, Arc<Backend>)>);
    /// Called with each new schema, to rebuild what depends on it.
    fn changed(&self, schema: &Arc<Schema>);
}

/// Keeps `live` current until the task is dropped. Each round reads the files (again after a reload, or when the
/// list changed) and asks every backend's reflection; a backend that fails keeps what it described last time, and one that serves
/// no reflection is asked again only on the periodic round.
pub async fn refresh_forever(
    live: Arc<LiveSchema>,
    running: impl Running,
    gauge: DescriptorMethods,
) {
    let mut files: Option<(Vec<PathBuf>, MethodIndex)> = None;
    let mut without_reflection: HashSet<String> = HashSet::new();
    let mut woken_early = false;
    // A reload reads the files again (an operator may have replaced one in place); other rounds only a changed list.
    let mut reloaded = true;
    loop {
        let (config, backends) = running.now();
        if reloaded || files.as_ref().map(|(paths, _)| paths) != Some(&config.files) {
            let index = index_files(&config.files).unwrap_or_else(|err| {
                tracing::error!(
                    field = "descriptors.files",
                    "cannot use the descriptor files: {err}"
                );
                MethodIndex::default()
            });
            if !index.is_empty() {
                tracing::info!(
                    methods = index.len(),
                    "descriptors read from descriptors.files"
                );
            }
            files = Some((config.files.clone(), index));
        }
        let previous = live.load();
        let mut reflected = HashMap::new();
        if config.reflection {
            for (name, backend) in backends {
                if woken_early && without_reflection.contains(&name) {
                    if let Some(old) = previous.reflected.get(&name) {
                        reflected.insert(name, old.clone());
                    }
                    continue;
                }
                match reflection::methods_of(backend).await {
                    Ok((version, index)) => {
                        without_reflection.remove(&name);
                        let changed = previous
                            .reflected
                            .get(&name)
                            .is_none_or(|old| !old.same_as(&index));
                        if changed {
                            tracing::info!(backend = %name, methods = index.len(), "descriptors learned by reflection {version}");
                        }
                        reflected.insert(name, index);
                    }
                    Err(err) => {
                        let first = without_reflection.insert(name.clone());
                        if first {
                            tracing::warn!(backend = %name, "no descriptors from this backend ({err}): its calls on cached routes are read as unary until they stream");
                        }
                        if let Some(old) = previous.reflected.get(&name) {
                            reflected.insert(name, old.clone());
                        }
                    }
                }
            }
        }
        let schema = Arc::new(Schema {
            files: files
                .as_ref()
                .map(|(_, index)| index.clone())
                .unwrap_or_default(),
            reflected,
        });
        gauge.clear();
        gauge
            .get_or_create(&DescriptorLabels {
                source: "files",
                backend: String::new(),
            })
            .set(i64::try_from(schema.files.len()).unwrap_or(i64::MAX));
        for (backend, index) in &schema.reflected {
            let labels = DescriptorLabels {
                source: "reflection",
                backend: backend.clone(),
            };
            gauge
                .get_or_create(&labels)
                .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
        }
        live.current.store(schema.clone());
        running.changed(&schema);

        let round_ended = Instant::now();
        tokio::select! {
            () = tokio::time::sleep(config.refresh) => (woken_early, reloaded) = (false, false),
            () = live.reloaded.notified() => (woken_early, reloaded) = (false, true),
            () = live.wake.notified() => {
                tokio::time::sleep_until(round_ended + MIN_GAP).await;
                (woken_early, reloaded) = (true, false);
            }
        }
    }
}
