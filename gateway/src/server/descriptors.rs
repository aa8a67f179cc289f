//! What the descriptor refresher asks of the running gateway: the current config's descriptor sources and backends,
//! and a proxy to re-plan when the schema changes.

use std::sync::Arc;

use crate::backend::Backend;
use crate::config::DescriptorsConfig;
use crate::proxy::LiveProxy;
use crate::schema::{Running, Schema};

/// The refresher's view of the proxy serving calls now (a reload replaces it).
#[derive(Debug)]
pub struct FromLiveProxy(pub LiveProxy);

impl Running for FromLiveProxy {
    fn now(&self) -> (DescriptorsConfig, Vec<(String, Arc<Backend>)>) {
        let proxy = self.0.load();
        let backends = proxy
            .backends()
            .iter()
            .map(|(name, running)| (name.clone(), running.backend.clone()))
            .collect();
        (proxy.descriptors().clone(), backends)
    }

    fn changed(&self, schema: &Arc<Schema>) {
        self.0.load().replan(schema);
    }
}
