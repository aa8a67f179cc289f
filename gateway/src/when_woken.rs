//! A future polled only when its own waker fired, not on every wake of the task it shares.
//!
//! A connection's task is woken several times per call; the signals it also waits for — shutdown, its idle timer, a
//! backend connection's keep-alive ping — fire once in minutes or hours. Polled on every wake, a timer or a channel
//! costs a few hundred instructions each time, per call, for nothing. [`WhenWoken`] polls its future once, then again
//! only after that future's own waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// `F`, polled only on its first poll and after its own waker fired.
pub struct WhenWoken<F> {
    future: F,
    woken: Arc<WokenFlag>,
    /// The waker `future` is polled with: it raises the flag, then wakes the task.
    waker: Waker,
}

/// Raised by the inner future's waker; lowered when the inner future is polled.
#[derive(Default)]
struct WokenFlag {
    raised: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raised.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> WhenWoken<F> {
    /// `future`, to be polled on the first poll.
    pub fn new(future: F) -> Self {
        let woken = Arc::new(WokenFlag::default());
        woken.raised.store(true, Ordering::Relaxed);
        Self {
            future,
            waker: Waker::from(woken.clone()),
            woken,
        }
    }
}

impl<F: Future + Unpin> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake after this point wakes the task, whichever side of the read.
        this.woken.task.register(cx.waker());
        if !this.woken.raised.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Counts its polls; ends once `until` is set.
    struct Counting<'a> {
        polls: &'a AtomicUsize,
        until: tokio::sync::oneshot::Receiver<()>,
    }

    impl Future for Counting<'_> {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.until).poll(cx).map(|_| ())
        }
    }

    #[test]
    fn the_future_is_polled_first_then_only_after_its_own_waker_fired() {
        let polls = AtomicUsize::new(0);
        let (end, until) = tokio::sync::oneshot::channel();
        let mut waiting = WhenWoken::new(Counting {
            polls: &polls,
            until,
        });
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..5 {
            assert!(Pin::new(&mut waiting).poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "polled once, not per wake"
        );
        end.send(()).unwrap();
        assert!(Pin::new(&mut waiting).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn its_waker_wakes_the_task_that_polls_it() {
        let polls = AtomicUsize::new(0);
        let (end, until) = tokio::sync::oneshot::channel();
        let waiting = WhenWoken::new(Counting {
            polls: &polls,
            until,
        });
        let ending = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            end.send(()).unwrap();
        };
        // The task is woken by the oneshot's send only through the flag's waker: were that wake lost, this would hang.
        let ((), ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(waiting, ending)
        })
        .await
        .expect("woken");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
