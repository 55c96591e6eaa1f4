//! `fovea-flood`: the load generator (not built yet; see issue 4).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    eprintln!("fovea-flood is not built yet");
    std::process::exit(2);
}
