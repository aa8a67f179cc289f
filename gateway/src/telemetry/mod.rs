//! Logs and traces: the process-wide subscriber (text or JSON logs to stderr, written by a thread of their own) and,
//! when `telemetry.otlp_endpoint` is set, OpenTelemetry spans exported over OTLP/gRPC in batches. W3C trace context crosses the gateway: a client's
//! `traceparent` is the parent of the gateway's span, and the backend receives the gateway's.

mod access_line;

pub use self::access_line::AccessLine;

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat, TelemetryConfig};
use crate::log_writer::LogWriter;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
    /// A subscriber was installed already.
    #[error("logging was set up twice: {0}")]
    Subscriber(String),
}

/// Swaps the log filter of the installed subscriber (set once, by [`init`]).
type SetLevel = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;
static LOG_LEVEL: std::sync::OnceLock<SetLevel> = std::sync::OnceLock::new();

/// Changes the log level of the running process (a config reload); `false` if logging was not set up by [`init`]
/// or the level is not a valid filter (the config check refuses those).
pub fn set_log_level(level: &str) -> bool {
    match (
        LOG_LEVEL.get(),
        tracing_subscriber::EnvFilter::try_new(level),
    ) {
        (Some(set), Ok(filter)) => set(filter).is_ok(),
        _ => false,
    }
}

/// The process's log output (set once, by [`init`]): every log line, access log included, goes through it.
static LOGS: std::sync::OnceLock<(LogWriter, LogFormat)> = std::sync::OnceLock::new();

/// Writes one call's access log line, if logging was set up by [`init`] (tests that start gateways in-process write
/// none).
pub fn access_log(line: &AccessLine<'_>) {
    if let Some((writer, format)) = LOGS.get() {
        let now = std::time::SystemTime::now();
        writer.line(|out| line.write(*format, now, out));
    }
}

/// Log lines dropped so far because stderr could not keep up (a metric).
pub fn dropped_log_lines() -> u64 {
    LOGS.get().map_or(0, |(writer, _)| writer.dropped())
}

/// The running telemetry; flush and shut it down before exiting.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the process-wide subscriber. Needs a tokio runtime when traces are exported (the exporter runs on it).
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    // RUST_LOG, when set, wins over the config (for a quick look at one replica).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let provider = match &telemetry.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(telemetry.service_name.clone())
                .build();
            // Batches are exported from a task on the tokio runtime: the tonic exporter needs its reactor.
            let batches = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(batches)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        telemetry.sample_ratio,
                    ))))
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // The log level can change on a config reload.
    let (filter, level) = tracing_subscriber::reload::Layer::new(filter);
    let _ = LOG_LEVEL.set(Box::new(move |next| {
        level.reload(next).map_err(|e| e.to_string())
    }));
    // Log lines are written to stderr in batches by a thread of their own, so a slow stderr never holds an answer
    // back (see log_writer).
    let writer = LogWriter::start(std::io::stderr())
        .map_err(|e| TelemetryError::Subscriber(format!("cannot start the log writer: {e}")))?;
    let stderr = writer.sink();
    // Colours for a person at a terminal, not escape codes in a log file.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if LOGS.set((writer, log.format)).is_err() {
        return Err(TelemetryError::Subscriber(
            "the log writer is running already".into(),
        ));
    }
    let tracer = provider.as_ref().map(|p| p.tracer("strata"));
    let layers = layers(log.format, stderr, colours, filter, tracer);
    let installed = tracing_subscriber::registry().with(layers).try_init();
    installed.map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// The subscriber's layers: log lines in `format` to `writer` as `filter` lets them through, and, when traces are
/// exported, the spans to `tracer`.
///
/// Log lines carry no span context: the log layer ignores spans, and the traces layer is there only when traces are
/// exported, so that without it no layer wants a span and the span of every call is never built. Recording its fields
/// as text cost more than the access log line itself (8 000 instructions per call, scripts/cost-per-call); the few
/// warnings written during a call name what they are about themselves.
fn layers<W, F>(
    format: LogFormat,
    writer: W,
    colours: bool,
    filter: F,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    F: tracing_subscriber::layer::Filter<Registry> + Send + Sync + 'static,
{
    // The hint keeps the level filter's: without one, every trace-level callsite of h2 and hyper would be asked.
    let not_spans = tracing_subscriber::filter::filter_fn(|meta| !meta.is_span())
        .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE);
    let filter = filter.and(not_spans);
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(colours)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    });
    // The log level filters logs only: the call and backend spans are exported whatever it is.
    if let Some(tracer) = tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
                .boxed(),
        );
    }
    layers
}

impl Telemetry {
    /// Exports the spans batched so far (for tests, and before exiting).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Flushes and stops the exporter (blocking, so off the async threads), then writes the log lines still
    /// buffered.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
        if let Some((writer, _)) = LOGS.get() {
            writer.stop();
        }
    }
}

/// The trace context a request carries (`traceparent`), or none.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderReader(headers)))
}

/// Writes the current span's trace context into outgoing `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderWriter(headers))
    });
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A log destination the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn subscriber(
        captured: &Captured,
        tracer: Option<opentelemetry_sdk::trace::Tracer>,
    ) -> impl tracing::Subscriber {
        let writer = {
            let captured = captured.clone();
            move || captured.clone()
        };
        let filter = tracing_subscriber::EnvFilter::new("info");
        Registry::default().with(layers(LogFormat::Text, writer, false, filter, tracer))
    }

    /// A call's span, always from this one callsite.
    fn call_span() -> tracing::Span {
        tracing::info_span!("strata.call", rpc.method = "/a.B/C")
    }

    #[test]
    fn without_traces_no_span_is_built_and_log_lines_are_still_written() {
        // The subscriber itself is asked, not `span.is_disabled()`: a callsite's cached interest is shared by every
        // subscriber alive in the process, and other tests run theirs in parallel. A span keeps its callsite's
        // metadata only when built, so it is first built by a subscriber that exports traces.
        let provider = SdkTracerProvider::builder().build();
        let exporting = tracing::Dispatch::new(subscriber(
            &Captured::default(),
            Some(provider.tracer("test")),
        ));
        let callsite = tracing::dispatcher::with_default(&exporting, || call_span().metadata())
            .expect("an exported span keeps its callsite's metadata");
        let captured = Captured::default();
        let logging = tracing::Dispatch::new(subscriber(&captured, None));
        assert!(
            logging.register_callsite(callsite).is_never(),
            "a span nobody exports is not built"
        );
        tracing::dispatcher::with_default(&logging, || {
            let span = call_span();
            let _inside = span.enter();
            tracing::warn!(method = %"/a.B/C", "call to the backend failed");
            tracing::debug!("below the level");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            text.contains("call to the backend failed") && text.contains("method=/a.B/C"),
            "{text}"
        );
        assert!(!text.contains("below the level"), "{text}");
        assert!(!text.contains("strata.call"), "no span context: {text}");
    }

    #[test]
    fn with_traces_the_span_of_a_call_is_built_but_stays_out_of_log_lines() {
        let captured = Captured::default();
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        tracing::subscriber::with_default(subscriber(&captured, Some(tracer)), || {
            let span = tracing::info_span!("strata.backend", backend = "lookup");
            assert!(!span.is_disabled(), "exported spans are built");
            let _inside = span.enter();
            tracing::info!("inside");
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            text.contains("inside") && !text.contains("strata.backend"),
            "{text}"
        );
    }
}
