//! The performance targets, each checked against figures of the same run and reported as a ratio; and the
//! Markdown the suite prints and writes into docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::scenario::{Medians, Scenario};

/// Figures measured outside the rotated rounds.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// strata-load's calls in flight in the rotated rounds.
    pub concurrency: usize,
    /// L2-hit p50 with one call in flight (strata-load), ms.
    pub l2_p50_ms: f64,
    /// The same measured by h2load, as lean a client as redis-benchmark (None: h2load missing).
    pub l2_p50_h2load_ms: Option<f64>,
    /// p50s through each proxy measured by h2load, one call in flight first (the latency a proxy adds with nothing
    /// queued), then the rounds' calls in flight (empty: h2load or nginx missing).
    pub proxy_p50: Vec<ProxyP50>,
    /// redis-benchmark GET p50 with one connection, ms (None: redis-benchmark missing).
    pub redis_get_p50_ms: Option<f64>,
    /// The open-loop rate at which p99s were compared (50 % of the L1-hit throughput strata-load reached).
    pub paced_rps: f64,
    /// L1-hit p99 at that rate, ms.
    pub l1_paced_p99_ms: f64,
    /// Ceiling (a plain tonic server) p99 at that rate, ms.
    pub ceiling_paced_p99_ms: f64,
    /// Bare-hyper constant server p99 at that rate, ms.
    pub ceiling_hyper_paced_p99_ms: f64,
    /// The open-loop rate of the Zipf latency comparison.
    pub zipf_paced_rps: f64,
    /// Mean latency of the Zipf load through Strata, open loop at that rate, ms.
    pub zipf_paced_mean_ms: f64,
    /// Mean latency of the same load against the 2 ms backend directly, ms.
    pub direct_paced_mean_ms: f64,
    /// Every run behind the medians above, by the JSON key of its median.
    pub runs: super::extra::Runs,
    /// The Zipf gateway's resident memory after its last round.
    pub zipf_rss_bytes: Option<u64>,
    /// Its L1 byte budget.
    pub zipf_l1_bytes: u64,
    /// Backend calls of the stampede.
    pub stampede_backend_calls: u64,
}

/// The p50s at one load point, ms, round by round: the backend called directly, through nginx, through Strata.
#[derive(Debug, Clone, Default)]
pub struct ProxyP50 {
    /// Calls in flight.
    pub in_flight: usize,
    /// Each round's p50s, in this order: direct, nginx, passthrough.
    pub rounds: Vec<[f64; 3]>,
}

impl ProxyP50 {
    /// The backend called directly: the median of the rounds.
    pub fn direct_ms(&self) -> f64 {
        self.median(0)
    }

    /// Through nginx `grpc_pass`: the median of the rounds.
    pub fn nginx_ms(&self) -> f64 {
        self.median(1)
    }

    /// Through Strata's passthrough route: the median of the rounds.
    pub fn passthrough_ms(&self) -> f64 {
        self.median(2)
    }

    fn median(&self, i: usize) -> f64 {
        super::scenario::median(self.rounds.iter().map(|round| round[i]))
    }

    /// The rounds in which the passthrough's p50 was lower than nginx's (both measured against the same backend,
    /// in the same round).
    pub fn rounds_passthrough_lower(&self) -> usize {
        self.rounds.iter().filter(|[_, n, p]| p < n).count()
    }

    /// Whether the passthrough adds less than nginx beyond the noise: lower in as many alternated rounds as a tie
    /// reaches at most one time in 32 ([`rounds_needed`]), not only in the medians.
    pub fn passthrough_lower(&self) -> bool {
        !self.rounds.is_empty()
            && self.rounds_passthrough_lower() >= rounds_needed(self.rounds.len())
    }
}

/// The most often a tie may pass as "lower": one time in 32, what five rounds out of five allow.
const TIE_PASSES_AT_MOST: f64 = 1.0 / 32.0;

/// In how many of `rounds` alternated rounds the passthrough must be lower than nginx to be called lower: the fewest
/// that two proxies adding the same p50 — each round a coin toss — reach at most one time in 32 (a sign test). Five
/// of five, eight of nine, twelve of fifteen; every round when there are too few rounds for that bar.
pub fn rounds_needed(rounds: usize) -> usize {
    let all = 2f64.powi(i32::try_from(rounds).unwrap_or(i32::MAX));
    // Ways to be lower in exactly `k` of the rounds (n choose k), from k = n down, and in at least `k`.
    let (mut ways, mut at_least) = (1.0, 0.0);
    let mut needed = rounds;
    for k in (1..=rounds).rev() {
        at_least += ways;
        if at_least / all > TIE_PASSES_AT_MOST {
            break;
        }
        needed = k;
        ways = ways * k as f64 / (rounds - k + 1) as f64;
    }
    needed
}

/// One target and whether this run met it.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is promised.
    pub promise: &'static str,
    /// The measured figure (as a ratio or amount).
    pub measured: String,
    /// Met, missed, or not measured here (None).
    pub met: Option<bool>,
}

/// The L1-hit throughput target against the ceiling.
const L1_THROUGHPUT: &str = "L1-hit throughput ≥ 0.9 × the ceiling (a plain tonic server, default settings, constant answer)";
/// The L1-hit throughput target against the stricter reference.
const L1_THROUGHPUT_BARE: &str = "L1-hit throughput ≥ 0.6 × bare hyper (pre-encoded reply)";
/// The passthrough-throughput target.
const PASSTHROUGH_THROUGHPUT: &str = "Passthrough throughput ≥ 2 × nginx grpc_pass";
/// The passthrough-latency target at the rounds' calls in flight.
const PASSTHROUGH_P50_LOADED: &str = "Passthrough adds less p50 than nginx grpc_pass, under load";
/// The passthrough-latency target with nothing queued.
const PASSTHROUGH_P50_IDLE: &str =
    "Passthrough adds less p50 than nginx grpc_pass, one call in flight";

/// "; lower in k of n rounds, m needed", for a measured figure.
fn rounds_lower(point: &ProxyP50) -> String {
    format!(
        "; lower in {} of {} rounds, {} needed",
        point.rounds_passthrough_lower(),
        point.rounds.len(),
        rounds_needed(point.rounds.len())
    )
}

/// Adds one target's verdict (`met`: `None` when it could not be measured).
fn push(targets: &mut Vec<Target>, promise: &'static str, measured: String, met: Option<bool>) {
    targets.push(Target {
        promise,
        measured,
        met,
    });
}

/// Checks every target.
pub fn check(medians: &BTreeMap<&str, Medians>, extra: &Extra) -> Vec<Target> {
    let mut targets = Vec::new();
    for area in [l1_hit, passthrough, l2_hit, zipf, stampede_and_memory] {
        area(medians, extra, &mut targets);
    }
    targets
}

/// The L1 hit: throughput against the ceiling, and p99 at half of it.
fn l1_hit(medians: &BTreeMap<&str, Medians>, extra: &Extra, targets: &mut Vec<Target>) {
    let get = |name: &str| medians.get(name);
    // The ceiling is what a team would otherwise deploy for a constant answer: a plain tonic server with its
    // defaults. Bare hyper, faster still, is the stricter reference.
    for (reference, promise, at_least) in [
        ("ceiling", L1_THROUGHPUT, 0.9),
        ("ceiling-hyper", L1_THROUGHPUT_BARE, 0.6),
    ] {
        match (get("l1-hit"), get(reference)) {
            (Some(l1), Some(reference)) => {
                let ratio = l1.best_rps() / reference.best_rps().max(1e-9);
                let measured = format!(
                    "{ratio:.2} × ({:.0} vs {:.0} calls/s)",
                    l1.best_rps(),
                    reference.best_rps()
                );
                push(targets, promise, measured, Some(ratio >= at_least));
            }
            _ => push(targets, promise, "-".into(), None),
        }
    }
    let p99_ratio = extra.l1_paced_p99_ms / extra.ceiling_paced_p99_ms.max(1e-9);
    push(
        targets,
        "L1-hit p99 at 50 % of its throughput ≤ 2 × the ceiling's p99 at that rate",
        format!(
            "{p99_ratio:.2} × ({:.3} vs {:.3} ms at {:.0} calls/s, open loop; bare hyper {:.3} ms)",
            extra.l1_paced_p99_ms,
            extra.ceiling_paced_p99_ms,
            extra.paced_rps,
            extra.ceiling_hyper_paced_p99_ms
        ),
        Some(p99_ratio <= 2.0),
    );
}

/// The passthrough against nginx `grpc_pass`: throughput, and the p50 each adds under load and with one call in flight.
fn passthrough(medians: &BTreeMap<&str, Medians>, extra: &Extra, targets: &mut Vec<Target>) {
    let get = |name: &str| medians.get(name);
    match (get("passthrough"), get("nginx"), get("direct")) {
        (Some(pass), Some(nginx), Some(direct)) => {
            let ratio = pass.best_rps() / nginx.best_rps().max(1e-9);
            push(
                targets,
                PASSTHROUGH_THROUGHPUT,
                format!("{ratio:.2} ×"),
                Some(ratio >= 2.0),
            );
            // Lower at both ends: under load (the rounds' calls in flight, where p50 is mostly queueing) and with
            // one call in flight (what each hop adds with nothing queued). Judged on h2load's figures where there
            // are some: strata-load cannot drive these two proxies to their limits, so its p50s there are mostly
            // its own; they are shown beside.
            let added = |p: &ProxyP50| {
                let direct = p.direct_ms();
                (p.passthrough_ms() - direct, p.nginx_ms() - direct)
            };
            let by_strata_load = (pass.p50_ms - direct.p50_ms, nginx.p50_ms - direct.p50_ms);
            let loaded = extra.proxy_p50.iter().find(|p| p.in_flight > 1);
            let ((ours, theirs), client) = match loaded {
                Some(p) => (added(p), "h2load"),
                None => (by_strata_load, "strata-load"),
            };
            let mut measured = format!(
                "{ours:+.3} vs {theirs:+.3} ms at {} in flight ({client}",
                loaded.map_or(extra.concurrency, |p| p.in_flight)
            );
            // h2load's load point is judged round by round (see `ProxyP50::passthrough_lower`).
            let met = match loaded {
                Some(p) => {
                    let _ = write!(
                        measured,
                        "{}; strata-load {:+.3} vs {:+.3}",
                        rounds_lower(p),
                        by_strata_load.0,
                        by_strata_load.1
                    );
                    p.passthrough_lower()
                }
                None => ours < theirs,
            };
            measured.push(')');
            push(targets, PASSTHROUGH_P50_LOADED, measured, Some(met));
            match extra.proxy_p50.iter().find(|p| p.in_flight == 1) {
                Some(idle) => {
                    let (ours, theirs) = added(idle);
                    push(
                        targets,
                        PASSTHROUGH_P50_IDLE,
                        format!(
                            "{ours:+.3} vs {theirs:+.3} ms (h2load{})",
                            rounds_lower(idle)
                        ),
                        Some(idle.passthrough_lower()),
                    );
                }
                None => push(
                    targets,
                    PASSTHROUGH_P50_IDLE,
                    "h2load not installed".into(),
                    None,
                ),
            }
        }
        _ => {
            push(
                targets,
                PASSTHROUGH_THROUGHPUT,
                "nginx not installed".into(),
                None,
            );
            push(
                targets,
                PASSTHROUGH_P50_LOADED,
                "nginx not installed".into(),
                None,
            );
            push(
                targets,
                PASSTHROUGH_P50_IDLE,
                "nginx not installed".into(),
                None,
            );
        }
    }
}

/// The L2 hit's p50 against Redis GET's.
fn l2_hit(_medians: &BTreeMap<&str, Medians>, extra: &Extra, targets: &mut Vec<Target>) {
    match extra.redis_get_p50_ms {
        // Judged on h2load's figure where there is one: a C client like redis-benchmark, so the comparison is
        // between the two servers, not between the two clients. strata-load's figure is shown beside it.
        Some(redis) => {
            let (p50, measured) = match extra.l2_p50_h2load_ms {
                Some(h2load) => (
                    h2load,
                    format!(
                        "{h2load:.3} ms (h2load; strata-load {:.3}) vs {redis:.3} + 0.150 ms",
                        extra.l2_p50_ms
                    ),
                ),
                None => (
                    extra.l2_p50_ms,
                    format!("{:.3} ms vs {redis:.3} + 0.150 ms", extra.l2_p50_ms),
                ),
            };
            push(
                targets,
                "L2-hit p50 ≤ Redis GET p50 + 150 µs (1 call in flight)",
                measured,
                Some(p50 <= redis + 0.150),
            )
        }
        None => push(
            targets,
            "L2-hit p50 ≤ Redis GET p50 + 150 µs",
            "redis-benchmark missing".into(),
            None,
        ),
    }
}

/// The Zipf load: mean latency against the backend's, and the share of calls reaching the backend.
fn zipf(medians: &BTreeMap<&str, Medians>, extra: &Extra, targets: &mut Vec<Target>) {
    let get = |name: &str| medians.get(name);
    match get("zipf") {
        Some(zipf) => {
            let lower = 1.0 - extra.zipf_paced_mean_ms / extra.direct_paced_mean_ms.max(1e-9);
            push(
                targets,
                "Zipf(1.0): mean latency ≥ 90 % lower than the backend called directly",
                format!(
                    "{:.1} % lower ({:.3} vs {:.3} ms, open loop at {:.0} calls/s)",
                    lower * 100.0,
                    extra.zipf_paced_mean_ms,
                    extra.direct_paced_mean_ms,
                    extra.zipf_paced_rps
                ),
                Some(lower >= 0.9),
            );
            let share = zipf.backend_share.unwrap_or(1.0);
            push(
                targets,
                "Zipf(1.0): backend calls ≤ 5 % of requests after warm-up",
                format!("{:.2} %", share * 100.0),
                Some(share <= 0.05),
            );
        }
        _ => push(targets, "Zipf(1.0) targets", "-".into(), None),
    }
}

/// One backend call for a stampede, and the Zipf gateway's memory against its L1 budget.
fn stampede_and_memory(
    _medians: &BTreeMap<&str, Medians>,
    extra: &Extra,
    targets: &mut Vec<Target>,
) {
    push(
        targets,
        "Stampede: exactly 1 backend call",
        extra.stampede_backend_calls.to_string(),
        Some(extra.stampede_backend_calls == 1),
    );
    let limit = 1.25 * extra.zipf_l1_bytes as f64 + 64.0 * 1024.0 * 1024.0;
    match extra.zipf_rss_bytes {
        Some(rss) => push(
            targets,
            "Memory: RSS ≤ 1.25 × L1 budget + 64 MiB after the Zipf run",
            format!(
                "{:.1} MiB (limit {:.1} MiB)",
                rss as f64 / 1048576.0,
                limit / 1048576.0
            ),
            Some(rss as f64 <= limit),
        ),
        None => push(
            targets,
            "Memory: RSS ≤ 1.25 × L1 budget + 64 MiB",
            "no /proc".into(),
            None,
        ),
    }
}

/// The scenario table and the target table, in Markdown.
pub fn markdown(
    scenarios: &[Scenario],
    medians: &BTreeMap<&str, Medians>,
    targets: &[Target],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | what | strata-load calls/s | h2load calls/s | × reference | p50 ms | p99 ms | mean ms | errors |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|"
    );
    for s in scenarios {
        let Some(m) = medians.get(s.name) else {
            continue;
        };
        let ratio = match medians.get(s.reference) {
            Some(r) if s.reference != s.name => format!(
                "{:.2} × {}",
                m.best_rps() / r.best_rps().max(1e-9),
                s.reference
            ),
            _ => "reference".to_owned(),
        };
        let h2load = m.h2load_rps.map_or("-".to_owned(), |r| format!("{r:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {h2load} | {ratio} | {:.3} | {:.3} | {:.3} | {} |",
            s.name, s.what, m.rps, m.p50_ms, m.p99_ms, m.mean_ms, m.errors
        );
    }
    let _ = writeln!(out, "\n| target | measured | met |\n|---|---|---|");
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {met} |", t.promise, t.measured);
    }
    out
}

/// The machine, in one line: CPU model, CPUs, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or("unknown CPU", str::trim)
        .to_owned();
    // Counted from /proc/cpuinfo: this process may be pinned to fewer.
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("? GiB".to_owned(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, {memory}, Linux {}", kernel.trim())
}

/// Replaces the text between `<!-- compare:begin -->` and `<!-- compare:end -->` in `document` (appending the
/// markers if they are missing).
pub fn replace_block(document: &str, block: &str) -> String {
    const BEGIN: &str = "<!-- compare:begin -->";
    const END: &str = "<!-- compare:end -->";
    match (document.find(BEGIN), document.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{BEGIN}\n{block}{}", &document[..begin], &document[end..])
        }
        _ => format!("{document}\n{BEGIN}\n{block}{END}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_in_place() {
        let doc = "# B\n\n<!-- compare:begin -->\nold\n<!-- compare:end -->\n\nafter\n";
        let new = replace_block(doc, "new\n");
        assert_eq!(
            new,
            "# B\n\n<!-- compare:begin -->\nnew\n<!-- compare:end -->\n\nafter\n"
        );
        assert!(
            replace_block("# B\n", "x\n")
                .ends_with("<!-- compare:begin -->\nx\n<!-- compare:end -->\n")
        );
    }

    #[test]
    fn a_tie_passes_as_lower_at_most_one_time_in_32() {
        let needed: Vec<_> = [1, 4, 5, 6, 9, 10, 15, 20]
            .into_iter()
            .map(rounds_needed)
            .collect();
        assert_eq!(needed, [1, 4, 5, 6, 8, 9, 12, 15]);
        // Checked against every outcome of n coin tosses: the count needed passes a tie at most one time in 32, one
        // fewer would pass it more often (when there are enough rounds for the bar at all).
        for n in 1..=16_usize {
            let outcomes = 1u32 << n;
            let passing = |k: usize| {
                (0..outcomes)
                    .filter(|lower| lower.count_ones() as usize >= k)
                    .count() as f64
                    / f64::from(outcomes)
            };
            let k = rounds_needed(n);
            if n >= 5 {
                assert!(passing(k) <= TIE_PASSES_AT_MOST, "{k} of {n}");
                assert!(passing(k - 1) > TIE_PASSES_AT_MOST, "{k} of {n}");
            } else {
                assert_eq!(k, n, "too few rounds for the bar: all of them");
            }
        }
    }

    #[test]
    fn fifteen_rounds_need_twelve_lower() {
        let point = |lower_in: usize| ProxyP50 {
            rounds: (0..15)
                .map(|i| {
                    let passthrough = if i < lower_in { 0.100 } else { 0.111 };
                    [0.060, 0.110, passthrough]
                })
                .collect(),
            ..ProxyP50::default()
        };
        assert!(point(15).passthrough_lower());
        assert!(point(12).passthrough_lower(), "three disturbed rounds");
        assert!(!point(11).passthrough_lower());
        assert_eq!(point(11).rounds_passthrough_lower(), 11);
    }

    #[test]
    fn five_rounds_need_all_five_lower() {
        let point = |rounds: &[[f64; 3]]| ProxyP50 {
            rounds: rounds.to_vec(),
            ..ProxyP50::default()
        };
        let lower = [0.060, 0.110, 0.100];
        let level = [0.060, 0.110, 0.111];
        assert!(point(&[lower; 5]).passthrough_lower());
        // Lower medians, but not beyond the noise: one round of five went the other way.
        let mixed = point(&[lower, lower, level, lower, lower]);
        assert_eq!(mixed.rounds_passthrough_lower(), 4);
        assert!(!mixed.passthrough_lower());
        assert!(!point(&[]).passthrough_lower(), "nothing measured");
    }
}
