//! The `fovea` node.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    eprintln!("fovea: the node is not built yet");
    std::process::exit(2);
}
