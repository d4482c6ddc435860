//! The `magnetfetch` binary: parse arguments, hand over to [`magnetfetch::cli`].

fn main() {
    std::process::exit(magnetfetch::cli::main());
}
