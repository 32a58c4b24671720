//! Channel memory follows occupancy, not capacity: empty channels at the largest capacity
//! cost next to nothing, memory grows as a channel fills and is given back as it drains.
//!
//! Live heap bytes are counted by a wrapping allocator, so the figures are exact whatever
//! the system allocator keeps for itself; the resident set is checked as well, since that
//! is what an operator sees. The tests share the counter, so they run one at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tasker_channels_core::{ChannelInfo, Monitor, MonitoredChannel, OverflowPolicy, SendOutcome};

struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    // Forwarded so zeroed allocations keep the system's untouched zero pages, as in a build
    // without this counter.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The largest capacity configuration accepts.
const LARGEST_CAPACITY: usize = 16_777_216;
const MB: usize = 1024 * 1024;
/// What one block of `u64` messages takes at the largest capacity (2,048 slots of 16
/// bytes).
const BLOCK: usize = 32 * 1024;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's second field is the resident page count");
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page_size).expect("a positive page size")
}

fn channel(name: &str, capacity: usize, policy: OverflowPolicy) -> MonitoredChannel<u64> {
    MonitoredChannel::from_info(
        ChannelInfo {
            name: name.into(),
            component: "worker".into(),
            capacity,
            overflow: policy,
            send_timeout: None,
        },
        &Monitor::new(0.8, std::time::Duration::ZERO),
    )
}

#[test]
fn empty_channels_at_the_largest_capacity_take_next_to_no_memory() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (heap_before, resident_before) = (live_bytes(), resident_bytes());
    let channels: Vec<_> = (0..8)
        .map(|i| {
            channel(
                &format!("worker.channel_{i}"),
                LARGEST_CAPACITY,
                OverflowPolicy::Block,
            )
        })
        .collect();
    let heap_growth = live_bytes() - heap_before;
    let resident_growth = resident_bytes().saturating_sub(resident_before);
    // Each channel's block table (a pointer per 2,048 slots, rounded up to a power of two:
    // 128 KiB here) and nothing for messages; its pages stay untouched until used.
    assert!(
        heap_growth < 2 * MB,
        "8 empty channels took {heap_growth} heap bytes"
    );
    assert!(
        resident_growth < 50 * MB,
        "8 empty channels grew the resident set by {resident_growth} bytes"
    );

    for (i, ch) in channels.iter().enumerate() {
        assert_eq!(ch.capacity(), LARGEST_CAPACITY);
        assert_eq!(ch.send(i as u64).unwrap(), SendOutcome::Sent);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch.try_recv(), Ok(i as u64));
        assert!(ch.is_empty());
    }
}

/// A channel of `capacity` holding the messages `0..queued`, and the bytes live just before
/// the first was sent.
fn filled(capacity: usize, policy: OverflowPolicy, queued: u64) -> (MonitoredChannel<u64>, usize) {
    let ch = channel("worker.command_processor", capacity, policy);
    let empty = live_bytes();
    for i in 0..queued {
        assert!(ch.send(i).unwrap().is_sent());
    }
    (ch, empty)
}

#[test]
fn memory_grows_with_what_is_queued_and_is_given_back_as_it_drains() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    const QUEUED: u64 = 1_000_000;
    let (ch, empty) = filled(LARGEST_CAPACITY, OverflowPolicy::Block, QUEUED);
    let full = live_bytes() - empty;
    let per_message = full as f64 / QUEUED as f64;
    // A u64 and its slot state, plus a share of the block header; far below what the whole
    // capacity would cost, and not less than the messages themselves.
    assert!(
        (16.0..20.0).contains(&per_message),
        "{QUEUED} queued u64s took {full} bytes ({per_message:.1} a message)"
    );
    for i in 0..QUEUED {
        assert_eq!(ch.try_recv(), Ok(i));
    }
    let left = live_bytes().saturating_sub(empty);
    // The block the next message goes into stays, and two freed blocks are kept to reuse;
    // every other block is freed. The allocation counter is the process's: a few bytes of
    // slack for what the logging machinery allocates on first use meanwhile.
    assert!(
        left <= 3 * BLOCK + 1024,
        "a drained channel still holds {left} bytes"
    );
}

#[test]
fn a_full_channel_holds_exactly_its_capacity_in_memory() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    const CAPACITY: usize = 100_000;
    let (ch, empty) = filled(CAPACITY, OverflowPolicy::DropOldest, CAPACITY as u64);
    let at_capacity = live_bytes() - empty;
    // Displacing the oldest keeps the channel at capacity: memory moves along, never grows.
    for i in 0..10 * CAPACITY as u64 {
        assert!(ch.send(CAPACITY as u64 + i).unwrap().is_sent());
        assert_eq!(ch.len(), CAPACITY);
    }
    let after_displacing = live_bytes() - empty;
    // The messages straddle one block boundary more or less as they move along.
    assert!(
        after_displacing <= at_capacity + BLOCK,
        "displacing grew the channel from {at_capacity} to {after_displacing} bytes"
    );
    assert_eq!(ch.stats().dropped, 10 * CAPACITY as u64);
    assert_eq!(ch.try_recv(), Ok(10 * CAPACITY as u64));
}
