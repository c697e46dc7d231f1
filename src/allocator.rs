//! The process allocator: mimalloc, for the `ballast` binary and the bench's bare baseline
//! alike (so the bench's ratios compare stacks, not allocators). glibc's malloc took ~16 % of
//! a core under load (perf: `_int_free`, `malloc_consolidate`).
//!
//! A global allocator is declared by the final binary, so this module gives the pieces and
//! [`use_mimalloc!`](crate::use_mimalloc) declares them there.

#[doc(hidden)]
pub use mimalloc::MiMalloc;

// Linked in by the `mimalloc` crate (its C library); the binding there needs a feature.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Arenas committed eagerly (with transparent huge pages) kept ~11 MiB more resident at idle:
/// 25.7 vs 14.5 MiB measured. The option must be set before the first allocation, which the
/// Rust runtime makes before `main`: hence a constructor (what `MIMALLOC_ARENA_EAGER_COMMIT=0`
/// in the environment would do, without depending on every deployment to set it).
#[doc(hidden)]
pub extern "C" fn lazy_arenas() {
    // 4 is `mi_option_arena_eager_commit` in the `mimalloc.h` (v3) that Cargo.lock pins.
    // SAFETY: sets one option of the allocator before anything allocates.
    unsafe { mi_option_set(4, 0) };
}

/// Makes mimalloc the binary's allocator, arenas committed lazily. Once, in a binary's root.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::MiMalloc = $crate::allocator::MiMalloc;

        #[cfg(target_os = "linux")]
        #[used]
        #[link_section = ".init_array"]
        static LAZY_ARENAS: extern "C" fn() = $crate::allocator::lazy_arenas;
    };
}
