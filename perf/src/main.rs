//! `fovea-perf`: the end-to-end performance harness (not built yet; see issue 4).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    eprintln!("fovea-perf is not built yet");
    std::process::exit(2);
}
