//! A real node for the flood tests: in-process shards on loopback sockets, ephemeral ports.
#![allow(dead_code, unreachable_pub)]

use fovea_engine::config::NodeConfig;
use fovea_engine::node::Node;
use fovea_flood::params::Common;

/// Starts a node with `shards` shards on 127.0.0.1, ephemeral ports, its own data dir.
pub fn start_node(shards: usize) -> Node {
    let mut c = NodeConfig::default();
    c.node.listen = "127.0.0.1:0".parse().unwrap();
    c.node.metrics = "127.0.0.1:0".parse().unwrap();
    c.node.shards = shards;
    c.node.pin_cores = false;
    // The flood tool closes its connections at the end; nothing to wait for.
    c.node.drain_timeout_ms = 1_000;
    let mut r = [0u8; 8];
    boring::rand::rand_bytes(&mut r).unwrap();
    c.node.data_dir = std::env::temp_dir().join(format!(
        "fovea-flood-test-{}-{}",
        std::process::id(),
        u64::from_le_bytes(r)
    ));
    Node::start(c).expect("node starts")
}

/// Short-run parameters against `node`: no warm-up unless asked, quiet, bounded waits.
pub fn common(node: &Node) -> Common {
    let mut c = Common::new(node.quic_addr);
    c.duration_s = 2.0;
    c.warmup_s = 0.0;
    c.connect_timeout_s = 20.0;
    c.drain_timeout_s = 10.0;
    c
}
