//! Fixtures for Fovea's benches (criterion for wall time, iai-callgrind for instruction counts).
//!
//! Everything here is seeded and deterministic, and built outside the measured region; the
//! measured calls themselves are `#[inline(never)]` functions shared by both harnesses, so the
//! two report on the same code.

#![warn(missing_docs)]

pub mod codec;
pub mod dht;
pub mod fanout;
pub mod rng;
pub mod trie;
