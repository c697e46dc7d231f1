//! ballast: an HTTP API service (durable jobs, files) with its operations built in.
pub mod config;
