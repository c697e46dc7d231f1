//! Integration tests: the real binary against real Postgres and Redis.
mod auth;
mod config;
mod files;
mod health;
mod helpers;
mod http;
mod jobs;
mod jobs_durability;
mod limits;
mod migrations;
mod ratelimit;
mod shutdown;
