//! A data connection's calls run inside the connection's own task, not in a task each.
//!
//! A server built on tokio would make each new HTTP/2 stream (a call) a task. A call's task that answers wakes the
//! connection's task to write, and what runs next decides how the answers leave: tokio's multi-thread scheduler runs
//! the woken connection task at once (its LIFO slot), so it writes one answer per call. Here the connection's task
//! polls its calls itself, then the connection again when a call gave it frames to send: the answers of every call
//! that became ready leave in one write, on any scheduler, and a call costs no spawn and no hop between tasks. (Two
//! workers, 30 000 forwarded calls: 12 980 `sendto` before, 4 021 after, up to a fifth less CPU per call;
//! docs/BENCHMARKS.md, "Round ten".)
//!
//! What tasks gave and this keeps: a call that panics ends alone (its stream is reset, logged); the connection's
//! future ends only once its calls have (so a drain still waits for them); a connection with many ready calls yields
//! after a bounded number of rounds, so others get their turn.
//!
//! What tasks gave and this gives up: a connection's calls no longer spread over several worker threads, so one
//! connection's call work runs on one core at a time, and a call that computes long (a large request's key) holds up
//! the other calls of its connection while it does. A connection's HTTP/2 framing was one task already; this puts
//! its calls with it, as Envoy's and nginx's workers own a connection and everything on it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::accept::Served;

/// Rounds of "the connection, then its ready calls" in one poll before the task yields to others.
const ROUNDS_PER_POLL: usize = 16;

/// A call's future: it ends with what is left of the call once it has answered.
pub type CallFuture<A> = Pin<Box<dyn Future<Output = A> + Send>>;

/// What a connection's poll hands over: a call that started, the error that ended the connection, or (`None`) its
/// end.
pub type NextCall<A, E> = Option<Result<CallFuture<A>, E>>;

/// A connection whose calls a [`LocalStreams`] runs.
pub trait CallSource {
    /// Why the connection ended badly.
    type Error: std::fmt::Display;
    /// What an answered call leaves behind, dropped once the connection has written the answer.
    type Answered: Send;

    /// Reads and writes what it can: a call that started is handed over (`Ready(Some(Ok(call)))`); `Ready(None)`
    /// or an error once the connection has ended.
    fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<NextCall<Self::Answered, Self::Error>>;

    /// Takes no new calls (HTTP/2 GOAWAY); the connection ends when those in flight have.
    fn finish(&mut self);
}

/// The calls a connection's task runs, polled as they are woken.
///
/// Beside them sits one placeholder that never ends and is never woken. `FuturesUnordered` wakes its own task and
/// returns whenever it has polled as many futures as it holds, so that a set whose futures are all busy lets other
/// tasks run; with one call waiting for its backend, every poll of that call was followed by a poll of the task for
/// nothing — two or three per forwarded call. The placeholder keeps that count out of reach; calls that wake
/// themselves while polled still make the set yield, and [`ROUNDS_PER_POLL`] bounds the rest.
struct Calls<A> {
    set: FuturesUnordered<LocalCall<A>>,
}

impl<A: Send + 'static> Calls<A> {
    fn new() -> Self {
        let set = FuturesUnordered::new();
        set.push(LocalCall(Some(Box::pin(std::future::pending()))));
        Self { set }
    }

    /// No call is running (the placeholder is no call).
    fn is_empty(&self) -> bool {
        self.set.len() == 1
    }
}

/// One call run by its connection's task; it ends alone if it panics.
struct LocalCall<A>(Option<CallFuture<A>>);

impl<A> Future for LocalCall<A> {
    type Output = Option<A>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(call) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Ready(answered)) => {
                self.0 = None;
                Poll::Ready(Some(answered))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                // The panic hook has printed it; dropping the call resets its stream, the other calls go on.
                self.0 = None;
                tracing::error!("a call panicked; its stream is reset");
                Poll::Ready(None)
            }
        }
    }
}

/// The waker the connection is polled with: notes that the connection has something to do, then wakes the task —
/// unless the task is polling already and will see the note before it returns. Calls that ran need not mean the
/// connection has work (a forwarded call only wrote to the backend): polling it only when it asked saves a pass
/// through h2, and not waking the running task saves it a second poll.
#[derive(Default)]
struct ConnectionWaker {
    /// The connection asked to be polled. (SeqCst with `polling`: of a wake and the end of a poll racing, one sees
    /// the other's store, so a wake is never lost.)
    woken: AtomicBool,
    /// The task is in its poll.
    polling: AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for ConnectionWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// A connection served with its calls in its own task (see the module doc).
pub struct LocalStreams<C: CallSource> {
    connection: C,
    /// Whether the connection asked to be polled, and the waker that notes it.
    connection_waker: Arc<ConnectionWaker>,
    connection_waker_handle: std::task::Waker,
    /// How the connection ended, once it has (its calls may still be running).
    ended: Option<Result<(), C::Error>>,
    calls: Calls<C::Answered>,
    /// What the calls that answered in the last round left, dropped once the connection has written their answers.
    answered: Vec<C::Answered>,
}

impl<C: CallSource> LocalStreams<C>
where
    C::Answered: 'static,
{
    /// Serves `connection`'s calls.
    pub fn new(connection: C) -> Self {
        let connection_waker = Arc::new(ConnectionWaker::default());
        // The first poll polls the connection.
        connection_waker.woken.store(true, Ordering::Relaxed);
        Self {
            connection,
            connection_waker_handle: std::task::Waker::from(connection_waker.clone()),
            connection_waker,
            ended: None,
            calls: Calls::new(),
            answered: Vec::new(),
        }
    }
}

// Nothing in it is pinned in place: the calls are boxed, and the connection is never pinned.
impl<C: CallSource> Unpin for LocalStreams<C> {}

impl<C: CallSource> Future for LocalStreams<C>
where
    C::Answered: 'static,
{
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.connection_waker.task.register(cx.waker());
        this.connection_waker.polling.store(true, Ordering::SeqCst);
        let mut rounds = 0;
        loop {
            let more = this.round(cx);
            rounds += 1;
            if more && rounds < ROUNDS_PER_POLL {
                continue;
            }
            this.connection_waker.polling.store(false, Ordering::SeqCst);
            // A wake that came just before `polling` went false did not wake the task: this poll must see to it.
            if !more && !this.connection_waker.woken.load(Ordering::SeqCst) {
                break;
            }
            if rounds >= ROUNDS_PER_POLL {
                // Enough for one turn: let other tasks run, come back at once.
                cx.waker().wake_by_ref();
                break;
            }
            this.connection_waker.polling.store(true, Ordering::SeqCst);
        }
        this.answered.clear();
        match this.ended.take() {
            Some(ended) if this.calls.is_empty() => Poll::Ready(ended),
            other => {
                this.ended = other;
                Poll::Pending
            }
        }
    }
}

impl<C: CallSource> LocalStreams<C>
where
    C::Answered: 'static,
{
    /// One round: the connection if it asked (it reads new calls, writes what the calls queued), then the calls
    /// that are ready, new ones first. Whether there may be more to do at once.
    ///
    /// What a call that answered in a round leaves is dropped in the next, after the connection wrote its answer:
    /// what dropping it does — its metrics and access log line, freeing its streams — then no longer holds the answer
    /// back.
    fn round(&mut self, cx: &mut Context<'_>) -> bool {
        // Cleared even once the connection has ended (a late wake), or every round after would think it had work.
        let asked = self.connection_waker.woken.swap(false, Ordering::SeqCst);
        if asked && self.ended.is_none() {
            let mut connection_cx = Context::from_waker(&self.connection_waker_handle);
            loop {
                match self.connection.poll_call(&mut connection_cx) {
                    Poll::Ready(Some(Ok(call))) => self.calls.set.push(LocalCall(Some(call))),
                    Poll::Ready(Some(Err(err))) => {
                        self.ended = Some(Err(err));
                        break;
                    }
                    Poll::Ready(None) => {
                        self.ended = Some(Ok(()));
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        self.answered.clear();
        while let Poll::Ready(Some(answered)) = self.calls.set.poll_next_unpin(cx) {
            self.answered.extend(answered);
        }
        // Calls that queued frames for the client woke the connection (h2 does when it has frames to send): another
        // round writes them, all at once. An ended connection writes nothing.
        self.ended.is_none() && self.connection_waker.woken.load(Ordering::SeqCst)
    }
}

impl<C: CallSource> Served for LocalStreams<C>
where
    C::Answered: 'static,
{
    type Error = C::Error;

    fn finish(self: Pin<&mut Self>) {
        let this = self.get_mut();
        if this.ended.is_none() {
            this.connection.finish();
            // It has a GOAWAY to send: poll it next time, though nothing woke it.
            this.connection_waker.woken.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Waker;
    use std::time::Duration;

    use std::sync::{Mutex, PoisonError};

    use tokio::sync::oneshot;

    use super::*;

    type StreamFuture = CallFuture<()>;

    /// A stand-in for an HTTP/2 connection: hands over `to_start` on its first poll; ends at once, or when `finish`
    /// was called, or never (`ends: false`).
    struct FakeConnection {
        to_start: Vec<StreamFuture>,
        ends: bool,
        finished: bool,
    }

    impl FakeConnection {
        fn new(to_start: Vec<StreamFuture>, ends: bool) -> Self {
            Self {
                to_start,
                ends,
                finished: false,
            }
        }
    }

    impl CallSource for FakeConnection {
        type Error = std::io::Error;
        type Answered = ();

        fn poll_call(&mut self, _: &mut Context<'_>) -> Poll<NextCall<(), Self::Error>> {
            if !self.to_start.is_empty() {
                return Poll::Ready(Some(Ok(self.to_start.remove(0))));
            }
            if self.ends || self.finished {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }

        fn finish(&mut self) {
            self.finished = true;
        }
    }

    fn waiting_for(signal: oneshot::Receiver<()>, done: &Arc<AtomicBool>) -> StreamFuture {
        let done = done.clone();
        Box::pin(async move {
            let _ = signal.await;
            done.store(true, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn the_connection_ends_only_once_its_calls_have() {
        let (release, signal) = oneshot::channel();
        let done = Arc::new(AtomicBool::new(false));
        let connection = FakeConnection::new(vec![waiting_for(signal, &done)], true);
        let mut served = LocalStreams::new(connection);
        assert!(
            futures::poll!(&mut served).is_pending(),
            "a call is running"
        );
        release.send(()).expect("the call waits");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("ends once its call has")
            .expect("ended well");
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_call_that_panics_ends_alone() {
        let (release, signal) = oneshot::channel();
        let done = Arc::new(AtomicBool::new(false));
        let panics: StreamFuture = Box::pin(async { panic!("a call's bug") });
        let calls = vec![panics, waiting_for(signal, &done)];
        let mut served = LocalStreams::new(FakeConnection::new(calls, true));
        assert!(
            futures::poll!(&mut served).is_pending(),
            "the other call runs on"
        );
        release.send(()).expect("the call waits");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("ends")
            .expect("ended well");
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn finish_polls_the_connection_again_though_nothing_woke_it() {
        let mut served = Box::pin(LocalStreams::new(FakeConnection::new(Vec::new(), false)));
        assert!(futures::poll!(&mut served).is_pending());
        served.as_mut().finish();
        // No waker fired: the next poll must still reach the connection (h2 sends its GOAWAY there).
        assert!(matches!(futures::poll!(&mut served), Poll::Ready(Ok(()))));
    }

    /// A call that keeps its latest waker in `slot` and waits, for ever.
    fn parked(slot: Arc<Mutex<Option<Waker>>>) -> StreamFuture {
        Box::pin(std::future::poll_fn(move |cx| {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            Poll::Pending
        }))
    }

    /// A task's waker that counts its wakes.
    #[derive(Default)]
    struct CountsWakes(AtomicUsize);

    impl std::task::Wake for CountsWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_call_that_waits_costs_its_task_no_poll_for_nothing() {
        let slot = Arc::new(Mutex::new(None::<Waker>));
        let connection = FakeConnection::new(vec![parked(slot.clone())], false);
        let mut served = Box::pin(LocalStreams::new(connection));
        let wakes = Arc::new(CountsWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(
            served.as_mut().poll(&mut cx).is_pending(),
            "the call started"
        );
        for _ in 0..3 {
            let before = wakes.0.load(Ordering::SeqCst);
            // Something the call waits for happened (its backend's headers, say), and it waits on.
            let woken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            woken.expect("the call waits").wake();
            assert_eq!(
                wakes.0.load(Ordering::SeqCst),
                before + 1,
                "the call's wake reaches the task"
            );
            assert!(served.as_mut().poll(&mut cx).is_pending());
            assert_eq!(
                wakes.0.load(Ordering::SeqCst),
                before + 1,
                "polling a call that waits woke the task again, for a poll with nothing to do"
            );
        }
    }

    /// A connection that counts its polls and keeps its latest waker, for a call to wake as h2 does when the call
    /// queued frames to write.
    struct CountsPolls {
        to_start: Vec<CallFuture<NotesDrop>>,
        polls: Arc<AtomicUsize>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl CallSource for CountsPolls {
        type Error = std::io::Error;
        type Answered = NotesDrop;

        /// Counts the polls that did all the connection had to do.
        fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<NextCall<NotesDrop, Self::Error>> {
            if let Some(call) = self.to_start.pop() {
                return Poll::Ready(Some(Ok(call)));
            }
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            Poll::Pending
        }

        fn finish(&mut self) {}
    }

    /// Notes the connection's poll count when dropped.
    struct NotesDrop {
        polls: Arc<AtomicUsize>,
        at_drop: Arc<AtomicUsize>,
    }

    impl Drop for NotesDrop {
        fn drop(&mut self) {
            self.at_drop
                .store(self.polls.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_answered_call_is_dropped_after_the_connection_wrote_its_answer() {
        let polls = Arc::new(AtomicUsize::new(0));
        let waker = Arc::new(Mutex::new(None::<Waker>));
        let (at_answer, at_drop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let call: CallFuture<NotesDrop> = {
            let (polls, waker, at_answer) = (polls.clone(), waker.clone(), at_answer.clone());
            let mut notes = Some(NotesDrop {
                polls: polls.clone(),
                at_drop: at_drop.clone(),
            });
            // Ends with what it leaves behind, as a served call ends with its answer's body.
            Box::pin(std::future::poll_fn(move |_| {
                // The answer's frames are queued: the connection is asked to write them.
                at_answer.store(polls.load(Ordering::SeqCst), Ordering::SeqCst);
                let woken = waker.lock().unwrap_or_else(PoisonError::into_inner).clone();
                woken.expect("polled once").wake();
                Poll::Ready(notes.take().expect("polled once after it answered"))
            }))
        };
        let connection = CountsPolls {
            to_start: vec![call],
            polls: polls.clone(),
            waker,
        };
        let mut served = LocalStreams::new(connection);
        assert!(futures::poll!(&mut served).is_pending());
        let (answered, dropped) = (
            at_answer.load(Ordering::SeqCst),
            at_drop.load(Ordering::SeqCst),
        );
        assert_eq!(
            answered, 1,
            "the call ran after the connection's first poll"
        );
        assert_eq!(
            dropped,
            answered + 1,
            "dropped once the connection was polled again to write the answer, not before"
        );
    }

    /// A connection woken from another thread: it ends once it has been polled after the last of `total` wakes.
    struct WokenFromOutside {
        seen: Arc<AtomicUsize>,
        sent: Arc<AtomicUsize>,
        waker: Arc<Mutex<Option<Waker>>>,
        total: usize,
        /// The last poll handed over a call; this one reads the wakes.
        handed_a_call: bool,
    }

    impl CallSource for WokenFromOutside {
        type Error = std::io::Error;
        type Answered = ();

        fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<NextCall<(), Self::Error>> {
            // Keep the task busy with calls, so that wakes land while it polls too.
            if !std::mem::replace(&mut self.handed_a_call, true) {
                return Poll::Ready(Some(Ok(Box::pin(async {
                    for _ in 0..3 {
                        let mut yielded = false;
                        std::future::poll_fn(|cx| {
                            if std::mem::replace(&mut yielded, true) {
                                Poll::Ready(())
                            } else {
                                cx.waker().wake_by_ref();
                                Poll::Pending
                            }
                        })
                        .await;
                    }
                }))));
            }
            self.handed_a_call = false;
            *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            self.seen
                .store(self.sent.load(Ordering::SeqCst), Ordering::SeqCst);
            if self.sent.load(Ordering::SeqCst) == self.total {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }

        fn finish(&mut self) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_from_another_thread_are_never_lost() {
        // A wake racing the end of a poll is rare in any one run: many connections, many wakes each.
        const CONNECTIONS: usize = 16;
        const WAKES: usize = 20_000;
        let mut served = Vec::new();
        let mut waking = Vec::new();
        let mut seens = Vec::new();
        for _ in 0..CONNECTIONS {
            let seen = Arc::new(AtomicUsize::new(0));
            seens.push(seen.clone());
            let (sent, waker) = (
                Arc::new(AtomicUsize::new(0)),
                Arc::new(Mutex::new(None::<Waker>)),
            );
            let connection = WokenFromOutside {
                seen,
                sent: sent.clone(),
                waker: waker.clone(),
                total: WAKES,
                handed_a_call: false,
            };
            served.push(tokio::spawn(LocalStreams::new(connection)));
            waking.push(std::thread::spawn(move || {
                for i in 0..WAKES {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let current = waker.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    if let Some(current) = current {
                        current.wake();
                    }
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            }));
        }
        // A lost wake leaves a connection unpolled after its last one: it would never end.
        let handles: Vec<_> = served.iter().map(|h| h.abort_handle()).collect();
        let all = futures::future::join_all(served);
        let result = tokio::time::timeout(Duration::from_secs(30), all).await;
        if result.is_err() {
            for (i, (seen, h)) in seens.iter().zip(&handles).enumerate() {
                eprintln!(
                    "connection {i}: seen {} finished {}",
                    seen.load(Ordering::SeqCst),
                    h.is_finished()
                );
            }
        }
        for ended in result.expect("every wake reached its connection") {
            ended.expect("task").expect("ended well");
        }
        for thread in waking {
            thread.join().expect("waker thread");
        }
    }
}
