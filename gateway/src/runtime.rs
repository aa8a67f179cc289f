//! The tokio runtime `strata serve` runs on: one worker thread per CPU the process may use, or, when that is one CPU,
//! a single-threaded scheduler.
//!
//! Why not always tokio's multi-thread scheduler: it runs a task woken by the running one next (its LIFO slot). When
//! each call was a task of its own, a call that handed its frames to h2 woke the connection's task, which wrote that
//! call's frames before the next ready call ran: about one `sendto` per call under load (strace: 20 060 for 20 000
//! forwarded calls; 2 060 on the current-thread scheduler, which queues the woken task behind those already ready).
//! Calls now run in their connection's task (`server::local_streams`), which batches the writes on either scheduler;
//! on one CPU — a pod with a CPU limit below 2, a process pinned to one core — the current-thread scheduler still
//! spares the work stealing a single worker cannot use (docs/BENCHMARKS.md, "Round ten").
//! With more CPUs, a work-stealing pool of that many threads.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// How calls are scheduled: decided once, before anything is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Everything on the thread that starts the runtime.
    CurrentThread,
    /// A work-stealing pool of this many worker threads.
    MultiThread { workers: usize },
}

impl Scheduler {
    /// The scheduler for `configured` worker threads (the config's `worker_threads`), given the CPUs the process may
    /// use: that many when not configured. One thread means the current-thread scheduler, configured or not.
    pub fn for_threads(configured: Option<usize>, cpus: NonZeroUsize) -> Self {
        match configured.unwrap_or(cpus.get()) {
            0 | 1 => Self::CurrentThread,
            workers => Self::MultiThread { workers },
        }
    }

    /// The scheduler for `configured` worker threads on this machine, counting the CPUs as the standard library
    /// does: the process's CPU affinity and its cgroup's CPU quota (a container's CPU limit, rounded down, at least
    /// one).
    pub fn for_this_process(configured: Option<usize>) -> Self {
        let cpus = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        Self::for_threads(configured, cpus)
    }

    /// Builds the runtime, with its I/O and timer drivers.
    pub fn build(self) -> std::io::Result<Runtime> {
        let mut builder = match self {
            Self::CurrentThread => Builder::new_current_thread(),
            Self::MultiThread { workers } => {
                let mut builder = Builder::new_multi_thread();
                builder.worker_threads(workers);
                builder
            }
        };
        builder.thread_name("strata-runtime").enable_all().build()
    }
}

/// The running runtime's scheduler and worker threads, as the `strata gateway serving` line reports them.
pub fn describe_current() -> (&'static str, usize) {
    let handle = tokio::runtime::Handle::current();
    let scheduler = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    (scheduler, handle.metrics().num_workers())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    #[test]
    fn one_cpu_gets_the_current_thread_scheduler() {
        assert_eq!(
            Scheduler::for_threads(None, cpus(1)),
            Scheduler::CurrentThread
        );
        assert_eq!(
            Scheduler::for_threads(Some(1), cpus(8)),
            Scheduler::CurrentThread,
            "one thread configured on a larger machine"
        );
    }

    #[test]
    fn more_cpus_get_a_worker_each_unless_configured() {
        assert_eq!(
            Scheduler::for_threads(None, cpus(4)),
            Scheduler::MultiThread { workers: 4 }
        );
        assert_eq!(
            Scheduler::for_threads(Some(2), cpus(16)),
            Scheduler::MultiThread { workers: 2 }
        );
        assert_eq!(
            Scheduler::for_threads(Some(3), cpus(1)),
            Scheduler::MultiThread { workers: 3 },
            "the operator's number wins over the CPU count"
        );
    }

    #[test]
    fn the_built_runtime_is_the_scheduler_chosen() {
        let single = Scheduler::CurrentThread.build().expect("runtime");
        assert_eq!(
            single.block_on(async { describe_current() }),
            ("current_thread", 1)
        );
        let pool = Scheduler::MultiThread { workers: 3 }
            .build()
            .expect("runtime");
        assert_eq!(
            pool.block_on(async { describe_current() }),
            ("multi_thread", 3)
        );
    }
}
