//! The C standard output the Lua library writes to (`print`, `io.write`,
//! `io.stdout`): line-buffered in the proxy, as HAProxy sets it, so that what
//! a script writes appears line by line when stdout is a file or a pipe
//! instead of in one block at exit (C's default there is full buffering).
//! `luahost run` keeps C's default, as the stock `lua5.4` does.

extern "C" {
    /// C's standard output stream (glibc exports it as a symbol).
    static stdout: *mut libc::FILE;
}

/// Makes C's stdout line-buffered. Must run before anything writes to it.
pub fn line_buffer_stdout() {
    // SAFETY: `stdout` is initialised by the C runtime before main and never
    // reassigned by luahost; setvbuf is called before any C-level output on
    // the stream (the Lua states, the only C-stdio writers, do not exist
    // yet), which is what the C standard requires of it. With a null buffer
    // the C library allocates its own.
    unsafe {
        let out = std::ptr::addr_of!(stdout).read();
        if !out.is_null() {
            libc::setvbuf(out, std::ptr::null_mut(), libc::_IOLBF, 0);
        }
    }
}
