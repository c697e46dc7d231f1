//! ballast: an HTTP API service (durable jobs, files) with its operations built in.

pub mod allocator;
pub mod app;
pub mod auth;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod db;
pub mod files;
pub mod health;
pub mod http;
pub mod jobs;
pub mod kv;
pub mod metrics;
pub mod ratelimit;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod telemetry;
