//! deploywatch seen from outside: the real binary on a local port, fed over the real wire
//! (protobuf, snappy, HTTP) and by a real Prometheus. One test binary, a module per theme.

mod harness;

mod bad_input;
mod ingest;
mod prometheus_e2e;

/// A deterministic simulator of services scraped by Prometheus, and its driver.
mod sim;
