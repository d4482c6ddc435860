//! The `magnetfetch` binary: tune the process, parse arguments, hand over to
//! [`magnetfetch::cli`].

fn main() {
    tune_allocator();
    std::process::exit(magnetfetch::cli::main());
}

/// glibc's malloc hands freed memory at the top of a heap back to the kernel as soon as
/// more than a few hundred KiB are free, and its mmap threshold moves with the sizes it
/// sees. A download frees piece-sized and read-sized buffers at a high rate (blocks are
/// kept as slices of their receive buffers until the piece is written), so the same
/// memory was returned and faulted in again all the time: page faults and zeroing were
/// ~5 % of the downloader's CPU. Fixed thresholds keep it (peak RSS is unchanged: only
/// memory already used is kept).
///
/// Allocator parameters are process-wide, so this is the binary's choice, not the
/// library's: it runs once, first thing in `main`, before any runtime or thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; valid parameter numbers and
        // values (bytes). No other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
}
