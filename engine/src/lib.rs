//! Fovea's data plane (being built).
