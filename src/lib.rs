//! runtime-tap: a transparent interception proxy for container-runtime sockets.
//! Modules in the order bytes flow: relay (listeners, byte copy, tap) → observe (per
//! connection) → wire (passive decoders) → schema (rules) → trace (call model, export);
//! `conn` holds the facts about a connection every layer may read (a leaf), config and admin
//! sit around them, and `app` wires them together: it alone gives the relay its tap hook.
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
