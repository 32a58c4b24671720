//! `GvlCell`: interior mutability guarded by Ruby's GVL instead of a lock.
//!
//! Owns the one rule that makes it sound: the value is touched only by a thread holding the
//! GVL, inside a closure that never calls into Ruby (so neither another Ruby thread nor a GC
//! mark function can run while the closure holds the `&mut`). It must never be used for
//! state that a thread without the GVL reads.

use std::cell::UnsafeCell;

extern "C" {
    // Exported by libruby (ruby/thread.h); rb-sys generates no binding for it.
    fn ruby_thread_has_gvl_p() -> std::os::raw::c_int;
}

pub struct GvlCell<T>(UnsafeCell<T>);

// SAFETY: every access goes through `with`, which runs only while the calling thread holds
// the GVL, so accesses from different threads never overlap.
unsafe impl<T: Send> Sync for GvlCell<T> {}

impl<T> GvlCell<T> {
    pub const fn new(value: T) -> Self {
        GvlCell(UnsafeCell::new(value))
    }

    /// Runs `f` on the value. The caller must hold the GVL, and `f` must not call into Ruby
    /// (no allocation of Ruby objects, no method calls): that is what keeps the `&mut`
    /// unique.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        debug_assert!(
            // SAFETY: a plain query of the current thread's state.
            unsafe { ruby_thread_has_gvl_p() } != 0,
            "GvlCell used without the GVL"
        );
        // SAFETY: see the type's Sync impl and the contract above.
        f(unsafe { &mut *self.0.get() })
    }
}

impl<T: Default> Default for GvlCell<T> {
    fn default() -> Self {
        GvlCell::new(T::default())
    }
}
