//! `fovea-cli`: the operators' client (not built yet; see issue 4).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    eprintln!("fovea-cli is not built yet");
    std::process::exit(2);
}
