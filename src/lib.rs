//! deploywatch judges every deploy on every Prometheus remote-write push.
//!
//! A push travels through the modules in this order: [`ingest`] decodes the body, [`store`]
//! appends the samples to per-series ring buffers grouped by service and version, and
//! [`web`] answers; [`alert`] tells Alertmanager about regressions. [`export`] renders metrics; [`config`] holds what the user configured;
//! [`app`] wires the parts together, [`server`] starts, serves and drains one; [`demo`] plays
//! a simulated story into one; [`backtest`] replays a Prometheus server's history through
//! the same judge.
// No `unsafe` but one allowed function: `store::prefetch`'s cache-line hint.
#![deny(unsafe_code)]

pub mod alert;
pub mod app;
pub mod backtest;
pub mod cli;
pub mod config;
pub mod demo;
pub mod deploy;
pub mod export;
pub mod ingest;
pub mod jsonl;
pub mod logging;
pub mod rca;
pub mod report;
pub mod rng;
pub mod rules;
pub mod server;
pub mod stats;
pub mod store;
pub mod web;

/// Types generated from `proto/` by prost (encoders for tests, the load generator and
/// remote read; the write path decodes by hand).
pub mod proto {
    /// Remote-Write 1.0 and Remote-Read (`package prometheus`).
    pub mod prometheus {
        include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
    }
    /// Remote-Write 2.0 (`package io.prometheus.write.v2`).
    pub mod write_v2 {
        include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
    }
}

/// Wall-clock Unix milliseconds (used only for process bookkeeping, never for judging).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
