//! runtime-tap: a transparent interception proxy for container-runtime sockets.
//! Modules in the order bytes flow: relay (listeners, byte copy, tap) → observe (per
//! connection) → wire (passive decoders) → trace (call model, export); config and admin
//! around them, and `app` wiring them together.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod bed;
pub mod capture;
pub mod cli;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod observe;
pub mod relay;
pub mod report;
pub mod schema;
pub mod trace;
pub mod wire;
