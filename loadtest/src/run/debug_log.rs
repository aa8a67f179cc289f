//! `--debug FILE`: a log of the run as JSON lines (as ghz writes its debug log): what was resolved, what was
//! connected and learned, and every call's outcome.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::{Value, json};

use super::report::rfc3339;
use super::tally::go_code_name;

/// The open debug log.
#[derive(Debug)]
pub struct DebugLog {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl DebugLog {
    /// Creates (or truncates) the log file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("debug: cannot create {}", path.display()))?;
        Ok(Self {
            file: Mutex::new(std::io::BufWriter::new(file)),
        })
    }

    /// One event with its fields.
    pub fn event(&self, message: &str, fields: Value) {
        let mut line = json!({"level": "debug", "ts": rfc3339(SystemTime::now()), "msg": message});
        if let (Value::Object(line), Value::Object(fields)) = (&mut line, fields) {
            line.extend(fields);
        }
        if let Ok(mut file) = self.file.lock() {
            let _ = writeln!(file, "{line}");
        }
    }

    /// One call's outcome.
    pub fn call(
        &self,
        worker_id: &str,
        number: u64,
        call: &str,
        latency: Duration,
        answer: &Result<Option<&'static str>, tonic::Status>,
    ) {
        let (status, error, cache) = match answer {
            Ok(cache) => ("OK", String::new(), *cache),
            Err(status) => (
                go_code_name(status.code()),
                status.message().to_owned(),
                None,
            ),
        };
        self.event(
            "Received response",
            json!({"workerID": worker_id, "requestNumber": number, "call": call,
                   "latency": u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
                   "status": status, "error": error, "x-strata-cache": cache}),
        );
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        if let Ok(mut file) = self.file.lock() {
            let _ = file.flush();
        }
    }
}
