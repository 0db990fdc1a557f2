//! End-to-end tests: one test binary (fast links) that starts the real `hookline` binary
//! on `127.0.0.1:0` and talks to it over HTTP, as users and SDKs do.

mod at_rest;
mod auth_scope;
mod bad_input;
mod cli;
mod console;
mod console_pages;
mod copy;
mod crash;
mod delivery_limits;
mod delivery_outcomes;
mod delivery_signing;
mod ed25519;
mod full_disk;
mod hostile_clients;
mod hostile_receivers;
mod hostile_schemas;
mod idempotency;
mod nodes;
mod openapi;
mod operations;
mod portal;
mod postgres;
mod receiver;
mod restart;
mod retention;
mod secrets_in_logs;
mod seed_cabaprop;
mod seed_cablenetai;
mod seed_instantmessage;
mod seed_shoperti;
mod seed_treble;
mod support;
mod svix_sdk;
mod tokens;
mod walkthrough;
