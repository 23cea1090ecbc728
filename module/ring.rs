// SPDX-License-Identifier: GPL-2.0
//! The fixed-capacity FIFO behind the stream's pending events and each open file's `read()`
//! records: allocated once, it never allocates again, so the timer's interrupt and delivery's
//! softirq may push to it.

use kernel::prelude::*;

/// A fixed-capacity FIFO that never allocates after creation (usable in the timer's interrupt
/// context). Its buffer is on the heap, allocated once: a ring of `N` events built on the stack
/// and moved would cost the creating function a frame of several KiB.
pub(crate) struct Ring<T: Copy + Default, const N: usize> {
    /// Always `N` elements.
    buf: KVec<T>,
    head: usize,
    len: usize,
}

impl<T: Copy + Default, const N: usize> Ring<T, N> {
    /// An empty ring whose buffer is allocated with `flags`.
    pub(crate) fn new(flags: kernel::alloc::Flags) -> Result<Self> {
        // INVARIANT: `buf` holds exactly `N` elements, and never changes length.
        Ok(Self {
            buf: KVec::from_elem(T::default(), N, flags)?,
            head: 0,
            len: 0,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `v`; returns `false` (and drops `v`) when full.
    pub(crate) fn push(&mut self, v: T) -> bool {
        if self.len == N {
            return false;
        }
        let idx = (self.head + self.len) % N;
        if let Some(slot) = self.buf.get_mut(idx) {
            *slot = v;
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Puts `v` back at the front, to be popped next; returns `false` (and drops `v`) when full.
    pub(crate) fn push_front(&mut self, v: T) -> bool {
        if self.len == N {
            return false;
        }
        let idx = (self.head + N - 1) % N;
        if let Some(slot) = self.buf.get_mut(idx) {
            *slot = v;
            self.head = idx;
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Removes and returns the newest element.
    pub(crate) fn pop_back(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.buf.get((self.head + self.len) % N).copied()
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let v = self.buf.get(self.head).copied();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        v
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[kunit_tests(pcmsig_ring)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_fifo_bounded_and_wraps() -> Result {
        let mut r: Ring<u32, 4> = Ring::new(GFP_KERNEL)?;
        assert!(r.is_empty());
        for v in 1..=4 {
            assert!(r.push(v));
        }
        // A full ring refuses.
        assert!(!r.push(5));
        assert_eq!(r.len(), 4);
        assert_eq!(r.pop(), Some(1));
        // Room again, at the wrapped end.
        assert!(r.push(5));
        let mut out = [0u32; 4];
        for slot in out.iter_mut() {
            *slot = r.pop().unwrap_or(0);
        }
        assert_eq!(out, [2, 3, 4, 5]);
        assert_eq!(r.pop(), None);
        // Put back at the front: popped first, in order, even across the wrap.
        assert!(r.push(6));
        assert!(r.push_front(5));
        assert!(r.push_front(4));
        assert_eq!(r.pop(), Some(4));
        assert_eq!(r.pop(), Some(5));
        assert_eq!(r.pop(), Some(6));
        // The newest leaves from the back, across the wrap too.
        for v in 7..=10 {
            assert!(r.push(v));
        }
        assert_eq!(r.pop_back(), Some(10));
        assert!(r.push_front(6));
        assert_eq!(r.pop_back(), Some(9));
        assert_eq!(r.pop(), Some(6));
        assert_eq!(r.pop(), Some(7));
        assert_eq!(r.pop_back(), Some(8));
        assert_eq!(r.pop_back(), None);
        r.push(9);
        r.clear();
        assert!(r.is_empty());
        Ok(())
    }
}
