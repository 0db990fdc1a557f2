//! End-to-end tests: one test binary (fast links) that starts the real `hookline` binary
//! on `127.0.0.1:0` and talks to it over HTTP, as users and SDKs do.

mod auth_scope;
mod bad_input;
mod idempotency;
mod openapi;
mod receiver;
mod restart;
mod support;
mod svix_sdk;
