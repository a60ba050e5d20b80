//! The `skillhive` binary. Everything lives in the library; this only hands over control.

fn main() -> std::process::ExitCode {
    return_freed_tensors_to_the_system();
    tokio::runtime::Runtime::new().expect("the async runtime starts").block_on(server::cli::main())
}

/// Inference allocates and frees tensors of many megabytes per step. glibc's allocator
/// raises its mmap threshold after such frees, so later tensors come from the heap, whose
/// freed pages stay with the process: a burst of concurrent requests left the server 1 GiB
/// larger for good. A fixed threshold keeps every large tensor in its own mapping, given
/// back when freed (measured: 2.4 GiB after repeated 30-request bursts before, 1.0 GiB
/// after, for about a tenth more time per burst).
fn return_freed_tensors_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread
    // exists, so no allocation races with it. (glibc's allocator has no safe interface;
    // rustix does not cover it.)
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
