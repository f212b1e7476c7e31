//! Heap buffers aligned to 64 bytes (a cache line), for benchmarks and
//! host tools.
//!
//! The kernels stream their buffers; a buffer that starts mid-line makes
//! every vector load straddle two lines at the seams and costs 15–25 % in
//! cache on a typical server core. `Vec<T>` only promises `T`'s alignment
//! (glibc's allocator gives 16 bytes for small blocks), so the host side
//! allocates a little more and starts the buffer on a line. On the
//! device, put the storage in a `#[repr(align(64))]` wrapper (or at least
//! align it to 8 bytes for the load/store-multiple kernels).
//!
//! ```
//! use polyak_host::aligned::AlignedBuf;
//! let buf = AlignedBuf::new(1000, 0.0f32);
//! assert_eq!(buf.as_ptr() as usize % 64, 0);
//! assert_eq!(buf.len(), 1000);
//! ```

use std::ops::{Deref, DerefMut};

/// A fixed-length buffer of `T` starting on a 64-byte boundary (when
/// `T`'s size allows one; every polyak element type does).
#[derive(Debug, Clone)]
pub struct AlignedBuf<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Clone> AlignedBuf<T> {
    /// `len` copies of `value`, 64-byte aligned.
    pub fn new(len: usize, value: T) -> Self {
        let size = size_of::<T>().max(1);
        // at most 64 extra elements reach any residue reachable at all
        let buf = vec![value; len + 64];
        let base = buf.as_ptr() as usize;
        let start = (0..64)
            .find(|k| (base + k * size).is_multiple_of(64))
            .unwrap_or(0);
        Self { buf, start, len }
    }

    /// A copy of `values`, 64-byte aligned.
    pub fn from_slice(values: &[T]) -> Self
    where
        T: Default,
    {
        let mut b = Self::new(values.len(), T::default());
        b.clone_from_slice(values);
        b
    }
}

impl<T> Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

impl<T> AsRef<[T]> for AlignedBuf<T> {
    fn as_ref(&self) -> &[T] {
        self
    }
}

impl<T> AsMut<[T]> for AlignedBuf<T> {
    fn as_mut(&mut self) -> &mut [T] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_type_lands_on_a_line() {
        fn check<T: Clone>(v: T) {
            for len in [0usize, 1, 7, 1000] {
                let b = AlignedBuf::new(len, v.clone());
                assert_eq!(b.len(), len);
                assert_eq!(
                    b.as_ptr() as usize % 64,
                    0,
                    "{}",
                    std::any::type_name::<T>()
                );
            }
        }
        check(0.0f32);
        check(polyak::CompF32::ZERO);
        check(polyak::Q15::ZERO);
        check(polyak::I49F15::ZERO);
        check([0.0f32; 3]);
        check([polyak::CompF32::ZERO; 2]);
    }
}
