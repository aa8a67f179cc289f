//! ghz's flags do what ghz's documentation says, seen from a real Greeter server (tests/greeter): TLS with and without
//! verification, streams shaped by the `stream-*` flags, `async`, the concurrency schedule, `duration-stop`,
//! `max-duration`, compression, `:authority`, message size limits, templates switched off, the debug log.

mod ghz_run;
mod greeter;

use std::collections::BTreeSet;
use std::process::Output;

use ghz_run::{greeter_proto, json_report, ok_count, scratch, succeeded, testdata};
use greeter::Greeter;
use serde_json::Value;

/// `strata-load run --proto greeter.proto --call helloworld.Greeter.<method> <extra…> <host>`, nothing on its
/// standard input.
async fn run(method: &str, host: &str, extra: &[&str]) -> Output {
    run_with_input(method, host, extra, Vec::new()).await
}

/// As [`run`], with `input` on standard input.
async fn run_with_input(method: &str, host: &str, extra: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write;
    let mut args: Vec<String> = ["run", "--proto", &greeter_proto(), "--call"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(format!("helloworld.Greeter.{method}"));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(host.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata-load"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strata-load runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        child.wait_with_output().expect("output")
    })
    .await
    .expect("joined")
}

/// As [`run`], with `-O json`: the report (the run must succeed).
async fn run_json(method: &str, host: &str, extra: &[&str]) -> Value {
    let mut extra = extra.to_vec();
    extra.extend(["-O", "json"]);
    let output = run(method, host, &extra).await;
    json_report(output, &extra)
}

/// ghz's own certificate has expired: verified TLS refuses it, `--skipTLS` gets through. A certificate from a CA of
/// our own is verified with `--cacert` and `--cname`, and a client certificate is presented with `--cert`/`--key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verified_unverified_and_with_a_client_certificate() {
    let cert = std::fs::read(testdata("localhost.crt")).expect("cert");
    let key = std::fs::read(testdata("localhost.key")).expect("key");
    let expired = Greeter::start_tls(cert, key).await;
    let host = format!("localhost:{}", expired.addr.port());
    let ghz_cert = testdata("localhost.crt").display().to_string();
    let refused = run(
        "SayHello",
        &host,
        &["--cacert", &ghz_cert, "-n", "1", "-d", r#"{"name":"x"}"#],
    )
    .await;
    assert!(
        !refused.status.success(),
        "an expired certificate was accepted"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("cannot connect") && said.contains("TLS"),
        "{said}"
    );
    let skipped = run_json(
        "SayHello",
        &host,
        &["--skipTLS", "-n", "5", "-d", r#"{"name":"x"}"#],
    )
    .await;
    assert_eq!(ok_count(&skipped), 5, "{skipped}");
    assert_eq!(skipped["options"]["skipTLS"], true);

    let ca = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca).expect("CA");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_cert = rcgen::CertificateParams::new(vec!["greeter.test".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca_cert, &ca)
        .expect("signed");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let client_cert = rcgen::CertificateParams::new(vec!["client.test".to_owned()])
        .expect("params")
        .signed_by(&client_key, &ca_cert, &ca)
        .expect("signed");
    let greeter = Greeter::start_tls(
        server_cert.pem().into_bytes(),
        server_key.serialize_pem().into_bytes(),
    )
    .await;
    let scratch = scratch("tls");
    let write = |name: &str, pem: String| {
        let path = scratch.join(name);
        std::fs::write(&path, pem).expect("write");
        path.display().to_string()
    };
    let ca_pem = write("ca.pem", ca_cert.pem());
    let client_pem = write("client.pem", client_cert.pem());
    let client_key_pem = write("client.key", client_key.serialize_pem());
    let host = greeter.addr.to_string();
    let verified = run_json(
        "SayHello",
        &host,
        &[
            "--cacert",
            &ca_pem,
            "--cname",
            "greeter.test",
            "--cert",
            &client_pem,
            "--key",
            &client_key_pem,
            "-n",
            "5",
            "-d",
            r#"{"name":"x"}"#,
        ],
    )
    .await;
    assert_eq!(ok_count(&verified), 5, "{verified}");
    let wrong_name = run(
        "SayHello",
        &host,
        &["--cacert", &ca_pem, "--cname", "other.test", "-n", "1"],
    )
    .await;
    assert!(
        !wrong_name.status.success(),
        "a certificate for another name was accepted"
    );
    std::fs::remove_dir_all(scratch).expect("clean up");
}

/// `--stream-call-count` sends that many messages (the data items in turn), `--stream-interval` spaces them,
/// `--stream-dynamic-messages` renders each anew; a server stream is cut after `--stream-call-count` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_shaped_by_the_stream_flags() {
    let greeter = Greeter::start().await;
    let host = greeter.addr.to_string();
    let base = ["--insecure", "-n", "2", "-c", "1"];
    let counted = run_json(
        "SayHelloCS",
        &host,
        &[
            &base[..],
            &[
                "-d",
                r#"[{"name":"a"},{"name":"b"}]"#,
                "--stream-call-count",
                "5",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(ok_count(&counted), 2, "{counted}");
    let calls = greeter.calls();
    assert!(
        calls.iter().all(|c| c.names == ["a", "b", "a", "b", "a"]),
        "{calls:?}"
    );

    let spaced = run_json(
        "SayHelloCS",
        &host,
        &[
            &base[..],
            &[
                "-d",
                r#"{"name":"a"}"#,
                "--stream-call-count",
                "3",
                "--stream-interval",
                "150ms",
            ],
        ]
        .concat(),
    )
    .await;
    // Two pauses of 150 ms in each call: no call can be faster than 300 ms.
    assert!(
        spaced["fastest"].as_u64().expect("fastest") >= 300_000_000,
        "{spaced}"
    );

    let before = greeter.calls().len();
    let dynamic = run_json(
        "SayHelloCS",
        &host,
        &[
            &base[..],
            &[
                "-d",
                r#"{"name":"{{.TimestampUnixMilli}}"}"#,
                "--stream-call-count",
                "3",
                "--stream-interval",
                "100ms",
                "--stream-dynamic-messages",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(ok_count(&dynamic), 2, "{dynamic}");
    // Each message rendered when sent: its timestamp is the send's, 100 ms after the one before.
    for call in &greeter.calls()[before..] {
        let stamps: Vec<u64> = call
            .names
            .iter()
            .map(|n| n.parse().expect("a timestamp"))
            .collect();
        assert_eq!(stamps.len(), 3, "{stamps:?}");
        assert!(
            stamps.windows(2).all(|w| w[1] >= w[0] + 100),
            "rendered as sent: {stamps:?}"
        );
    }

    let cut = run_json(
        "SayHellos",
        &host,
        &[
            &base[..],
            &["-d", r#"{"name":"s"}"#, "--stream-call-count", "2"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(ok_count(&cut), 2, "{cut}");
    let bidi = run_json(
        "SayHelloBidi",
        &host,
        &[&base[..], &["-d", r#"[{"name":"x"},{"name":"y"}]"#]].concat(),
    )
    .await;
    assert_eq!(ok_count(&bidi), 2, "{bidi}");
}

/// `--async`: one worker keeps several calls in flight (ghz: "does not wait for request to finish before sending
/// next one"); without it, one worker has one call in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_keeps_many_calls_in_flight_per_worker() {
    for asynchronous in [false, true] {
        let greeter = Greeter::start().await;
        let mut extra = vec![
            "--insecure",
            "-c",
            "1",
            "-n",
            "20",
            "--rps",
            "100",
            "-d",
            r#"{"name":"sleep:100"}"#,
        ];
        if asynchronous {
            extra.push("--async");
        }
        let report = run_json("SayHello", &greeter.addr.to_string(), &extra).await;
        assert_eq!(ok_count(&report), 20, "{report}");
        let most = greeter
            .record
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst);
        if asynchronous {
            // 100 requests/s, each answered after 100 ms: about 10 in flight at once.
            assert!(most >= 3, "async: at most {most} in flight");
        } else {
            assert_eq!(most, 1, "one worker, one call in flight");
        }
    }
}

/// `--concurrency-schedule step`: workers are added one per step up to `--concurrency-end`, never more; each
/// shows in `{{.WorkerID}}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_schedule_adds_workers_up_to_its_end() {
    let greeter = Greeter::start().await;
    let report = run_json(
        "SayHello",
        &greeter.addr.to_string(),
        &[
            "--insecure",
            "-n",
            "90",
            "--concurrency-schedule",
            "step",
            "--concurrency-start",
            "1",
            "--concurrency-step",
            "1",
            "--concurrency-step-duration",
            "100ms",
            "--concurrency-end",
            "3",
            "-d",
            r#"{"name":"sleep:20:{{.WorkerID}}"}"#,
        ],
    )
    .await;
    assert_eq!(ok_count(&report), 90, "{report}");
    // 90 calls of 20 ms with at most 3 workers take at least 600 ms: the schedule reaches its end of 3.
    let workers: BTreeSet<String> = greeter
        .calls()
        .iter()
        .map(|c| c.names[0].trim_start_matches("sleep:20:").to_owned())
        .collect();
    assert_eq!(
        workers,
        ["g0c0", "g0c1", "g0c2"].map(String::from).into(),
        "{workers:?}"
    );
    assert!(
        greeter
            .record
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 3
    );
    assert_eq!(report["options"]["concurrency-schedule"], "step");
}

/// `--duration-stop`: when the duration ends, `close` cuts the calls in flight and reports them as errors,
/// `ignore` cuts them and leaves them out, `wait` waits for their answers. Each run ends for `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_stop_decides_the_fate_of_calls_in_flight() {
    let greeter = Greeter::start().await;
    let host = greeter.addr.to_string();
    for (mode, answers, errors) in [("close", 2, 2), ("ignore", 0, 0), ("wait", 2, 0)] {
        let report = run_json(
            "SayHello",
            &host,
            &[
                "--insecure",
                "-c",
                "2",
                "-z",
                "300ms",
                "--duration-stop",
                mode,
                "-d",
                r#"{"name":"sleep:1500"}"#,
            ],
        )
        .await;
        assert_eq!(report["endReason"], "timeout", "{mode}: {report}");
        assert_eq!(report["count"], answers, "{mode}: {report}");
        let cut = report["statusCodeDistribution"]["Canceled"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(cut, errors, "{mode}: {report}");
        if errors > 0 {
            let error = report["errorDistribution"]
                .as_object()
                .expect("errors")
                .keys()
                .next()
                .expect("one")
                .clone();
            assert_eq!(
                error,
                "rpc error: code = Canceled desc = grpc: the client connection is closing"
            );
        }
    }
}

/// `-x`/`--max-duration` stops a run of `--total` requests at that time (ghz's testdata/config.json sets both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_stops_a_counted_run() {
    let greeter = Greeter::start().await;
    let report = run_json(
        "SayHello",
        &greeter.addr.to_string(),
        &[
            "--insecure",
            "-c",
            "2",
            "-n",
            "1000",
            "-x",
            "400ms",
            "--duration-stop",
            "wait",
            "-d",
            r#"{"name":"sleep:50"}"#,
        ],
    )
    .await;
    assert_eq!(report["endReason"], "timeout", "{report}");
    // Two workers, 50 ms a call, 400 ms: far fewer than 1000.
    let count = report["count"].as_u64().expect("count");
    assert!((2..100).contains(&count), "{count}");
    assert_eq!(report["options"]["total"], 1000);
}

/// `-e` compresses requests with gzip; `--authority` sets `:authority`; `--max-send-message-size` refuses larger
/// requests; `--disable-template-data` sends actions as written; `--debug` logs every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_authority_size_limits_templates_off_and_the_debug_log() {
    let greeter = Greeter::start().await;
    let host = greeter.addr.to_string();
    let dir = scratch("misc");
    let log = dir.join("debug.log");
    let report = run_json(
        "SayHello",
        &host,
        &[
            "--insecure",
            "-n",
            "6",
            "-c",
            "2",
            "-e",
            "--authority",
            "greeter.example:443",
            "--debug",
            log.to_str().expect("utf-8"),
            "--disable-template-data",
            "-d",
            r#"{"name":"{{.RequestNumber}}"}"#,
        ],
    )
    .await;
    assert_eq!(ok_count(&report), 6, "{report}");
    for call in greeter.calls() {
        assert_eq!(
            call.metadata.get("grpc-encoding").map(String::as_str),
            Some("gzip"),
            "{call:?}"
        );
        assert_eq!(call.authority, "greeter.example:443");
        assert_eq!(call.names, ["{{.RequestNumber}}"]);
    }
    let logged = std::fs::read_to_string(&log).expect("debug log");
    let responses = logged
        .lines()
        .filter(|l| l.contains("\"Received response\""))
        .count();
    assert_eq!(responses, 6, "{logged}");
    for line in logged.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    }

    let limited = run_json(
        "SayHello",
        &host,
        &[
            "--insecure",
            "-n",
            "3",
            "--max-send-message-size",
            "8",
            "-d",
            r#"{"name":"longer than eight bytes"}"#,
        ],
    )
    .await;
    assert_eq!(ok_count(&limited), 0, "{limited}");
    assert_eq!(limited["count"], 3);
    let fits = run_json(
        "SayHello",
        &host,
        &[
            "--insecure",
            "-n",
            "3",
            "--max-send-message-size",
            "1kb",
            "-d",
            r#"{"name":"ok"}"#,
        ],
    )
    .await;
    assert_eq!(ok_count(&fits), 3, "{fits}");
    std::fs::remove_dir_all(dir).expect("clean up");
}

/// `-b` reads a serialized request from standard input (ghz's hello_request_data.bin), `-d @` JSON data; `--cpus`,
/// `--keepalive` and `--lb-strategy round_robin` (with ghz's `dns:///` target) are taken and recorded; `--count-errors` puts failed answers in the
/// latency figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_cpus_keepalive_balancing_and_counted_errors() {
    let greeter = Greeter::start().await;
    let host = greeter.addr.to_string();
    let binary = std::fs::read(testdata("hello_request_data.bin")).expect("ghz's binary request");
    let output = run_with_input(
        "SayHello",
        &host,
        &["--insecure", "-b", "-n", "3", "-O", "json"],
        binary,
    )
    .await;
    succeeded(output, &"-b from standard input");
    let output = run_with_input(
        "SayHello",
        &format!("dns:///{host}"),
        &[
            "--insecure",
            "-d",
            "@",
            "-n",
            "2",
            "--cpus",
            "1",
            "--keepalive",
            "30s",
            "--lb-strategy",
            "round_robin",
            "-O",
            "json",
        ],
        br#"{"name": "from stdin"}"#.to_vec(),
    )
    .await;
    let report = json_report(output, &"-d @ from standard input");
    assert_eq!(report["options"]["CPUs"], 1);
    assert_eq!(report["options"]["keepalive"], 30_000_000_000u64);
    let names: Vec<String> = greeter.calls().iter().map(|c| c.names[0].clone()).collect();
    assert_eq!(names, ["bob", "bob", "bob", "from stdin", "from stdin"]);

    for count_errors in [false, true] {
        let mut extra = vec![
            "--insecure",
            "-n",
            "4",
            "--max-send-message-size",
            "4",
            "-d",
            r#"{"name":"too long"}"#,
        ];
        if count_errors {
            extra.push("--count-errors");
        }
        let report = run_json("SayHello", &host, &extra).await;
        assert_eq!(report["count"], 4);
        // ghz: without count-errors the latency figures hold OK answers only — here none.
        assert_eq!(
            report["latencyDistribution"].is_array(),
            count_errors,
            "{report}"
        );
        assert_eq!(
            report["slowest"].as_u64().unwrap_or(0) > 0,
            count_errors,
            "{report}"
        );
    }
}
