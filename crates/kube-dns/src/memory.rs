//! Returning the initial list's garbage to the OS.
//!
//! Listing 10,000 Services and 100,000 endpoints parses tens of MB of JSON that is freed right
//! after stripping; glibc keeps those pages resident in its arenas. Trimming once after the
//! first sync releases them (measured in docs/benchmarks.md). musl returns memory on its own.

/// Releases free heap pages to the OS where the allocator holds on to them.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
