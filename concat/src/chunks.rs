//! The builder's storage: an optional read-only prefix (the string the last
//! `dump()` returned, which the builder keeps as the start of its content
//! instead of its chunks) followed by a singly linked list of chunks
//! allocated through the Lua state's allocator.
//!
//! Invariants (every function below keeps them):
//! * `first..=last` is a list linked by `next`; `last.next` is null. With no
//!   chunk, `first` and `last` are null and `cur == end`.
//! * The content is `prefix[..prefix_len]`, then the whole data areas of the
//!   chunks before `last` (they are full), then `last.data[..cur - last.data]`.
//!   So no per-chunk length is stored, and an append never touches data
//!   already written.
//! * `len` is the total content length; `last.data <= cur <= end = last.data + last.cap`.
//!
//! Nothing here calls Lua except through the allocator function, which is a
//! plain allocator (it never runs Lua code or raises errors). So no Lua error
//! can start inside this module, and a caller may raise one as soon as a
//! function returns: every function leaves the buffer consistent.

use mlua::ffi::{lua_Alloc, lua_State, lua_getallocf};
use std::ffi::c_void;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Smallest first chunk: small builders (a header line, a short message)
/// stay in one allocation of about this size.
pub const FIRST_CHUNK: usize = 256;

/// Largest first chunk sized from [`SIZE_HINT`].
pub const MAX_FIRST_CHUNK: usize = 64 << 10;

/// Chunks grow with the content (each new chunk is as large as everything
/// before it, so the capacity doubles and the number of chunks is
/// logarithmic) up to this size; beyond it, chunks stay this large so the
/// slack of the last chunk is bounded.
pub const MAX_CHUNK: usize = 1 << 20;

/// Length of the last string a builder dumped, in this process. A builder's
/// first chunk is sized from it (plus 1/8), so that a loop building strings
/// of similar sizes — the common case — fills one chunk and `dump()` copies
/// the content once instead of merging chunks first. A mere heuristic:
/// relaxed ordering, shared by all states and threads; a wrong guess costs
/// at most [`MAX_FIRST_CHUNK`] of slack while a builder is being filled.
static SIZE_HINT: AtomicUsize = AtomicUsize::new(0);

/// Records the length of a dumped string for [`SIZE_HINT`].
pub fn note_result_len(len: usize) {
    SIZE_HINT.store(len, Ordering::Relaxed);
}

fn first_chunk_size() -> usize {
    let hint = SIZE_HINT.load(Ordering::Relaxed);
    hint.saturating_add(hint / 8)
        .clamp(FIRST_CHUNK, MAX_FIRST_CHUNK)
}

/// An allocation failed (the allocator returned null, or a size overflowed).
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// The allocation function of a Lua state, with its opaque argument.
///
/// Chunks are allocated here rather than with Rust's global allocator so that
/// a host that bounds a state's memory by wrapping its allocator (HAProxy's
/// `tune.lua.maxmem`, mlua's `set_memory_limit`) bounds builders too.
pub struct Allocator {
    f: lua_Alloc,
    ud: *mut c_void,
}

impl Allocator {
    /// The current allocator of `L`. It is fetched for each operation rather
    /// than cached in the builder: `lua_setallocf` may replace it, and Lua
    /// itself always frees with the current one (a replacement must accept
    /// blocks of the previous one), so doing the same is always right.
    ///
    /// # Safety
    /// `L` must be a valid Lua state.
    pub unsafe fn of(L: *mut lua_State) -> Self {
        let mut ud = ptr::null_mut();
        // SAFETY: `L` is valid (caller's contract); `ud` is a valid out-pointer.
        let f = unsafe { lua_getallocf(L, &mut ud) };
        Allocator { f, ud }
    }

    /// An allocator from a raw allocation function (tests use a counting one).
    ///
    /// # Safety
    /// `f` must behave as Lua's `lua_Alloc` contract says, with `ud`.
    #[cfg(test)]
    pub unsafe fn from_raw(f: lua_Alloc, ud: *mut c_void) -> Self {
        Allocator { f, ud }
    }

    /// A new block of `size` bytes, or null.
    unsafe fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: lua_Alloc contract: with a null block, `osize` is a type tag
        // (0: not a Lua object), and the result is a fresh block or null.
        unsafe { (self.f)(self.ud, ptr::null_mut(), 0, size).cast() }
    }

    /// Frees a block returned by `alloc(size)`.
    unsafe fn free(&self, block: *mut u8, size: usize) {
        // SAFETY: lua_Alloc contract: `nsize == 0` frees `block`, whose size
        // was `osize`; the caller passes the size it allocated.
        unsafe { (self.f)(self.ud, block.cast(), size, 0) };
    }
}

/// A chunk header; its data area follows it in the same block.
#[repr(C)]
struct Chunk {
    next: *mut Chunk,
    /// Size of the data area.
    cap: usize,
}

const HEADER: usize = size_of::<Chunk>();

impl Chunk {
    /// Allocates a chunk with a data area of `cap` bytes.
    unsafe fn new(a: &Allocator, cap: usize) -> Result<*mut Chunk, OutOfMemory> {
        let size = cap.checked_add(HEADER).ok_or(OutOfMemory)?;
        // SAFETY: a plain allocation; checked for null below.
        let block = unsafe { a.alloc(size) }.cast::<Chunk>();
        if block.is_null() {
            return Err(OutOfMemory);
        }
        // SAFETY: the block is fresh, large enough for the header, and Lua
        // allocators return blocks aligned for any basic type (like malloc).
        unsafe {
            block.write(Chunk {
                next: ptr::null_mut(),
                cap,
            })
        };
        Ok(block)
    }

    /// Start of the data area.
    unsafe fn data(this: *mut Chunk) -> *mut u8 {
        // SAFETY: the data area directly follows the header in the block.
        unsafe { this.cast::<u8>().add(HEADER) }
    }

    /// Frees the chunk.
    unsafe fn free(this: *mut Chunk, a: &Allocator) {
        // SAFETY: `this` came from `Chunk::new` with this size.
        unsafe {
            let size = (*this).cap + HEADER;
            a.free(this.cast(), size);
        }
    }
}

/// `copy_nonoverlapping` for the short pieces a builder typically gets: a
/// call to `memcpy` costs about as much as the rest of an append, so up to 16
/// bytes are copied inline with two (possibly overlapping) loads and stores.
///
/// # Safety
/// As `ptr::copy_nonoverlapping(src, dst, n)`.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: every access is within `src[..n]` / `dst[..n]`: for n in 8..=16
    // the two 8-byte words start at 0 and n - 8; for 4..8, the two 4-byte
    // words at 0 and n - 4; for 1..4, bytes 0, n / 2 and n - 1. Unaligned
    // accesses are explicit. The ranges don't overlap (caller).
    unsafe {
        if n > 16 {
            ptr::copy_nonoverlapping(src, dst, n);
        } else if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
    }
}

/// The builder's state, stored in a Lua full userdata (so its own memory is
/// Lua's and its address is stable). Plain data with no `Drop`: a Lua error
/// may unwind past any frame that holds one. The hot fields come first so an
/// append touches a single cache line.
#[repr(C)]
pub struct Buf {
    /// Next write position in `last`. Without chunks it is dangling (not
    /// null: a zero-length copy still needs a non-null pointer), equal to `end`.
    cur: *mut u8,
    /// End of `last`'s data area (equal to `cur` without chunks).
    end: *mut u8,
    /// Total content length, prefix included.
    len: usize,
    first: *mut Chunk,
    last: *mut Chunk,
    /// The bytes of a Lua string that the caller keeps alive (lib.rs stores
    /// it as the userdata's user value) and that starts the content.
    prefix: *const u8,
    prefix_len: usize,
    /// Address of the builder table this buffer belongs to (what
    /// `lua_topointer` returns for it): `add`'s identity check for `self`.
    /// Only compared, never dereferenced.
    pub owner: *const c_void,
    /// Set by the userdata's finalizer (which frees the chunks); see
    /// `after_allocation` in lib.rs.
    pub collected: bool,
}

impl Buf {
    /// The empty buffer with no owner.
    pub const EMPTY: Buf = Buf {
        cur: ptr::dangling_mut(),
        end: ptr::dangling_mut(),
        len: 0,
        first: ptr::null_mut(),
        last: ptr::null_mut(),
        prefix: ptr::null(),
        prefix_len: 0,
        owner: ptr::null(),
        collected: false,
    };

    /// An empty buffer for the builder table at address `owner`.
    pub fn new(owner: *const c_void) -> Buf {
        Buf {
            owner,
            ..Buf::EMPTY
        }
    }

    /// Content length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether any chunk is allocated.
    pub fn has_chunks(&self) -> bool {
        !self.first.is_null()
    }

    /// The prefix (a dumped string's bytes), if any: pointer and length.
    pub fn prefix(&self) -> Option<(*const u8, usize)> {
        (self.prefix_len > 0).then_some((self.prefix, self.prefix_len))
    }

    /// Appends `n` bytes from `src` if they fit in the current chunk; returns
    /// false (and changes nothing) otherwise. This is the hot path of `add`.
    ///
    /// # Safety
    /// `src` must be valid for reading `n` bytes.
    #[inline(always)]
    pub unsafe fn try_push(&mut self, src: *const u8, n: usize) -> bool {
        // Pointer difference as integers: `cur <= end` always holds, and
        // without a chunk both are the same dangling pointer (room 0).
        let room = self.end as usize - self.cur as usize;
        if n > room {
            return false;
        }
        // SAFETY: `cur..cur + n` lies in the last chunk's data area (n <= room),
        // or n == 0 and `cur` is non-null (dangling without chunks);
        // `src` is readable for n bytes (caller) and cannot overlap our chunk,
        // which only this module can reach.
        unsafe {
            copy_bytes(src, self.cur, n);
            self.cur = self.cur.add(n);
        }
        self.len += n;
        true
    }

    /// Appends `n` bytes from `src`, allocating a chunk if they don't fit.
    /// On success returns the number of bytes newly allocated (0 if none); on
    /// failure the buffer is unchanged.
    ///
    /// # Safety
    /// `src` must be valid for reading `n` bytes; `a` must be the allocator
    /// of every chunk already in the buffer.
    pub unsafe fn push(
        &mut self,
        a: &Allocator,
        src: *const u8,
        n: usize,
    ) -> Result<usize, OutOfMemory> {
        // SAFETY: forwarded caller's contract.
        if unsafe { self.try_push(src, n) } {
            return Ok(0);
        }
        let room = self.end as usize - self.cur as usize;
        let rest = n - room;
        let grow = if self.last.is_null() {
            first_chunk_size()
        } else {
            self.len.clamp(FIRST_CHUNK, MAX_CHUNK)
        };
        let cap = rest.max(grow);
        // Allocate before writing anything, so that a failure leaves the
        // buffer exactly as it was.
        // SAFETY: plain allocation through the state's allocator.
        let chunk = unsafe { Chunk::new(a, cap) }?;
        // SAFETY: the first `room` bytes fill the current chunk exactly (if
        // there is none, room is 0 and nothing is copied); the other `rest`
        // go to the new chunk, whose data area holds cap >= rest bytes. The
        // new chunk is linked after `last`, keeping the list invariants.
        unsafe {
            if room > 0 {
                ptr::copy_nonoverlapping(src, self.cur, room);
            }
            if self.last.is_null() {
                self.first = chunk;
            } else {
                (*self.last).next = chunk;
            }
            self.last = chunk;
            let data = Chunk::data(chunk);
            ptr::copy_nonoverlapping(src.add(room), data, rest);
            self.cur = data.add(rest);
            self.end = data.add(cap);
        }
        self.len += n;
        Ok(cap + HEADER)
    }

    /// The content as one contiguous slice, if it is in one piece (only the
    /// prefix, or only one chunk). Borrowing `self` keeps appends away while
    /// the slice lives; the prefix must still be alive (caller of `set_prefix`).
    pub fn contiguous(&self) -> Option<&[u8]> {
        // SAFETY: the prefix is alive (set_prefix's contract); with a single
        // chunk and no prefix, the content is its first `len` bytes, all
        // written.
        unsafe {
            if self.first.is_null() {
                if self.prefix_len == 0 {
                    return Some(&[]);
                }
                return Some(std::slice::from_raw_parts(self.prefix, self.prefix_len));
            }
            if self.first != self.last || self.prefix_len > 0 {
                return None;
            }
            Some(std::slice::from_raw_parts(
                Chunk::data(self.first),
                self.len,
            ))
        }
    }

    /// Moves the whole content (prefix included) into a single chunk of
    /// exactly its size; the prefix is dropped. Returns the bytes newly
    /// allocated; on failure the buffer is unchanged.
    ///
    /// # Safety
    /// `a` must be the allocator of every chunk in the buffer; the prefix
    /// must be alive.
    pub unsafe fn make_contiguous(&mut self, a: &Allocator) -> Result<usize, OutOfMemory> {
        if self.contiguous().is_some() {
            return Ok(0);
        }
        let len = self.len;
        // SAFETY: plain allocation through the state's allocator.
        let whole = unsafe { Chunk::new(a, len) }?;
        // SAFETY: the prefix is alive (caller) and `prefix_len` long; chunks
        // before `last` are full (invariant), `last` holds `cur - data` bytes,
        // and the total is `len`, the size of `whole`'s data area. Each old
        // chunk is read, then freed.
        unsafe {
            let mut dst = Chunk::data(whole);
            if self.prefix_len > 0 {
                ptr::copy_nonoverlapping(self.prefix, dst, self.prefix_len);
                dst = dst.add(self.prefix_len);
            }
            let mut c = self.first;
            while !c.is_null() {
                let next = (*c).next;
                let used = if c == self.last {
                    self.cur as usize - Chunk::data(c) as usize
                } else {
                    (*c).cap
                };
                ptr::copy_nonoverlapping(Chunk::data(c), dst, used);
                dst = dst.add(used);
                Chunk::free(c, a);
                c = next;
            }
            self.prefix = ptr::null();
            self.prefix_len = 0;
            self.first = whole;
            self.last = whole;
            self.cur = Chunk::data(whole).add(len);
            self.end = self.cur;
        }
        Ok(len + HEADER)
    }

    /// Makes `bytes[..len]` the whole content, freeing every chunk: after
    /// `dump()`, the builder keeps the string it returned instead of its
    /// chunks, so it holds no memory of its own and a second `dump()` copies
    /// nothing.
    ///
    /// # Safety
    /// `a` must be the allocator of every chunk; `bytes` must stay valid for
    /// `len` bytes until the prefix is replaced or cleared (lib.rs keeps the
    /// string as the userdata's user value).
    pub unsafe fn set_prefix(&mut self, a: &Allocator, bytes: *const u8, len: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.free_chunks(a) };
        self.prefix = bytes;
        self.prefix_len = len;
        self.len = len;
    }

    /// Cuts the content back to its first `len` bytes (`prefix_len <= len <=
    /// self.len()`), freeing the chunks that only held later bytes. Used to
    /// undo a partially applied multi-piece append.
    ///
    /// # Safety
    /// `a` must be the allocator of every chunk in the buffer.
    pub unsafe fn truncate(&mut self, a: &Allocator, len: usize) {
        if len >= self.len {
            return;
        }
        debug_assert!(len >= self.prefix_len);
        if len <= self.prefix_len {
            // SAFETY: forwarded contract.
            unsafe { self.free_chunks(a) };
            return;
        }
        // SAFETY: finds the chunk holding byte `len - 1` (full chunks before
        // `last` have `cap` bytes each, after the prefix), makes it the last
        // chunk with its cursor after that byte, and frees the chunks after it.
        unsafe {
            let mut c = self.first;
            let mut offset = self.prefix_len;
            while offset + (*c).cap < len {
                offset += (*c).cap;
                c = (*c).next;
            }
            let mut rest = (*c).next;
            (*c).next = ptr::null_mut();
            while !rest.is_null() {
                let next = (*rest).next;
                Chunk::free(rest, a);
                rest = next;
            }
            self.last = c;
            self.cur = Chunk::data(c).add(len - offset);
            self.end = Chunk::data(c).add((*c).cap);
        }
        self.len = len;
    }

    /// Frees every chunk; the content becomes the prefix alone.
    ///
    /// # Safety
    /// `a` must be the allocator of every chunk in the buffer.
    pub unsafe fn free_chunks(&mut self, a: &Allocator) {
        let mut c = self.first;
        // Detach first: the buffer is consistent whatever happens next.
        self.first = ptr::null_mut();
        self.last = ptr::null_mut();
        self.cur = ptr::dangling_mut();
        self.end = self.cur;
        self.len = self.prefix_len;
        while !c.is_null() {
            // SAFETY: `c` is a chunk of the list just detached; read `next`
            // before freeing it.
            unsafe {
                let next = (*c).next;
                Chunk::free(c, a);
                c = next;
            }
        }
    }

    /// Empties the buffer: frees every chunk and forgets the prefix.
    ///
    /// # Safety
    /// `a` must be the allocator of every chunk in the buffer.
    pub unsafe fn clear(&mut self, a: &Allocator) {
        self.prefix = ptr::null();
        self.prefix_len = 0;
        // SAFETY: forwarded contract.
        unsafe { self.free_chunks(a) };
    }

    /// Bytes allocated for chunks (headers included): what `free_chunks`
    /// releases.
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        let mut total = 0;
        let mut c = self.first;
        while !c.is_null() {
            // SAFETY: `c` is a live chunk of the list.
            unsafe {
                total += (*c).cap + HEADER;
                c = (*c).next;
            }
        }
        total
    }

    /// Calls `f` on the prefix and each chunk's content, in order.
    #[cfg(test)]
    pub fn for_each_piece(&self, mut f: impl FnMut(&[u8])) {
        if self.prefix_len > 0 {
            // SAFETY: the prefix is alive (set_prefix's contract).
            f(unsafe { std::slice::from_raw_parts(self.prefix, self.prefix_len) });
        }
        let mut c = self.first;
        while !c.is_null() {
            // SAFETY: `c` is a live chunk; its used bytes are all written.
            unsafe {
                let data = Chunk::data(c);
                let used = if c == self.last {
                    self.cur as usize - data as usize
                } else {
                    (*c).cap
                };
                f(std::slice::from_raw_parts(data, used));
                c = (*c).next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A counting allocator with an optional limit, in lua_Alloc form.
    #[derive(Default)]
    struct Counter {
        in_use: Cell<usize>,
        limit: Cell<Option<usize>>,
    }

    unsafe extern "C" fn counting(
        ud: *mut c_void,
        block: *mut c_void,
        osize: usize,
        nsize: usize,
    ) -> *mut c_void {
        // SAFETY: `ud` is the `Counter` the test owns for the allocator's life.
        let c = unsafe { &*(ud as *const Counter) };
        let old = if block.is_null() { 0 } else { osize };
        if nsize == 0 {
            c.in_use.set(c.in_use.get() - old);
            // SAFETY: blocks come from realloc below.
            unsafe { libc_free(block) };
            return ptr::null_mut();
        }
        let after = c.in_use.get() - old + nsize;
        if c.limit.get().is_some_and(|l| after > l) {
            return ptr::null_mut();
        }
        // SAFETY: standard realloc on a block from realloc, or null.
        let p = unsafe { libc_realloc(block, nsize) };
        if !p.is_null() {
            c.in_use.set(after);
        }
        p
    }

    extern "C" {
        #[link_name = "realloc"]
        fn libc_realloc(p: *mut c_void, n: usize) -> *mut c_void;
        #[link_name = "free"]
        fn libc_free(p: *mut c_void);
    }

    fn alloc(c: &Counter) -> Allocator {
        // SAFETY: `counting` follows the lua_Alloc contract with a Counter.
        unsafe { Allocator::from_raw(counting, c as *const Counter as *mut c_void) }
    }

    fn content(b: &Buf) -> Vec<u8> {
        let mut v = Vec::new();
        b.for_each_piece(|p| v.extend_from_slice(p));
        v
    }

    /// A deterministic pseudo-random sequence (xorshift), no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// What lib.rs does in `dump()`: the content becomes one string (here a
    /// Vec the test keeps alive, standing for the Lua string), which then
    /// replaces the chunks as the prefix.
    fn dump(b: &mut Buf, a: &Allocator, strings: &mut Vec<Vec<u8>>) -> Vec<u8> {
        // SAFETY: one allocator; prefixes point into `strings`, kept alive.
        unsafe { b.make_contiguous(a) }.unwrap();
        let s = b.contiguous().unwrap().to_vec();
        strings.push(s.clone());
        let kept = strings.last().unwrap();
        // SAFETY: as above.
        unsafe { b.set_prefix(a, kept.as_ptr(), kept.len()) };
        s
    }

    #[test]
    fn random_appends_and_dumps_match_a_vec() {
        let counter = Counter::default();
        let a = alloc(&counter);
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut strings = Vec::new();
        for round in 0..30 {
            let mut b = Buf::EMPTY;
            let mut expect = Vec::new();
            for _ in 0..(rng.next() % 200) {
                let n = match rng.next() % 40 {
                    0..=3 => 0,
                    4 => (rng.next() % (3 * MAX_CHUNK as u64)) as usize,
                    5..=15 => (rng.next() % 5000) as usize,
                    _ => (rng.next() % 40) as usize,
                };
                let mut piece = vec![round as u8; n];
                if let Some(b) = piece.first_mut() {
                    *b = rng.next() as u8;
                }
                // SAFETY: `piece` is readable for its length; one allocator.
                unsafe { b.push(&a, piece.as_ptr(), piece.len()) }.unwrap();
                expect.extend_from_slice(&piece);
                assert_eq!(b.len(), expect.len());
                if rng.next().is_multiple_of(16) {
                    assert_eq!(dump(&mut b, &a, &mut strings), expect);
                    assert_eq!(counter.in_use.get(), 0, "dump keeps no chunk");
                }
            }
            assert_eq!(content(&b), expect);
            assert_eq!(counter.in_use.get(), b.allocated());
            assert_eq!(dump(&mut b, &a, &mut strings), expect);
            // A second dump is the prefix itself: nothing to merge.
            assert_eq!(b.contiguous().unwrap(), &expect[..]);
            // SAFETY: as above.
            unsafe { b.clear(&a) };
            assert_eq!(b.len(), 0);
            assert_eq!(counter.in_use.get(), 0);
        }
    }

    #[test]
    fn chunks_double_then_stay_at_max() {
        let counter = Counter::default();
        let a = alloc(&counter);
        let mut b = Buf::EMPTY;
        let piece = [7u8; 10];
        // 10 MB in 10-byte pieces: capacity stays below twice the content plus
        // one max chunk, and the chunk count is small.
        for _ in 0..1_000_000 {
            // SAFETY: `piece` is readable; one allocator.
            unsafe { b.push(&a, piece.as_ptr(), piece.len()) }.unwrap();
        }
        let mut chunks = 0;
        b.for_each_piece(|_| chunks += 1);
        // Doubling from FIRST_CHUNK to MAX_CHUNK, then MAX_CHUNK-sized chunks.
        let doubling = (MAX_CHUNK / FIRST_CHUNK).ilog2() as usize + 2;
        assert!(chunks <= doubling + b.len() / MAX_CHUNK, "{chunks} chunks");
        assert!(b.allocated() < b.len() + MAX_CHUNK + chunks * HEADER);
        // SAFETY: one allocator.
        unsafe { b.clear(&a) };
    }

    #[test]
    fn truncate_restores_any_prefix() {
        let counter = Counter::default();
        let a = alloc(&counter);
        let mut b = Buf::EMPTY;
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(333) {
            // SAFETY: readable slice; one allocator.
            unsafe { b.push(&a, piece.as_ptr(), piece.len()) }.unwrap();
        }
        for cut in [19_999, 10_000, 4_096, 4_095, 513, 512, 256, 255, 1, 0] {
            // SAFETY: one allocator.
            unsafe { b.truncate(&a, cut) };
            assert_eq!(b.len(), cut);
            assert_eq!(content(&b), &data[..cut]);
            assert_eq!(counter.in_use.get(), b.allocated());
            // Appending after a cut continues from the cut.
            // SAFETY: as above.
            unsafe { b.push(&a, data.as_ptr(), 3) }.unwrap();
            let mut expect = data[..cut].to_vec();
            expect.extend_from_slice(&data[..3]);
            assert_eq!(content(&b), expect);
            // SAFETY: as above.
            unsafe { b.truncate(&a, cut) };
        }
        assert_eq!(counter.in_use.get(), 0);
    }

    #[test]
    fn truncate_stops_at_the_prefix() {
        let counter = Counter::default();
        let a = alloc(&counter);
        let mut strings = Vec::new();
        let mut b = Buf::EMPTY;
        // SAFETY: readable slices; one allocator.
        unsafe { b.push(&a, b"prefix".as_ptr(), 6) }.unwrap();
        dump(&mut b, &a, &mut strings);
        for piece in [&b"abc"[..], &[9u8; 5000], b"xyz"] {
            // SAFETY: as above.
            unsafe { b.push(&a, piece.as_ptr(), piece.len()) }.unwrap();
        }
        // SAFETY: as above.
        unsafe { b.truncate(&a, 9) };
        assert_eq!(content(&b), b"prefixabc");
        // SAFETY: as above.
        unsafe { b.truncate(&a, 6) };
        assert_eq!(content(&b), b"prefix");
        assert_eq!(counter.in_use.get(), 0);
        assert!(!b.has_chunks());
    }

    #[test]
    fn allocation_failure_changes_nothing() {
        let counter = Counter::default();
        let a = alloc(&counter);
        let mut b = Buf::EMPTY;
        // SAFETY: readable slices; one allocator.
        unsafe { b.push(&a, b"hello".as_ptr(), 5) }.unwrap();
        let used = counter.in_use.get();
        counter.limit.set(Some(used + 100));
        let big = vec![1u8; 1000];
        // SAFETY: as above.
        let refused = unsafe { b.push(&a, big.as_ptr(), big.len()) };
        assert_eq!(refused, Err(OutOfMemory));
        assert_eq!(content(&b), b"hello");
        assert_eq!(counter.in_use.get(), used);
        // Fits in the room left in the first chunk: no allocation needed.
        // SAFETY: as above.
        unsafe { b.push(&a, big.as_ptr(), 200) }.unwrap();
        // Doesn't fit: a new chunk is needed and refused.
        // SAFETY: as above.
        unsafe { b.push(&a, big.as_ptr(), 100) }.unwrap_err();
        counter.limit.set(None);
        // SAFETY: as above.
        unsafe { b.push(&a, big.as_ptr(), 100) }.unwrap();
        counter.limit.set(Some(counter.in_use.get()));
        // SAFETY: as above.
        let refused = unsafe { b.make_contiguous(&a) };
        assert_eq!(refused, Err(OutOfMemory));
        assert_eq!(b.len(), 305);
        counter.limit.set(None);
        // SAFETY: as above.
        unsafe { b.clear(&a) };
        assert_eq!(counter.in_use.get(), 0);
    }

    #[test]
    fn short_copies_are_exact() {
        let src: Vec<u8> = (1..=40).collect();
        for n in 0..=40 {
            let mut dst = [0u8; 42];
            // SAFETY: both ranges are in bounds (dst starts at 1, n <= 40).
            unsafe { copy_bytes(src.as_ptr(), dst.as_mut_ptr().add(1), n) };
            assert_eq!(dst[0], 0);
            assert_eq!(&dst[1..=n], &src[..n]);
            assert!(dst[n + 1..].iter().all(|&b| b == 0), "n = {n}");
        }
    }

    #[test]
    fn huge_sizes_fail_cleanly() {
        let counter = Counter::default();
        let a = alloc(&counter);
        // SAFETY: the size overflows before any allocation or read happens.
        assert!(unsafe { Chunk::new(&a, usize::MAX - 4) }.is_err());
    }
}
