//! The bounded background queue that writes entries to L2, so Redis never adds latency to an answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{L2, L2Write};
use crate::error::L2Error;
use crate::stats::{Stats, bump};

/// Writes per Redis round trip: the worker sends whatever queued up, up to this many, as one pipeline.
const BATCH: usize = 64;

enum Job {
    Write(L2Write),
    /// Answered once every write queued before it has been attempted.
    Flush(oneshot::Sender<()>),
}

/// The sending side of the write-back queue. Cloning shares the queue.
#[derive(Clone)]
pub(crate) struct WriteBack {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for WriteBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBack")
            .field("capacity", &self.tx.max_capacity())
            .finish_non_exhaustive()
    }
}

impl WriteBack {
    /// Starts the worker on the current tokio runtime; it ends when every [`WriteBack`] is dropped.
    pub(crate) fn spawn(l2: Arc<dyn L2>, capacity: usize, stats: Arc<Stats>) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(run(l2, rx, stats.clone()));
        Self { tx, stats }
    }

    /// Queues a write; when the queue is full the write is dropped and counted (the entry stays in L1).
    pub(crate) fn enqueue(&self, write: L2Write) {
        if self.tx.try_send(Job::Write(write)).is_err() {
            bump(&self.stats.l2_write_drops);
        }
    }

    /// Waits until every write queued so far has been attempted, or `within` has passed.
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        let flushed =
            async { self.tx.send(Job::Flush(done_tx)).await.is_ok() && done_rx.await.is_ok() };
        tokio::time::timeout(within, flushed).await.unwrap_or(false)
    }
}

async fn run(l2: Arc<dyn L2>, mut rx: mpsc::Receiver<Job>, stats: Arc<Stats>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut writes = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let mut flushes = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Write(w) => writes.push(w),
                Job::Flush(done) => flushes.push(done),
            }
        }
        if !writes.is_empty() {
            match l2.set_many(&writes).await {
                Ok(()) => {
                    stats
                        .l2_writes
                        .fetch_add(writes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(err) => {
                    match err {
                        L2Error::Timeout { .. } => bump(&stats.l2_timeouts),
                        _ => bump(&stats.l2_errors),
                    }
                    stats
                        .l2_write_errors
                        .fetch_add(writes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(error = %err, count = writes.len(), "L2 write-back failed");
                }
            }
            writes.clear();
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
