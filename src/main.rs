//! The `magnetfetch` binary: tune the process, parse arguments, hand over to
//! [`magnetfetch::cli`].

fn main() {
    // Process-wide, so the binary's choice: first thing, before any runtime or thread.
    magnetfetch::tune_allocator();
    std::process::exit(magnetfetch::run_cli());
}
