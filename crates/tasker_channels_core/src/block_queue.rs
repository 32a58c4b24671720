//! A bounded multi-producer multi-consumer queue whose memory follows what it holds.
//!
//! Owns the messages of one channel and the bound on how many there may be. It allocates
//! room in blocks as it fills and frees each block once every message in it has been taken
//! (keeping up to two spares to reuse), so a new queue of any capacity holds no block and a
//! drained one at most three. It must never hold more than its capacity, never allocate for
//! capacity nobody uses, and never wait for room or messages: waiting, policies and
//! counting are the channel's job.
//!
//! # Why not an array-backed bounded queue
//!
//! concurrent-queue's and crossbeam's bounded queues (and `ArrayQueue`) allocate and write
//! every slot when they are built: 16 to 40 bytes a slot, hundreds of megabytes and most of
//! a second for one empty channel at the largest capacity the configuration accepts. The
//! segmented unbounded queues allocate as they fill but pay for it on every message (three
//! more atomic read-modify-writes per message), and bounding them takes a counter both ends
//! must write. This queue keeps the cost of the array-backed ones, one compare-and-swap per
//! push and one per pop.
//!
//! # How
//!
//! Messages get consecutive indices: a push claims the next tail index, a pop the next head
//! index, each with one compare-and-swap. The bound is on the indices (`tail - head` never
//! passes capacity), checked against a cached copy of the other end, which only lags behind
//! and so can only make the queue look fuller or emptier than it is; the real other end is
//! read only when the copy says full or empty, so the ends do not share a cache line on the
//! way. Index `i` lives in block `i / B`, found through a table of `capacity / B + 1`
//! entries (rounded up to a power of two) that is reused round after round. A thread touches
//! a block only through an index it has claimed, and the table entry carries the block's
//! generation, so nobody ever reads a block that may be gone.
//!
//! A pop marks its slot read. The pop that takes the last slot of a block frees every block
//! whose slots are all read, oldest first (one thread at a time); a block with a pop still
//! reading is freed at the next block's end instead. Up to two freed blocks are kept as
//! spares for the next blocks needed, so a queue going round at steady occupancy neither
//! allocates nor frees (with one, a consumer that finished two blocks before the producer
//! needed the next freed one of them, and the producer allocated again); slot states carry
//! their block's number, so a reused block needs no reset. The table holds one block more
//! than the capacity needs, so a push that reaches a table entry whose previous block is
//! still there only ever waits for pops already under way, never for new ones.

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};

use crate::metrics::CacheLine;

/// Set in the tail index once the queue is closed, so a push and a close cannot cross.
const CLOSED: u64 = 1 << 63;

/// A slot's state is its block's number shifted left by two, plus one of these flags, so a
/// reused block needs no reset: what an earlier block left in it never matches. A new block
/// is zeroed, which matches no block's `WRITTEN` or `READ`.
const WRITTEN: u64 = 1;
const READ: u64 = 2;
const FLAGS: u64 = 3;

/// Blocks are aligned so the low bits of their address can carry the generation.
const BLOCK_ALIGN: usize = 128;
const GENERATION_MASK: usize = BLOCK_ALIGN - 1;
/// A block is about this big, small enough that the one being filled and the one being
/// drained stay in the core's first-level cache, and never holds fewer than
/// `MIN_BLOCK_SLOTS` messages.
const BLOCK_BYTES: usize = 8 * 1024;
const MIN_BLOCK_SLOTS: usize = 32;
/// Large capacities get larger blocks instead of a longer table, so the table stays under
/// about 128 KiB (whose pages are only touched as the queue goes round).
const TABLE_ENTRIES_TARGET: u64 = 8 * 1024;

/// Why [`BlockQueue::push`] handed a message back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError<T> {
    /// `capacity` messages are queued.
    Full(T),
    /// The queue is closed (whether or not it is also full).
    Closed(T),
}

/// Why [`BlockQueue::pop`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PopError {
    /// Nothing is queued right now.
    Empty,
    /// The queue is closed and everything queued has been taken.
    Closed,
}

struct Slot<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    state: AtomicU64,
}

/// One end of the queue: its index, and the other end's index as this end last read it.
struct End {
    index: AtomicU64,
    other_seen: AtomicU64,
}

/// Whose turn it is to free blocks, the oldest block not yet freed, and freed blocks kept
/// for the next blocks needed (0: none), so a queue going round neither allocates nor frees.
struct Reclaim {
    busy: AtomicBool,
    next_block: AtomicU64,
    spares: [AtomicUsize; SPARE_BLOCKS],
}

/// How many freed blocks a queue keeps for reuse.
const SPARE_BLOCKS: usize = 2;

/// A bounded MPMC queue that allocates in blocks as it fills; see the module docs.
pub(crate) struct BlockQueue<T> {
    /// Written by pushes only (and `close`).
    tail: CacheLine<End>,
    /// Written by pops only.
    head: CacheLine<End>,
    reclaim: CacheLine<Reclaim>,
    /// Per table entry: a block's address plus its generation, or (no address) the
    /// generation the entry is waiting for.
    table: Box<[AtomicUsize]>,
    capacity: u64,
    /// log2 of the slots in a block, and the slots in a block less one.
    block_shift: u32,
    offset_mask: u64,
    /// log2 of the table's length, and its length less one.
    table_shift: u32,
    entry_mask: u64,
    _messages: PhantomData<T>,
}

// SAFETY: messages move between threads (hence `T: Send`) and are only ever reached through
// one claimed index at a time, never shared, so `T: Sync` is not needed.
unsafe impl<T: Send> Send for BlockQueue<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for BlockQueue<T> {}

impl<T> BlockQueue<T> {
    /// An empty queue for up to `capacity` messages; allocates no room for them yet.
    ///
    /// # Panics
    /// If `capacity` is zero or does not fit in 63 bits.
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a queue needs room for at least one message");
        let capacity = u64::try_from(capacity)
            .ok()
            .filter(|&c| c < CLOSED)
            .expect("capacity fits in 63 bits");
        let fits = (BLOCK_BYTES / size_of::<Slot<T>>()).max(MIN_BLOCK_SLOTS);
        let for_table = (capacity / TABLE_ENTRIES_TARGET).max(1).next_power_of_two();
        let block_shift = fits.ilog2().max(for_table.ilog2());
        let block_slots = 1u64 << block_shift;
        // One block more than the capacity can span, so the block a push reaches has always
        // been fully claimed by pops one round earlier.
        let entries = (capacity + block_slots - 1).div_ceil(block_slots);
        let table_len = usize::try_from(entries)
            .ok()
            .and_then(usize::checked_next_power_of_two)
            .expect("the block table fits in memory");
        Self {
            tail: CacheLine(End {
                index: AtomicU64::new(0),
                other_seen: AtomicU64::new(0),
            }),
            head: CacheLine(End {
                index: AtomicU64::new(0),
                other_seen: AtomicU64::new(0),
            }),
            reclaim: CacheLine(Reclaim {
                busy: AtomicBool::new(false),
                next_block: AtomicU64::new(0),
                spares: [const { AtomicUsize::new(0) }; SPARE_BLOCKS],
            }),
            table: zeroed_table(table_len),
            capacity,
            block_shift,
            offset_mask: block_slots - 1,
            table_shift: table_len.ilog2(),
            entry_mask: table_len as u64 - 1,
            _messages: PhantomData,
        }
    }

    /// Adds `msg` at the back, or hands it back when `capacity` messages are queued or the
    /// queue is closed.
    #[inline(always)]
    pub(crate) fn push(&self, msg: T) -> Result<(), PushError<T>> {
        let tail_end = &self.tail.0;
        let tail = tail_end.index.load(SeqCst);
        // The common case, kept small enough to inline: open, room by the cached head, and
        // no other push in between. A closed tail has the top bit set, so it fails the
        // room check too.
        if tail.wrapping_sub(tail_end.other_seen.load(Relaxed)) < self.capacity
            && tail_end
                .index
                .compare_exchange(tail, tail + 1, SeqCst, Relaxed)
                .is_ok()
        {
            // SAFETY: this thread claimed `tail`; nobody reads it before it is written.
            unsafe { self.write(tail, msg) };
            return Ok(());
        }
        self.push_contended(msg)
    }

    #[cold]
    #[inline(never)]
    fn push_contended(&self, msg: T) -> Result<(), PushError<T>> {
        let tail_end = &self.tail.0;
        let mut tail = tail_end.index.load(SeqCst);
        loop {
            if tail & CLOSED != 0 {
                return Err(PushError::Closed(msg));
            }
            // A stale `tail` can make these differences wrong, never the claim below: its
            // compare-and-swap fails and the loop starts over with the current tail.
            if tail.saturating_sub(tail_end.other_seen.load(Relaxed)) >= self.capacity {
                let head = self.head.0.index.load(SeqCst);
                tail_end.other_seen.store(head, Relaxed);
                if tail.saturating_sub(head) >= self.capacity {
                    // Closed wins over full, so a sender woken by `close` stops waiting.
                    return Err(if self.is_closed() {
                        PushError::Closed(msg)
                    } else {
                        PushError::Full(msg)
                    });
                }
            }
            match tail_end
                .index
                .compare_exchange_weak(tail, tail + 1, SeqCst, SeqCst)
            {
                Ok(_) => break,
                Err(now) => tail = now,
            }
        }
        // SAFETY: this thread claimed `tail`; nobody reads it before it is written.
        unsafe { self.write(tail, msg) };
        Ok(())
    }

    /// Adds `msg` at the back; while the queue is full, takes the oldest message out and
    /// hands it to `displaced` first. Usually one message is displaced; when other pushes
    /// take the room a displacement made, more are, so the queue never passes capacity and
    /// every displaced message reaches `displaced`. Hands `msg` back if the queue is
    /// closed.
    pub(crate) fn force_push(&self, mut msg: T, mut displaced: impl FnMut(T)) -> Result<(), T> {
        loop {
            match self.push(msg) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(back)) => return Err(back),
                Err(PushError::Full(back)) => msg = back,
            }
            if let Ok(oldest) = self.pop() {
                displaced(oldest);
            }
        }
    }

    /// Takes the message at the front, if there is one. After [`close`](Self::close),
    /// still returns what is queued, then `Closed`.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Result<T, PopError> {
        let head_end = &self.head.0;
        let head = head_end.index.load(SeqCst);
        // The common case, kept small enough to inline: a message by the cached tail, and
        // no other pop in between.
        if head < head_end.other_seen.load(Relaxed)
            && head_end
                .index
                .compare_exchange(head, head + 1, SeqCst, Relaxed)
                .is_ok()
        {
            // SAFETY: this thread claimed `head`, below the tail, so a push claimed it too.
            return Ok(unsafe { self.take(head) });
        }
        self.pop_contended()
    }

    #[cold]
    #[inline(never)]
    fn pop_contended(&self) -> Result<T, PopError> {
        let head_end = &self.head.0;
        let mut head = head_end.index.load(SeqCst);
        loop {
            self.queued_to(head)?;
            match head_end
                .index
                .compare_exchange_weak(head, head + 1, SeqCst, SeqCst)
            {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        // SAFETY: this thread claimed `head`, below the tail, so a push claimed it too.
        Ok(unsafe { self.take(head) })
    }

    /// How far messages are queued as seen from `head`: the cached tail while `head` is
    /// below it, else the tail read afresh (and cached); `Err` when nothing is queued at
    /// `head`.
    #[inline]
    fn queued_to(&self, head: u64) -> Result<u64, PopError> {
        let head_end = &self.head.0;
        let cached = head_end.other_seen.load(Relaxed);
        if head < cached {
            return Ok(cached);
        }
        let tail = self.tail.0.index.load(SeqCst);
        let tail_index = tail & !CLOSED;
        head_end.other_seen.store(tail_index, Relaxed);
        // `head` was read before `tail`, so equal means empty when `tail` was read.
        if head >= tail_index {
            return Err(if tail & CLOSED != 0 {
                PopError::Closed
            } else {
                PopError::Empty
            });
        }
        Ok(tail_index)
    }

    /// Appends up to `max` messages to `batch` in queue order; returns how many. The whole
    /// run is claimed in one step, so a consumer emptying a busy queue pays one contended
    /// exchange per batch instead of one per message.
    pub(crate) fn pop_batch(&self, batch: &mut Vec<T>, max: usize) -> Result<usize, PopError> {
        if max == 0 {
            return Ok(0);
        }
        let head_end = &self.head.0;
        let mut head = head_end.index.load(SeqCst);
        loop {
            let queued_to = self.queued_to(head)?;
            let claim = (queued_to - head).min(max as u64);
            match head_end
                .index
                .compare_exchange_weak(head, head + claim, SeqCst, SeqCst)
            {
                Ok(_) => {
                    batch.reserve(claim as usize);
                    for index in head..head + claim {
                        // SAFETY: this thread claimed every index of the run, all below the
                        // tail, so a push claimed each of them too.
                        batch.push(unsafe { self.take(index) });
                    }
                    return Ok(claim as usize);
                }
                Err(now) => head = now,
            }
        }
    }

    /// Messages queued, counting pushes under way and not pops under way; never above
    /// capacity.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        // Head first: the difference can only come out high, and is then capped.
        let head = self.head.0.index.load(SeqCst);
        let tail = self.tail.0.index.load(SeqCst) & !CLOSED;
        tail.saturating_sub(head).min(self.capacity) as usize
    }

    /// Whether nothing is queued right now.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every push that ever claimed a place, counted at the claim: before the message can be
    /// popped, so a pop seen by another thread implies its push is counted here too.
    pub(crate) fn pushed(&self) -> u64 {
        self.tail.0.index.load(SeqCst) & !CLOSED
    }

    /// Whether the queue holds `capacity` messages right now.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity as usize
    }

    /// Refuses every later push; pops still take what is queued. Returns whether this call
    /// closed the queue.
    pub(crate) fn close(&self) -> bool {
        self.tail.0.index.fetch_or(CLOSED, SeqCst) & CLOSED == 0
    }

    /// Whether [`close`](Self::close) has been called.
    pub(crate) fn is_closed(&self) -> bool {
        self.tail.0.index.load(SeqCst) & CLOSED != 0
    }

    #[inline]
    fn block_slots(&self) -> usize {
        self.offset_mask as usize + 1
    }

    #[inline(always)]
    fn entry(&self, block: u64) -> &AtomicUsize {
        let entry = (block & self.entry_mask) as usize;
        debug_assert!(entry < self.table.len());
        // SAFETY: the table's length is `entry_mask + 1`.
        unsafe { self.table.get_unchecked(entry) }
    }

    #[inline(always)]
    fn generation(&self, block: u64) -> usize {
        (block >> self.table_shift) as usize & GENERATION_MASK
    }

    /// SAFETY: the caller must have claimed `index` with a push.
    #[inline(always)]
    unsafe fn write(&self, index: u64, msg: T) {
        let block = index >> self.block_shift;
        let slot = self.slot(index);
        debug_assert!(
            slot.state.load(Relaxed) & FLAGS == 0 || slot.state.load(Relaxed) >> 2 != block,
            "slot written twice"
        );
        (*slot.value.get()).write(msg);
        slot.state.store(block << 2 | WRITTEN, Release);
    }

    /// SAFETY: the caller must have claimed `index` with a pop.
    #[inline(always)]
    unsafe fn take(&self, index: u64) -> T {
        let block = index >> self.block_shift;
        let slot = self.slot(index);
        let written = block << 2 | WRITTEN;
        if slot.state.load(Acquire) != written {
            wait_until(slot, written);
        }
        let msg = (*slot.value.get()).assume_init_read();
        let last_of_block = index & self.offset_mask == self.offset_mask;
        // After this store the slot, and perhaps its block, may be freed by another thread.
        slot.state.store(block << 2 | READ, Release);
        if last_of_block {
            self.free_read_blocks(block);
        }
        msg
    }

    /// The slot of a claimed index; the claim keeps its block from being freed.
    #[inline(always)]
    unsafe fn slot(&self, index: u64) -> &Slot<T> {
        let block = self.block(index >> self.block_shift);
        &*block.add((index & self.offset_mask) as usize)
    }

    /// Block `block`'s slots. Only for a thread holding a claimed index in `block`.
    #[inline(always)]
    fn block(&self, block: u64) -> *const Slot<T> {
        let value = self.entry(block).load(Acquire);
        // Installed (an address above the generation bits) and of this generation.
        if value & GENERATION_MASK == self.generation(block) && value > GENERATION_MASK {
            return (value & !GENERATION_MASK) as *const Slot<T>;
        }
        self.install_block(block)
    }

    /// Installs block `block` once its table entry is waiting for it (or finds it installed
    /// by another thread meanwhile).
    #[cold]
    #[inline(never)]
    fn install_block(&self, block: u64) -> *const Slot<T> {
        let entry = self.entry(block);
        let generation = self.generation(block);
        let mut backoff = Backoff::default();
        loop {
            let value = entry.load(Acquire);
            if value & GENERATION_MASK == generation {
                let address = value & !GENERATION_MASK;
                if address != 0 {
                    return address as *const Slot<T>;
                }
                let fresh = self.allocate_block();
                match entry.compare_exchange(value, fresh as usize | generation, AcqRel, Acquire) {
                    Ok(_) => return fresh,
                    // SAFETY: never published; another thread installed the block first.
                    Err(_) => unsafe { self.retire_block(fresh) },
                }
            } else {
                // The entry still holds the previous round's block, whose last pops are
                // still reading (or, after a preemption, not yet installed and freed).
                self.free_read_blocks(block.saturating_sub(1 << self.table_shift));
                backoff.snooze();
            }
        }
    }

    /// Frees, oldest first and up to `up_to`, every block whose slots have all been read.
    /// One thread at a time; a thread that finds another at it leaves the work to it, and
    /// whatever it could not free yet is tried again at the next block's end.
    #[inline(never)]
    fn free_read_blocks(&self, up_to: u64) {
        let reclaim = &self.reclaim.0;
        if reclaim.busy.swap(true, Acquire) {
            return;
        }
        let mut next = reclaim.next_block.load(Relaxed);
        while next <= up_to {
            let entry = self.entry(next);
            let generation = self.generation(next);
            let value = entry.load(Acquire);
            let address = value & !GENERATION_MASK;
            if value & GENERATION_MASK != generation || address == 0 {
                break;
            }
            let slots = address as *mut Slot<T>;
            // SAFETY: only this (the reclaiming) thread frees blocks, and `next` is not freed.
            // Relaxed loads and one fence: every read that marked its slot happened before
            // the block is freed.
            let read = next << 2 | READ;
            let all_read = (0..self.block_slots())
                .all(|i| unsafe { (*slots.add(i)).state.load(Relaxed) } == read);
            if !all_read {
                break;
            }
            fence(Acquire);
            // Every slot was claimed, written and read, so nobody else will touch it again.
            entry.store((generation + 1) & GENERATION_MASK, Release);
            // SAFETY: unpublished above, and no thread holds a claim in it.
            unsafe { self.retire_block(slots) };
            next += 1;
        }
        reclaim.next_block.store(next, Relaxed);
        reclaim.busy.store(false, Release);
    }

    fn block_layout(&self) -> Layout {
        Layout::array::<Slot<T>>(self.block_slots())
            .and_then(|layout| layout.align_to(BLOCK_ALIGN))
            .expect("a block's size fits in memory")
    }

    /// A spare block if there is one, else a new one.
    fn allocate_block(&self) -> *mut Slot<T> {
        for spare in &self.reclaim.0.spares {
            if spare.load(Relaxed) != 0 {
                let block = spare.swap(0, Acquire);
                if block != 0 {
                    return block as *mut Slot<T>;
                }
            }
        }
        let layout = self.block_layout();
        // SAFETY: the layout has a non-zero size (a slot holds at least its state).
        // Zeroed memory is a valid block: no state matches any block, no value is read.
        let block = unsafe { alloc_zeroed(layout) };
        if block.is_null() {
            handle_alloc_error(layout);
        }
        block.cast()
    }

    /// Keeps `block` as a spare if there is room for one, else frees it.
    ///
    /// SAFETY: `block` came from `allocate_block`, holds no unread message, and no other
    /// thread can reach it.
    unsafe fn retire_block(&self, block: *mut Slot<T>) {
        for spare in &self.reclaim.0.spares {
            if spare
                .compare_exchange(0, block as usize, Release, Relaxed)
                .is_ok()
            {
                return;
            }
        }
        self.free_block(block);
    }

    /// SAFETY: as for [`retire_block`](Self::retire_block).
    unsafe fn free_block(&self, block: *mut Slot<T>) {
        dealloc(block.cast(), self.block_layout());
    }
}

impl<T> Drop for BlockQueue<T> {
    fn drop(&mut self) {
        let block_slots = self.block_slots();
        for i in 0..self.table.len() {
            let address = *self.table[i].get_mut() & !GENERATION_MASK;
            if address == 0 {
                continue;
            }
            let slots = address as *mut Slot<T>;
            for offset in 0..block_slots {
                // SAFETY: `&mut self`: no other thread is inside the queue, and a written,
                // unread slot holds an initialised message nobody else owns.
                unsafe {
                    let slot = &mut *slots.add(offset);
                    // Only the block's own use can have left a written, unread slot: a
                    // block is reused only once every slot was read.
                    if *slot.state.get_mut() & FLAGS == WRITTEN {
                        slot.value.get_mut().assume_init_drop();
                    }
                }
            }
            // SAFETY: as above; the block is dropped with its entry.
            unsafe { self.free_block(slots) };
        }
        let spares = self
            .reclaim
            .0
            .spares
            .each_mut()
            .map(|spare| *spare.get_mut());
        for spare in spares {
            if spare != 0 {
                // SAFETY: a spare holds no message and nothing else refers to it.
                unsafe { self.free_block(spare as *mut Slot<T>) };
            }
        }
    }
}

/// The push that claimed the slot's index has not finished writing it.
#[cold]
#[inline(never)]
fn wait_until<T>(slot: &Slot<T>, written: u64) {
    let mut backoff = Backoff::default();
    while slot.state.load(Acquire) != written {
        backoff.snooze();
    }
}

/// A table of vacant entries waiting for generation 0. Allocated zeroed, so its pages are
/// only touched as the queue reaches them: an unused capacity costs no resident memory.
fn zeroed_table(len: usize) -> Box<[AtomicUsize]> {
    let zeroed = vec![0usize; len].into_boxed_slice();
    // SAFETY: `AtomicUsize` has the same size, alignment and bit validity as `usize`.
    unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [AtomicUsize]) }
}

/// Spins briefly, then yields: for the short waits on another thread's write, read or free.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
        if self.0 < 6 {
            for _ in 0..1 << self.0 {
                std::hint::spin_loop();
            }
            self.0 += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};
    use std::thread;

    impl<T> BlockQueue<T> {
        /// `tail - head` read consistently (the tail unchanged around the head read): the
        /// indices claimed by pushes and not yet by pops at one instant.
        fn claimed_now(&self) -> u64 {
            loop {
                let tail = self.tail.0.index.load(SeqCst) & !CLOSED;
                let head = self.head.0.index.load(SeqCst);
                if self.tail.0.index.load(SeqCst) & !CLOSED == tail {
                    return tail - head;
                }
            }
        }

        /// What the next block end would free: a pop still reading when the last block end
        /// was crossed may have left read blocks behind.
        fn free_what_was_read(&self) {
            self.free_read_blocks(self.head.0.index.load(SeqCst) >> self.block_shift);
        }

        fn blocks_installed(&self) -> usize {
            self.table
                .iter()
                .filter(|entry| entry.load(SeqCst) & !GENERATION_MASK != 0)
                .count()
        }
    }

    #[test]
    fn holds_up_to_capacity_in_order() {
        let queue = BlockQueue::new(100);
        for i in 0..100 {
            queue.push(i).unwrap();
        }
        assert!(queue.is_full());
        assert_eq!(queue.push(100), Err(PushError::Full(100)));
        assert_eq!(queue.len(), 100);
        let got: Vec<_> = (0..100).map(|_| queue.pop().unwrap()).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(queue.pop(), Err(PopError::Empty));
        assert!(queue.is_empty());
    }

    #[test]
    fn an_empty_queue_holds_no_block_and_a_drained_one_keeps_at_most_one() {
        let queue = BlockQueue::new(16_777_216);
        assert_eq!(queue.blocks_installed(), 0);
        let block_slots = queue.block_slots() as u64;
        for round in 0..3 {
            for i in 0..10 * block_slots + 7 {
                queue.push(i).unwrap();
            }
            assert!(queue.blocks_installed() >= 10, "round {round}");
            for i in 0..10 * block_slots + 7 {
                assert_eq!(queue.pop(), Ok(i));
            }
            assert!(queue.blocks_installed() <= 1, "round {round}");
        }
    }

    #[test]
    fn rounds_through_the_table_reuse_its_entries() {
        // Capacity 3 with 32-slot (or larger) blocks: a two-entry table, lapped many times.
        let queue = BlockQueue::new(3);
        let laps = 50 * queue.table.len() as u64 * queue.block_slots() as u64;
        for i in 0..laps {
            queue.push(i).unwrap();
            if i % 3 == 2 {
                assert_eq!(queue.push(u64::MAX), Err(PushError::Full(u64::MAX)));
                for j in i - 2..=i {
                    assert_eq!(queue.pop(), Ok(j));
                }
            }
        }
        queue.free_what_was_read();
        assert!(queue.blocks_installed() <= 1);
    }

    #[test]
    fn a_freed_place_can_be_taken_again() {
        let queue = BlockQueue::new(1);
        for i in 0..1_000 {
            queue.push(i).unwrap();
            assert_eq!(queue.push(-1), Err(PushError::Full(-1)));
            assert_eq!(queue.pop(), Ok(i));
        }
    }

    #[test]
    fn close_refuses_pushes_and_still_drains() {
        let queue = BlockQueue::new(2);
        queue.push(1).unwrap();
        queue.push(2).unwrap();
        assert!(queue.close());
        assert!(!queue.close());
        assert!(queue.is_closed());
        // Closed wins over full.
        assert_eq!(queue.push(3), Err(PushError::Closed(3)));
        assert_eq!(queue.force_push(4, |_| panic!("displaced")), Err(4));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop(), Ok(1));
        assert_eq!(queue.push(5), Err(PushError::Closed(5)));
        assert_eq!(queue.pop(), Ok(2));
        assert_eq!(queue.pop(), Err(PopError::Closed));
        assert!(queue.is_empty());
    }

    #[test]
    fn force_push_displaces_the_oldest_only_when_full() {
        let queue = BlockQueue::new(3);
        let mut displaced = Vec::new();
        for i in 0..5 {
            queue
                .force_push(i, |oldest| displaced.push(oldest))
                .unwrap();
        }
        assert_eq!(displaced, [0, 1]);
        assert_eq!(queue.len(), 3);
        let got: Vec<_> = (0..3).map(|_| queue.pop().unwrap()).collect();
        assert_eq!(got, [2, 3, 4]);
    }

    #[test]
    fn unread_messages_are_dropped_with_the_queue() {
        let marker = Arc::new(());
        let queue = BlockQueue::new(10_000);
        for _ in 0..5_000 {
            queue.push(Arc::clone(&marker)).unwrap();
        }
        for _ in 0..3_000 {
            drop(queue.pop().unwrap());
        }
        drop(queue);
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn zero_sized_messages_are_counted_like_any_other() {
        let queue = BlockQueue::new(5);
        for _ in 0..5 {
            queue.push(()).unwrap();
        }
        assert_eq!(queue.push(()), Err(PushError::Full(())));
        assert_eq!(queue.pop(), Ok(()));
        assert_eq!(queue.len(), 4);
    }

    /// Producers and consumers at once, over many blocks and table rounds: every message
    /// comes out exactly once, each producer's in order, and the claimed indices never pass
    /// capacity.
    #[test]
    fn many_producers_and_consumers_move_every_message_once() {
        const PRODUCERS: u64 = 4;
        const CONSUMERS: usize = 3;
        const PER_PRODUCER: u64 = 50_000;
        const CAPACITY: usize = 37;
        let queue = Arc::new(BlockQueue::new(CAPACITY));
        let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    for i in 0..PER_PRODUCER {
                        let mut msg = p * PER_PRODUCER + i;
                        loop {
                            match queue.push(msg) {
                                Ok(()) => break,
                                Err(PushError::Full(back)) => msg = back,
                                Err(PushError::Closed(_)) => panic!("closed"),
                            }
                            assert!(queue.claimed_now() <= CAPACITY as u64);
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        // One consumer pops one at a time, the others claim runs of different lengths.
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|consumer| {
                let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    let mut got = Vec::new();
                    loop {
                        let taken = if consumer == 0 {
                            queue.pop().map(|msg| got.push(msg))
                        } else {
                            queue.pop_batch(&mut got, consumer * 5).map(drop)
                        };
                        match taken {
                            Ok(()) => {}
                            Err(PopError::Empty) => thread::yield_now(),
                            Err(PopError::Closed) => return got,
                        }
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        queue.close();
        let mut seen = HashSet::new();
        for consumer in consumers {
            let got = consumer.join().unwrap();
            let mut last = vec![None; PRODUCERS as usize];
            for msg in got {
                let producer = (msg / PER_PRODUCER) as usize;
                assert!(last[producer] < Some(msg), "out of order: {msg}");
                last[producer] = Some(msg);
                assert!(seen.insert(msg), "{msg} came out twice");
            }
        }
        assert_eq!(seen.len() as u64, PRODUCERS * PER_PRODUCER);
        assert!(queue.is_empty());
        queue.free_what_was_read();
        assert!(queue.blocks_installed() <= 1);
    }

    /// Large messages make blocks of 32 slots, so producers and consumers cross a block end
    /// every few messages and go round a small table all the time: installing, freeing,
    /// reusing spares and waiting for a previous round's block all happen under
    /// contention. Every message comes out once, intact.
    #[test]
    fn large_messages_cross_block_ends_under_contention() {
        const PRODUCERS: u64 = 3;
        const CONSUMERS: usize = 3;
        const PER_PRODUCER: u64 = 20_000;
        let queue = Arc::new(BlockQueue::<[u64; 64]>::new(40));
        assert_eq!(queue.block_slots(), MIN_BLOCK_SLOTS);
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        let mut msg = [p * PER_PRODUCER + i; 64];
                        loop {
                            match queue.push(msg) {
                                Ok(()) => break,
                                Err(PushError::Full(back)) => msg = back,
                                Err(PushError::Closed(_)) => panic!("closed"),
                            }
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        match queue.pop() {
                            Ok(msg) => {
                                assert!(msg.iter().all(|&word| word == msg[0]), "torn message");
                                got.push(msg[0]);
                            }
                            Err(PopError::Empty) => thread::yield_now(),
                            Err(PopError::Closed) => return got,
                        }
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        queue.close();
        let mut seen = HashSet::new();
        for consumer in consumers {
            for msg in consumer.join().unwrap() {
                assert!(seen.insert(msg), "{msg} came out twice");
            }
        }
        assert_eq!(seen.len() as u64, PRODUCERS * PER_PRODUCER);
        queue.free_what_was_read();
        assert!(queue.blocks_installed() <= 1);
    }

    /// Displacing producers against a consumer: every message is either received or
    /// displaced, exactly once, and the claimed indices never pass capacity, as seen by a
    /// thread watching throughout.
    #[test]
    fn force_push_never_exceeds_capacity_and_loses_nothing() {
        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 50_000;
        const CAPACITY: usize = 8;
        let queue = Arc::new(BlockQueue::new(CAPACITY));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
            thread::spawn(move || {
                let mut checks = 0u64;
                while !done.load(SeqCst) {
                    let claimed = queue.claimed_now();
                    assert!(claimed <= CAPACITY as u64, "{claimed} claimed");
                    assert!(queue.len() <= CAPACITY);
                    checks += 1;
                }
                checks
            })
        };
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    let mut displaced = Vec::new();
                    for i in 0..PER_PRODUCER {
                        queue
                            .force_push(p * PER_PRODUCER + i, |oldest| displaced.push(oldest))
                            .unwrap();
                    }
                    displaced
                })
            })
            .collect();
        let consumer = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match queue.pop() {
                        Ok(msg) => got.push(msg),
                        Err(PopError::Empty) => thread::yield_now(),
                        Err(PopError::Closed) => return got,
                    }
                }
            })
        };
        let mut seen = HashSet::new();
        let mut displaced = 0;
        for producer in producers {
            for msg in producer.join().unwrap() {
                assert!(seen.insert(msg), "{msg} displaced twice");
                displaced += 1;
            }
        }
        queue.close();
        let got = consumer.join().unwrap();
        done.store(true, SeqCst);
        assert!(watcher.join().unwrap() > 0);
        for &msg in &got {
            assert!(
                seen.insert(msg),
                "{msg} both received and displaced, or twice"
            );
        }
        assert_eq!(seen.len() as u64, PRODUCERS * PER_PRODUCER);
        assert!(
            displaced > 0,
            "the producers should have outrun the consumer"
        );
        assert!(queue.is_empty());
    }

    /// Plain and displacing pushes racing for the last places: the bound holds for both,
    /// and every message is received, displaced, refused or still queued.
    #[test]
    fn plain_and_displacing_pushes_share_the_bound() {
        const PER_THREAD: u64 = 30_000;
        const CAPACITY: usize = 4;
        let queue = Arc::new(BlockQueue::new(CAPACITY));
        let plain = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..PER_THREAD {
                    match queue.push(i) {
                        Ok(()) => {}
                        Err(PushError::Full(_)) => refused += 1,
                        Err(PushError::Closed(_)) => panic!("closed"),
                    }
                    assert!(queue.claimed_now() <= CAPACITY as u64);
                }
                refused
            })
        };
        let displacing = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let mut displaced = 0u64;
                for i in 0..PER_THREAD {
                    queue
                        .force_push(PER_THREAD + i, |_| displaced += 1)
                        .unwrap();
                    assert!(queue.claimed_now() <= CAPACITY as u64);
                }
                displaced
            })
        };
        let mut received = 0u64;
        while !(plain.is_finished() && displacing.is_finished()) {
            if queue.pop().is_ok() {
                received += 1;
            }
        }
        let (refused, displaced) = (plain.join().unwrap(), displacing.join().unwrap());
        let left = queue.len() as u64;
        assert!(left <= CAPACITY as u64);
        assert_eq!(received + displaced + refused + left, 2 * PER_THREAD);
    }

    /// Messages that own memory, pushed and popped from many threads and left over at the
    /// end: each is dropped exactly once (a double drop or a leak changes the count).
    #[test]
    fn every_message_is_dropped_exactly_once_under_contention() {
        let marker = Arc::new(());
        let queue = Arc::new(BlockQueue::new(50));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (queue, marker) = (Arc::clone(&queue), Arc::clone(&marker));
                thread::spawn(move || {
                    for i in 0..20_000 {
                        if (i + w) % 3 == 0 {
                            drop(queue.pop());
                        } else if w % 2 == 0 {
                            let _ = queue.push(Arc::clone(&marker));
                        } else {
                            let _ = queue.force_push(Arc::clone(&marker), drop);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(Arc::strong_count(&marker), 1 + queue.len());
        drop(queue);
        assert_eq!(Arc::strong_count(&marker), 1);
    }
}
