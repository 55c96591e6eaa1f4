//! Fixtures for Fovea's benches (criterion for wall time, iai-callgrind for instruction counts).
