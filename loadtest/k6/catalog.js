// k6 load test of demo.v1.Catalog/GetItem through Strata: an open-loop arrival rate, item ids drawn with Zipf(1)
// popularity (as real catalog lookups are), and thresholds that fail the run (exit code 99) when Strata is slow,
// fails calls, or answers too few lookups from its cache.
//
//   K6_NO_USAGE_REPORT=true k6 run loadtest/k6/catalog.js                       # gateway on 127.0.0.1:50051
//   k6 run -e STRATA_HOST=10.0.0.5:50051 -e RATE=2000 -e DURATION=1m loadtest/k6/catalog.js
//
// Settings (-e NAME=value): STRATA_HOST, RATE (calls/s), DURATION, ITEMS (ids item-0 … item-<ITEMS-1>),
// P99_MS (latency threshold), MIN_HIT_RATIO (share of answers from L1 or L2).

import grpc from 'k6/net/grpc';
import { check } from 'k6';
import { Rate } from 'k6/metrics';

const HOST = __ENV.STRATA_HOST || '127.0.0.1:50051';
const RATE = parseInt(__ENV.RATE || '500', 10);
const DURATION = __ENV.DURATION || '30s';
const ITEMS = parseInt(__ENV.ITEMS || '100000', 10);
const P99_MS = parseFloat(__ENV.P99_MS || '50');
const MIN_HIT_RATIO = parseFloat(__ENV.MIN_HIT_RATIO || '0.5');

const client = new grpc.Client();
client.load(['../../proto/proto'], 'demo/v1/catalog.proto');

// Share of OK answers that came from a cache level (x-strata-cache: l1, l2, coalesced or stale).
const cacheHits = new Rate('strata_cache_hits');

export const options = {
  scenarios: {
    lookups: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: 20,
      maxVUs: 200,
    },
  },
  thresholds: {
    grpc_req_duration: [`p(99)<${P99_MS}`],
    checks: ['rate>0.999'],
    strata_cache_hits: [`rate>${MIN_HIT_RATIO}`],
  },
};

// Zipf(1) over ITEMS ids by inverting the continuous approximation of its CDF: rank r ≈ (ITEMS+1)^u − 1.
function zipfItem() {
  const rank = Math.floor(Math.pow(ITEMS + 1, Math.random())) - 1;
  return `item-${Math.min(Math.max(rank, 0), ITEMS - 1)}`;
}

export default function () {
  if (__ITER === 0) {
    client.connect(HOST, { plaintext: true, timeout: '5s' });
  }
  const response = client.invoke('demo.v1.Catalog/GetItem', { id: zipfItem() }, { timeout: '2s' });
  const ok = check(response, { 'status is OK': (r) => r && r.status === grpc.StatusOK });
  if (ok) {
    const level = (response.headers['x-strata-cache'] || [])[0];
    cacheHits.add(['l1', 'l2', 'coalesced', 'stale'].includes(level));
  }
}
