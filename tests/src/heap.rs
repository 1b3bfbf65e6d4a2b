//! Heap bytes by owner: a counting global allocator for the `sim`
//! benchmark, which runs three managers and thousands of simulated agents
//! in one process and wants to know what the managers alone hold.
//!
//! Each thread has an owner ([`set_thread_owner`]; [`Owner::Other`] unless
//! set): the sim cluster sets [`Owner::Managers`] on every thread of the
//! managers' own runtime, its blocking pool included (`SimSize::manager_threads`).
//! An allocation belongs to the owner of the thread that made it, for its
//! whole life: the owner is written into a 16-byte header in front of the
//! allocation, so a free (or a realloc) on any other thread, say a buffer
//! a manager's task allocated and an agent's task dropped, is taken off the
//! owner that allocated it.
//!
//! What is counted: the bytes each live allocation asked for
//! (`Layout::size`), their number, and the same bytes by size class. Not
//! counted: what the system allocator adds (glibc's 8-byte chunk header
//! and rounding to 16 bytes, its free lists and per-thread arenas), this
//! allocator's own 16-byte header, and memory that is not allocated through
//! Rust's global allocator (thread stacks, mmaps of files). So the
//! resident set grows by more than these counts; the difference is the
//! allocator's overhead and fragmentation.
//!
//! The counts are only kept when a program installs [`OwnedHeap`] as its
//! `#[global_allocator]` ([`installed`] tells); setting a thread's owner is
//! harmless otherwise.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Who a thread's allocations are counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Owner {
    /// Everything not set otherwise: the agents, the benchmark itself.
    Other = 0,
    /// The sim cluster's managers (their runtime's threads).
    Managers = 1,
    /// A measurement's own allocations, for a moment: a copy of something
    /// made on purpose to count what it holds ([`counted`]).
    Probe = 2,
}

const OWNERS: usize = 3;

/// Size classes of [`HeapUse::by_size`]: allocations of at most 16 bytes,
/// at most 32, ..., at most 2^(SIZE_CLASSES + 3), and anything larger in
/// the last class.
pub const SIZE_CLASSES: usize = 18;

/// Bytes in front of each allocation (at least; more when the allocation
/// is aligned to more than this), holding its owner. 16 keeps the
/// allocation's address 16-byte aligned, as the system allocator's is.
const HEADER: usize = 16;

thread_local! {
    /// This thread's owner (an `Owner` as u8). Const-initialized, with no
    /// destructor: reading it never allocates, even while the thread ends.
    static THREAD_OWNER: Cell<u8> = const { Cell::new(Owner::Other as u8) };
}

/// Makes every later allocation of this thread count for `owner`.
pub fn set_thread_owner(owner: Owner) {
    THREAD_OWNER.with(|o| o.set(owner as u8));
}

/// The system allocator with a per-owner count of live bytes (module doc).
pub struct OwnedHeap;

struct Counts {
    bytes: AtomicI64,
    allocations: AtomicI64,
    by_size: [AtomicI64; SIZE_CLASSES],
}

impl Counts {
    const fn new() -> Counts {
        Counts {
            bytes: AtomicI64::new(0),
            allocations: AtomicI64::new(0),
            by_size: [const { AtomicI64::new(0) }; SIZE_CLASSES],
        }
    }

    fn add(&self, size: usize, allocations: i64) {
        let signed = size as i64 * allocations.signum();
        self.bytes.fetch_add(signed, Ordering::Relaxed);
        self.allocations.fetch_add(allocations, Ordering::Relaxed);
        self.by_size[size_class(size)].fetch_add(signed, Ordering::Relaxed);
    }
}

static COUNTS: [Counts; OWNERS] = [const { Counts::new() }; OWNERS];
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn size_class(size: usize) -> usize {
    // 0..=16 -> 0, 17..=32 -> 1, ...
    let bits = usize::BITS - size.saturating_sub(1).leading_zeros();
    (bits.saturating_sub(4) as usize).min(SIZE_CLASSES - 1)
}

/// The header in front of an allocation of `layout`, and the layout asked
/// of the system allocator for it.
fn framed(layout: Layout) -> Option<(usize, Layout)> {
    let header = HEADER.max(layout.align());
    let size = layout.size().checked_add(header)?;
    Some((header, Layout::from_size_align(size, header).ok()?))
}

/// Where an allocation's owner is kept: the 8 bytes just before the
/// 16 that precede it (within the header whatever its size).
unsafe fn owner_slot(user: *mut u8) -> *mut u64 {
    unsafe { user.sub(HEADER) as *mut u64 }
}

impl OwnedHeap {
    /// Frames a fresh system allocation at `base` (null passes through).
    unsafe fn claim(base: *mut u8, header: usize, size: usize) -> *mut u8 {
        if base.is_null() {
            return base;
        }
        INSTALLED.store(true, Ordering::Relaxed);
        let owner = THREAD_OWNER.with(Cell::get);
        let user = unsafe { base.add(header) };
        unsafe { owner_slot(user).write(owner as u64) };
        COUNTS[owner as usize].add(size, 1);
        user
    }

    unsafe fn owner_of(user: *mut u8) -> usize {
        (unsafe { owner_slot(user).read() } as usize).min(OWNERS - 1)
    }
}

unsafe impl GlobalAlloc for OwnedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((header, outer)) = framed(layout) else {
            return std::ptr::null_mut();
        };
        unsafe { Self::claim(System.alloc(outer), header, layout.size()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some((header, outer)) = framed(layout) else {
            return std::ptr::null_mut();
        };
        unsafe { Self::claim(System.alloc_zeroed(outer), header, layout.size()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (header, outer) = framed(layout).expect("a layout this allocator framed");
        let owner = unsafe { Self::owner_of(ptr) };
        COUNTS[owner].add(layout.size(), -1);
        unsafe { System.dealloc(ptr.sub(header), outer) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (header, outer) = framed(layout).expect("a layout this allocator framed");
        let Some(new_outer) = new_size.checked_add(header) else {
            return std::ptr::null_mut();
        };
        let owner = unsafe { Self::owner_of(ptr) };
        // The header moves with the contents: the owner stays the one that
        // allocated it.
        let base = unsafe { System.realloc(ptr.sub(header), outer, new_outer) };
        if base.is_null() {
            return base;
        }
        COUNTS[owner].add(layout.size(), -1);
        COUNTS[owner].add(new_size, 1);
        unsafe { base.add(header) }
    }
}

/// What one owner holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapUse {
    /// Bytes asked for by its live allocations.
    pub bytes: i64,
    /// Its live allocations.
    pub allocations: i64,
    /// `bytes` by size class (see [`SIZE_CLASSES`]).
    pub by_size: [i64; SIZE_CLASSES],
}

impl HeapUse {
    /// What was added from `before` to `self` (negative where it shrank).
    pub fn since(&self, before: &HeapUse) -> HeapUse {
        let mut by_size = [0; SIZE_CLASSES];
        for (i, b) in by_size.iter_mut().enumerate() {
            *b = self.by_size[i] - before.by_size[i];
        }
        HeapUse {
            bytes: self.bytes - before.bytes,
            allocations: self.allocations - before.allocations,
            by_size,
        }
    }
}

/// The largest allocation size of size class `class` (None: the last class,
/// which has no upper bound).
pub fn size_class_limit(class: usize) -> Option<usize> {
    (class + 1 < SIZE_CLASSES).then(|| 16usize << class)
}

/// What `owner`'s threads have allocated and not freed, now.
pub fn live(owner: Owner) -> HeapUse {
    let c = &COUNTS[owner as usize];
    let mut by_size = [0; SIZE_CLASSES];
    for (b, a) in by_size.iter_mut().zip(&c.by_size) {
        *b = a.load(Ordering::Relaxed);
    }
    HeapUse {
        bytes: c.bytes.load(Ordering::Relaxed),
        allocations: c.allocations.load(Ordering::Relaxed),
        by_size,
    }
}

/// Runs `f` with this thread's allocations counted for [`Owner::Probe`],
/// and returns what it left allocated (what its result holds, if it
/// allocates nothing else that lives on) with the result. `f` must not
/// yield to other work on this thread (it is not async), or their
/// allocations would be counted too.
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, HeapUse) {
    let before = live(Owner::Probe);
    let owner = THREAD_OWNER.with(Cell::get);
    THREAD_OWNER.with(|o| o.set(Owner::Probe as u8));
    let out = f();
    THREAD_OWNER.with(|o| o.set(owner));
    (out, live(Owner::Probe).since(&before))
}

/// Whether [`OwnedHeap`] is this program's global allocator (it has
/// allocated something), so that [`live`] means anything.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two_from_16() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(16), 0);
        assert_eq!(size_class(17), 1);
        assert_eq!(size_class(32), 1);
        assert_eq!(size_class(33), 2);
        assert_eq!(size_class(4096), 8);
        assert_eq!(size_class_limit(8), Some(4096));
        assert_eq!(size_class(usize::MAX), SIZE_CLASSES - 1);
        assert_eq!(size_class_limit(SIZE_CLASSES - 1), None);
    }

    /// The allocator called directly (the test binary's global allocator is
    /// the system's): a block allocated on a thread owned by the managers
    /// and freed on another is taken off the managers, and so is what a
    /// realloc on a third thread changes.
    #[test]
    fn a_block_counts_for_the_thread_that_allocated_it_until_freed_anywhere() {
        let heap = OwnedHeap;
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let before = live(Owner::Managers);
        let ptr = std::thread::spawn(move || {
            set_thread_owner(Owner::Managers);
            let p = unsafe { heap.alloc(layout) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(7, 1000) };
            p as usize
        })
        .join()
        .unwrap();
        let held = live(Owner::Managers).since(&before);
        assert_eq!((held.bytes, held.allocations), (1000, 1));
        assert_eq!(held.by_size[size_class(1000)], 1000);

        let grown = unsafe { OwnedHeap.realloc(ptr as *mut u8, layout, 5000) };
        assert!(!grown.is_null());
        assert_eq!(unsafe { grown.add(999).read() }, 7, "contents kept");
        let held = live(Owner::Managers).since(&before);
        assert_eq!((held.bytes, held.allocations), (5000, 1));

        let grown = grown as usize;
        std::thread::spawn(move || unsafe {
            OwnedHeap.dealloc(grown as *mut u8, Layout::from_size_align(5000, 8).unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(live(Owner::Managers).since(&before), HeapUse::default());
    }

    #[test]
    fn allocations_aligned_beyond_the_header_keep_their_alignment() {
        let layout = Layout::from_size_align(100, 4096).unwrap();
        let p = unsafe { OwnedHeap.alloc_zeroed(layout) };
        assert_eq!(p as usize % 4096, 0);
        assert_eq!(unsafe { p.add(99).read() }, 0);
        unsafe { OwnedHeap.dealloc(p, layout) };
    }
}
