//! Where log lines go: a buffer in memory that a thread of its own writes to stderr, in batches.
//!
//! Built for the access log, one line per call: a call appends its line under a short lock (no allocation, no system
//! call, no wake-up of another thread); the writer thread takes the whole buffer every [`FLUSH_EVERY`], or as soon
//! as it holds [`FLUSH_AT`] bytes, and writes it with one call. A stderr slower than the calls (a full pipe, a stalled
//! log collector) never holds an answer back: past [`MAX_PENDING`] bytes, lines are dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line waits at most before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes pending that wake the writer before its time.
const FLUSH_AT: usize = 64 * 1024;
/// Bytes pending past which new lines are dropped (the writer is that far behind).
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// The buffer the calls append to and the writer thread empties.
#[derive(Debug, Default)]
struct Pending {
    lines: Mutex<Vec<u8>>,
    wake: Condvar,
    stopping: AtomicBool,
    dropped: AtomicU64,
}

impl Pending {
    /// Appends one line written by `write`, or drops and counts it when [`MAX_PENDING`] bytes wait already; wakes
    /// the writer when the line makes a batch worth writing.
    fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() >= MAX_PENDING {
            drop(lines);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = lines.len();
        write(&mut lines);
        let crossed = before < FLUSH_AT && lines.len() >= FLUSH_AT;
        drop(lines);
        if crossed {
            self.wake.notify_one();
        }
    }
}

/// A running log writer; [`LogWriter::stop`] writes what is pending and ends its thread.
#[derive(Debug)]
pub struct LogWriter {
    pending: Arc<Pending>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the thread that writes the lines to `out`.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<Self> {
        let pending = Arc::new(Pending::default());
        let thread = std::thread::Builder::new()
            .name("strata-log-writer".into())
            .spawn({
                let pending = pending.clone();
                move || write_until_stopped(&pending, out)
            })?;
        Ok(Self {
            pending,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one line, written by `write` (which must end it with `\n`); drops and counts it when the writer is
    /// [`MAX_PENDING`] bytes behind.
    pub fn line(&self, write: impl FnOnce(&mut Vec<u8>)) {
        self.pending.append(write);
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.pending.dropped.load(Ordering::Relaxed)
    }

    /// Writes every pending line and ends the thread (later lines are kept in memory, unwritten).
    pub fn stop(&self) {
        self.pending.stopping.store(true, Ordering::Release);
        self.pending.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// A handle for `tracing_subscriber::fmt` to write its (rarer) log lines through the same buffer.
    pub fn sink(&self) -> LogSink {
        LogSink(self.pending.clone())
    }
}

/// The writer thread: waits for lines (or its time), writes them all at once, until stopped and empty.
fn write_until_stopped(pending: &Pending, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let stopping = {
            let lines = pending.lines.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut lines, _) = pending
                .wake
                .wait_timeout_while(lines, FLUSH_EVERY, |lines| {
                    lines.len() < FLUSH_AT && !pending.stopping.load(Ordering::Acquire)
                })
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *lines, &mut batch);
            pending.stopping.load(Ordering::Acquire)
        };
        if !batch.is_empty() {
            // A failed write (stderr closed) loses the batch; there is nowhere else to report it.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

/// Log lines formatted by `tracing_subscriber::fmt`, appended to the [`LogWriter`]'s buffer.
#[derive(Debug, Clone)]
pub struct LogSink(Arc<Pending>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(&self.0)
    }
}

/// Writes one formatted event into the buffer (the formatter hands over each event whole, in one write).
#[derive(Debug)]
pub struct SinkWriter<'a>(&'a Pending);

impl Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.append(|lines| lines.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_by_the_time_it_stops() {
        let out = Shared::default();
        let writer = LogWriter::start(out.clone()).expect("thread");
        for i in 0..10_000 {
            writer.line(|l| {
                let _ = writeln!(l, "line {i}");
            });
        }
        writer.stop();
        let written = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(written.lines().count(), 10_000);
        assert_eq!(written.lines().last(), Some("line 9999"));
        assert_eq!(writer.dropped(), 0);
    }

    /// An output that blocks until the test lets it go: a stalled stderr.
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let (release, stalled) = std::sync::mpsc::channel();
        let writer = LogWriter::start(Stalled(stalled)).expect("thread");
        let line = [b'x'; 1023];
        // Four times what may be pending: every call returns, however stalled the output.
        for _ in 0..4 * MAX_PENDING / 1024 {
            writer.line(|l| {
                l.extend_from_slice(&line);
                l.push(b'\n');
            });
        }
        assert!(writer.dropped() > 0, "lines past the bound are counted");
        drop(release);
        writer.stop();
    }
}
