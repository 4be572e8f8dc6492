//! `luahost module check FILE.so`: will this native module load, and under
//! which `require` name?
//!
//! What is checked, and why:
//!
//! * **Entry points.** `require "a.b"` calls the C function `luaopen_a_b`
//!   (dots become underscores; with a hyphen, `v2-foo` tries `luaopen_v2`,
//!   then `luaopen_foo`). Each exported `luaopen_*` is listed with the require
//!   name that reaches it, and compared with the file name, since the
//!   standard `?.so` patterns find `foo.so` for `require "foo"` only. Cargo
//!   names a cdylib `libfoo.so`: that needs a `lib?.so` pattern or a rename.
//! * **An embedded Lua.** A module must call the interpreter's `lua_*`; a
//!   second copy of the Lua library in the process works on the same
//!   `lua_State` with different code and static data, which corrupts it.
//!   Found as exported `lua_*` symbols, hidden ones in the symbol table, or
//!   (stripped files) Lua's internal messages; or a DT_NEEDED liblua.
//! * **Unresolved symbols.** Every undefined symbol must come from luahost's
//!   exported Lua API (this process's own dynamic symbol table) or from a
//!   library the module needs (DT_NEEDED, found as the dynamic loader would)
//!   or that luahost already has loaded (libc, libm, libgcc_s, ...).
//!
//! Symbols are read from the file with `object`; nothing in it runs for that.
//! Only when no problem was found is the file loaded with `dlopen`, to
//! confirm that the dynamic loader agrees: that runs the module's
//! initialisers (ELF constructors), exactly as `require` would. The
//! libraries the module needs are opened to look symbols up, which runs
//! theirs.
//!
//! Output: a report on stdout, one line per problem ("problem: ..."). Exit
//! status 0 when the module is fine (notes allowed), 1 when a problem was
//! found, 2 when the file cannot be read or is not an ELF file.

use std::collections::{BTreeSet, HashSet};
use std::ffi::c_void;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use object::read::elf::{Dyn as _, ElfFile, FileHeader};
use object::{elf, BinaryFormat, Endianness, Object, ObjectKind, ObjectSymbol, SymbolKind};

pub fn run(file: &Path) -> ExitCode {
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("luahost: module check: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let module = match Inspection::parse(&data) {
        Ok(m) => m,
        Err(e) => {
            println!("checking {}", file.display());
            println!("problem: not a loadable module: {e}");
            return ExitCode::from(2);
        }
    };
    let host = HostSymbols::of_this_process();
    let report = check(file, &module, &host);
    print!("{}", report.render());
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The standard library openers that a copy of the Lua library exports.
const LUA_STDLIB_OPENERS: &[&str] = &[
    "luaopen_base",
    "luaopen_package",
    "luaopen_coroutine",
    "luaopen_table",
    "luaopen_io",
    "luaopen_os",
    "luaopen_string",
    "luaopen_math",
    "luaopen_utf8",
    "luaopen_debug",
];

/// Prefixes of the Lua library's public and internal functions
/// (lapi.c: lua_, lauxlib.c: luaL_, lvm.c: luaV_, ldo.c: luaD_, ...).
fn is_lua_library_symbol(name: &str) -> bool {
    if name.starts_with("lua_") || name.starts_with("luaL_") {
        return true;
    }
    // Internal modules: luaV_execute, luaD_call, luaH_new, luaC_step, ...
    let b = name.as_bytes();
    b.len() > 5 && name.starts_with("lua") && b[3].is_ascii_uppercase() && b[4] == b'_'
}

/// Messages from Lua's core (ldo.c, ldebug.c, lapi.c's lua_ident): a file
/// holding two of them almost surely carries the Lua VM, even stripped.
const LUA_CORE_MARKERS: &[&str] = &[
    "attempt to yield across a C-call boundary",
    "attempt to compare two %s values",
    "$LuaVersion: ",
];

/// What the file itself says, read without loading it.
struct Inspection {
    is_64: bool,
    architecture: object::Architecture,
    kind: ObjectKind,
    /// Defined, exported dynamic symbols.
    exports: Vec<Export>,
    /// Undefined dynamic symbols.
    imports: Vec<Import>,
    /// Defined Lua library symbols that are not exported (from .symtab).
    hidden_lua: Vec<String>,
    /// Lua core messages found in the file.
    core_markers: Vec<&'static str>,
    needed: Vec<String>,
    runpath: Vec<String>,
}

struct Export {
    name: String,
    is_function: bool,
}

struct Import {
    name: String,
    weak: bool,
}

impl Inspection {
    fn parse(data: &[u8]) -> Result<Inspection, String> {
        let file = object::File::parse(data).map_err(|e| format!("cannot parse the file ({e})"))?;
        if file.format() != BinaryFormat::Elf {
            return Err(format!("a {:?} file, not ELF", file.format()));
        }
        let mut exports = Vec::new();
        let mut imports = Vec::new();
        for sym in file.dynamic_symbols() {
            let Ok(name) = sym.name() else { continue };
            if name.is_empty()
                || sym.kind() == SymbolKind::Section
                || sym.kind() == SymbolKind::File
            {
                continue;
            }
            if sym.is_undefined() {
                imports.push(Import {
                    name: name.to_owned(),
                    weak: sym.is_weak(),
                });
            } else if sym.is_global() {
                exports.push(Export {
                    name: name.to_owned(),
                    is_function: sym.kind() == SymbolKind::Text,
                });
            }
        }
        let exported: HashSet<&str> = exports.iter().map(|e| e.name.as_str()).collect();
        let mut hidden_lua = BTreeSet::new();
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if !sym.is_undefined() && is_lua_library_symbol(name) && !exported.contains(name) {
                hidden_lua.insert(name.to_owned());
            }
        }
        let core_markers = LUA_CORE_MARKERS
            .iter()
            .copied()
            .filter(|m| contains(data, m.as_bytes()))
            .collect();
        let (needed, runpath) = if file.is_64() {
            dynamic_strings::<elf::FileHeader64<Endianness>>(data)
        } else {
            dynamic_strings::<elf::FileHeader32<Endianness>>(data)
        }
        .map_err(|e| format!("unreadable dynamic section ({e})"))?;
        Ok(Inspection {
            is_64: file.is_64(),
            architecture: file.architecture(),
            kind: file.kind(),
            exports,
            imports,
            hidden_lua: hidden_lua.into_iter().collect(),
            core_markers,
            needed,
            runpath,
        })
    }
}

/// DT_NEEDED entries, and the RUNPATH (or, without one, RPATH) directories.
fn dynamic_strings<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
) -> object::Result<(Vec<String>, Vec<String>)> {
    let file = ElfFile::<Elf>::parse(data)?;
    let endian = file.endian();
    let sections = file.elf_section_table();
    let Some((entries, link)) = sections.dynamic(endian, data)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let strings = sections.strings(endian, data, link)?;
    let (mut needed, mut runpath, mut rpath) = (Vec::new(), Vec::new(), Vec::new());
    for entry in entries {
        let text = || -> object::Result<String> {
            Ok(String::from_utf8_lossy(entry.string(endian, strings)?).into_owned())
        };
        match entry.tag32(endian) {
            Some(elf::DT_NULL) => break,
            Some(elf::DT_NEEDED) => needed.push(text()?),
            Some(elf::DT_RUNPATH) => runpath.extend(text()?.split(':').map(str::to_owned)),
            Some(elf::DT_RPATH) => rpath.extend(text()?.split(':').map(str::to_owned)),
            _ => {}
        }
    }
    // ld.so ignores DT_RPATH when DT_RUNPATH is present.
    Ok((needed, if runpath.is_empty() { rpath } else { runpath }))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The Lua API this luahost process exports to modules, and how it is built.
struct HostSymbols {
    exports: HashSet<String>,
    is_64: bool,
    architecture: Option<object::Architecture>,
    /// Why the executable could not be read, if so (then only dlsym is used).
    error: Option<String>,
}

impl HostSymbols {
    fn of_this_process() -> HostSymbols {
        let parsed = std::fs::read("/proc/self/exe")
            .map_err(|e| e.to_string())
            .and_then(|data| {
                let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
                let exports = file
                    .dynamic_symbols()
                    .filter(|s| !s.is_undefined() && s.is_global())
                    .filter_map(|s| s.name().ok().map(str::to_owned))
                    .collect();
                Ok((exports, file.is_64(), file.architecture()))
            });
        match parsed {
            Ok((exports, is_64, arch)) => HostSymbols {
                exports,
                is_64,
                architecture: Some(arch),
                error: None,
            },
            Err(e) => HostSymbols {
                exports: HashSet::new(),
                is_64: cfg!(target_pointer_width = "64"),
                architecture: None,
                error: Some(e),
            },
        }
    }
}

/// The symbols `require(name)` looks for in a C module, in order
/// (loadlib.c, loadfunc).
fn open_symbols(require_name: &str) -> Vec<String> {
    let mangled = require_name.replace('.', "_");
    match mangled.split_once('-') {
        Some((before, after)) => vec![format!("luaopen_{before}"), format!("luaopen_{after}")],
        None => vec![format!("luaopen_{mangled}")],
    }
}

/// How a `luaopen_*` function of this file can be reached.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// `require "<name>"` finds the file through a `?.so` pattern.
    FileName(String),
    /// `require "<root>.<sub>"`: found through the file name of the root
    /// (Lua's all-in-one loader).
    Submodule(String),
    /// `require "<name>"` finds `lib<name>.so` only through a `lib?.so`
    /// pattern (or after a rename to `<name>.so`).
    LibPattern(String),
    /// Only a file named differently would reach it: `require "<name>"`
    /// needs `<name>.so`.
    Elsewhere(String),
}

impl Reach {
    fn reachable(&self) -> bool {
        !matches!(self, Reach::Elsewhere(_))
    }
}

/// The require names derived from a file name through `?.so` and `lib?.so`.
fn stems(file_name: &str) -> Option<(String, Option<String>)> {
    let stem = file_name.strip_suffix(".so")?;
    if stem.is_empty() {
        return None;
    }
    let lib = stem
        .strip_prefix("lib")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Some((stem.to_owned(), lib))
}

fn reach(entry: &str, stem: Option<&(String, Option<String>)>) -> Reach {
    let suffix = entry.strip_prefix("luaopen_").unwrap_or(entry);
    if let Some((stem, lib)) = stem {
        if open_symbols(stem).iter().any(|s| s == entry) {
            return Reach::FileName(stem.clone());
        }
        if let Some(sub) = submodule(stem, suffix) {
            return Reach::Submodule(sub);
        }
        if let Some(lib) = lib {
            if open_symbols(lib).iter().any(|s| s == entry) {
                return Reach::LibPattern(lib.clone());
            }
            if let Some(sub) = submodule(lib, suffix) {
                return Reach::LibPattern(sub);
            }
        }
    }
    Reach::Elsewhere(suffix.to_owned())
}

/// `luaopen_<root>_<rest>` in `<root>.so` answers to `require "<root>.<rest>"`.
fn submodule(root: &str, suffix: &str) -> Option<String> {
    if root.contains(['.', '-']) {
        return None;
    }
    let rest = suffix.strip_prefix(root)?.strip_prefix('_')?;
    (!rest.is_empty()).then(|| format!("{root}.{}", rest.replace('_', ".")))
}

/// The outcome of looking up the module's undefined symbols (weak ones
/// excluded: the loader accepts them unresolved).
#[derive(Default)]
struct Resolution {
    /// Provided by luahost's exported Lua API (lua_*, luaL_*, luaopen_*).
    lua_api: usize,
    /// Provided by the libraries the module needs or luahost has loaded.
    system: usize,
    unresolved: Vec<String>,
    missing_libraries: Vec<(String, String)>,
}

fn is_lua_api(name: &str) -> bool {
    is_lua_library_symbol(name) || name.starts_with("luaopen_")
}

fn resolve(module: &Inspection, origin: &Path, host: &HostSymbols) -> Resolution {
    let mut out = Resolution::default();
    let mut libraries = Vec::new();
    for name in &module.needed {
        match open_needed(name, &module.runpath, origin) {
            Ok(lib) => libraries.push(lib),
            Err(e) => out.missing_libraries.push((name.clone(), e)),
        }
    }
    // The global scope of this process: luahost and everything it links.
    let global = libloading::os::unix::Library::this();
    for import in module.imports.iter().filter(|i| !i.weak) {
        let name = import.name.as_str();
        if host.exports.contains(name) {
            if is_lua_api(name) {
                out.lua_api += 1;
            } else {
                out.system += 1;
            }
            continue;
        }
        // SAFETY: dlsym only looks the name up; the address is not used.
        let found = libraries
            .iter()
            .chain(std::iter::once(&global))
            .any(|lib| unsafe { lib.get::<*const c_void>(name.as_bytes()) }.is_ok());
        if found {
            out.system += 1;
        } else {
            out.unresolved.push(import.name.clone());
        }
    }
    out
}

/// Opens a DT_NEEDED library the way the dynamic loader would find it for
/// this module: its RUNPATH first ($ORIGIN = the module's directory), then
/// the default search.
fn open_needed(
    name: &str,
    runpath: &[String],
    origin: &Path,
) -> Result<libloading::os::unix::Library, String> {
    use libloading::os::unix::{Library, RTLD_LAZY, RTLD_LOCAL};
    let mut candidates: Vec<PathBuf> = Vec::new();
    if !name.contains('/') {
        for dir in runpath {
            let dir = dir
                .replace("${ORIGIN}", &origin.to_string_lossy())
                .replace("$ORIGIN", &origin.to_string_lossy());
            candidates.push(Path::new(&dir).join(name));
        }
    }
    candidates.push(PathBuf::from(name));
    let mut last = String::new();
    for c in candidates {
        if c.components().count() > 1 && !c.exists() {
            continue;
        }
        // SAFETY: opening a library the module declares it needs; require
        // would open it too. Its initialisers run (documented in the module
        // docs and docs/modules.md).
        match unsafe { Library::open(Some(&c), RTLD_LAZY | RTLD_LOCAL) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The report being built.
struct Report {
    lines: Vec<String>,
    notes: Vec<String>,
    problems: Vec<String>,
    how_to_load: Vec<String>,
}

fn check(file: &Path, module: &Inspection, host: &HostSymbols) -> Report {
    let mut r = Report {
        lines: Vec::new(),
        notes: Vec::new(),
        problems: Vec::new(),
        how_to_load: Vec::new(),
    };
    // Made absolute but not resolved: require finds a symlink by its own
    // name (Debian's cjson.so links to liblua5.4-cjson.so.0.0.0).
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let file_name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    r.lines.push(format!("checking {}", abs.display()));
    r.lines.push(format!(
        "  format: ELF {}-bit {}, {}",
        if module.is_64 { 64 } else { 32 },
        match module.kind {
            ObjectKind::Dynamic => "shared object",
            ObjectKind::Executable => "executable",
            ObjectKind::Relocatable => "relocatable object",
            _ => "file",
        },
        format!("{:?}", module.architecture).to_lowercase()
    ));

    // Can this process load it at all?
    let mut loadable = true;
    if let Some(host_arch) = host.architecture {
        if host_arch != module.architecture || host.is_64 != module.is_64 {
            loadable = false;
            r.problems.push(format!(
                "built for {:?} ({}-bit); this luahost is {:?} ({}-bit) and cannot load it",
                module.architecture,
                if module.is_64 { 64 } else { 32 },
                host_arch,
                if host.is_64 { 64 } else { 32 }
            ));
        }
    }
    if module.kind != ObjectKind::Dynamic {
        loadable = false;
        r.problems.push(
            "not a shared object: modules are linked with -shared (a cargo `cdylib`); dlopen refuses other ELF files"
                .to_owned(),
        );
    }

    // An embedded Lua library.
    let exported_lua: Vec<&str> = module
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| is_lua_library_symbol(n))
        .collect();
    let embeds_lua =
        !exported_lua.is_empty() || !module.hidden_lua.is_empty() || module.core_markers.len() >= 2;
    if !exported_lua.is_empty() {
        r.problems.push(format!(
            "defines {} Lua library functions ({}): the file carries its own copy of the Lua library, and two copies working on one Lua state corrupt it; link the module without Lua so that lua_* come from the interpreter",
            exported_lua.len(),
            sample(&exported_lua)
        ));
    } else if !module.hidden_lua.is_empty() {
        // The public API names first: they are what a reader recognises.
        let mut names: Vec<&str> = module.hidden_lua.iter().map(String::as_str).collect();
        names.sort_by_key(|n| (!(n.starts_with("lua_") || n.starts_with("luaL_")), *n));
        r.problems.push(format!(
            "contains a private copy of the Lua library ({} hidden symbols: {}): its lua_* calls would run that copy's code on luahost's state, corrupting it; build without a bundled Lua (for mlua: feature `module`, not `vendored`)",
            names.len(),
            sample(&names)
        ));
    } else if module.core_markers.len() >= 2 {
        r.problems.push(format!(
            "appears to contain the Lua core although its symbols are stripped (it holds Lua's internal messages \"{}\"): a second Lua copy corrupts the interpreter's state",
            module.core_markers.join("\", \"")
        ));
    }
    for lib in &module.needed {
        if lib.starts_with("liblua") {
            r.problems.push(format!(
                "links {lib}: loading it into luahost adds a second Lua library to the process; link the module without -llua (the interpreter provides lua_*)"
            ));
        }
    }

    // Entry points and the names that reach them.
    let stem = stems(&file_name);
    let entries: Vec<&Export> = module
        .exports
        .iter()
        .filter(|e| e.name.starts_with("luaopen_"))
        .filter(|e| !(embeds_lua && LUA_STDLIB_OPENERS.contains(&e.name.as_str())))
        .collect();
    if stem.is_none() {
        r.problems.push(format!(
            "the file name {file_name} does not end in .so: the package.cpath patterns (\"?.so\") never produce it; rename it to <name>.so"
        ));
    }
    let mut reaches = Vec::new();
    if entries.is_empty() {
        let functions: Vec<&str> = module
            .exports
            .iter()
            .filter(|e| e.is_function)
            .map(|e| e.name.as_str())
            .collect();
        r.problems.push(format!(
            "no luaopen_* function is exported, so require has nothing to call (it looks for luaopen_<name>); {}",
            if functions.is_empty() {
                "the file exports no functions at all".to_owned()
            } else {
                format!("it exports {}", sample(&functions))
            }
        ));
    } else {
        r.lines.push("  entry points:".to_owned());
        for e in &entries {
            let how = reach(&e.name, stem.as_ref());
            let text = match &how {
                Reach::FileName(n) => format!("require \"{n}\""),
                Reach::Submodule(n) => {
                    format!("require \"{n}\" (through the file name of its root)")
                }
                Reach::LibPattern(n) => {
                    format!("require \"{n}\" (with \"lib?.so\" in package.cpath)")
                }
                Reach::Elsewhere(n) => {
                    format!("require \"{n}\" (only if the file is named {n}.so)")
                }
            };
            let kind = if e.is_function {
                ""
            } else {
                " [not a function!]"
            };
            r.lines.push(format!("    {}{kind} -> {text}", e.name));
            if !e.is_function {
                r.problems.push(format!(
                    "{} is not a function; require would call it",
                    e.name
                ));
            }
            reaches.push(how);
        }
    }
    if let (false, Some((stem, _))) = (entries.is_empty(), &stem) {
        if !reaches.iter().any(Reach::reachable) {
            let wanted = open_symbols(stem).join(" or ");
            let names: Vec<&str> = reaches
                .iter()
                .filter_map(|r| match r {
                    Reach::Elsewhere(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            r.problems.push(format!(
                "the file name does not match the entry point: require \"{stem}\" would look for {wanted}, which the file does not export; rename the file to {}.so (or symlink it)",
                names.first().copied().unwrap_or("<name>")
            ));
        }
    }
    if let Some(Reach::LibPattern(name)) =
        reaches.iter().find(|r| matches!(r, Reach::LibPattern(_)))
    {
        let root = name.split('.').next().unwrap_or(name);
        r.notes.push(format!(
            "{file_name} is cargo's name for a cdylib; require \"{name}\" looks for {root}.so, so add \"{d}/lib?.so\" to package.cpath (LUA_CPATH_5_4=\"{d}/lib?.so;;\") or rename/symlink it: ln -s {file_name} {d}/{root}.so",
            d = dir.display()
        ));
    }

    if embeds_lua {
        r.lines
            .push("  Lua library: INCLUDED (see the problems below)".to_owned());
    } else {
        match module.imports.iter().filter(|i| is_lua_api(&i.name)).count() {
            0 => r.lines.push("  Lua library: not included, and no Lua API function is used".to_owned()),
            n => r.lines.push(format!(
                "  Lua library: not included (good): its {n} Lua API functions come from the interpreter"
            )),
        }
    }

    // Undefined symbols.
    let resolution = resolve(module, &dir, host);
    if let Some(e) = &host.error {
        r.notes.push(format!(
            "could not read luahost's own symbol table ({e}); symbols were looked up in the running process instead"
        ));
    }
    for (lib, why) in &resolution.missing_libraries {
        r.problems.push(format!(
            "needs {lib}, which the dynamic loader cannot open ({why}); install it or fix the module's RUNPATH"
        ));
    }
    let total_imports = module.imports.iter().filter(|i| !i.weak).count();
    if total_imports == 0 {
        r.lines.push("  undefined symbols: none".to_owned());
    } else if resolution.unresolved.is_empty() {
        r.lines.push(format!(
            "  undefined symbols: {total_imports}, all provided: {} by luahost's Lua API{}",
            resolution.lua_api,
            match (resolution.system, module.needed.is_empty()) {
                (0, _) => String::new(),
                (n, true) => format!(", {n} by the system libraries luahost links"),
                (n, false) => format!(
                    ", {n} by system libraries ({} and those luahost links)",
                    module.needed.join(", ")
                ),
            }
        ));
    } else {
        r.lines.push(format!(
            "  undefined symbols: {total_imports}, {} not provided",
            resolution.unresolved.len()
        ));
    }
    for name in &resolution.unresolved {
        if is_lua_api(name) {
            r.problems.push(format!(
                "undefined symbol {name} is not in the Lua 5.4 API luahost exports: the module was probably built against another Lua version's headers; rebuild it for Lua 5.4"
            ));
        } else {
            r.problems.push(format!(
                "undefined symbol {name} is provided neither by luahost nor by the libraries the module needs ({}); loading fails with \"undefined symbol: {name}\"",
                if module.needed.is_empty() { "none declared".to_owned() } else { module.needed.join(", ") }
            ));
        }
    }

    // Confirm with the dynamic loader, only for a file that passed the rest.
    if r.problems.is_empty() && loadable {
        match load_test(&abs, &entries) {
            Ok(()) => r.lines.push(format!(
                "  load test: dlopen succeeded and found {} (loading ran the file's initialisers, as require does)",
                entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Err(e) => r.problems.push(format!("the dynamic loader refuses it: {e}")),
        }
    } else {
        r.lines
            .push("  load test: skipped (the file is not loaded while it has problems)".to_owned());
    }

    // How to load it, and the classic mistake.
    // The most direct way first: by file name, then a sub-module, then lib?.so.
    let best = [0, 1, 2].iter().find_map(|rank| {
        reaches.iter().find(|r| match r {
            Reach::FileName(_) => *rank == 0,
            Reach::Submodule(_) => *rank == 1,
            Reach::LibPattern(_) => *rank == 2,
            Reach::Elsewhere(_) => false,
        })
    });
    if let Some(first) = best {
        let (pattern, name) = match first {
            Reach::LibPattern(n) => (format!("{}/lib?.so", dir.display()), n.clone()),
            Reach::FileName(n) | Reach::Submodule(n) | Reach::Elsewhere(n) => {
                (format!("{}/?.so", dir.display()), n.clone())
            }
        };
        let var = name.replace(['.', '-'], "_");
        let subdir = dir
            .file_name()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "luac".to_owned());
        r.how_to_load.push(format!(
            "  package.cpath = \"{pattern};\" .. package.cpath   -- or LUA_CPATH_5_4=\"{pattern};;\""
        ));
        r.how_to_load
            .push(format!("  local {var} = require(\"{name}\")"));
        let wrong = format!("{subdir}/{name}");
        r.how_to_load.push(format!(
            "  not require(\"{wrong}\"): a path in the name also goes into the entry point's name, {}, which no module exports",
            open_symbols(&wrong).join(" / ")
        ));
    }
    r
}

/// Up to four names, then "...".
fn sample(names: &[&str]) -> String {
    let mut s = names.iter().take(4).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 4 {
        let _ = write!(s, ", ... {} more", names.len() - 4);
    }
    s
}

/// dlopen (RTLD_NOW: every symbol must bind now) and dlsym each entry point.
fn load_test(path: &Path, entries: &[&Export]) -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the module's ELF initialisers, as `require` does;
    // that is the point of this test and is documented. No function of the
    // module is called.
    let lib =
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| e.to_string())?;
    for e in entries {
        // SAFETY: a lookup; the address is not used.
        unsafe { lib.get::<*const c_void>(e.name.as_bytes()) }.map_err(|err| err.to_string())?;
    }
    // Not unloaded: the process ends right after, and dlclose of code whose
    // initialisers ran (TLS destructors, atexit handlers) is the riskier path.
    std::mem::forget(lib);
    Ok(())
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        if !self.how_to_load.is_empty() && self.problems.is_empty() {
            out.push_str("to load it:\n");
            for l in &self.how_to_load {
                out.push_str(l);
                out.push('\n');
            }
        }
        if self.problems.is_empty() {
            let _ = writeln!(
                out,
                "OK: the module will load in luahost{}",
                if self.notes.is_empty() {
                    ""
                } else {
                    " (see the notes)"
                }
            );
        } else {
            let _ = writeln!(
                out,
                "FAILED: {} problem{}",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_names_map_to_entry_points_as_loadlib_does() {
        assert_eq!(open_symbols("foo"), ["luaopen_foo"]);
        assert_eq!(open_symbols("a.b.c"), ["luaopen_a_b_c"]);
        assert_eq!(open_symbols("v2-foo"), ["luaopen_v2", "luaopen_foo"]);
        assert_eq!(open_symbols("a.b-v2.x"), ["luaopen_a_b", "luaopen_v2_x"]);
        // The classic mistake: a path goes into the symbol name.
        assert_eq!(open_symbols("luac/concat"), ["luaopen_luac/concat"]);
    }

    #[test]
    fn file_names_and_entries() {
        let s = stems("cjson.so");
        assert_eq!(
            reach("luaopen_cjson", s.as_ref()),
            Reach::FileName("cjson".into())
        );
        assert_eq!(
            reach("luaopen_cjson_safe", s.as_ref()),
            Reach::Submodule("cjson.safe".into())
        );
        let s = stems("libhello_rs.so");
        assert_eq!(
            reach("luaopen_hello_rs", s.as_ref()),
            Reach::LibPattern("hello_rs".into())
        );
        assert_eq!(
            reach("luaopen_libhello_rs", s.as_ref()),
            Reach::FileName("libhello_rs".into())
        );
        let s = stems("greeting.so");
        assert_eq!(
            reach("luaopen_hello", s.as_ref()),
            Reach::Elsewhere("hello".into())
        );
        let s = stems("v2-foo.so");
        assert_eq!(
            reach("luaopen_foo", s.as_ref()),
            Reach::FileName("v2-foo".into())
        );
        assert_eq!(stems("foo.so.1"), None);
        assert_eq!(stems(".so"), None);
        assert_eq!(stems("lib.so"), Some(("lib".into(), None)));
    }

    #[test]
    fn lua_library_symbols_are_recognised() {
        for yes in [
            "lua_pushnil",
            "luaL_checkinteger",
            "luaV_execute",
            "luaD_call",
            "luaH_new",
        ] {
            assert!(is_lua_library_symbol(yes), "{yes}");
        }
        for no in ["luaopen_foo", "lua", "luax_helper", "lual_x", "printf"] {
            assert!(!is_lua_library_symbol(no), "{no}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Inspection::parse(b"").is_err());
        assert!(Inspection::parse(b"not an elf file at all").is_err());
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(80, 0xff);
        assert!(Inspection::parse(&elf).is_err());
    }

    #[test]
    fn truncated_copies_of_a_real_library_never_panic() {
        // This test binary itself is a real ELF file; cut it at many lengths.
        let Ok(data) = std::fs::read("/proc/self/exe") else {
            return;
        };
        let mut len = 1;
        while len < data.len().min(1 << 20) {
            let _ = Inspection::parse(&data[..len]);
            len = len * 3 / 2 + 1;
        }
    }
}
