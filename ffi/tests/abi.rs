//! The workspace calls Lua through two sets of declarations: mlua's (mlua-sys,
//! hand-written) and ours (bindgen, generated from the headers Lua was built
//! with). If they disagree on a layout or a constant, a module or the host
//! would corrupt memory instead of failing. These tests make such a drift a
//! test failure.

use luahost_ffi as ours;
use mlua::ffi as theirs;
use std::mem::{align_of, offset_of, size_of};

macro_rules! same_layout {
    ($ty:ident { $($field:ident),* $(,)? }) => {{
        assert_eq!(size_of::<ours::$ty>(), size_of::<theirs::$ty>(), "size of {}", stringify!($ty));
        assert_eq!(align_of::<ours::$ty>(), align_of::<theirs::$ty>(), "align of {}", stringify!($ty));
        $(
            assert_eq!(
                offset_of!(ours::$ty, $field),
                offset_of!(theirs::$ty, $field),
                "offset of {}.{}", stringify!($ty), stringify!($field)
            );
        )*
    }};
}

macro_rules! same_const {
    ($($name:ident),* $(,)?) => {$(
        assert_eq!(ours::$name as i64, theirs::$name as i64, "constant {}", stringify!($name));
    )*};
}

#[test]
fn struct_layouts_agree_with_mlua() {
    same_layout!(lua_Debug {
        event,
        name,
        namewhat,
        what,
        source,
        srclen,
        currentline,
        linedefined,
        lastlinedefined,
        nups,
        nparams,
        isvararg,
        istailcall,
        ftransfer,
        ntransfer,
        short_src,
    });
    same_layout!(luaL_Buffer {
        b,
        size,
        n,
        L,
        init
    });
    same_layout!(luaL_Reg { name, func });
    assert_eq!(
        size_of::<ours::lua_Number>(),
        size_of::<theirs::lua_Number>()
    );
    assert_eq!(
        size_of::<ours::lua_Integer>(),
        size_of::<theirs::lua_Integer>()
    );
    assert_eq!(
        size_of::<ours::lua_KContext>(),
        size_of::<theirs::lua_KContext>()
    );
}

#[test]
fn constants_agree_with_mlua() {
    same_const!(
        LUA_REGISTRYINDEX,
        LUAI_MAXSTACK,
        LUA_MULTRET,
        LUA_OK,
        LUA_YIELD,
        LUA_ERRRUN,
        LUA_ERRSYNTAX,
        LUA_ERRMEM,
        LUA_ERRERR,
        LUA_TNONE,
        LUA_TNIL,
        LUA_TBOOLEAN,
        LUA_TLIGHTUSERDATA,
        LUA_TNUMBER,
        LUA_TSTRING,
        LUA_TTABLE,
        LUA_TFUNCTION,
        LUA_TUSERDATA,
        LUA_TTHREAD,
        LUA_MINSTACK,
        LUA_RIDX_MAINTHREAD,
        LUA_RIDX_GLOBALS,
        LUA_GCCOLLECT,
        LUA_GCCOUNT,
        LUA_GCCOUNTB,
        LUA_GCSTEP,
        LUA_GCGEN,
        LUA_GCINC,
        LUA_HOOKCOUNT,
        LUA_MASKCOUNT,
        LUA_MASKLINE,
        LUA_MASKCALL,
        LUA_MASKRET,
        LUA_ERRFILE,
    );
    assert_eq!(
        ours::LUA_IDSIZE as usize,
        size_of::<[std::os::raw::c_char; 60]>()
    );
    // LUAL_BUFFERSIZE is a computed macro: check it through the buffer layout.
    assert_eq!(
        size_of::<ours::luaL_Buffer>(),
        offset_of!(ours::luaL_Buffer, init) + theirs::LUAL_BUFFERSIZE
    );
    assert_eq!(
        ours::LUA_VERSION_NUM,
        504,
        "mlua is built for the Lua 5.4 ABI"
    );
    assert_eq!(ours::LUA_EXTRASPACE_SIZE, theirs::LUA_EXTRASPACE);
    assert_eq!(ours::lua_upvalueindex(3), theirs::lua_upvalueindex(3));
}

/// The declarations agree on paper; this checks that mlua's view of a
/// lua_Debug filled in by the linked library reads back the right fields.
#[test]
fn mlua_declarations_read_what_the_library_writes() {
    unsafe {
        let l = ours::luaL_newstate();
        assert!(!l.is_null());
        let chunk = c"local x = 1\nlocal y = 2\nfunction probe() return debug and 1 end";
        assert_eq!(
            ours::luaL_loadstring(l, chunk.as_ptr()),
            ours::LUA_OK as i32
        );
        assert_eq!(ours::lua_pcallk(l, 0, 0, 0, 0, None), ours::LUA_OK as i32);
        ours::lua_getglobal(l, c"probe".as_ptr());
        let mut ar: theirs::lua_Debug = std::mem::zeroed();
        let l2 = l as *mut theirs::lua_State;
        assert_ne!(theirs::lua_getinfo(l2, c">S".as_ptr(), &mut ar), 0);
        assert_eq!(ar.linedefined, 3);
        assert_eq!(ar.lastlinedefined, 3);
        let short = std::ffi::CStr::from_ptr(ar.short_src.as_ptr()).to_string_lossy();
        assert!(short.starts_with("[string \"local x = 1"), "{short}");
        ours::lua_close(l);
    }
}
