//! The process allocator: mimalloc, for the `ballast` binary and the bench's bare baseline
//! alike (so the bench's ratios compare stacks, not allocators). glibc's malloc took ~16 % of
//! a core under load (perf: `_int_free`, `malloc_consolidate`).
//!
//! A global allocator is declared by the final binary, so this module gives the pieces and
//! [`use_mimalloc!`](crate::use_mimalloc) declares them there.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use mimalloc::MiMalloc;

// Linked in by the `mimalloc` crate (its C library); its bindings are behind a feature or
// not public.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_malloc(size: usize) -> *mut c_void;
    fn mi_zalloc(size: usize) -> *mut c_void;
    fn mi_realloc(p: *mut c_void, newsize: usize) -> *mut c_void;
}

/// Every mimalloc block is a whole number of words, so word alignment comes free.
const FREE_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc, through its plain entry points where the alignment asked for comes free: the
/// `mimalloc` crate calls `mi_malloc_aligned` for every allocation, ~20 instructions more
/// each, ~2 000 a request (callgrind, ~100 allocations per request).
#[doc(hidden)]
pub struct Mimalloc;

// SAFETY: mimalloc upholds GlobalAlloc's contract; the plain calls are made only for
// alignments every mimalloc block has, and everything else goes to the aligned calls.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= FREE_ALIGN {
            // SAFETY: a plain allocation of a non-zero size (GlobalAlloc's caller ensures it).
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: forwarded as received.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= FREE_ALIGN {
            // SAFETY: as in `alloc`.
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: forwarded as received.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from mimalloc, by either path (mi_free takes both).
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= FREE_ALIGN {
            // SAFETY: `ptr` came from mimalloc; the new block is word aligned like any.
            unsafe { mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: forwarded as received.
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
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
        static ALLOCATOR: $crate::allocator::Mimalloc = $crate::allocator::Mimalloc;

        #[cfg(target_os = "linux")]
        #[used]
        #[link_section = ".init_array"]
        static LAZY_ARENAS: extern "C" fn() = $crate::allocator::lazy_arenas;
    };
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mimalloc;

    #[test]
    fn every_layout_gets_its_alignment_zeroes_and_its_bytes_through_realloc() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 9, 24, 100, 1000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is freed with the layout it has.
                unsafe {
                    let p = Mimalloc.alloc_zeroed(layout);
                    assert!(!p.is_null() && p as usize % align == 0, "{layout:?}");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0), "{layout:?}");
                    std::ptr::write_bytes(p, 0xAB, size);
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert!(!q.is_null() && q as usize % align == 0, "{layout:?} grown");
                    assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0xAB), "{layout:?}");
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let r = Mimalloc.alloc(layout);
                    assert!(!r.is_null() && r as usize % align == 0, "{layout:?}");
                    Mimalloc.dealloc(r, layout);
                }
            }
        }
    }
}
