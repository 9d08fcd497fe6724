//! Integration tests: one binary (it links once). Every test runs real servers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod bounds;
mod caching;
mod cli;
mod collapse;
mod dashboard;
mod discovery;
mod forward;
mod intercept;
mod layers;
mod membership;
mod mirrors;
mod multiholder;
mod origin_faults;
mod packaging;
mod peer_faults;
mod peers;
mod pieces;
mod ranges;
mod redirect;
mod restart;
mod rfc;
mod rules;
mod sites;
mod startup;
mod zerocopy;
