//! deploywatch seen from outside: the real binary on a local port, fed over the real wire
//! (protobuf, snappy, HTTP) and by a real Prometheus. One test binary, a module per theme.

mod harness;

mod alerts;
/// `deploywatch backtest` against a real Prometheus: the live run's deploys, read back.
mod backtest;
mod bad_input;
/// The web page in headless Chromium.
mod browser;
mod cli_deploy;
/// The judge's per-push arithmetic: allocations counted, not timed.
mod cost;
/// `deploywatch demo`: every built-in story played once by the real binary.
mod demo;
mod deploys;
/// The detection benchmark's reference judges and a fixed subset of its scenarios.
mod detection;
/// Crash and resume, corrupt snapshots, soak and concurrency.
mod durability;
/// Suspects, post-deploy reports (golden files), rollback and recovery, deploy history.
mod explain;
/// Issue 15: services and versions not seen for the retention are forgotten.
mod forget;
mod gates;
/// Issue 15: hostile timestamps, non-finite values and hostile snapshots.
mod hostile;
mod ingest;
mod k8s;
/// Native histograms from real pods through a real Prometheus: stored and sent as native, and
/// a slow canary rolled back on latency_p99.
mod native_stack;
/// Issue 15: readiness and gates answer while pushes saturate; nothing acknowledged is lost.
mod offpath;
mod prometheus_e2e;
/// A real Prometheus scraping real instrumented pods through file-based discovery: a bad
/// canary rolled back, a clean one left alone.
mod real_stack;
mod reload;
/// Issue 16: a real Prometheus scrapes deploywatch; the dashboard's queries keep the deploy's labels.
mod selfscrape;
/// Several concurrent senders (Prometheus' queue shards) into one judged service.
mod senders;
mod sharding;
/// Issue 16: one deploywatch per --storage.path.
mod storage_lock;

/// False alarms over many seeded clean canaries.
mod calibration;
/// The judge's targets: one deploy scenario per test, verdicts and detection delays.
mod scenarios;
/// A deterministic simulator of services scraped by Prometheus, and its driver.
mod sim;
