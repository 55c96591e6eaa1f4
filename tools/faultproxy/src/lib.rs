//! A userspace fault-injecting UDP proxy for testing Fovea nodes (and any UDP service) on a
//! host without `tc netem`.
//!
//! Clients send to the proxy's listening address; for each client source address the proxy
//! opens its own socket to the upstream node, so the node sees one distinct 4-tuple per
//! client. Each direction (client → node, [`Direction::Up`]; node → client,
//! [`Direction::Down`]) has its own [`Faults`]: loss, delay with jitter, reordering,
//! duplication, blackhole, a bandwidth cap, an MTU. The proxy can also rebind a client's
//! upstream socket to a new port (NAT rebinding, QUIC connection migration).
//!
//! Layers:
//! - [`Shaper`]: the fault model without I/O, one seeded RNG per direction;
//! - [`Proxy`]: the socket driver and the run-time handle (`set`, `blackhole`, `rebind_all`,
//!   `counters`, `shutdown`);
//! - [`Script`]: a TOML schedule of phases for the binary (`--script`) and for tests.
//!
//! ```no_run
//! use fovea_faultproxy::{Direction, Faults, Proxy, ProxyConfig};
//!
//! let config = ProxyConfig::new("127.0.0.1:0".parse()?, "127.0.0.1:4433".parse()?);
//! let proxy = Proxy::start(config)?;
//! // Clients connect to proxy.local_addr() instead of the node.
//! proxy.set(Direction::Up, Faults::loss(0.05))?;
//! proxy.blackhole(Direction::Down, true);
//! proxy.rebind_all();
//! println!("{}", proxy.shutdown());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod counters;
mod error;
mod faults;
mod proxy;
mod queue;
mod script;
mod shaper;

pub use counters::{Counters, DirCounters};
pub use error::{FaultError, ProxyError, ScriptError};
pub use faults::{Direction, Faults, RateLimit, DEFAULT_REORDER_DELAY};
pub use proxy::{ClientInfo, Proxy, ProxyConfig, POLL};
pub use queue::{DelayQueue, Footprint, Full};
pub use script::{Phase, Script};
pub use shaper::{DropReason, Shaper, ShaperCounters, Verdict};
